"""Blocked words: normalisation tricks do not get past, and many words stay cheap."""

from __future__ import annotations

import pytest

from danmaku.rules.normalize import normalize
from danmaku.rules.wordfilter import WordFilter


@pytest.mark.parametrize(
    "text",
    ["buy spam now", "BUY SPAM", "ｓｐａｍ", "s p a m", "sppppaaam", "s\u200bpam", "xxSpAmxx"],
)
def test_tricks_are_matched(text: str) -> None:
    assert WordFilter(["spam"]).match(text) == "spam"


def test_clean_text_passes_and_empty_filter_matches_nothing() -> None:
    f = WordFilter(["spam", "", "  "])
    assert len(f) == 1
    assert f.match("a lovely stream") is None
    assert WordFilter([]).match("spam") is None


def test_cjk_words() -> None:
    assert WordFilter(["广告"]).match("这是广 告") == "广告"


def test_thousands_of_words() -> None:
    words = [f"word{i:05d}x" for i in range(5000)]
    f = WordFilter(words)
    assert f.match("nothing here") is None
    # normalize collapses repeated characters in both word and text: still a match
    assert f.match("say word01234x now") == "word01234x"


@pytest.mark.parametrize("text", ["say SPAM now", "s p a m", "clean", "", "ｓｐａｍ!"])
def test_match_normalized_is_match_on_the_key(text: str) -> None:
    # The gateway normalises a comment once and asks with the key.
    for f in (WordFilter(["spam"]), WordFilter([])):
        assert f.match_normalized(normalize(text)) == f.match(text)
