"""Liveness: the ping schedule, driven by a simulated clock (no I/O).

A simulated peer either answers each ping after some delay, speaks on its own at given
times, or says nothing; the schedule's decisions are checked against what it heard."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.config import Settings
from danmaku.gateway.liveness import GROWTH, Action, Liveness, Peer

TICK = 0.25


def run(
    lv: Liveness,
    peer: Peer,
    until: float,
    *,
    speaks: Sequence[float] = (),
    answers: bool | float = False,  # False: never; else the delay of each answer
) -> list[tuple[float, Action, float]]:
    """Advance tick by tick to ``until``; the peer is heard at ``speaks`` and (with
    ``answers``) that long after each ping. Returns (time, action, interval) per action."""
    events: list[tuple[float, Action, float]] = []
    pending = sorted(speaks)
    now = 0.0
    while now < until:
        now = round(now + TICK, 9)
        while pending and pending[0] <= now:
            lv.now = max(lv.now, pending.pop(0))
            peer.heard = lv.now
        for p, action in lv.due(now):
            assert p is peer
            events.append((now, action, peer.interval))
            if action is Action.CLOSE:
                return events
            if answers is not False:
                pending.append(now + float(answers))
                pending.sort()
    return events


def test_a_silent_peer_is_pinged_after_the_interval_and_closed_after_two_misses() -> None:
    lv, peer = Liveness(15, 60, TICK), Peer()
    lv.add(peer, 0.0)
    events = run(lv, peer, 1000)
    assert [(t, a) for t, a, _ in events] == [
        (15.0, Action.PING),
        (30.0, Action.PING),
        (45.0, Action.CLOSE),
    ]
    assert len(lv) == 0  # a closed peer is no longer scheduled


def test_an_answering_peer_is_never_closed_and_its_interval_grows_to_the_maximum() -> None:
    lv, peer = Liveness(15, 60, TICK), Peer()
    lv.add(peer, 0.0)
    events = run(lv, peer, 3600, answers=0.1)
    assert all(a is Action.PING for _, a, _ in events)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events)]
    # grew after the first answer (counted from the answer, rounded up to a tick)
    assert 15 * GROWTH <= gaps[0] <= 15 * GROWTH + 0.1 + TICK
    assert max(gaps) <= 60 + 0.1 + TICK  # the maximum (plus the answer's delay, a tick)
    assert gaps[-1] >= 60  # and reached it
    assert len(events) < 3600 / 60 + 5  # a peer on a good network costs few pings


def test_a_miss_falls_back_to_the_minimum_and_an_answer_resets_the_misses() -> None:
    lv, peer = Liveness(10, 60, TICK), Peer()
    lv.add(peer, 0.0)
    # Answers the first three pings, then misses one, then answers again.
    events: list[tuple[float, Action, float]] = []
    now, answered = 0.0, 0
    while now < 400:
        now = round(now + TICK, 9)
        for _, action in lv.due(now):
            assert action is Action.PING
            events.append((now, action, peer.interval))
            answered += 1
            if answered != 4:
                lv.now = now
                peer.heard = now
    intervals = [i for _, _, i in events]
    # each ping waits for its answer as long as the interval then running
    assert intervals[:4] == [10, 15, 22.5, 33.75]  # grows while answered; 4th missed
    assert intervals[4] == 10  # fell back after the miss
    assert intervals[5:7] == [15, 22.5]  # and grows again after an answer


def test_a_peer_that_speaks_is_never_pinged() -> None:
    lv, peer = Liveness(5, 30, TICK), Peer()
    lv.add(peer, 0.0)
    assert run(lv, peer, 600, speaks=[i * 4.0 for i in range(1, 151)]) == []


def test_forgotten_peers_are_neither_pinged_nor_closed() -> None:
    lv = Liveness(1, 4, TICK)
    peers = [Peer() for _ in range(100)]
    for i, p in enumerate(peers):
        lv.add(p, i * 0.01)
    for p in peers[::2]:
        lv.forget(p)
    lv.forget(peers[0])  # idempotent
    seen: set[int] = set()
    now = 0.0
    while now < 20:
        now += TICK
        for p, _ in lv.due(now):
            seen.add(id(p))
    assert seen == {id(p) for p in peers[1::2]}
    assert len(lv) == 0


@settings(max_examples=200, deadline=None)
@given(
    min_s=st.sampled_from([0.3, 1.0, 5.0, 15.0]),
    factor=st.sampled_from([1.0, 2.0, 4.0]),
    speaks=st.lists(st.floats(0, 300, allow_nan=False), max_size=30),
    answers=st.one_of(st.just(False), st.floats(0, 2, allow_nan=False)),
    start=st.floats(0, 10, allow_nan=False),
)
def test_schedule_properties(
    min_s: float, factor: float, speaks: list[float], answers: bool | float, start: float
) -> None:
    """Whatever the peer does: never a ping to one heard within its interval; closed
    exactly at the second missed ping in a row, and no later than 2 x max + min (+ 2
    ticks per wait) after it was last heard; the interval within [min, max]."""
    max_s = min_s * factor
    lv, peer = Liveness(min_s, max_s, TICK), Peer()
    lv.add(peer, start)
    heard = [start]
    events: list[tuple[float, Action]] = []
    pending = sorted(s for s in speaks if s > start)
    now = start
    while now < start + 400:
        now += TICK
        while pending and pending[0] <= now:
            lv.now = max(lv.now, pending.pop(0))
            peer.heard = lv.now
            heard.append(lv.now)
        last = max(heard)
        before = peer.interval
        for _, action in lv.due(now):
            assert min_s <= peer.interval <= max_s
            if action is Action.PING:
                # silent for at least the interval that was running
                assert now - last >= min(before, peer.interval) - 1e-9
            events.append((now, action))
            if action is not Action.CLOSE and answers is not False:
                pending.append(now + float(answers))
                pending.sort()
        if events and events[-1][1] is Action.CLOSE:
            break
    closes = [t for t, a in events if a is Action.CLOSE]
    assert len(closes) <= 1
    if answers is not False and answers < min_s - TICK:
        assert not closes  # a peer that answers within the minimum is never closed
    if closes:
        t = closes[0]
        pings = [p for p, a in events if a is Action.PING]
        last = max(h for h in heard if h <= t)
        # the two pings before the close went out after the peer was last heard
        assert len(pings) >= 2 and all(p > last for p in pings[-2:])
        assert t - last <= 2 * max_s + min_s + 6 * TICK  # each wait: up to 2 ticks more


behaviours = st.tuples(
    st.floats(0, 5, allow_nan=False),  # when it connects
    st.lists(st.floats(0, 200, allow_nan=False), max_size=10),  # when it speaks
    st.one_of(st.just(False), st.floats(0, 1, allow_nan=False)),  # answers: delay or never
)


def simulate(
    lv: Liveness[Peer], peers: list[tuple[Peer, tuple[float, list[float], bool | float]]]
) -> list[list[tuple[float, Action]]]:
    """Drive ``peers`` (each with its behaviour) in ``lv`` tick by tick for 200 s: the
    actions each got."""
    index = {id(p): i for i, (p, _) in enumerate(peers)}
    events: list[list[tuple[float, Action]]] = [[] for _ in peers]
    heard: list[tuple[float, int]] = sorted(  # (when, peer) a peer is heard
        (t, i) for i, (_, (start, speaks, _)) in enumerate(peers) for t in speaks if t > start
    )
    added = [False] * len(peers)
    now = 0.0
    while now < 200:
        now = round(now + TICK, 9)
        for i, (p, (start, _, _)) in enumerate(peers):
            if not added[i] and start <= now:
                lv.add(p, start)
                added[i] = True
        while heard and heard[0][0] <= now:
            when, i = heard.pop(0)
            lv.now = max(lv.now, when)
            peers[i][0].heard = when  # (not lv.now: another peer's doings must not count)
        pings, closes = lv.sweep(now)
        for p in closes:
            events[index[id(p)]].append((now, Action.CLOSE))
        for p in pings:
            i = index[id(p)]
            events[i].append((now, Action.PING))
            answers = peers[i][1][2]
            if answers is not False:
                heard.append((now + float(answers), i))
                heard.sort()
    return events


@settings(max_examples=100, deadline=None)
@given(st.lists(behaviours, min_size=2, max_size=6), st.sampled_from([(1.0, 4.0), (2.0, 2.0)]))
def test_many_peers_in_one_wheel_get_what_each_gets_alone(
    kinds: list[tuple[float, list[float], bool | float]], bounds: tuple[float, float]
) -> None:
    """``sweep`` decides a tick's peers in one pass, sharing bucket look-ups: each peer's
    pings and close are exactly those it gets in a schedule of its own."""
    got = simulate(Liveness(*bounds, TICK), [(Peer(), k) for k in kinds])
    for kind, mine in zip(kinds, got, strict=True):
        assert simulate(Liveness(*bounds, TICK), [(Peer(), kind)]) == [mine]
    assert any(got), "nothing happened: not a test"


def test_negative_ping_settings_are_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="DANMAKU_PING"):
        Settings(ping_min_s=-1.0)
    with pytest.raises(ValueError, match="DANMAKU_PING"):
        Settings(ping_max_s=-1.0)
    assert Settings(ping_min_s=0.0).ping_min_s == 0.0  # 0: off


def test_a_maximum_below_the_minimum_is_the_minimum() -> None:
    lv, peer = Liveness(10, 4, TICK), Peer()
    lv.add(peer, 0.0)
    events = run(lv, peer, 200, answers=0.1)
    assert lv.max_s == 10 and all(i == 10 for _, _, i in events)
