"""``GatewayState``: what the parts of one gateway (``server.Gateway``, ``session``,
``intake``, ``identity``) share while it runs: its open connections, whether it is
draining, and the nursery its background tasks start in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from danmaku.gateway.viewer import Viewer


@dataclass(eq=False)
class GatewayState:
    """``viewers``: the live set of open connections (``Presence`` counts it);
    ``all_gone``: set when draining and the last viewer left; ``nursery``: where
    viewers' writer tasks and short background tasks run (``None`` until ``run``)."""

    viewers: set[Viewer] = field(default_factory=set)
    all_gone: trio.Event = field(default_factory=trio.Event)
    nursery: trio.Nursery | None = None
    draining: bool = False

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start ``fn(*args)`` as a task of the gateway's nursery; ``False`` when the
        gateway is not running (nothing started)."""
        if self.nursery is None:
            return False
        self.nursery.start_soon(fn, *args)
        return True
