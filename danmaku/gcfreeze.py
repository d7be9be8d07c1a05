"""``FreezeOnGrowth``: keep a growing crowd of connections out of full GC collections.

A gateway's connections are its long-lived objects (a few hundred tracked objects each:
tasks, coroutine frames, wsproto state). CPython runs a full (generation 2) collection
each time the objects that survived younger collections grow by a quarter of the old
generation, and each walks every tracked object, with the event loop stopped. While
10,000 viewers arrive, that is about ten full collections of a growing heap: measured
here, pauses of 15 ms rising to 400-600 ms, the worst latency viewers saw during a
storm (docs/benchmarks.md). ``gc.freeze()`` moves everything tracked to a permanent
generation that collections skip (cost: O(1)); freezing each time the crowd has grown by
``grow`` keeps the walked part to the newest connections.

The price: a cycle of frozen objects that becomes garbage (a viewer who left) is not
freed until unfrozen. So when the crowd has shrunk below ``shrink`` of what it was at
the last freeze, the gateway thaws (``gc.unfreeze``), collects once, and freezes what
is left: the frozen garbage is bounded by the connections that left since the last
freeze, and that one collection walks a heap smaller than the peak.

``decide`` is pure (no ``gc`` calls) and tested without I/O; ``apply`` does what it
decided.
"""

from __future__ import annotations

import gc
from typing import Literal

Action = Literal["freeze", "refreeze"]


class FreezeOnGrowth:
    def __init__(self, *, floor: int = 1000, grow: float = 0.1, shrink: float = 0.5) -> None:
        self.floor = floor  # below this many connections full collections are cheap
        self.grow = grow
        self.shrink = shrink
        self.base = 0  # connections at the last freeze; 0: nothing frozen by us

    def decide(self, conns: int) -> Action | None:
        """What to do now that the gateway holds ``conns`` connections."""
        if self.base and conns <= self.base * self.shrink:
            self.base = conns
            return "refreeze"
        if conns >= self.floor and conns >= self.base * (1 + self.grow):
            self.base = conns
            return "freeze"
        return None

    @staticmethod
    def apply(action: Action) -> int | None:
        """Do ``action``; after a refreeze, return the number of frozen objects.

        A freeze returns ``None``: counting (``gc.get_freeze_count()``) walks every
        frozen object, which at 10,000 connections stopped the event loop for 20 ms
        rising to 120 ms at every freeze of a storm, the pauses freezing is there to
        avoid. A refreeze has just walked the heap to collect it anyway."""
        if action == "refreeze":
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            return gc.get_freeze_count()
        gc.freeze()
        return None
