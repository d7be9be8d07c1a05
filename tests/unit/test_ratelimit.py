"""Token bucket, the door's buckets and the ingest ceiling: pure, with ``now`` passed in."""

from __future__ import annotations

import math
import random

import pytest

from danmaku.rules.ratelimit import (
    DoorBuckets,
    IngestCeiling,
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
