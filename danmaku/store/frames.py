"""The broadcast worker's Redis operations (``store.frames``, a component of ``Store``;
the worker sees it as ``interfaces.FrameStore``): discovery, leases and liveness,
per-tick reads, fenced commits, live figures. One pipeline per call; each Lua
script touches one room's keys only."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import redis

from danmaku.store import keys, presence, scripts
from danmaku.store.core import StoreCore, queue_script
from danmaku.store.notices import Notices
from danmaku.store.records import (
    COMMIT_FAILED,
    CommitResult,
    CommittedFrame,
    FrameCommit,
    Lease,
    RoomsPage,
    StoredComment,
    TickRead,
    _decode_settings,
    _s,
    id_key,
    split_entry,
)

# Error replies that say the *server* cannot serve now (out of memory, a replica, loading,
# a failover, a cluster moving slots): a store-wide failure, raised as ``StoreError``.
# Any other error reply to one room's commands (WRONGTYPE on a clobbered key, an invalid
# stream id in a corrupt cursor, a script error) is that room's fault alone.
_SERVER_STATES = (
    "OOM",
    "READONLY",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MOVED",
    "ASK",
    "NOSCRIPT",
    "NOPERM",
    "NOAUTH",
)


def room_fault(reply: object) -> str | None:
    """The error text if ``reply`` is an error reply that concerns one room only; raise
    ``redis.RedisError`` if it is a server-wide one; ``None`` if it is no error."""
    if not isinstance(reply, Exception):
        return None
    if not isinstance(reply, redis.ResponseError):
        raise reply
    text = str(reply)
    if text.split(" ", 1)[0].upper() in _SERVER_STATES:
        raise reply
    return text[:200]


class Frames:
    """Leases, the comments a tick reads, fenced frame commits, live figures. Keeps
    ``frames_history`` frames per room (``scripts.COMMIT`` trims)."""

    def __init__(self, core: StoreCore, frames_history: int, notices: Notices) -> None:
        self._core = core
        self._r = core.r
        self._call = core.call
        self._execute_scripted = core.execute_scripted
        self._frames_history = frames_history
        self.notices = notices
        self._acquire = core.register(scripts.ACQUIRE)
        self._renew = core.register(scripts.RENEW)
        self._release = core.register(scripts.RELEASE)
        self._commit = core.register(scripts.COMMIT)
        self._online = core.register(presence.ONLINE)

    async def online_counts(
        self, rooms: Iterable[str]
    ) -> dict[str, tuple[int, dict[str, float], set[str]]]:
        """Per room: viewers over live gateways (distinct users plus anonymous
        connections, ``store.presence``), the room settings, and the uids granted the
        highlighted tier."""
        rooms = list(rooms)
        now_ms = int(time.time() * 1000)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                presence.queue_online(pipe, self._online, room, now_ms)
                pipe.hgetall(keys.settings(room))
                pipe.smembers(keys.highlights(room))
            return self._execute_scripted(pipe)

        r = await self._call("online_counts", run)
        return {
            room: (
                presence.parse_online(r[3 * i]).online,
                _decode_settings(r[3 * i + 1]),
                {_s(u) for u in r[3 * i + 2]},
            )
            for i, room in enumerate(rooms)
        }

    # ---- worker ---------------------------------------------------------------------------
    async def hot_rooms(self, since_ms: int) -> set[str]:
        """Rooms with comments stored or moderation changes since ``since_ms``: the rooms a
        worker must read this tick (others have nothing new). Prunes entries over a
        minute old."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.zremrangebyscore(keys.HOT, "-inf", since_ms - 60_000)
            pipe.zrangebyscore(keys.HOT, since_ms, "+inf")
            return pipe.execute()

        _, rooms = await self._call("hot_rooms", run)
        return {_s(r) for r in rooms}

    async def active_rooms(
        self, since_ms: int, recent_ms: int, cursor: int, count: int
    ) -> RoomsPage:
        """One bounded step of discovery over the rooms with comments or moderation
        changes (``keys.HOT``) since ``since_ms``: how many there are, up to ``count`` of
        those active since ``recent_ms``, newest first (a room that just got comments is
        found at once), and the next page of a ``ZSCAN`` of the whole set from ``cursor``
        (about ``count`` rooms; a full scan returns every room that stayed in the set
        throughout, however many, so no room is starved by a fixed window). Also prunes
        ``keys.ROOMS`` entries over an hour old."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.zremrangebyscore(keys.ROOMS, "-inf", since_ms - 3_600_000)
            pipe.zcount(keys.HOT, since_ms, "+inf")
            pipe.zrevrangebyscore(keys.HOT, "+inf", recent_ms, start=0, num=count)
            pipe.zscan(keys.HOT, cursor=cursor, count=count)
            return pipe.execute()

        _, total, recent, (after, scanned) = await self._call("active_rooms", run)
        return RoomsPage(
            total=int(total),
            recent=[_s(r) for r in recent],
            page=[_s(r) for r, score in scanned if score >= since_ms],
            cursor=int(after),
        )

    async def worker_heartbeat(self, worker_id: str, fresh_ms: int) -> int:
        """Say this worker is alive; return how many workers were alive in ``fresh_ms``."""
        now_ms = int(time.time() * 1000)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.zadd(keys.WORKERS, {worker_id: now_ms})
            pipe.zremrangebyscore(keys.WORKERS, "-inf", now_ms - fresh_ms)
            pipe.zcard(keys.WORKERS)
            return pipe.execute()

        return int((await self._call("worker_heartbeat", run))[2])

    async def worker_gone(self, worker_id: str) -> None:
        """Leave the live workers (graceful stop), so others rebalance at once."""
        await self._call("worker_gone", partial(self._r.zrem, keys.WORKERS, worker_id))

    async def unleased(self, rooms: Sequence[str]) -> list[str]:
        """The rooms among ``rooms`` whose lease nobody holds right now."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                pipe.exists(keys.lease(room))
            return pipe.execute()

        if not rooms:
            return []
        held = await self._call("unleased", run)
        return [room for room, h in zip(rooms, held, strict=True) if not h]

    async def acquire(self, rooms: Sequence[str], token: str, lease_ms: int) -> list[Lease]:
        """Try to take the lease of each room; return the ones taken (with positions)."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                queue_script(
                    pipe, self._acquire, [keys.lease(room), keys.meta(room)], [token, lease_ms]
                )
            return self._execute_scripted(pipe)

        replies = await self._call("acquire", run)
        return [
            Lease(room, token, int(r[0]), _s(r[1]))
            for room, r in zip(rooms, replies, strict=True)
            if r
        ]

    async def renew(self, leases: Mapping[str, str], lease_ms: int) -> set[str]:
        """Extend leases ``{room: token}``; return the rooms whose lease was lost."""
        rooms = list(leases)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                queue_script(pipe, self._renew, [keys.lease(room)], [leases[room], lease_ms])
            return self._execute_scripted(pipe)

        replies = await self._call("renew", run)
        return {room for room, ok in zip(rooms, replies, strict=True) if not ok}

    async def release(self, leases: Mapping[str, str]) -> None:
        """Give back leases ``{room: token}`` that are still ours. Idempotent."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            for room, token in leases.items():
                queue_script(pipe, self._release, [keys.lease(room)], [token])
            self._execute_scripted(pipe)

        if leases:
            await self._call("release", run)

    async def read_comments(self, cursors: Mapping[str, str], count: int) -> TickRead:
        """Comments after each room's cursor (exclusive), up to ``count`` stream entries
        per room (each up to ``scripts.ENTRY_MAX`` comments; whole entries, so the last
        id returned is always a good cursor), the ids each room's next frame must retract
        (moderator deletes), and the broadcast on air per room (``(id, start_ms, end_ms
        or 0)``) whose recording the frame feeds; and per room the ids of comments deleted
        at or after the cursor's millisecond (``keys.deleted``: a packed entry keeps a
        deleted comment, so the reader drops it; ``RoomMerger.drop``).

        Each room stands alone: a room whose commands fail or whose replies do not parse
        (a corrupt cursor, a clobbered key) is named in ``failed`` and the others are read
        as usual; only a store-wide failure raises ``StoreError``. An entry without its
        ``d`` field reads as one empty payload (the merger counts it invalid and moves on).
        """
        rooms = list(cursors)

        def run() -> TickRead:
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                cursor = cursors[room]
                stream: dict[Any, Any] = {keys.comments(room): cursor}
                pipe.xread(stream, count=count)
                pipe.lrange(keys.retract(room), 0, 999)
                pipe.hmget(keys.live(room), "id", "start", "end")
                try:
                    since: Any = id_key(cursor)[0]
                except ValueError:
                    since = "-inf"  # the XREAD fails on this cursor: the room is failed
                pipe.zrangebyscore(keys.deleted(room), since, "+inf")
            # Parsed here, in the thread: off the event loop, and a server-wide error
            # reply (raised by ``room_fault``) becomes a ``StoreError`` in ``_call``.
            return _parse_tick_read(rooms, pipe.execute(raise_on_error=False))

        return await self._call("read_comments", run)

    async def frames_after(self, room: str, after_seq: int, count: int) -> list[CommittedFrame]:
        """Up to ``count`` committed frames with seq > ``after_seq``, oldest first."""
        return await read_frames_after(self._core, room, after_seq, count)

    async def write_stats(self, stats: Mapping[str, Mapping[str, float]]) -> None:
        """Publish per-room live rates (read by the web app); they expire after 5 s."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            for room, values in stats.items():
                mapping: dict[Any, Any] = dict(values)
                pipe.hset(keys.stats(room), mapping=mapping)
                pipe.pexpire(keys.stats(room), 5000)
            pipe.execute()

        if stats:
            await self._call("write_stats", run)

    async def commit(self, frames: Sequence[FrameCommit]) -> list[CommitResult]:
        """Commit frames atomically, each fenced by its lease (see ``scripts.COMMIT``),
        then name the rooms committed in the notice streams of the gateways that hold
        them (``store.notices``: what wakes those gateways; a second round trip, so a
        notice can never overtake a frame on another shard; the holders, cached, are
        read in the commit's round trip when stale).

        Returns per frame a ``CommitResult``: 1 committed, -1 lease lost, -2 seq moved on,
        or ``COMMIT_FAILED`` when that room's script failed (an error reply about the room
        alone: the other frames stand); a store-wide failure raises ``StoreError``.
        """

        def run() -> list[CommitResult]:
            results = [_commit_result(x) for x in commit_all()]
            done = [f.room for f, ok in zip(frames, results, strict=True) if ok.code == 1]
            if done:
                # Best effort (errors are logged there): the frames are committed whatever
                # happens here, and gateways read rooms they hear nothing of anyway.
                self.notices.notify_sync(done)
            return results

        def commit_all() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for f in frames:
                queue_script(
                    pipe,
                    self._commit,
                    [
                        keys.lease(f.room),
                        keys.meta(f.room),
                        keys.frames(f.room),
                        keys.retract(f.room),
                        keys.live(f.room),
                        keys.recording(f.room, f.broadcast or "none"),
                    ],
                    [
                        f.token,
                        f.seq,
                        f.cursor,
                        f.payload,
                        self._frames_history,
                        f.retracted,
                        f.broadcast,
                        *(x for pair in f.recorded for x in pair),
                    ],
                )
            stale = self.notices.queue_holders(pipe, [f.room for f in frames])
            replies = self._execute_scripted(pipe, raise_on_error=False)
            self.notices.take_holders(stale, replies[len(frames) :])
            return replies[: len(frames)]

        return await self._call("commit", run)


async def read_frames_after(
    core: StoreCore, room: str, after_seq: int, count: int
) -> list[CommittedFrame]:
    """Up to ``count`` committed frames of ``room`` with seq > ``after_seq``, oldest
    first (the worker's and the gateway's resume read)."""

    def run() -> Any:
        return core.r.xrange(keys.frames(room), f"{after_seq + 1}-0", "+", count=count)

    entries = await core.call("frames_after", run)
    return [CommittedFrame(room, int(_s(i).split("-")[0]), f[b"d"]) for i, f in entries]


def _parse_tick_read(rooms: Sequence[str], replies: list[Any]) -> TickRead:
    out = TickRead()
    for i, room in enumerate(rooms):
        reply, retract, live, gone = replies[4 * i : 4 * i + 4]
        try:
            for part in (reply, retract, live, gone):
                fault = room_fault(part)
                if fault is not None:
                    raise ValueError(fault)
            comments = [
                StoredComment(cid, payload)
                for e, f in (reply[0][1] if reply else ())
                for cid, payload in split_entry(_s(e), f.get(b"d", b""))
            ]
            on_air = (
                (_s(live[0]), int(live[1] or 0), int(live[2] or 0)) if live and live[0] else None
            )
        except redis.RedisError:
            raise
        except Exception as exc:  # this room's replies only
            out.failed[room] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        if comments:
            out.comments[room] = comments
        if gone:
            out.deleted[room] = {_s(x) for x in gone}
        if retract:
            out.retracts[room] = [_s(x) for x in retract]
        if on_air is not None:
            out.on_air[room] = on_air
    return out


def _commit_result(reply: Any) -> CommitResult:
    fault = room_fault(reply)
    if fault is not None:
        return CommitResult(COMMIT_FAILED, fault)
    return CommitResult(int(reply))
