"""Rooms on one gateway: who watches what, and the feed that brings their frames.

``RoomHubs`` keeps a ``Hub`` per room with local viewers. ``FrameFeed`` (``feed.py``) is
one task per gateway that wakes when workers commit frames of its rooms, reads them and
hands each frame to its hub, which decodes it once and queues the same text for every
viewer: the per-viewer cost is a queue append, never an encode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import trio

from danmaku import protocol
from danmaku.gateway.viewer import OutFrame, Viewer
from danmaku.metrics import Metrics
from danmaku.rules import guests
from danmaku.rules.admission import SmoothedCeiling
from danmaku.rules.bans import BanReasons, banned_fields
from danmaku.rules.ipbans import IpBans
from danmaku.rules.nicks import StaffNicks
from danmaku.rules.review import ReviewCheck
from danmaku.rules.sampling import DensityLevels
from danmaku.rules.wordfilter import WordFilter
from danmaku.store import CommittedFrame, ControlEvent, RoomState
from danmaku.store.interfaces import FeedStore

DENSITY = DensityLevels((1.0, 0.5, 0.25))

log = logging.getLogger(__name__)


class Hub:
    """One room's local viewers and the last frame seq this gateway has seen."""

    def __init__(
        self,
        room: str,
        state: RoomState,
        ceiling: float,
        guests_default: str = "comment",
        deflate: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self.room = room
        # Compresses a frame variant for the viewers that agreed to permessage-deflate
        # (once per gateway, on first use: ``OutFrame.deflated``); None: never.
        self.deflate = deflate
        self.last_seq = state.seq
        self.epoch = state.epoch  # the history epoch last_seq belongs to
        self.online = state.online
        self.control_id = state.control_id
        self.pin = state.pin
        self.words = WordFilter(state.words)
        self.words_version = state.words_version
        # The room's staff list (uid -> entry role) and the ``staff_v`` it was read at:
        # the presence loop re-reads it when ``staff_v`` changes (Presence.apply_staff).
        self.staff: dict[str, str] = dict(state.staff)
        self.staff_version = state.staff_version
        self.viewers: set[Viewer] = set()  # changed only by join/part/clear (head counts)
        # Who watches, kept as viewers come and go (not counted per presence round):
        # connections per uid, anonymous connections, and uids new since the last report.
        self.users: dict[str, int] = {}
        self.anonymous = 0
        self.joined: set[str] = set()
        self.ceiling = SmoothedCeiling(ceiling)
        self.offered = 0  # comments offered here since the last presence round
        # Held for review: the room's ``review`` setting (-1: not read yet, so texts are
        # checked) and its review words (read by presence when ``review_v`` changes).
        self.review_mode = -1.0
        self.review = ReviewCheck()
        self.review_version = -1.0
        self.shed = 0  # of those, shed by the ingest ceiling
        # identity (issue 19), kept up to date by the presence round (presence.py)
        self.guests_default = guests_default
        self.guests = guests.policy(state.guests, guests_default)
        self.ip_bans = IpBans(state.ip_bans)
        self.ip_bans_version = state.ip_bans_version
        self.staff_nicks = StaffNicks(state.staff_nicks)
        self.nicks_version = state.nicks_version
        self.seen_ips: dict[str, str] = {}  # uid -> address, written out by presence
        self.ban_reasons = BanReasons(state.ban_reasons)

    def join(self, viewer: Viewer) -> None:
        """``viewer`` now gets the room's live frames (and counts as online)."""
        if viewer not in self.viewers:
            self.viewers.add(viewer)
            self._count(viewer.user.uid if viewer.user else None, 1)

    def part(self, viewer: Viewer) -> None:
        if viewer in self.viewers:
            self.viewers.remove(viewer)
            self._count(viewer.user.uid if viewer.user else None, -1)

    def identified(self, viewer: Viewer) -> None:
        """``viewer``, anonymous until now, has a user (a first token in an ``auth``)."""
        if viewer in self.viewers and viewer.user is not None:
            self._count(None, -1)
            self._count(viewer.user.uid, 1)

    def clear(self) -> None:
        """No viewers any more (the room was reset under them)."""
        self.viewers.clear()
        self.users.clear()
        self.joined.clear()
        self.anonymous = 0

    def _count(self, uid: str | None, delta: int) -> None:
        if uid is None:
            self.anonymous += delta
            return
        n = self.users.get(uid, 0) + delta
        if n > 0:
            self.users[uid] = n
        else:
            self.users.pop(uid, None)
        if delta > 0:
            self.joined.add(uid)

    def control(self, event: ControlEvent) -> None:
        """Act on a moderation event: close a banned user's connections, show a pin, a
        notice or a settings change to every viewer (encoded once)."""
        self.control_id = event.id
        e = event.event
        kind = e.get("kind")
        if kind == "ban":
            uid = e.get("uid")
            if isinstance(uid, str):
                self.ban_reasons.note(uid, e.get("until"), e.get("reason"))
            err = protocol.error(
                protocol.ProtocolError(
                    "banned",
                    "you were banned",
                    extra=banned_fields(e.get("until"), e.get("reason")),
                )
            )
            for viewer in [v for v in self.viewers if v.user and v.user.uid == uid]:
                viewer.push_control(err)
                if e.get("close"):
                    viewer.close(protocol.CLOSE_POLICY, "banned")
            return
        if kind == "pin":
            self.pin = e.get("pin")
            text = protocol.notice("pin", pin=self.pin)
        elif kind == "notice":
            # Signed by the poster's nick and role, never a raw "role:uid" (older events
            # carry only that: split it).
            role, _, uid = str(e.get("by") or "").partition(":")
            text = protocol.notice(
                "room_notice",
                text=e.get("text"),
                by=e.get("nick") or uid,
                role=e.get("role") or role,
            )
        elif kind == "settings":
            text = protocol.notice("settings", changes=e.get("changes"))
        elif kind == "broadcast":  # issue 24: players link the replay of one that ended
            text = protocol.broadcast_notice(self.room, e)
        else:
            return
        for viewer in self.viewers:
            viewer.push_control(text)

    def deliver(self, frames: Sequence[CommittedFrame], metrics: Metrics) -> None:
        """Send new frames of this room (in seq order; ones already sent are skipped) to
        every viewer.

        Each frame is decoded once; viewers who asked for a lower density get a variant
        encoded once per level (``DENSITY``), never once per viewer. Several frames at
        once mean the feed fell behind (a gateway short of CPU): each viewer in step
        gets them all with one ``send()``, so the backlog costs a system call per viewer,
        not one per viewer and frame, and a busy gateway catches up instead of falling
        further behind.
        """
        new = [f for f in frames if f.seq > self.last_seq]
        if not new:
            return
        self.last_seq = new[-1].seq
        prepared = [self._prepare(f, metrics) for f in new]
        fast = fast_bytes = zbefore = zafter = 0
        if len(prepared) == 1:  # the usual case, kept lean: it runs once per viewer
            variants, body = prepared[0]
            # whole writes per density level, and of those, deflated ones: the byte
            # counts follow from the variants' sizes after the loop
            written = [0] * len(variants)
            deflated = [0] * len(variants)
            for viewer in self.viewers:
                level = viewer.level if body is not None else 0
                variant = variants[level] or _at(variants, body, level, self.deflate)
                if viewer.push_frame(variant):
                    written[level] += 1
                    if viewer.deflate:
                        deflated[level] += 1
            for level, count in enumerate(written):
                made = variants[level]
                if count and made is not None:
                    fast += count
                    fast_bytes += count * len(made.payload)
                    if deflated[level]:  # (push_frame made ``zwire``)
                        zbefore += deflated[level] * len(made.wire)
                        zafter += deflated[level] * len(made.zwire or made.wire)
        else:
            # per (level, deflate): the frames, their joined wire bytes, payload bytes and
            # plain wire bytes
            runs: dict[tuple[int, bool], tuple[list[OutFrame], bytes, int, int]] = {}
            for viewer in self.viewers:
                key = (viewer.level, viewer.deflate)
                run = runs.get(key)
                if run is None:
                    outs = [
                        _at(variants, body, viewer.level, self.deflate)
                        for variants, body in prepared
                    ]
                    run = runs[key] = (
                        outs,
                        b"".join(o.deflated() if viewer.deflate else o.wire for o in outs),
                        sum(len(o.payload) for o in outs),
                        sum(len(o.wire) for o in outs),
                    )
                if viewer.push_frames(run[0], run[1], run[3] if viewer.deflate else 0):
                    fast += len(run[0])
                    fast_bytes += run[2]
                    if viewer.deflate:
                        zbefore += run[3]
                        zafter += len(run[1])
            metrics.frame_runs.inc()
        if fast:  # counted once per broadcast: a per-viewer inc costs as much as a send
            metrics.frame_writes.inc(fast)
            metrics.frame_writes_fast.inc(fast)
            metrics.bytes_out.inc(fast_bytes)
            if zbefore:
                metrics.deflate_fanout.labels("before").inc(zbefore)
                metrics.deflate_fanout.labels("after").inc(zafter)

    def _prepare(
        self, frame: CommittedFrame, metrics: Metrics
    ) -> tuple[list[OutFrame | None], dict[str, Any] | None]:
        """The frame's wire form (density variants made when first asked for by
        ``_at``) and its decoded body (``None``: undecodable, forwarded as is)."""
        variants: list[OutFrame | None] = [OutFrame.build(frame.seq, frame.payload, self.deflate)]
        variants += [None] * (len(DENSITY.levels) - 1)
        try:
            body = orjson.loads(frame.payload)
            assert isinstance(body, dict)
            self.online = int(body.get("online", self.online))
            now_ms = time.time() * 1000
            e2e = metrics.latency.labels("end_to_end")
            for item in body.get("items", ()):
                e2e.observe(max(0.0, (now_ms - item["ts"]) / 1000))
            metrics.latency.labels("deliver").observe(max(0.0, (now_ms - body["ts"]) / 1000))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AssertionError):
            log.warning("undecodable frame %s/%s forwarded as is", self.room, frame.seq)
            return variants, None
        return variants, body


def _at(
    variants: list[OutFrame | None],
    body: dict[str, Any] | None,
    level: int,
    deflate: Callable[[bytes], bytes | None] | None = None,
) -> OutFrame:
    """The frame at density ``level``, encoded on first use (an undecodable frame: as is)."""
    if body is None:
        level = 0
    variant = variants[level]
    if variant is None:
        first = variants[0]
        assert first is not None
        variant = variants[level] = OutFrame.build(first.seq, _variant(body, level), deflate)
    return variant


def _variant(body: dict[str, Any] | None, level: int) -> bytes:
    """The frame with only the items of density ``level``; trimmed ones count as dropped."""
    assert body is not None
    items = body.get("items")
    items = items if isinstance(items, list) else []
    kept = DENSITY.split(items)[level]
    dropped = body.get("dropped")
    out = dict(
        body,
        items=kept,
        dropped=(dropped if isinstance(dropped, int) else 0) + len(items) - len(kept),
    )
    return orjson.dumps(out)


class RoomHubs:
    """The rooms with viewers on this gateway. Single trio task-group owner."""

    def __init__(
        self,
        store: FeedStore,
        metrics: Metrics,
        default_ceiling: float = 2000.0,
        guests_default: str = "comment",
        deflate: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.default_ceiling = default_ceiling
        self.guests_default = guests_default  # a room's guests policy until it sets one
        self.deflate = deflate  # each hub's frame compressor (``Hub.deflate``)
        self.hubs: dict[str, Hub] = {}
        self.gone: set[str] = set()  # rooms emptied since the last presence report
        self._creating: dict[str, trio.Event] = {}
        # Called when a room becomes local or stops being (the feed registers it).
        self.on_change: Callable[[], None] | None = None

    async def hub(self, room: str) -> Hub:
        """The room's hub, created from Redis (latest seq, online) on first use."""
        while room not in self.hubs:
            pending = self._creating.get(room)
            if pending is not None:
                await pending.wait()
                continue
            event = self._creating[room] = trio.Event()
            try:
                state = await self.store.room_state(room)
                self.hubs[room] = Hub(
                    room, state, self.default_ceiling, self.guests_default, self.deflate
                )
                self.gone.discard(room)
                self.metrics.rooms_local.set(len(self.hubs))
                if self.on_change is not None:
                    self.on_change()
            finally:
                del self._creating[room]
                event.set()
        return self.hubs[room]

    def leave(self, viewer: Viewer) -> None:
        hub = self.hubs.get(viewer.room)
        if hub is None:
            return
        hub.part(viewer)
        if not hub.viewers:
            del self.hubs[viewer.room]
            self.gone.add(viewer.room)
            self.metrics.rooms_local.set(len(self.hubs))
            if self.on_change is not None:
                self.on_change()

    def counts(self) -> dict[str, int]:
        """Viewers per room, including a 0 for rooms emptied since the last call."""
        out = {room: len(h.viewers) for room, h in self.hubs.items()}
        for room in self.gone:
            out.setdefault(room, 0)
        self.gone.clear()
        return out
