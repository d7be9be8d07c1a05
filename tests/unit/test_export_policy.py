"""Replay exports: the order of a recording read in pages with bounded memory, the
concurrency slots and the cache validators."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.rules import export_policy
from danmaku.rules.replay_order import Key, Ordering, PageSummary


def run(pages: list[list[Key]], cap: int) -> tuple[list[Key], Ordering[None]]:
    summaries = [
        PageSummary(str(i), len(p), min(p, default=None), max(p, default=None))
        for i, p in enumerate(pages)
    ]
    ordering: Ordering[None] = Ordering(summaries, cap)
    out: list[Key] = []
    while (i := ordering.next_page()) is not None:
        out += [k for k, _ in ordering.feed(i, [(k, None) for k in pages[i]])]
    return out, ordering


def paged(keys: list[Key], size: int) -> list[list[Key]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


@settings(max_examples=500, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 50), max_size=80),
    size=st.integers(1, 9),
    cap=st.integers(1, 12),
    presorted=st.booleans(),
)
def test_any_recording_comes_out_once_in_key_order_holding_at_most_cap_and_a_page(
    offsets: list[int], size: int, cap: int, presorted: bool
) -> None:
    keys = [(off, f"{i:04d}-0") for i, off in enumerate(offsets)]
    if presorted:
        keys.sort()
    out, ordering = run(paged(keys, size), cap)
    assert out == sorted(keys)
    assert ordering.max_held <= cap + size


@settings(max_examples=200, deadline=None)
@given(offsets=st.lists(st.integers(0, 50), max_size=60), gone=st.sets(st.integers(0, 59)))
def test_comments_deleted_after_the_first_pass_are_left_out_in_order(
    offsets: list[int], gone: set[int]
) -> None:
    keys = [(off, f"{i:04d}-0") for i, off in enumerate(offsets)]
    pages = paged(keys, 4)
    summaries = [PageSummary(str(i), len(p), min(p), max(p)) for i, p in enumerate(pages)]
    ordering: Ordering[None] = Ordering(summaries, 3)
    out: list[Key] = []
    while (i := ordering.next_page()) is not None:
        now = [(k, None) for j, k in enumerate(pages[i]) if 4 * i + j not in gone]
        out += [k for k, _ in ordering.feed(i, now)]
    assert out == sorted(k for j, k in enumerate(keys) if j not in gone)


def test_a_recording_in_order_is_read_once() -> None:
    keys = [(10 * i, f"{i}-0") for i in range(1000)]
    out, ordering = run(paged(keys, 100), 400)
    assert out == keys and ordering.reads == 10 and ordering.max_held <= 100


def test_a_recording_nearly_in_order_is_read_once_holding_about_a_page() -> None:
    # offsets from the gateways' clocks run up to 3 pages behind the ids' order
    keys = [(10 * i - (i % 7) * 300, f"{i}-0") for i in range(10_000)]
    out, ordering = run(paged(keys, 100), 400)
    assert out == sorted(keys) and ordering.reads == 100 and ordering.max_held <= 400


def test_a_recording_in_reverse_is_exact_with_bounded_memory() -> None:
    keys = [(-i, f"{i}-0") for i in range(500)]
    out, ordering = run(paged(keys, 10), 50)
    assert out == sorted(keys) and ordering.max_held <= 60
    assert ordering.reads <= 50 * (500 // 50 + 1)


def test_the_pages_must_be_read_as_told() -> None:
    ordering: Ordering[None] = Ordering([PageSummary("1-0", 1, (0, "1-0"), (0, "1-0"))], 1)
    with pytest.raises(ValueError):
        ordering.feed(1, [])
    with pytest.raises(ValueError):
        Ordering([], 0)


def test_slots_limit_in_total_and_per_address() -> None:
    slots = export_policy.ExportSlots(total=3, per_ip=2)
    assert slots.acquire("a") is None and slots.acquire("a") is None
    assert slots.acquire("a") == "per_ip"
    assert slots.acquire("b") is None
    assert slots.acquire("c") == "total"
    slots.release("a")
    assert slots.acquire("c") is None and slots.active == 3
    for ip in ("a", "b", "c"):
        slots.release(ip)
    assert slots.active == 0 and not slots._by_ip  # nothing kept per address
    with pytest.raises(ValueError):
        slots.release("a")


def test_zero_means_unlimited() -> None:
    slots = export_policy.ExportSlots(total=0, per_ip=0)
    assert all(slots.acquire("a") is None for _ in range(100))


META = {"id": "b1", "title": "t", "start": 1_000, "end": 2_000, "by": "m"}


def test_the_etag_changes_with_whatever_changes_the_file() -> None:
    base = export_policy.etag("r", META, "json", 10, "5-0", {"x"})
    assert base == export_policy.etag("r", META, "json", 10, "5-0", ["x"])
    assert base.startswith('"') and base.endswith('"')
    for other in (
        export_policy.etag("r2", META, "json", 10, "5-0", {"x"}),
        export_policy.etag("r", META | {"title": "u"}, "json", 10, "5-0", {"x"}),
        export_policy.etag("r", META, "xml", 10, "5-0", {"x"}),
        export_policy.etag("r", META, "json", 9, "5-0", {"x"}),  # a delete
        export_policy.etag("r", META, "json", 10, "6-0", {"x"}),  # an append
        export_policy.etag("r", META, "json", 10, "5-0", set()),  # a ban lifted
    ):
        assert other != base


def test_if_none_match() -> None:
    tag = '"abc"'
    assert export_policy.not_modified('"abc"', tag)
    assert export_policy.not_modified('"x", W/"abc"', tag)
    assert export_policy.not_modified("*", tag)
    assert not export_policy.not_modified('"abcd"', tag)
    assert not export_policy.not_modified(None, tag) and not export_policy.not_modified("", tag)


def test_only_a_settled_broadcast_may_be_cached() -> None:
    on_air = META | {"end": None}
    assert export_policy.cache_control(on_air, 10**13) == "no-cache"
    just_ended = export_policy.ENDING_WINDOW_MS - 1 + 2_000
    assert export_policy.cache_control(META, just_ended) == "no-cache"
    settled = 2_000 + export_policy.ENDING_WINDOW_MS
    assert export_policy.cache_control(META, settled).startswith("public, max-age=")
