"""``PacedListener``: accept connections no faster than a set rate.

A handshake storm (thousands of viewers reconnecting at once after a stream restart or
a gateway loss) arrives as a burst the kernel queues; accepted all at once, every new
connection's HTTP parsing and welcome run in the same trio scheduling rounds as the
broadcast loop, and frames to viewers already watching wait behind them. Paced, the
storm is spread over a few seconds (the listen backlog holds the rest, clients see a
slower connect, not an error) and the rounds stay short. Wraps any trio ``Listener``;
the streams it returns are the inner listener's own (the fan-out's raw writes need
``trio.SocketStream``).
"""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

from danmaku.rules.ratelimit import TokenBucket

S = TypeVar("S", bound=trio.abc.AsyncResource)


class PacedListener(trio.abc.Listener[S], Generic[S]):
    """At most ``per_s`` accepts per second on average, ``burst`` at once; ``per_s <= 0``
    means no pacing. Closing it closes the inner listener."""

    def __init__(self, inner: trio.abc.Listener[S], per_s: float, burst: float) -> None:
        self.inner = inner
        self._bucket = TokenBucket(per_s, max(1.0, burst)) if per_s > 0 else None

    async def accept(self) -> S:
        bucket = self._bucket
        if bucket is not None:
            wait = bucket.take(trio.current_time())
            if wait > 0:
                # The bucket refills at a known rate: after ``wait`` a token is there.
                await trio.sleep(wait)
                bucket.take(trio.current_time())
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()
