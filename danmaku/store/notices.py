"""``Notices``: tell only the gateways that hold a room that it has news.

Each gateway feed has a notice stream of its own (``keys.notices(feed)``, hash-tagged by
its per-process notice id, so the streams of a fleet spread over a cluster's shards) and
registers, per local room, that it holds the room: ``keys.holders(room)``, a zset in the
room's slot of feed id -> expiry (ms), refreshed by the feed well before it expires and
removed when the room empties, so a gateway that dies stops being told after its TTL.

A committer (``notify_sync``: a worker after its commit, a moderation event, a paid pin)
names each committed room in the stream of each holder, one ``XADD`` per holder naming
all of its rooms, pipelined per shard. Holders are cached per room for
``holders_cache_ms`` (``rules.notices.HolderCache``); the worker reads stale ones in the
same round trip as its commit (``queue_holders``/``take_holders``), so a notice costs no
extra round trip. No key is read by every gateway or written by every commit.

Notices are best effort by design: the frame and control streams are the source of truth
and the feed reads from its cursors, so a lost notice (a committer that died after its
commit, a deleted or trimmed stream, a holder not yet in a committer's cache) only
delays a frame until the feed reads the room anyway (``rules.notices.FeedSchedule``).
Committers never create a notice stream (``NOMKSTREAM``): a dead gateway's stream
expires and stays gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisClusterException

from danmaku.config import DEFAULTS
from danmaku.rules.notices import HolderCache, by_holder
from danmaku.store import keys
from danmaku.store.core import StoreCore

T = TypeVar("T")
Call = Callable[..., Awaitable[Any]]

log = logging.getLogger(__name__)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Notices:
    """Notice streams and room holders. Thread-safe (the holder cache is a dict whose
    races only cost an extra read); share one per process (``Store.notices``)."""

    def __init__(
        self, core: StoreCore, *, holders_cache_ms: int = DEFAULTS.notice_holders_cache_ms
    ) -> None:
        self._r = core.r
        self._rb = core.rb  # for the feed's blocking read
        self._call = core.call
        self._m = core.metrics
        self.cache = HolderCache(holders_cache_ms / 1000)

    # ---- gateway side -------------------------------------------------------------------
    async def open(self, feed: str, ttl_ms: int) -> str:
        """Create ``feed``'s notice stream (expiring after ``ttl_ms`` unless refreshed by
        ``hold``); return the id to wait after."""

        def run() -> Any:
            pipe = self._r.pipeline(transaction=False)
            pipe.xadd(keys.notices(feed), {"r": ""}, maxlen=keys.NOTICES_MAXLEN, approximate=True)
            pipe.pexpire(keys.notices(feed), ttl_ms)
            return pipe.execute()[0]

        return _s(await self._call("notices_hold", run))

    async def hold(
        self,
        feed: str,
        rooms: Collection[str],
        dropped: Collection[str],
        ttl_ms: int,
        *,
        wake: Collection[str] = (),
        prune: bool = True,
    ) -> None:
        """Register ``feed`` as a holder of ``rooms`` until ``ttl_ms`` from now, and no
        longer of ``dropped``; keep its stream alive (recreated if it was lost) and name
        ``wake`` in it (rooms the feed must read at once: it wakes the feed's wait). One
        round trip, pipelined per shard; the registrations land before the wake-up.
        ``prune``: also drop expired registrations (of dead gateways) from ``rooms``."""
        now_ms = int(time.time() * 1000)

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                key = keys.holders(room)
                pipe.zadd(key, {feed: now_ms + ttl_ms})
                if prune:  # registrations of dead gateways (ignored by readers anyway)
                    pipe.zremrangebyscore(key, "-inf", now_ms)
                pipe.pexpire(key, ttl_ms)
            for room in dropped:
                pipe.zrem(keys.holders(room), feed)
            stream = keys.notices(feed)
            pipe.xadd(stream, {"r": ",".join(wake)}, maxlen=keys.NOTICES_MAXLEN, approximate=True)
            pipe.pexpire(stream, ttl_ms)
            pipe.execute()

        await self._call("notices_hold", run)

    async def close(self, feed: str, rooms: Collection[str]) -> None:
        """``feed`` is going away: it holds none of ``rooms`` any more, its stream is
        deleted."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                pipe.zrem(keys.holders(room), feed)
            pipe.delete(keys.notices(feed))
            pipe.execute()

        # Abandoned if cancelled (a stopping gateway must not wait on a hung Redis).
        await self._call("notices_hold", run, abandon=True)

    def wait_sync(self, feed: str, after: str, block_ms: int) -> tuple[str, list[str]]:
        """Block up to ``block_ms`` for notices in ``feed``'s stream after id ``after``
        (call from a thread); return the new position and the rooms named, in order,
        each once (empty on timeout). Nothing is consumed."""
        reply: Any = self._rb.xread({keys.notices(feed): after}, count=1000, block=block_ms)
        rooms: dict[str, None] = {}
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                after = _s(entry_id)
                for room in _s(fields.get(b"r", b"")).split(","):
                    if room:
                        rooms[room] = None
        return after, list(rooms)

    async def holders(self, room: str) -> list[str]:
        """The feeds registered as holders of ``room`` now (not cached)."""
        now_ms = int(time.time() * 1000)
        raw = await self._call(
            "notices_hold", lambda: self._r.zrangebyscore(keys.holders(room), now_ms, "+inf")
        )
        return sorted(_s(x) for x in raw)

    # ---- committer side ------------------------------------------------------------------
    def queue_holders(self, pipe: Any, rooms: Iterable[str]) -> list[str]:
        """Queue reads of the holders of those of ``rooms`` whose cache entry is stale
        (e.g. in a commit's pipeline, so they cost no round trip of their own); hand
        their replies, in order, to ``take_holders``. Returns the rooms queued."""
        stale = self.cache.stale(rooms, time.monotonic())
        now_ms = int(time.time() * 1000)
        for room in stale:
            pipe.zrangebyscore(keys.holders(room), now_ms, "+inf")
        return stale

    def take_holders(self, rooms: Sequence[str], replies: Sequence[Any]) -> None:
        """Cache the holders read by ``queue_holders`` (an error reply: left stale)."""
        now = time.monotonic()
        for room, reply in zip(rooms, replies, strict=False):
            if isinstance(reply, list):
                self.cache.put(room, (_s(x) for x in reply), now)

    def notify_sync(self, rooms: Iterable[str]) -> int:
        """Name each of ``rooms`` in the notice stream of each of its holders (call from
        a thread, after what the notice announces was written). Holders not cached are
        read first (one round trip); the notices are one ``XADD`` per holder, pipelined.
        Best effort: a Redis error is logged and the notice is lost (the feed reads the
        room anyway, later). Returns the notices (room, gateway) sent."""
        rooms = list(dict.fromkeys(rooms))
        try:
            stale = self.queue_holders(pipe := self._r.pipeline(transaction=False), rooms)
            if stale:
                self.take_holders(stale, pipe.execute(raise_on_error=False))
            targets = by_holder(rooms, {room: self.cache.holders(room) for room in rooms})
            if not targets:
                return 0
            pipe = self._r.pipeline(transaction=False)
            for feed, named in targets.items():
                pipe.xadd(
                    keys.notices(feed),
                    {"r": ",".join(named)},
                    maxlen=keys.NOTICES_MAXLEN,
                    approximate=True,
                    nomkstream=True,
                )
            pipe.execute(raise_on_error=False)
        except (redis.RedisError, RedisClusterException) as exc:
            log.warning("notices for %d rooms lost: %s", len(rooms), exc)
            return 0
        sent = sum(len(named) for named in targets.values())
        self._m.notices_sent.inc(sent)
        return sent
