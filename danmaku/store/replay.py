"""Broadcasts and their recordings in Redis (``store.replay``, a component of ``Store``).

A broadcast is a stretch of a room's life with a stream clock: ``start_broadcast`` puts
it on air (``dm:{R}:live``); the worker's fenced commit then records every comment the
room accepts, exactly once, with its offset from the start, into the broadcast's own
stream (``dm:{R}:rec:{id}``, entry id = comment id, so a delete is one ``XDEL``).
``end_broadcast`` takes it off air and starts its retention clock. Memory: see
docs/operations.md (about 100 bytes per recorded comment).

Exports read a recording in pages, never whole: ``export_head`` (what the file will
depend on, for its ETag), ``export_index`` (a first pass: per page, the kept comments'
count and key range) and ``export_page`` (one page again, for ``rules.replay_order``).
Each page is one short thread hop, so an export of any size neither blocks the event
loop nor holds more than a page of the recording at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from danmaku.rules.replay_order import Key, PageSummary
from danmaku.store import keys
from danmaku.store.core import StoreCore
from danmaku.store.journal import audit, control
from danmaku.store.notices import Notices
from danmaku.store.records import _s

EXPORT_PAGE = 1000  # recording entries per page (one Redis round trip, ~150 kB)


@dataclass(frozen=True, slots=True)
class ExportHead:
    """What an export of a broadcast depends on, read at once: its meta, the recording's
    length and last entry id (the export covers entries up to it: a snapshot), and the
    users banned now (left out)."""

    room: str
    broadcast_id: str
    meta: dict[str, Any]
    length: int
    last_id: str | None
    banned: frozenset[str]
    from_ms: int = 0  # only comments recorded at this offset or later (a moment's link)


def _banned(raw: dict[Any, Any], now: float) -> frozenset[str]:
    return frozenset(_s(u) for u, t in raw.items() if float(t) == 0 or float(t) > now)


def _page_items(
    entries: list[Any], banned: frozenset[str], from_ms: int = 0
) -> tuple[list[tuple[Key, tuple[str, bytes]]], str | None]:
    """Kept entries of a page as ``((offset_ms, id), (id, payload))`` (the payload is
    parsed again when encoded: raw bytes are a third the size of a dict), and the
    page's last id. ``from_ms``: only those recorded at that offset or later."""
    out = []
    for entry_id, fields in entries:
        raw = fields[b"d"]
        item = orjson.loads(raw)
        if item.get("uid") in banned or int(item.get("offset_ms", 0)) < from_ms:
            continue
        cid = _s(entry_id)
        out.append(((int(item.get("offset_ms", 0)), cid), (cid, raw)))
    return out, (_s(entries[-1][0]) if entries else None)


def _told(state: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The control event that tells a room's viewers a broadcast started or ended."""
    return {"kind": "broadcast", "state": state, "id": meta["id"], "title": meta["title"]}


class Replay:
    """Broadcasts on air and off, their recordings, and exports of them. A recording
    expires ``retention_s`` after its broadcast ends."""

    def __init__(self, core: StoreCore, retention_s: int, notices: Notices) -> None:
        self._r = core.r
        self._call = core.call
        self._replay_retention_s = retention_s
        self.notices = notices

    async def start_broadcast(
        self, room: str, title: str, *, by: str, delay_ms: int = 0
    ) -> dict[str, Any]:
        """Put a new broadcast on air (ending the one on air, if any); return its meta.
        ``delay_ms``: the viewers' video delay its replays allow for (``replay_export``)."""
        current = await self.live_broadcast(room)
        if current is not None:
            await self.end_broadcast(room, current["id"], by=by)
        now_ms = int(time.time() * 1000)
        bid = f"{now_ms:x}"
        meta: dict[str, Any] = {"id": bid, "title": title, "start": now_ms, "end": None, "by": by}
        if delay_ms > 0:
            meta["delay_ms"] = delay_ms

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(keys.broadcasts(room), bid, orjson.dumps(meta))
            live: dict[Any, Any] = {"id": str(meta["id"]), "start": now_ms}
            pipe.delete(keys.live(room))  # a previous broadcast's ending window closes
            pipe.hset(keys.live(room), mapping=live)
            pipe.zadd(keys.HOT, {room: now_ms})
            audit(pipe, room, by, "broadcast_start", bid, {"title": title})
            control(pipe, room, _told("started", meta))  # viewers (issue 24)
            pipe.execute()
            self.notices.notify_sync((room,))  # wake the room's gateways

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
            audit(pipe, room, by, "broadcast_end", broadcast_id, {})
            control(pipe, room, _told("ended", meta))  # players link the replay
            pipe.execute()
            self.notices.notify_sync((room,))  # wake the room's gateways

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
        banned = _banned(bans, time.time())
        kept = [c for c in out if c.get("uid") not in banned]
        kept.sort(key=lambda c: (c.get("offset_ms", 0), c["id"]))
        return kept

    async def export_head(self, room: str, broadcast_id: str) -> ExportHead | None:
        """The broadcast and its recording's state for an export, or ``None`` for an
        unknown broadcast. One round trip."""
        rec = keys.recording(room, broadcast_id)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(keys.broadcasts(room), broadcast_id)
            pipe.xlen(rec)
            pipe.xrevrange(rec, "+", "-", 1)
            pipe.hgetall(keys.bans(room))
            return pipe.execute()

        raw, length, last, bans = await self._call("export_head", run)
        if not raw:
            return None
        return ExportHead(
            room=room,
            broadcast_id=broadcast_id,
            meta=orjson.loads(raw),
            length=int(length),
            last_id=_s(last[0][0]) if last else None,
            banned=_banned(bans, time.time()),
        )

    async def export_index(self, head: ExportHead, page: int = EXPORT_PAGE) -> list[PageSummary]:
        """The first pass over the recording up to ``head.last_id``: per page of
        ``page`` entries, its last id, kept count and key range."""
        out: list[PageSummary] = []
        if head.last_id is None:
            return out
        rec = keys.recording(head.room, head.broadcast_id)
        last_id = head.last_id

        def run(start: str) -> tuple[PageSummary | None, int]:
            entries: Any = self._r.xrange(rec, start, last_id, page)
            items, last = _page_items(entries, head.banned, head.from_ms)
            if last is None:
                return None, 0
            ks = [k for k, _ in items]
            return PageSummary(last, len(ks), min(ks, default=None), max(ks, default=None)), len(
                entries
            )

        start = "-"
        while True:
            summary, n = await self._call("export_page", partial(run, start))
            if summary is None:
                break
            out.append(summary)
            if n < page or summary.last_id == last_id:
                break
            start = f"({summary.last_id}"
        return out

    async def export_page(
        self, head: ExportHead, after_id: str | None, last_id: str
    ) -> list[tuple[Key, tuple[str, bytes]]]:
        """Kept comments of the page ``(after_id, last_id]`` (``after_id`` ``None``: from
        the start), as ``((offset_ms, id), (id, payload))``, parsed in the thread."""
        rec = keys.recording(head.room, head.broadcast_id)
        start = "-" if after_id is None else f"({after_id}"

        def run() -> list[tuple[Key, tuple[str, bytes]]]:
            # No COUNT: a page cannot grow (new entries get ids above the snapshot).
            entries: Any = self._r.xrange(rec, start, last_id)
            return _page_items(entries, head.banned, head.from_ms)[0]

        return await self._call("export_page", run)

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
