"""Comment ids from clients: ASCII digits, both parts within unsigned 64 bits."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.rules.ids import U64_MAX, comment_id_problem, is_comment_id

ASCII_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text(max_size=50),
        st.from_regex(r"\A[0-9]{1,22}-[0-9]{1,22}\Z"),
        st.tuples(st.integers(0, 2**70), st.integers(0, 2**70)).map(lambda t: f"{t[0]}-{t[1]}"),
    )
)
def test_valid_exactly_when_both_parts_are_ascii_u64(text: str) -> None:
    expected = bool(ASCII_ID.fullmatch(text)) and all(
        int(part) <= U64_MAX for part in text.split("-")
    )
    assert is_comment_id(text) == expected
    problem = comment_id_problem(text)
    assert (problem is None) == expected and (problem is None or "comment id" in problem)


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "1",
        "1-",
        "-1",
        "1-2-3",
        "١٢٣-٠",  # Arabic-Indic digits: `\d` takes them, Redis does not
        "１-０",  # full-width
        "18446744073709551616-0",  # 2**64
        "0-99999999999999999999",  # 20 digits, over 2**64 - 1
        "1 -0",
        "+1-0",
        "1-0\n",
    ],
)
def test_named_bad_ids(bad: str) -> None:
    assert not is_comment_id(bad)


def test_the_largest_id_is_valid() -> None:
    assert is_comment_id(f"{U64_MAX}-{U64_MAX}") and is_comment_id("0-0")
