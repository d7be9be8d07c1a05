"""``normalize``: the comparison key for folding, duplicate guard and word filters."""

from __future__ import annotations

import itertools
import random
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.protocol import clean_text, tidy_text
from danmaku.rules.normalize import _INVISIBLE, normalize


@pytest.mark.parametrize("text", ["666", "６６６", "6666666", "666 ", " 6 6 6 ", "66", "6\u200b66"])
def test_the_666_family_folds_together(text: str) -> None:
    assert normalize(text) == "6"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("LOL", "lol"),
        ("ｌｏｌ", "lol"),  # full width
        ("ＧＧ", "gg"),
        ("ｶﾞ", "ガ"),  # half-width katakana with voiced mark
        ("Straße", "STRASSE"),
        ("哈哈哈哈", "哈"),
        ("looool", "lol"),
        ("gg!!!", "gg!"),
        ("\ufeffnice\u00ad one", "niceone"),
        ("❤️", "❤"),  # variation selector removed
        ("e\u0301", "é"),  # decomposed and composed forms
    ],
)
def test_equivalent_texts_share_a_key(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("lolol", "lol"),  # only runs of one character collapse
        ("gg!", "gg"),  # punctuation is kept
        ("666", "999"),
        ("好", "好的"),
    ],
)
def test_different_texts_stay_different(a: str, b: str) -> None:
    assert normalize(a) != normalize(b)


def test_exact_outputs() -> None:
    assert normalize("Hello  World") == "heloworld"
    assert normalize("2333") == "23"
    assert normalize("") == ""
    assert normalize(" \t\u200b\n") == ""


def test_idempotent_and_total_on_random_text() -> None:
    rng = random.Random(3)
    pools = [
        (0x20, 0x250),
        (0x300, 0x370),
        (0x1100, 0x1200),
        (0x2000, 0x2100),
        (0x3000, 0x3100),
        (0xFF00, 0xFFF0),
        (0x1D400, 0x1D500),
    ]
    for _ in range(3000):
        chars = []
        for _ in range(rng.randint(0, 10)):
            lo, hi = rng.choice(pools)
            chars.append(chr(rng.randrange(lo, hi)) * rng.randint(1, 3))
        key = normalize("".join(chars))
        assert normalize(key) == key
        assert not any(c.isspace() for c in key)
        assert all(x != y for x, y in itertools.pairwise(key))


def _steps(text: str) -> str:
    """The five steps of the module docstring, spelled out (the oracle for the shortcuts)."""
    key = unicodedata.normalize("NFKC", text).casefold()
    key = "".join(c for c in key if not (c.isspace() or _INVISIBLE.match(c)))
    key = unicodedata.normalize("NFKC", key)
    return "".join(c for c, _ in itertools.groupby(key))


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40) | st.text(max_size=40))
@settings(max_examples=500)
def test_the_ascii_shortcut_keeps_the_rules(text: str) -> None:
    assert normalize(text) == _steps(text)


def _clean_by_category(text: str) -> str:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cc":
            out.append(" " if ch.isspace() else "")
        elif (cat == "Cf" and ch != "\u200d") or cat in ("Cs", "Co", "Cn"):
            continue
        else:
            out.append(ch)
    return "".join(out)


@given(st.text(max_size=40) | st.text(alphabet=st.characters(max_codepoint=0x3100), max_size=40))
@settings(max_examples=500)
def test_clean_text_shortcut_for_printable_text_keeps_the_rules(text: str) -> None:
    assert clean_text(text) == _clean_by_category(text)


def test_long_ascii_keys_collapse_at_both_ends_and_on_any_byte() -> None:
    """Keys of 16 characters and more take the integer path (``_collapse_ascii``)."""
    assert normalize("a" * 40) == "a"
    assert normalize("zz" + "ab" * 10 + "yy") == "z" + "ab" * 10 + "y"
    assert normalize("x" + "\x00" * 20 + "\x7f\x7f" + "y") == "x\x00\x7fy"
    assert normalize("hello world, look at that goal!!") == "heloworld,lokathatgoal!"


@given(
    st.text(max_size=40)
    | st.text(alphabet=st.characters(max_codepoint=0x3100), max_size=40)
    | st.text(alphabet=" ab\t\u3000\u00a0\u2028\u200b", max_size=12)
)
@settings(max_examples=500)
def test_tidy_text_shortcut_keeps_the_rules(text: str) -> None:
    assert tidy_text(text) == " ".join(clean_text(text).split())
