"""``Liveness``: when to ping a silent connection and when to give it up for dead.

Pure: no I/O, no clock of its own; callers pass ``now`` (trio's clock in the gateway) and
act on what ``due`` returns (``pinger`` in ``server.py`` writes the pings and closes).

Per connection (a ``Peer``), with an interval that adapts:

* a connection that was heard (any frame: a message, a pong, a ping) within its current
  interval is never pinged;
* one silent for its interval gets a ping; an answer (anything heard) within the interval
  grows the interval by ``GROWTH`` up to ``max_s``, so a long-lived idle viewer on a good
  network is pinged rarely;
* no answer within the interval is a miss: the interval falls back to ``min_s`` and the
  connection is pinged again; the ``MISSES``-th miss in a row closes it.

A dead peer is thus closed at most ``2 * max_s + min_s`` after it was last heard, plus
up to two ticks per wait (a due time is rounded up to a tick, then waits for the
pinger's next look). Scheduling is a timer wheel: peers sit in buckets keyed by their due
tick, one set per tick that has any, a heap of those ticks; ``due`` looks only at the buckets
that came due. No task or timer per connection; adding, rescheduling and forgetting a
peer are O(1) (plus a heap push when its tick has no bucket yet).
"""

from __future__ import annotations

import heapq
import math
from enum import Enum
from typing import Generic, TypeVar

GROWTH = 1.5  # interval growth per answered ping
MISSES = 2  # missed pongs in a row that close a connection
# How often the gateway's pinger looks at the wheel. Once a second: an idle gateway's
# CPU goes mostly to waking up (docs/benchmarks.md, "Liveness", session 9), and a
# second's pings go out in one batch whose pongs come back together.
TICK_S = 1.0


class Action(Enum):
    PING = "ping"
    CLOSE = "close"


class Peer:
    """One connection's liveness state. The gateway's own per-connection object extends
    it (no extra object per connection). ``heard`` is written by the connection's reader
    path (``Liveness.now`` at the time: a plain attribute store per frame)."""

    __slots__ = ("_key", "heard", "interval", "missed", "pinged")

    def __init__(self) -> None:
        self.heard = 0.0  # when something last arrived from the peer
        self.interval = 0.0  # the current interval (0 until added)
        self.pinged = -1.0  # when the outstanding ping went out; -1: none outstanding
        self.missed = 0  # pings in a row that went unanswered
        self._key = -1  # the wheel bucket this peer sits in; -1: not scheduled


P = TypeVar("P", bound=Peer)


class Liveness(Generic[P]):
    """The ping schedule of one gateway's connections (``P``: its kind of ``Peer``).
    ``min_s`` > 0, ``max_s`` >= ``min_s``; ``tick_s`` is the granularity of due times
    (the pinger's period)."""

    def __init__(self, min_s: float, max_s: float, tick_s: float = TICK_S) -> None:
        if min_s <= 0 or tick_s <= 0:
            raise ValueError("min_s and tick_s must be positive")
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self.tick_s = tick_s
        self.now = 0.0  # the latest ``now`` given: what readers stamp ``heard`` with
        self._buckets: dict[int, set[P]] = {}
        self._keys: list[int] = []  # heap of the buckets' keys

    def __len__(self) -> int:
        """Peers scheduled."""
        return sum(len(b) for b in self._buckets.values())

    def add(self, peer: P, now: float) -> None:
        """Start watching a connection that has just opened (its opening counts as
        heard)."""
        self.now = max(self.now, now)
        peer.heard = now
        peer.interval = self.min_s
        peer.pinged = -1.0
        peer.missed = 0
        self._schedule(peer, now + self.min_s)

    def forget(self, peer: P) -> None:
        """Stop watching a connection (it closed). Idempotent."""
        if peer._key >= 0:
            bucket = self._buckets.get(peer._key)
            if bucket is not None:
                bucket.discard(peer)
            peer._key = -1

    def due(self, now: float) -> list[tuple[P, Action]]:
        """``sweep``, as one list of (peer, action) pairs."""
        pings, closes = self.sweep(now)
        return [(p, Action.PING) for p in pings] + [(p, Action.CLOSE) for p in closes]

    def sweep(self, now: float) -> tuple[list[P], list[P]]:
        """Advance to ``now``: the peers to ping now and the peers to close now, of
        those that came due. Peers to ping stay scheduled (for their answer); peers to
        close are forgotten. The gateway's pinger calls this once a tick, and in
        the steady state it looks at each connection once per ping, so the decision is
        written out inline here (one pass, no call per peer; the rules are the module
        docstring's)."""
        if now > self.now:
            self.now = now
        pings: list[P] = []
        closes: list[P] = []
        tick = self.tick_s
        limit = math.floor(now / tick)
        keys, buckets = self._keys, self._buckets
        if not keys or keys[0] > limit:
            return pings, closes
        # A peer is never rescheduled into a tick already looked at (``_schedule``).
        soonest = math.floor(self.now / tick) + 1
        min_s, max_s, ceil = self.min_s, self.max_s, math.ceil
        # Most peers looked at together go to the same later bucket (pinged now: now +
        # the maximum, in the steady state): it is looked up once per run of them.
        last_key: int | None = None
        last_bucket: set[P] = set()
        while keys and keys[0] <= limit:
            key = heapq.heappop(keys)
            bucket = buckets.pop(key, None)
            if not bucket:
                continue
            for peer in bucket:
                pinged = peer.pinged
                if pinged >= 0.0:
                    if peer.heard >= pinged:
                        # Answered (anything heard since the ping counts): trust it longer.
                        interval = peer.interval * GROWTH
                        peer.interval = interval if interval < max_s else max_s
                        peer.pinged = -1.0
                        peer.missed = 0
                        at = peer.heard + peer.interval
                    else:
                        peer.missed += 1
                        if peer.missed >= MISSES:
                            peer._key = -1
                            closes.append(peer)
                            continue
                        peer.interval = min_s  # a bad network: look again soon
                        at = now  # ping again now
                else:
                    at = peer.heard + peer.interval
                if at <= now:
                    # Silent for its interval: ping, and look again one interval on.
                    peer.pinged = now
                    at = now + peer.interval
                    pings.append(peer)
                # else: heard within the interval: no ping; look again when it runs out
                k = ceil(at / tick)
                if k < soonest:
                    k = soonest
                if k != last_key:
                    found = buckets.get(k)
                    if found is None:
                        found = buckets[k] = set()
                        heapq.heappush(keys, k)
                    last_key, last_bucket = k, found
                last_bucket.add(peer)
                peer._key = k
        return pings, closes

    def _schedule(self, peer: P, at: float) -> None:
        # The first tick at or after ``at`` (never the current one again).
        key = max(math.ceil(at / self.tick_s), math.floor(self.now / self.tick_s) + 1)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            heapq.heappush(self._keys, key)
        bucket.add(peer)
        peer._key = key
