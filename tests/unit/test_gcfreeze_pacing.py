"""FreezeOnGrowth (when to keep connections out of full GC walks) and PacedListener
(accepting a storm at a set rate), without a network: decisions and a virtual clock."""

from __future__ import annotations

import gc

import trio
import trio.testing

from danmaku.gateway.listener import PacedListener
from danmaku.gcfreeze import FreezeOnGrowth


def test_freezes_as_the_crowd_grows_and_thaws_when_it_halves() -> None:
    policy = FreezeOnGrowth(floor=1000, grow=0.1, shrink=0.5)
    assert [policy.decide(n) for n in (0, 10, 999)] == [None, None, None]
    assert policy.decide(1000) == "freeze"
    assert policy.decide(1050) is None  # under 10% more: the walked part is still small
    assert policy.decide(1100) == "freeze"
    steps = [policy.decide(n) for n in range(1100, 11_001, 10)]
    # A freeze per 10% of growth (at most log(10) / log(1.1) = 24 of them), no more.
    assert 20 <= steps.count("freeze") <= 24
    assert policy.decide(10_000) is None  # a few leaving: frozen garbage stays bounded
    assert policy.decide(policy.base // 2) == "refreeze"
    assert policy.decide(policy.base) is None


def test_apply_moves_objects_to_the_permanent_generation() -> None:
    try:
        before = gc.get_freeze_count()
        survivors = [[i] for i in range(1000)]  # tracked objects made after `before`
        # A freeze does not count what it froze (the count walks every frozen object)...
        assert FreezeOnGrowth.apply("freeze") is None
        assert gc.get_freeze_count() >= before + len(survivors)
        # ...a refreeze does (it has just walked the heap to collect it anyway).
        refrozen = FreezeOnGrowth.apply("refreeze")
        assert refrozen == gc.get_freeze_count() >= len(survivors)
    finally:
        gc.unfreeze()


class Ready(trio.abc.Listener[trio.abc.AsyncResource]):
    """A listener whose connections are always waiting (a storm in the backlog)."""

    def __init__(self) -> None:
        self.accepted = 0

    async def accept(self) -> trio.abc.AsyncResource:
        await trio.lowlevel.checkpoint()
        self.accepted += 1
        return trio.testing.MemorySendStream()

    async def aclose(self) -> None:
        pass


async def test_a_storm_is_accepted_at_the_set_rate(autojump_clock: trio.testing.MockClock) -> None:
    inner = Ready()
    paced = PacedListener(inner, per_s=100, burst=10)
    start = trio.current_time()
    for _ in range(510):
        await paced.accept()
    elapsed = trio.current_time() - start
    # 10 at once, then 100 per second: the other 500 take 5 s.
    assert 4.9 <= elapsed <= 5.2, elapsed
    assert inner.accepted == 510


async def test_unpaced_when_the_rate_is_zero(autojump_clock: trio.testing.MockClock) -> None:
    paced = PacedListener(Ready(), per_s=0, burst=0)
    start = trio.current_time()
    for _ in range(1000):
        await paced.accept()
    assert trio.current_time() == start
