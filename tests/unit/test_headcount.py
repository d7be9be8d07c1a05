"""``HeadCount`` (a gateway's presence report of a room) against a model of what Redis
holds: the listed users are exactly those present, a HyperLogLog bucket never misses one,
whatever the users do and whichever writes fail."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from danmaku.rules.headcount import (
    HLL_BUCKET_MS,
    LIST_REFRESH_MS,
    HeadCount,
    LocalViewers,
    hll_bucket,
)

uids = st.frozensets(st.sampled_from([f"u{i}" for i in range(12)]), max_size=12)


@given(
    rounds=st.lists(st.tuples(uids, st.booleans(), st.integers(0, 4000)), max_size=30),
    exact_max=st.integers(0, 8),
    with_joined=st.booleans(),
)
def test_reports_keep_what_redis_holds_equal_to_the_users_present(
    rounds: list[tuple[frozenset[str], bool, int]], exact_max: int, with_joined: bool
) -> None:
    """Whatever the users do, and whichever writes fail: after each confirmed round the
    list Redis holds (exact mode) is exactly the users present, and the current
    HyperLogLog bucket (big rooms) holds at least them (so the count never misses a
    present user; leavers age out with the bucket)."""
    head = HeadCount(exact_max)
    listed: set[str] | None = None
    buckets: dict[int, set[str]] = {}
    now_ms = 1_000_000
    before: frozenset[str] = frozenset()  # the users at the last report (the hub's joined)
    for users, write_ok, step in rounds:
        now_ms += step
        joined = users - before if with_joined else None
        before = users
        report: LocalViewers = head.report(users, 1, len(users) + 1, now_ms, joined)
        assert report.conns == len(users) + 1 and report.anonymous == 1
        if not write_ok:
            continue  # the write failed: nothing confirmed, Redis unchanged
        if report.hll:
            listed = None
            buckets.setdefault(report.bucket, set()).update(report.hll_add)
            assert users <= buckets[report.bucket]
        else:
            if report.users is not None:
                listed = set(report.users)
            assert listed == set(users)
        head.confirm(report, now_ms)


def test_an_unchanged_list_is_not_rewritten_until_the_refresh() -> None:
    head = HeadCount(10)
    first = head.report({"a", "b"}, 0, 2, 0)
    assert first.users == ("a", "b")
    head.confirm(first, 0)
    assert head.report({"a", "b"}, 0, 2, 500).users is None
    assert head.report({"a"}, 0, 1, 500).users == ("a",)
    assert head.report({"a", "b"}, 0, 2, LIST_REFRESH_MS).users == ("a", "b")


def test_a_big_room_adds_everyone_once_per_bucket_then_only_newcomers() -> None:
    head = HeadCount(2)
    users = {"a", "b", "c"}
    first = head.report(users, 0, 3, 0)
    assert first.hll and first.users is None and set(first.hll_add) == users
    head.confirm(first, 0)
    again = head.report(users | {"d"}, 0, 4, 100)
    assert again.hll_add == ("d",) and again.bucket == hll_bucket(100)
    head.confirm(again, 100)
    later = 3 * HLL_BUCKET_MS  # a later bucket: rebuilt from scratch
    assert set(head.report(users, 0, 3, later).hll_add) == users
