"""``normalize``: the comparison key for folding, duplicate guard and word filters."""

from __future__ import annotations

import itertools
import random

import pytest

from danmaku.rules.normalize import normalize


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
