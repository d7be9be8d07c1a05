"""Background loops restart after a capped backoff, under trio's fake clock."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from danmaku.metrics import Metrics
from danmaku.supervise import Backoff, LoopHealth, supervise


def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    b = Backoff(first=0.1, cap=1.0, stable_s=5.0)
    b.started(0.0)
    delays = []
    now = 0.0
    for _ in range(6):
        delays.append(b.failed(now))
        now += delays[-1]
        b.started(now)
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert not b.stable(now + 4.9) and b.stable(now + 5.0)
    assert b.failed(now + 5.0) == 0.1  # ran long enough: starts over


async def test_a_failing_loop_is_restarted_reported_and_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics(process=False)
    health = LoopHealth(metrics)
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(trio.current_time())
        if len(runs) <= 3:
            raise ValueError(f"boom {len(runs)}")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervise, "presence", flaky, health, Backoff(0.5, 10.0, 3.0))
        await trio.sleep(1.0)
        assert "presence" in health.failing()
        assert metrics.loop_failing.labels("presence")._value.get() == 1
        await trio.sleep(10.0)
        assert health.failing() == {}  # ran 3 s since the last restart
        assert metrics.loop_failing.labels("presence")._value.get() == 0
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps == [0.5, 1.0, 2.0]
    assert metrics.loop_restarts.labels("presence")._value.get() == 3


async def test_a_loop_that_returns_is_restarted_and_cancellation_is_not_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    health = LoopHealth(Metrics(process=False))
    calls = 0

    async def returns() -> None:
        nonlocal calls
        calls += 1

    with trio.move_on_after(0.95):  # starts at 0, 0.1, ..., 0.9
        await supervise("tick", returns, health, Backoff(0.1, 0.1, 5.0))
    assert calls == 10
    assert "tick" in health.failing()

    async def waits() -> None:
        await trio.sleep_forever()

    quiet = LoopHealth(Metrics(process=False))
    with trio.move_on_after(1.0):
        await supervise("renew", waits, quiet)
    assert quiet.failing() == {}
