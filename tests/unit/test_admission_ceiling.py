"""``SmoothedCeiling``: the room ingest ceiling on a smoothed offered rate (pure, the
clock is passed in)."""

from __future__ import annotations

import itertools
import random

import pytest

from danmaku.rules.admission import SmoothedCeiling
from danmaku.rules.ratelimit import IngestCeiling

WINDOW_S = 0.5  # the gateways' presence round


def feed(ceiling: SmoothedCeiling, rates: list[float], start: float = 0.0) -> list[float]:
    """Report ``rates`` one window apart; the probability after each report."""
    return [ceiling.observe(r, start + i * WINDOW_S) for i, r in enumerate(rates)]


def test_bursty_room_under_its_ceiling_on_average_is_not_shed() -> None:
    """Windows of 2,300/s and 1,500/s (1,900/s on average, ceiling 2,000/s): the plain
    ceiling sheds 13% of every burst window, the smoothed one under 3% of the first
    (coming from a steady 1,900/s) and nothing after."""
    rates = [1900.0] + [2300.0, 1500.0] * 20
    smoothed = feed(SmoothedCeiling(2000.0), rates)
    assert min(smoothed) > 0.97 and min(smoothed[3:]) == 1.0
    plain = IngestCeiling(2000.0)
    assert min(plain.update(r) for r in rates) == pytest.approx(2000 / 2300)


def test_real_overload_is_shed_from_the_first_report() -> None:
    """20/s, then 100x the ceiling: shed at once, converging to ceiling / rate."""
    c = SmoothedCeiling(2000.0)
    assert feed(c, [20.0] * 4) == [1.0] * 4
    probs = feed(c, [200_000.0] * 20, start=2.0)
    assert probs[0] == pytest.approx(2000 / (200_000 / 1.5))  # the instant term
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(probs))
    assert probs[-1] == pytest.approx(0.01, rel=0.01)  # the mean caught up


def test_a_sustained_rate_just_over_the_ceiling_converges_to_its_share() -> None:
    c = SmoothedCeiling(2000.0)
    probs = feed(c, [20.0] + [2500.0] * 30)
    assert probs[1] == 1.0  # one window over is a burst, not yet an overload
    assert probs[-1] == pytest.approx(2000 / 2500, rel=1e-3)


def test_shedding_stops_soon_after_the_spike() -> None:
    c = SmoothedCeiling(2000.0)
    feed(c, [20_000.0] * 10)
    after = feed(c, [20.0] * 4, start=5.0)
    assert after[0] < 1.0 and after[1] == 1.0  # within two reports (1 s)


def test_irregular_intervals_weigh_by_elapsed_time() -> None:
    a, b = SmoothedCeiling(2000.0), SmoothedCeiling(2000.0)
    a.observe(1000.0, 0.0)
    b.observe(1000.0, 0.0)
    a.observe(3000.0, 0.5)
    a.observe(3000.0, 1.0)
    b.observe(3000.0, 1.0)  # one late report covering the same second
    assert a.rate == pytest.approx(b.rate)
    a.observe(3000.0, 1.0)  # no time passed: the mean does not move
    assert a.rate == pytest.approx(b.rate)


def test_priority_comments_pass_and_zero_disables() -> None:
    rng = random.Random(3)
    c = SmoothedCeiling(2000.0)
    feed(c, [100_000.0] * 10)
    assert all(c.admit(1, rng) for _ in range(1000))  # staff and highlighted
    admitted = sum(c.admit(0, rng) for _ in range(10_000))
    assert 100 < admitted < 400 and c.shed == 10_000 - admitted  # ~2% of ordinary ones
    c.ceiling = 0.0
    assert c.observe(100_000.0, 10.0) == 1.0
    with pytest.raises(ValueError):
        SmoothedCeiling(2000.0, tau_up_s=0.0)
