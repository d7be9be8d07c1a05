"""What a gateway reads to serve viewers, in Redis (``store.feed``, a component of
``Store``; the gateway sees it as ``interfaces.FeedStore``): the room's position and
state at first sight, presence reports and room-wide figures, frames and control events
(after a notice in the gateway's own notice stream, ``store.notices``), and the staff
list, words and identity state its presence round follows (read through the components
that own them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Set
from functools import partial
from typing import Any

import orjson

from danmaku.rules.headcount import LocalViewers
from danmaku.rules.ipbans import IpBan
from danmaku.store import keys, presence
from danmaku.store.core import StoreCore
from danmaku.store.frames import read_frames_after, room_fault
from danmaku.store.identity import Identity, parse_ban_reasons, parse_ip_bans, parse_nicks
from danmaku.store.moderation import Moderation, staff_roles
from danmaku.store.notices import Notices
from danmaku.store.records import (
    CommittedFrame,
    ControlEvent,
    RoomLive,
    RoomState,
    _decode_settings,
    _s,
    _sum_fresh,
)
from danmaku.store.review import Review


class Feed:
    """The gateway's reads (and the few notes it writes). Frames, presence and the
    room state are its own; the staff list, words, review words, IP bans and staff
    nicks belong to ``moderation``, ``review`` and ``identity``, which it asks."""

    def __init__(
        self,
        core: StoreCore,
        moderation: Moderation,
        review: Review,
        identity: Identity,
        notices: Notices,
    ) -> None:
        self._core = core
        self.notices = notices
        self._r = core.r
        self._rb = core.rb
        self._call = core.call
        self._execute_scripted = core.execute_scripted
        self._moderation = moderation
        self._review = review
        self._identity = identity
        self._online = core.register(presence.ONLINE)
        self._epoch = core.register(presence.EPOCH)

    async def sync_rooms(
        self,
        gateway_id: str,
        counts: Mapping[str, LocalViewers | None],
        offered: Mapping[str, float],
        shed: Mapping[str, float] | None = None,
        quiet: Set[str] = frozenset(),
    ) -> dict[str, RoomLive]:
        """Publish this gateway's viewers (``rules.headcount``; ``None``: none left) and
        offered comment rate per room; read back the room-wide offered rate, the room
        settings and the room's last seq and history epoch (``presence.EPOCH``: given one
        if it has none; a changed epoch tells the gateway the room was reset). Rooms
        with viewers are marked active. Rooms in ``quiet`` (``headcount.QuietRounds``)
        are only read back: what they would write is in Redis already.
        """
        now_ms = int(time.time() * 1000)
        rooms = list(counts)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            active = {}
            for room in rooms:
                if room in quiet:
                    continue
                report = counts[room]
                presence.queue_report(pipe, room, gateway_id, report, now_ms)
                if report is not None and report.conns > 0:
                    active[room] = now_ms
                rate = offered.get(room, 0.0)
                pipe.hset(keys.offered(room), gateway_id, f"{rate:.3f}:{now_ms}")
                pipe.pexpire(keys.offered(room), 60_000)
                shed_rate = (shed or {}).get(room, 0.0)
                pipe.hset(keys.shed(room), gateway_id, f"{shed_rate:.3f}:{now_ms}")
                pipe.pexpire(keys.shed(room), 60_000)
            if active:
                pipe.zadd(keys.ROOMS, active)
            for room in rooms:
                pipe.hgetall(keys.offered(room))
                pipe.hgetall(keys.settings(room))
                presence.queue_epoch(pipe, self._epoch, room)
            pipe.get(keys.GLOBAL_WORDS_VERSION)
            return self._execute_scripted(pipe)

        replies = await self._call("sync_rooms", run)
        global_v = int(replies[-1] or 0)
        tail = replies[len(replies) - 1 - 3 * len(rooms) : -1]
        out = {}
        for i, room in enumerate(rooms):
            seq, epoch = presence.parse_epoch(tail[3 * i + 2])
            out[room] = RoomLive(
                offered=_sum_fresh(tail[3 * i], now_ms),
                settings=_decode_settings(tail[3 * i + 1]),
                global_words_version=global_v,
                seq=seq,
                epoch=epoch,
            )
        return out

    async def room_state(self, room: str) -> RoomState:
        """What a gateway needs to start serving a room: latest seq and its history
        epoch (given one if the room has none), online viewers, the control stream
        position, the pin."""
        now_ms = int(time.time() * 1000)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            presence.queue_epoch(pipe, self._epoch, room)
            presence.queue_online(pipe, self._online, room, now_ms)
            pipe.xrevrange(keys.control(room), "+", "-", count=1)
            pipe.get(keys.pin(room))
            pipe.hget(keys.settings(room), "words_v")
            pipe.get(keys.GLOBAL_WORDS_VERSION)
            pipe.smembers(keys.words(room))
            pipe.smembers(keys.GLOBAL_WORDS)
            # The version before the list (set_staff writes them the other way round).
            pipe.hget(keys.settings(room), "staff_v")
            pipe.hgetall(keys.staff_list(room))
            # identity (issue 19): versions before what they version, as above
            pipe.hmget(keys.settings(room), ["guests", "ipbans_v", "nicks_v"])
            pipe.hgetall(keys.ip_bans(room))
            pipe.hgetall(keys.staff_nicks(room))
            pipe.hgetall(keys.ban_reasons(room))
            return self._execute_scripted(pipe)

        position, online, ctl, pin, wv, gwv, words, gwords, sv, staff, *identity = await self._call(
            "room_state", run
        )
        seq, epoch = presence.parse_epoch(position)
        (guests, ipv, nv), ip_bans, nicks, reasons = identity
        return RoomState(
            seq=seq,
            epoch=epoch,
            online=presence.parse_online(online).online,
            control_id=_s(ctl[0][0]) if ctl else "0-0",
            pin=orjson.loads(pin) if pin else None,
            words_version=(float(wv or 0), int(gwv or 0)),
            words=sorted({_s(w) for w in words} | {_s(w) for w in gwords}),
            staff_version=float(sv or 0),
            staff=staff_roles(staff),
            guests=_decode_settings({"guests": guests}).get("guests") if guests else None,
            ip_bans_version=float(ipv or 0),
            ip_bans=parse_ip_bans(ip_bans, time.time()),
            nicks_version=float(nv or 0),
            staff_nicks=parse_nicks(nicks),
            ban_reasons=parse_ban_reasons(reasons),
        )

    async def room_position(self, room: str) -> tuple[int, str]:
        """The room's last committed seq and its history epoch, as of now (given an
        epoch if it has none)."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            presence.queue_epoch(pipe, self._epoch, room)
            return self._execute_scripted(pipe)

        return presence.parse_epoch((await self._call("room_position", run))[0])

    async def frames_after(self, room: str, after_seq: int, count: int) -> list[CommittedFrame]:
        """Up to ``count`` committed frames with seq > ``after_seq``, oldest first."""
        return await read_frames_after(self._core, room, after_seq, count)

    async def wait_notices(
        self,
        feed: str,
        after: str,
        block_ms: int,
        then_read: Callable[[str], tuple[int, str] | None] | None = None,
        count: int = 64,
    ) -> tuple[str, list[str], list[CommittedFrame], list[ControlEvent]]:
        """Wait up to ``block_ms`` for rooms named in ``feed``'s notice stream
        (``store.notices``) after entry ``after``; return the new position, the rooms
        (empty on timeout), and the news of those of them ``then_read`` gives a cursor
        for (room -> (frames after seq, control after id), or ``None``: not read; called
        from the waiting thread, for the named rooms only, so it must only look things
        up): read as ``read_events`` does in the same thread as soon as the notice
        arrives, so a frame reaches its gateway one round trip after its notice, not a
        round trip plus a trip through the event loop (which a busy gateway, e.g. in a
        handshake storm, makes long). The news may be older than the caller's cursors by
        then; callers skip what they already have.

        Cancel-safe: a cancelled wait is abandoned (its thread finishes within block_ms),
        nothing is consumed. One key, so it works the same on a cluster."""

        def run() -> tuple[str, list[str], list[Any]]:
            position, rooms = self.notices.wait_sync(feed, after, block_ms)
            wanted = {}
            if then_read is not None:
                for room in rooms:
                    cursor = then_read(room)
                    if cursor is not None:
                        wanted[room] = cursor
            return position, rooms, self._read_events_sync(wanted, count) if wanted else []

        position, rooms, news = await self._call("wait_notices", run, abandon=True)
        frames, controls = _events(news)
        return position, rooms, frames, controls

    def _read_events_sync(
        self, cursors: Mapping[str, tuple[int | None, str | None]], count: int
    ) -> list[Any]:
        """XREAD each room's frames after seq and control events after id (``None``:
        not that stream), pipelined; the raw entries for ``_events``. A room whose read
        is refused (a clobbered key: WRONGTYPE) is left out and counted in
        ``danmaku_redis_errors_total{op="read_events"}``, so it cannot stall the other
        rooms' frames; a server-wide error reply raises."""
        pipe = self._r.pipeline(transaction=False)
        for room, (seq, control_id) in cursors.items():
            streams: dict[Any, Any] = {}
            if seq is not None:
                streams[keys.frames(room)] = f"{seq}-0"
            if control_id is not None:
                streams[keys.control(room)] = control_id
            pipe.xread(streams, count=count)
        out: list[Any] = []
        for reply in pipe.execute(raise_on_error=False):
            if room_fault(reply) is not None:
                self._core.metrics.redis_errors.labels("read_events").inc()
            elif reply:
                out.extend(reply)
        return out

    async def read_events(
        self, frames_after: Mapping[str, int], control_after: Mapping[str, str], count: int = 64
    ) -> tuple[list[CommittedFrame], list[ControlEvent]]:
        """Frames newer than ``frames_after[room]`` and control events after
        ``control_after[room]``, without waiting: one read per room (a room's streams
        share a slot), pipelined per shard."""
        cursors = {
            room: (frames_after.get(room), control_after.get(room))
            for room in dict.fromkeys([*frames_after, *control_after])
        }
        if not cursors:
            return [], []
        news = await self._call("read_events", partial(self._read_events_sync, cursors, count))
        return _events(news)

    # ---- owned by other components: the presence round's reads, the handshake's notes ----
    async def staff_list(self, room: str) -> dict[str, dict[str, Any]]:
        """``Moderation.staff_list``."""
        return await self._moderation.staff_list(room)

    async def words(self, room: str | None) -> tuple[list[str], list[str]]:
        """``Moderation.words``."""
        return await self._moderation.words(room)

    async def note_role(self, room: str, uid: str, role: str, *, everywhere: bool = False) -> None:
        """``Moderation.note_role``."""
        await self._moderation.note_role(room, uid, role, everywhere=everywhere)

    async def review_words(self, room: str) -> list[str]:
        """``Review.review_words``."""
        return await self._review.review_words(room)

    async def ip_bans(self, room: str) -> dict[str, IpBan]:
        """``Identity.ip_bans``."""
        return await self._identity.ip_bans(room)

    async def staff_nicks(self, room: str) -> dict[str, str]:
        """``Identity.staff_nicks``."""
        return await self._identity.staff_nicks(room)

    async def note_ips(self, seen: Mapping[str, Mapping[str, str]]) -> None:
        """``Identity.note_ips``."""
        await self._identity.note_ips(seen)

    async def note_staff_nick(self, room: str, uid: str, nick: str) -> None:
        """``Identity.note_staff_nick``."""
        await self._identity.note_staff_nick(room, uid, nick)


def _events(reply: list[Any]) -> tuple[list[CommittedFrame], list[ControlEvent]]:
    """Split an XREAD reply over frames and control streams into frames and events."""
    frames: list[CommittedFrame] = []
    controls: list[ControlEvent] = []
    for key, entries in reply:
        name = _s(key)
        room = keys.room_of(name)
        if name.endswith(":ctl"):
            for entry_id, fields in entries:
                try:
                    event = orjson.loads(fields[b"e"])
                except (KeyError, orjson.JSONDecodeError):
                    continue
                controls.append(ControlEvent(room, _s(entry_id), event))
            continue
        for entry_id, fields in entries:
            frames.append(CommittedFrame(room, int(_s(entry_id).split("-")[0]), fields[b"d"]))
    return frames, controls
