"""Error boundaries for a process's background loops.

A background loop (the gateway's presence report, its frame feed, the worker's tick,
discovery, lease renewal, ...) must not take its process down when it fails: it is
restarted after a capped exponential backoff, the failure is logged once, counted, and
visible in ``/readyz`` until the loop has run for a while again.

``Backoff`` decides the delays (pure, takes ``now``); ``LoopHealth`` keeps which loops
are failing (one per process, shared by every role of ``danmaku up``); ``supervise``
runs a loop under both. Cancellation passes through untouched: stopping a service is
never a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from danmaku.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Delays before restarting a failed loop: ``first``, doubling to ``cap``; a loop that
    ran ``stable_s`` without failing starts again from ``first``."""

    first: float = 0.1
    cap: float = 30.0
    stable_s: float = 10.0
    _next: float = 0.0
    _started: float = float("-inf")

    def started(self, now: float) -> None:
        """The loop (re)starts at ``now``."""
        self._started = now

    def failed(self, now: float) -> float:
        """The loop failed at ``now``: how long to wait before restarting it."""
        if now - self._started >= self.stable_s:
            self._next = 0.0
        self._next = self.first if self._next <= 0 else min(self.cap, self._next * 2)
        return self._next

    def stable(self, now: float) -> bool:
        """Has the loop run long enough since its last start to count as healthy?"""
        return now - self._started >= self.stable_s


class LoopHealth:
    """Which of a process's supervised loops are failing, and why (for ``/readyz``).

    A loop is failing from an exception until it has run ``Backoff.stable_s`` after its
    restart. Updates the ``danmaku_loop_*`` metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._failing: dict[str, str] = {}

    def failed(self, loop: str, error: BaseException) -> None:
        self._failing[loop] = f"{type(error).__name__}: {error}"[:200]
        self.metrics.loop_restarts.labels(loop).inc()
        self.metrics.loop_failing.labels(loop).set(1)

    def recovered(self, loop: str) -> None:
        if self._failing.pop(loop, None) is not None:
            self.metrics.loop_failing.labels(loop).set(0)

    def failing(self) -> dict[str, str]:
        """Loop name -> its last error, for the loops failing now."""
        return dict(self._failing)


def first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (or ``exc`` itself), for a one-line log."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def supervise(
    name: str,
    loop: Callable[..., Awaitable[object]],
    health: LoopHealth,
    backoff: Backoff | None = None,
    *,
    service: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``loop()`` until cancelled, restarting it after a backoff whenever it raises
    (or returns: a background loop that ends is a bug too). Never raises but
    ``Cancelled``. Each failure is logged once at warning level.

    ``service=True``: ``loop`` is a trio service (takes ``task_status``); it is started
    with ``nursery.start`` each time, and this call counts as started once it first has.
    Otherwise this call is started at once."""
    backoff = backoff or Backoff()
    if not service:
        task_status.started()
    started = not service
    while True:
        backoff.started(trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_mark_recovered, name, health, backoff.stable_s)
                if service:
                    await nursery.start(loop)
                    if not started:
                        started = True
                        task_status.started()
                    await trio.sleep_forever()
                else:
                    await loop()
                raise RuntimeError("loop returned")
        except Exception as exc:  # the boundary: anything but Cancelled
            error = first_error(exc)
            delay = backoff.failed(trio.current_time())
            log.warning("%s loop failed (%r); restarting in %.1f s", name, error, delay)
            health.failed(name, error)
            await trio.sleep(delay)


async def _mark_recovered(name: str, health: LoopHealth, after_s: float) -> None:
    await trio.sleep(after_s)
    health.recovered(name)
