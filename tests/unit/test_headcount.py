"""``HeadCount`` (a gateway's presence report of a room) against a model of what Redis
holds: the listed users are exactly those present, a HyperLogLog bucket never misses one,
whatever the users do and whichever writes fail."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.rules.headcount import (
    HLL_BUCKET_MS,
    LIST_REFRESH_MS,
    HeadCount,
    LocalViewers,
    QuietRounds,
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


# --- QuietRounds: an idle gateway does not rewrite what Redis holds -----------------------

ROOM = "r1"


def _round(
    rounds: QuietRounds,
    report: LocalViewers | None,
    now_ms: int,
    offered: float = 0.0,
    shed: float = 0.0,
) -> bool:
    """One presence round of one room; ``True`` when its report is written."""
    reports = {ROOM: report}
    rates, sheds = {ROOM: offered}, {ROOM: shed}
    quiet = rounds.quiet(reports, rates, sheds, now_ms)
    rounds.written(reports, quiet, rates, sheds, now_ms)
    return ROOM not in quiet


def test_a_quiet_room_is_rewritten_every_rewrite_ms_and_news_at_once() -> None:
    rounds = QuietRounds(rewrite_ms=2000)
    same = LocalViewers(5, 5)
    assert _round(rounds, same, 0)  # new here
    assert not _round(rounds, same, 500)
    assert not _round(rounds, same, 1500)
    assert _round(rounds, same, 2000)  # kept fresh
    assert _round(rounds, LocalViewers(6, 6), 2500)  # a connection came
    assert _round(rounds, LocalViewers(6, 5, ("u",)), 3000)  # a user list to write
    assert not _round(rounds, LocalViewers(6, 5), 3500)
    assert _round(rounds, LocalViewers(6, 5), 4000, offered=3.0)  # comments offered
    assert _round(rounds, LocalViewers(6, 5), 4500)  # their rate falls back to 0
    assert not _round(rounds, LocalViewers(6, 5), 5000)
    assert _round(rounds, LocalViewers(6, 5), 5500, shed=1.0)
    assert _round(rounds, LocalViewers(6, 5), 6000)
    hll = LocalViewers(6, 0, None, True, ("a", "b"), 1)
    assert _round(rounds, hll, 6500)  # newcomers for the HyperLogLog
    assert not _round(rounds, LocalViewers(6, 0, None, True, (), 1), 7000)
    assert _round(rounds, None, 7500)  # gone: the report is removed
    assert _round(rounds, LocalViewers(1, 1), 8000)  # back: new again


def test_a_failed_round_makes_the_next_write_everything() -> None:
    rounds = QuietRounds(rewrite_ms=2000)
    assert _round(rounds, LocalViewers(2, 2), 0)
    rounds.failed()
    assert _round(rounds, LocalViewers(2, 2), 500)


# Mostly the same report (a quiet room), now and then a change or a list to write.
_reports = st.sampled_from(
    [None, *[LocalViewers(2, 1)] * 4, LocalViewers(3, 1), LocalViewers(2, 1, ("u1",))]
)


@settings(max_examples=300)  # quiet stretches long enough to need a rewrite are rarer
@given(
    st.lists(
        st.tuples(
            st.integers(100, 1500),  # ms to the next round
            _reports,
            st.sampled_from([0.0] * 4 + [2.0]),
            st.sampled_from([0.0] * 4 + [1.0]),
            st.sampled_from([False] * 9 + [True]),  # the round's write fails
        ),
        max_size=60,
    )
)
def test_what_redis_holds_is_never_stale_nor_older_than_the_bound(
    steps: list[tuple[int, LocalViewers | None, float, float, bool]],
) -> None:
    """Replaying rounds against a model of Redis (what was last written, and when):
    after every successful round, Redis holds the latest report's counts and rates,
    written at most ``rewrite_ms`` ago (well inside readers' 5 s freshness)."""
    rounds = QuietRounds(rewrite_ms=2000)
    # conns, anonymous, offered, shed, the user list (None: the one written before)
    held: tuple[int, int, float, float] | None = None
    users: tuple[str, ...] | None = None
    held_at = -1
    now = 0
    for gap, report, offered, shed, fails in steps:
        now += gap
        reports = {ROOM: report}
        rates, sheds = {ROOM: offered}, {ROOM: shed}
        quiet = rounds.quiet(reports, rates, sheds, now)
        if fails:
            rounds.failed()
            continue
        if ROOM not in quiet:
            held = None if report is None else (report.conns, report.anonymous, offered, shed)
            held_at = now
            if report is not None and report.users is not None:
                users = report.users
        rounds.written(reports, quiet, rates, sheds, now)
        if report is None:
            assert held is None
            continue
        assert held == (report.conns, report.anonymous, offered, shed)
        assert now - held_at < 2000
        if report.users is not None:
            assert users == report.users
