"""Broadcasts and their recordings in Redis (a ``Store`` mixin).

A broadcast is a stretch of a room's life with a stream clock: ``start_broadcast`` puts
it on air (``dm:{R}:live``); the worker's fenced commit then records every comment the
room accepts, exactly once, with its offset from the start, into the broadcast's own
stream (``dm:{R}:rec:{id}``, entry id = comment id, so a delete is one ``XDEL``).
``end_broadcast`` takes it off air and starts its retention clock. Memory: see
docs/operations.md (about 100 bytes per recorded comment).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import orjson
import redis

from danmaku.store import keys
from danmaku.store.moderation import ModerationOps
from danmaku.store.records import _s

T = TypeVar("T")


class ReplayOps:
    """Mixin for ``Store``: needs ``self._r`` and ``self._call``."""

    _r: redis.Redis
    _replay_retention_s: int

    async def _call(self, op: str, fn: Callable[[], T], *, abandon: bool = False) -> T:
        raise NotImplementedError

    async def start_broadcast(self, room: str, title: str, *, by: str) -> dict[str, Any]:
        """Put a new broadcast on air (ending the one on air, if any); return its meta."""
        current = await self.live_broadcast(room)
        if current is not None:
            await self.end_broadcast(room, current["id"], by=by)
        now_ms = int(time.time() * 1000)
        bid = f"{now_ms:x}"
        meta: dict[str, Any] = {"id": bid, "title": title, "start": now_ms, "end": None, "by": by}

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(keys.broadcasts(room), bid, orjson.dumps(meta))
            live: dict[Any, Any] = {"id": str(meta["id"]), "start": now_ms}
            pipe.delete(keys.live(room))  # a previous broadcast's ending window closes
            pipe.hset(keys.live(room), mapping=live)
            pipe.zadd(keys.HOT, {room: now_ms})
            ModerationOps._audit(pipe, room, by, "broadcast_start", bid, {"title": title})
            pipe.execute()

        await self._call("start_broadcast", run)
        return meta

    async def end_broadcast(self, room: str, broadcast_id: str, *, by: str) -> dict[str, Any]:
        """Take a broadcast off air; its recording expires after the retention. Raises
        ``KeyError`` for an unknown broadcast. Idempotent for one already ended."""
        meta = await self.broadcast(room, broadcast_id)
        if meta is None:
            raise KeyError(broadcast_id)
        if meta["end"] is None:
            meta["end"] = int(time.time() * 1000)

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(keys.broadcasts(room), broadcast_id, orjson.dumps(meta))
            live_id = self._r.hget(keys.live(room), "id")
            if live_id is not None and _s(live_id) == broadcast_id:
                # Off air, but the worker still records comments accepted before the end
                # that it has not committed yet (their ts is within the window).
                pipe.hset(keys.live(room), "end", int(meta["end"]))
                pipe.pexpire(keys.live(room), 60_000)
            pipe.expire(keys.recording(room, broadcast_id), self._replay_retention_s)
            pipe.zadd(keys.HOT, {room: int(time.time() * 1000)})
            ModerationOps._audit(pipe, room, by, "broadcast_end", broadcast_id, {})
            pipe.execute()

        await self._call("end_broadcast", run)
        return meta

    async def live_broadcast(self, room: str) -> dict[str, Any] | None:
        """The broadcast on air, or ``None`` (one that just ended is not on air)."""
        live: Any = await self._call(
            "live_broadcast", partial(self._r.hmget, keys.live(room), "id", "end")
        )
        if not live[0] or live[1]:
            return None
        return await self.broadcast(room, _s(live[0]))

    async def broadcast(self, room: str, broadcast_id: str) -> dict[str, Any] | None:
        raw = await self._call(
            "broadcast", partial(self._r.hget, keys.broadcasts(room), broadcast_id)
        )
        if not raw:
            return None
        meta: dict[str, Any] = orjson.loads(raw)
        return meta

    async def broadcasts(self, room: str) -> list[dict[str, Any]]:
        """All broadcasts of the room, newest first, with their recorded comment count."""
        raw: Any = await self._call("broadcasts", partial(self._r.hgetall, keys.broadcasts(room)))
        metas = sorted((orjson.loads(v) for v in raw.values()), key=lambda m: -m["start"])

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for m in metas:
                pipe.xlen(keys.recording(room, m["id"]))
            return pipe.execute()

        counts = await self._call("broadcasts", run) if metas else []
        for m, n in zip(metas, counts, strict=True):
            m["comments"] = int(n)
        return metas

    async def recorded(self, room: str, broadcast_id: str) -> list[dict[str, Any]]:
        """Every kept comment of a broadcast, by offset: deleted ones are gone from the
        stream; comments of users banned now are left out."""
        out: list[dict[str, Any]] = []
        cursor = "-"
        while True:
            entries: Any = await self._call(
                "recorded",
                partial(self._r.xrange, keys.recording(room, broadcast_id), cursor, "+", 2000),
            )
            for entry_id, fields in entries:
                item = orjson.loads(fields[b"d"])
                item["id"] = _s(entry_id)
                out.append(item)
            if len(entries) < 2000:
                break
            cursor = f"({_s(entries[-1][0])}"
        bans: Any = await self._call("recorded", partial(self._r.hgetall, keys.bans(room)))
        now = time.time()
        banned = {_s(u) for u, t in bans.items() if float(t) == 0 or float(t) > now}
        kept = [c for c in out if c.get("uid") not in banned]
        kept.sort(key=lambda c: (c.get("offset_ms", 0), c["id"]))
        return kept

    async def unrecord(self, room: str, comment_id: str) -> None:
        """Remove a (deleted) comment from every recording of the room."""
        ids: Any = await self._call("unrecord", partial(self._r.hkeys, keys.broadcasts(room)))

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            for bid in ids:
                pipe.xdel(keys.recording(room, _s(bid)), comment_id)
            pipe.execute()

        if ids:
            await self._call("unrecord", run)
