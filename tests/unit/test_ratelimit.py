"""Token bucket, slow mode, duplicate guard and ingest ceiling: pure, with ``now`` passed in."""

from __future__ import annotations

import math
import random

import pytest

from danmaku.rules.ratelimit import (
    DoorBuckets,
    DuplicateGuard,
    IngestCeiling,
    SlowMode,
    TokenBucket,
    admission_probability,
    take_tokens,
)


# ---- token bucket ---------------------------------------------------------------------------
def test_bucket_allows_burst_then_asks_to_wait() -> None:
    b = TokenBucket(rate=1.0, burst=3)
    assert [b.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(100.0) == pytest.approx(1.0)
    assert b.take(100.5) == pytest.approx(0.5)
    assert b.take(101.0) == 0.0  # waiting exactly retry_after succeeds
    assert b.take(101.0) == pytest.approx(1.0)


def test_refused_take_consumes_nothing() -> None:
    b = TokenBucket(rate=2.0, burst=1)
    assert b.take(0.0) == 0.0
    for _ in range(10):
        assert b.take(0.25) == pytest.approx(0.25)
    assert b.take(0.5) == 0.0


def test_refill_is_capped_at_burst() -> None:
    b = TokenBucket(rate=1.0, burst=3)
    b.take(0.0)
    allowed = sum(b.take(1000.0) == 0.0 for _ in range(10))
    assert allowed == 3


def test_sustained_rate_is_honoured() -> None:
    b = TokenBucket(rate=1.0, burst=3)
    allowed = sum(b.take(i / 100) == 0.0 for i in range(10_000))  # 100 s, 100 tries/s
    assert allowed in (3 + 99, 3 + 100)


def test_impossible_requests_wait_forever() -> None:
    assert TokenBucket(rate=1.0, burst=2).take(0.0, n=3) == math.inf
    b = TokenBucket(rate=0.0, burst=1)
    assert b.take(0.0) == 0.0
    assert b.take(1e9) == math.inf


def test_clock_stepping_back_mints_nothing() -> None:
    b = TokenBucket(rate=1.0, burst=1)
    assert b.take(50.0) == 0.0
    assert b.take(10.0) > 0.0
    assert b.take(50.5) == pytest.approx(0.5)


def test_state_round_trip_and_pure_step() -> None:
    a = TokenBucket(rate=1.0, burst=3)
    a.take(0.0)
    a.take(0.0)
    state = a.state(0.0)
    assert state == (1.0, 0.0)
    b = TokenBucket.from_state(1.0, 3, state)
    for t in (0.0, 0.0, 0.4, 1.0, 1.2, 5.0):
        assert a.take(t) == b.take(t)
    assert take_tokens(0.0, 0.0, 0.5, 1.0, 3.0) == pytest.approx((0.5, 0.5, 0.5))
    assert TokenBucket.from_state(1.0, 3, None).take(0.0) == 0.0
    assert TokenBucket(rate=0.5, burst=3).idle_ttl == 6.0


def test_peek_does_not_change_the_bucket() -> None:
    b = TokenBucket(rate=1.0, burst=1)
    assert b.peek(0.0) == 0.0
    assert b.peek(0.0) == 0.0
    assert b.take(0.0) == 0.0
    assert b.peek(0.0) == pytest.approx(1.0)


# ---- slow mode ------------------------------------------------------------------------------
def test_slow_mode() -> None:
    slow = SlowMode(10.0)
    assert slow.check(None, 5.0) == 0.0
    assert slow.check(100.0, 103.0) == pytest.approx(7.0)
    assert slow.check(100.0, 110.0) == 0.0
    assert slow.check(100.0, 200.0) == 0.0
    assert SlowMode(0).check(100.0, 100.0) == 0.0


# ---- duplicate guard ------------------------------------------------------------------------
def test_duplicate_refused_within_window_by_normalised_text() -> None:
    g = DuplicateGuard(window_s=30.0)
    assert g.admit("u1", "666", 0.0) == 0.0
    assert g.admit("u1", "６６６６ ", 10.0) == pytest.approx(20.0)
    assert g.admit("u2", "666", 10.0) == 0.0  # another user
    assert g.admit("u1", "777", 10.0) == 0.0  # another text
    assert g.admit("u1", "666", 29.0) == pytest.approx(1.0)  # refusals do not restart it
    assert g.admit("u1", "666", 30.0) == 0.0
    assert g.admit("u1", "666", 31.0) > 0.0


def test_check_records_nothing() -> None:
    g = DuplicateGuard()
    assert g.check("u", "hi", 0.0) == 0.0
    assert g.check("u", "hi", 0.0) == 0.0
    g.record("u", "hi", 0.0)
    assert g.check("u", "HI", 1.0) == pytest.approx(29.0)


def test_duplicate_guard_state_is_bounded_oldest_evicted() -> None:
    g = DuplicateGuard(window_s=30.0, max_entries=100)
    for i in range(1000):
        g.record(f"u{i}", "same", i / 1000)
        assert len(g) <= 100
    assert g.check("u0", "same", 1.0) == 0.0  # evicted: fails open
    assert g.check("u999", "same", 1.0) > 0.0  # recent: still refused
    assert g.check("u900", "same", 1.0) > 0.0


def test_expired_entries_are_forgotten() -> None:
    g = DuplicateGuard(window_s=30.0)
    for i in range(50):
        g.record(f"u{i}", "x", 0.0)
    g.record("late", "x", 31.0)
    assert len(g) == 1


# ---- ingest ceiling -------------------------------------------------------------------------
def test_admission_probability() -> None:
    assert admission_probability(100.0, 2000.0) == 1.0
    assert admission_probability(2000.0, 2000.0) == 1.0
    assert admission_probability(8000.0, 2000.0) == 0.25
    assert admission_probability(1e9, 0.0) == 1.0  # 0 = no ceiling


def test_ceiling_sheds_ordinary_only_at_the_right_share() -> None:
    c = IngestCeiling(ceiling=2000.0)
    rng = random.Random(5)
    assert c.update(10_000.0) == pytest.approx(0.2)
    admitted = sum(c.admit(0, rng) for _ in range(20_000))
    assert 3600 < admitted < 4400
    assert c.shed == 20_000 - admitted
    assert all(c.admit(1, rng) for _ in range(1000))
    assert all(c.admit(2, rng) for _ in range(1000))
    assert c.shed == 20_000 - admitted


def test_below_ceiling_admits_all_without_drawing() -> None:
    c = IngestCeiling()
    c.update(1500.0)
    rng = random.Random(1)
    before = rng.getstate()
    assert all(c.admit(0, rng) for _ in range(100))
    assert rng.getstate() == before
    assert c.shed == 0


def test_update_from_admitted_estimates_offered_rate() -> None:
    c = IngestCeiling(ceiling=2000.0)
    offered = 10_000.0
    c.update_from_admitted(offered)  # nothing shed yet: admitted == offered
    assert c.probability == pytest.approx(0.2)
    c.update_from_admitted(offered * c.probability)  # steady state stays put
    assert c.probability == pytest.approx(0.2)
    c.update_from_admitted(500.0 * c.probability)  # the spike is over: 500/s offered
    assert c.probability == 1.0
    c.update_from_admitted(2500.0 * c.probability)  # back above the ceiling
    assert c.probability == pytest.approx(0.8)


# ---- the door's buckets (model of scripts.INGEST) ------------------------------------------
def test_door_buckets_keep_staff_and_ordinary_apart() -> None:
    door = DoorBuckets(rate=1.0, burst=2, staff_rate=10.0, staff_burst=3)
    assert [door.take("m", True, 0.0) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]
    assert [door.take("m", False, 0.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert door.take("m", True, 0.1) == 0.0  # refilled at the staff rate
    assert door.take("other", True, 0.0) == 0.0


def test_door_buckets_staff_rate_zero_is_unlimited() -> None:
    door = DoorBuckets(rate=1.0, burst=1, staff_rate=0.0, staff_burst=0)
    assert all(door.take("m", True, 0.0) == 0.0 for _ in range(1000))
    assert door.take("u", False, 0.0) == 0.0 and door.take("u", False, 0.0) > 0.0
