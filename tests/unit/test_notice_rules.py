"""The pure parts of notices (rules/notices.py): whom a committer tells, and when a
gateway's feed reads a room without being told."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.rules.notices import FeedSchedule, HolderCache, by_holder

ROOMS = [f"r{i}" for i in range(6)]
GATEWAYS = ["g1", "g2", "g3"]


def test_holders_are_read_again_only_after_the_cache_period() -> None:
    cache = HolderCache(1.0)
    assert cache.stale(["a", "b", "a"], 0.0) == ["a", "b"]  # never read; each once
    cache.put("a", ["g2", "g1", "g1"], 0.0)
    assert cache.holders("a") == ("g1", "g2")
    assert cache.stale(["a", "b"], 0.999) == ["b"]
    assert cache.stale(["a"], 1.0) == ["a"]
    assert cache.holders("b") == ()
    # ttl 0: read on every commit
    never = HolderCache(0.0)
    never.put("a", ["g1"], 5.0)
    assert never.stale(["a"], 5.0) == ["a"]


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([f"x{i}" for i in range(300)]),
            st.lists(st.sampled_from(GATEWAYS), max_size=3),
            st.floats(0, 0.5),
        ),
        max_size=150,
    )
)
def test_the_cache_keeps_what_it_read_within_its_period_and_stays_bounded(
    puts: list[tuple[str, list[str], float]],
) -> None:
    cache = HolderCache(1.0)
    now = 0.0
    seen: dict[str, tuple[float, tuple[str, ...]]] = {}
    for room, holders, step in puts:
        now += step
        cache.put(room, holders, now)
        seen[room] = (now, tuple(sorted(set(holders))))
        fresh = {r: h for r, (at, h) in seen.items() if now - at < 1.0}
        for r, h in fresh.items():  # pruning never drops an entry still trusted
            assert cache.holders(r) == h
        assert not set(cache.stale(fresh, now))
        assert len(cache) <= max(64, 2 * len(fresh)) + 1


@given(
    st.lists(st.sampled_from(ROOMS), max_size=10),
    st.dictionaries(
        st.sampled_from(ROOMS), st.lists(st.sampled_from(GATEWAYS), unique=True, max_size=3)
    ),
)
def test_each_holder_gets_one_notice_naming_exactly_its_rooms(
    rooms: list[str], holders: dict[str, list[str]]
) -> None:
    out = by_holder(rooms, holders)
    pairs = {(g, r) for g, named in out.items() for r in named}
    expected = {(g, r) for r in set(rooms) for g in holders.get(r, ())}
    assert pairs == expected
    for named in out.values():
        assert len(named) == len(set(named))  # a room once per notice
        assert named == [r for r in dict.fromkeys(rooms) if r in named]  # in commit order


def test_a_new_room_is_polled_while_fresh_then_only_swept_when_quiet() -> None:
    s = FeedSchedule(sweep_s=5.0, fresh_s=1.0, poll_s=0.1, refresh_s=5.0)
    assert s.sync({"a"}, 0.0) == ({"a"}, set())
    assert s.due(0.05) == (set(), set())  # just read (the wake-up names it)
    assert s.due(0.1) == ({"a"}, set())
    s.heard({"a"}, 0.1)
    assert s.wait_s(0.1, 1.0) == pytest.approx(0.1)  # the next poll
    assert s.due(1.2) == (set(), set())  # no longer fresh, heard 1.1 s ago
    assert s.fresh == set()
    assert s.wait_s(1.2, 1.0) == 1.0
    assert s.due(5.1) == (set(), {"a"})  # quiet for 5 s: swept
    s.heard({"a"}, 5.1)
    assert s.due(6.0) == (set(), set())
    assert s.sync(set(), 6.0) == (set(), {"a"})
    assert s.due(100.0) == (set(), set())


def test_quiet_rooms_heard_at_spread_times_are_swept_together() -> None:
    # Regression: each room's own sweep time made the feed wake and read once per room
    # (50 idle rooms, sweep 5 s: 10 round trips a second instead of one).
    s = FeedSchedule(sweep_s=5.0, fresh_s=0.0, poll_s=0.1, refresh_s=5.0)
    rooms = [f"r{i}" for i in range(50)]
    for i in range(len(rooms)):
        s.sync({*rooms[: i + 1]}, i * 0.1)
    now, reads, last = 5.0, 0, {room: i * 0.1 for i, room in enumerate(rooms)}
    while now < 25.0:
        now += s.wait_s(now, 1.0)
        fresh, quiet = s.due(now)
        assert not fresh
        if quiet:
            reads += 1
            s.heard(quiet, now)
            last |= dict.fromkeys(quiet, now)
        assert all(now - at <= 5.0 for at in last.values())
    assert reads <= 21  # one read per second at most, for all the rooms found


def test_a_room_stays_fresh_for_the_period_after_its_registration_landed() -> None:
    s = FeedSchedule(sweep_s=5.0, fresh_s=1.0, poll_s=0.1, refresh_s=5.0)
    s.sync({"a"}, 0.0)
    s.registered({"a", "gone"}, 0.8)  # a slow registration; "gone" is not local
    assert s.fresh == {"a"}
    assert s.due(1.5) == ({"a"}, set())  # polled until 1.8, not 1.0
    assert s.due(1.9) == (set(), set()) and s.fresh == set()


def test_registrations_are_refreshed_every_period() -> None:
    s = FeedSchedule(sweep_s=5.0, fresh_s=1.0, poll_s=0.1, refresh_s=5.0)
    assert s.refresh_due(0.0)
    s.refreshed(0.0)
    assert not s.refresh_due(4.9) and s.next_refresh_s(4.0) == 1.0
    assert s.refresh_due(5.0)
    s.refresh_now()
    assert s.refresh_due(0.0)


@settings(max_examples=150)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("sync"), st.sets(st.sampled_from(ROOMS))),
            st.tuples(st.just("heard"), st.sets(st.sampled_from(ROOMS))),
            st.tuples(st.just("feed"), st.floats(0.0, 3.0)),
        ),
        max_size=60,
    )
)
def test_no_local_room_goes_unread_for_longer_than_the_sweep(ops: list[tuple]) -> None:
    # The feed as the schedule drives it: it waits at most wait_s, then reads what is due.
    # Whatever notices come (heard) or not, and however rooms come and go, no local room
    # is left unread longer than sweep_s, and a fresh room no longer than poll_s.
    sweep, poll = 2.0, 0.1
    s = FeedSchedule(sweep_s=sweep, fresh_s=0.5, poll_s=poll, refresh_s=5.0)
    now = 0.0
    last: dict[str, float] = {}  # the model: when each local room was last read or named
    fresh_until: dict[str, float] = {}
    for op, arg in ops:
        if op == "sync":
            added, removed = s.sync(arg, now)
            assert added == arg - set(last) and removed == set(last) - arg
            for room in removed:
                del last[room]
                fresh_until.pop(room, None)
            for room in added:
                last[room] = now  # read at once (the registration wakes the wait)
                fresh_until[room] = now + 0.5
        elif op == "heard":
            s.heard(arg, now)
            for room in arg & set(last):
                last[room] = now
        else:
            wait = s.wait_s(now, arg)
            assert 0 <= wait <= arg
            now += wait
            fresh, quiet = s.due(now)
            assert fresh | quiet <= set(last) and not fresh & quiet
            for room, at in last.items():
                if now - at >= sweep:
                    assert room in fresh | quiet, (room, at, now)
                if fresh_until.get(room, -1.0) > now and now - at >= poll:
                    assert room in fresh
            s.heard(fresh | quiet, now)
            for room in fresh | quiet:
                last[room] = now
        if op == "feed":
            assert all(now - at < sweep for at in last.values())
