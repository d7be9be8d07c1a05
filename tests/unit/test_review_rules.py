"""rules/review.py: links, the hold decision, shield mode's preset (pure, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from danmaku.rules import guests
from danmaku.rules.review import (
    REVIEW_MODES,
    ReviewCheck,
    has_link,
    hold_reason,
    review_code,
    review_mode,
    shield_changes,
)

LINKS = [
    "see https://evil.example/x",
    "ftp://files.host",
    "go to www.spam.biz now",
    "example.com",
    "buy at shop.example.co.uk",
    "free coins at coins.gg!!",
    "example . com",
    "example(dot)com",
    "ｅｘａｍｐｌｅ．ｃｏｍ",  # full width: NFKC folds it
    "示例。com",
    "bit.ly/abc",
]
NOT_LINKS = [
    "hello everyone",
    "e.g. this one",
    "version 1.2.3 is out",
    "i.e. no",
    "good game.",
    "3.14 is pi",
    "he said...what",
    "Mr.Smith",
    "wow.so.cool",
]


@pytest.mark.parametrize("text", LINKS)
def test_links_are_found(text: str) -> None:
    assert has_link(text)


@pytest.mark.parametrize("text", NOT_LINKS)
def test_ordinary_text_is_no_link(text: str) -> None:
    assert not has_link(text)


def test_review_words_match_as_blocked_words_do() -> None:
    check = ReviewCheck(["crypto", "广告"])
    assert check.suspicious("buy CRYPTO now") and check.suspicious("这是广 告")
    assert not check.suspicious("cryptography is a field")  # whole words, as blocked
    assert not ReviewCheck().suspicious("hello")
    assert ReviewCheck().suspicious("hello www.x.com")


@given(st.text(max_size=200))
def test_the_content_check_takes_any_text(text: str) -> None:
    ReviewCheck(["word"]).suspicious(text)


@pytest.mark.parametrize("mode", REVIEW_MODES)
def test_review_codes_round_trip(mode: str) -> None:
    assert review_mode(review_code(mode)) == mode
    assert review_mode(None) == review_mode(7.0) == review_mode(-1.0) == "off"


NOW = 10_000_000_000


@pytest.mark.parametrize(
    ("mode", "kw", "want"),
    [
        ("off", {"flagged": True, "first_ms": None}, None),
        ("all", {"flagged": False, "first_ms": 0}, "all"),
        ("all", {"staff": True}, None),
        ("all", {"highlighted": True}, None),
        ("suspicious", {"flagged": True, "first_ms": 0}, "content"),
        ("suspicious", {"flagged": False, "first_ms": None}, "first_chat"),
        ("suspicious", {"flagged": False, "first_ms": NOW - 9 * 60_000}, "first_chat"),
        ("suspicious", {"flagged": False, "first_ms": NOW - 11 * 60_000}, None),
        ("suspicious", {"flagged": False, "first_ms": None, "first_chat_min": 0}, None),
        ("suspicious", {"flagged": True, "highlighted": True}, None),
    ],
)
def test_hold_reason(mode: str, kw: dict, want: str | None) -> None:
    args = {"staff": False, "highlighted": False, "flagged": False, "first_ms": 0}
    args |= {"first_chat_min": 10.0} | kw
    assert hold_reason(mode, now_ms=NOW, **args) == want


def test_shield_keeps_what_is_stricter_and_saves_what_it_writes() -> None:
    plan = shield_changes(
        {"slow_mode_s": 30.0, "budget": 50.0, "guests": guests.code("comment")},
        slow_mode_s=10.0,
        first_chat_min=60.0,
    )
    assert plan.changes == {
        "guests": guests.code("watch"),  # stored as a number, as the API stores it
        "shield": 1.0,
        "review": review_code("suspicious"),
        "first_chat_min": 60.0,
    }
    assert plan.saved == {"guests": guests.code("comment"), "review": None, "first_chat_min": None}
    strict = shield_changes(
        {"review": review_code("all"), "first_chat_min": 120.0}, slow_mode_s=5, first_chat_min=60
    )
    assert "review" not in strict.changes and "first_chat_min" not in strict.changes
    assert strict.changes["slow_mode_s"] == 5.0 and strict.saved["slow_mode_s"] is None
