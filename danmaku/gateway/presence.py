"""``Presence``: a gateway's half-second exchange with Redis about its rooms.

Out: each room's viewers here (connections, anonymous ones and the distinct users, as
``rules.headcount`` reports them, so ``online`` counts people over all gateways) and the
comments offered and shed (the room-wide rate drives every gateway's ingest ceiling).
Back: the room-wide offered rate, the room's settings, its history epoch (a change means
the room was reset: its open connections are closed with 1013 and, resuming, told so),
and, when their version changed, its blocked words and staff list.
A staff-list change reaches the room's open connections in the same round
(``apply_staff``), so within ``PRESENCE_EVERY_S``. Also the moment a gateway freezes its
connections out of full GC walks as their number grows (``gcfreeze``).

Run with ``supervise`` (the gateway does): a failing round is logged and restarted with
backoff; a Redis error only skips a round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Set
from typing import TypeVar

import trio

from danmaku import auth, protocol
from danmaku.config import Settings
from danmaku.gateway.hub import Hub, RoomHubs
from danmaku.gateway.viewer import Viewer
from danmaku.gcfreeze import FreezeOnGrowth
from danmaku.metrics import Metrics
from danmaku.rules import guests
from danmaku.rules.headcount import HeadCount, LocalViewers, QuietRounds
from danmaku.rules.ipbans import IpBans
from danmaku.rules.nicks import StaffNicks
from danmaku.rules.review import ReviewCheck
from danmaku.rules.wordfilter import WordFilter
from danmaku.store import StoreError
from danmaku.store.interfaces import FeedStore

log = logging.getLogger(__name__)
T = TypeVar("T")

PRESENCE_EVERY_S = 0.5  # also how fast the ingest ceiling reacts to a spike


class Presence:
    """One gateway's presence. ``viewers`` is the gateway's live set of open connections
    (read, never changed here); ``freezer`` is ``None`` when GC freezing is off."""

    def __init__(
        self,
        hubs: RoomHubs,
        store: FeedStore,
        settings: Settings,
        metrics: Metrics,
        gateway_id: str,
        viewers: Set[Viewer],
        freezer: FreezeOnGrowth | None,
    ) -> None:
        self.hubs = hubs
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.gateway_id = gateway_id
        self.viewers = viewers
        self.freezer = freezer
        self.heads: dict[str, HeadCount] = {}  # per room with viewers here
        self.rounds = QuietRounds()  # which rooms' reports carry news this round

    async def run(self) -> None:
        """Every half second until cancelled: publish viewers and offered rates per room,
        and read back the room-wide offered rate (ingest ceiling), blocked words and staff
        lists. A Redis error skips one round; anything else leaves to the supervisor."""
        last = trio.current_time()
        while True:
            await trio.sleep(PRESENCE_EVERY_S)
            now = trio.current_time()
            elapsed, last = max(now - last, 1e-3), now
            if self.freezer is not None:
                action = self.freezer.decide(len(self.viewers))
                frozen = self.freezer.apply(action) if action is not None else None
                if frozen is not None:
                    self.metrics.gc_frozen.set(frozen)
            counts = self.hubs.counts()
            if not counts:
                continue
            now_ms = int(time.time() * 1000)
            reports = self._reports(counts, now_ms)
            offered, shed = {}, {}
            for room, hub in self.hubs.hubs.items():
                offered[room] = hub.offered / elapsed
                shed[room] = hub.shed / elapsed
                hub.offered = hub.shed = 0
            quiet = self.rounds.quiet(reports, offered, shed, now_ms)
            try:
                live = await self.store.sync_rooms(self.gateway_id, reports, offered, shed, quiet)
            except StoreError as exc:
                log.warning("presence report failed: %s", exc)
                self.rounds.failed()
                continue
            self.rounds.written(reports, quiet, offered, shed, now_ms)
            await self._write_seen_ips()
            for room, report in reports.items():
                head = self.heads.get(room)
                # A quiet report had nothing to write: it counts as written too.
                if head is not None and report is not None:
                    head.confirm(report, now_ms)
            restaffed: dict[str, Hub] = {}  # rooms whose staff list changed
            try:
                for room, info in live.items():
                    live_hub = self.hubs.hubs.get(room)
                    if live_hub is None:
                        continue
                    if info.epoch and info.epoch != live_hub.epoch:
                        self.reset(live_hub, info.seq, info.epoch)
                    live_hub.ceiling.ceiling = info.settings.get(
                        "ingest_ceiling", self.settings.ingest_ceiling
                    )
                    live_hub.ceiling.observe(info.offered, trio.current_time())
                    # Each list is read again only when its version moved; a Redis error
                    # keeps the old version, so the next round reads it again.
                    staff_v = info.settings.get("staff_v", 0.0)
                    held = live_hub.staff_version
                    staff = await self._reread(self.store.staff_list, room, staff_v, held)
                    if staff is not None:
                        live_hub.staff = {uid: str(e["role"]) for uid, e in staff.items()}
                        live_hub.staff_version = staff_v
                        restaffed[room] = live_hub
                    live_hub.review_mode = info.settings.get("review", 0.0)
                    review_v = info.settings.get("review_v", 0.0)
                    held = live_hub.review_version
                    review = await self._reread(self.store.review_words, room, review_v, held)
                    if review is not None:
                        live_hub.review, live_hub.review_version = ReviewCheck(review), review_v
                    self._identity(live_hub, info.settings)
                    ip_v = info.settings.get("ipbans_v", 0.0)
                    held = live_hub.ip_bans_version
                    bans = await self._reread(self.store.ip_bans, room, ip_v, held)
                    if bans is not None:
                        live_hub.ip_bans, live_hub.ip_bans_version = IpBans(bans), ip_v
                    nicks_v = info.settings.get("nicks_v", 0.0)
                    held = live_hub.nicks_version
                    nicks = await self._reread(self.store.staff_nicks, room, nicks_v, held)
                    if nicks is not None:
                        live_hub.staff_nicks, live_hub.nicks_version = StaffNicks(nicks), nicks_v
                    words_v = (info.settings.get("words_v", 0.0), info.global_words_version)
                    words = await self._reread(
                        self.store.words, room, words_v, live_hub.words_version
                    )
                    if words is not None:
                        live_hub.words = WordFilter(words[0] + words[1])  # room's + global
                        live_hub.words_version = words_v
            finally:
                # Even if a later room's read fails: these lists are already in use for
                # new connections, so the open ones must follow.
                if restaffed:
                    self.apply_staff(restaffed)

    async def _reread(
        self, read: Callable[[str], Awaitable[T]], room: str, version: object, held: object
    ) -> T | None:
        """``read(room)`` when ``version`` (the room's, from this round) is not the one
        the hub ``held``; ``None`` when it is, or when the read failed (logged: the hub
        keeps its list and its version, so the next round tries again)."""
        if version == held:
            return None
        try:
            return await read(room)
        except StoreError as exc:
            log.warning("%s of %s: %s", getattr(read, "__name__", "read"), room, exc)
            return None

    def _identity(self, hub: Hub, settings: Mapping[str, float]) -> None:
        """The room's guest policy as of this round (issue 19)."""
        hub.guests = guests.policy(settings.get(guests.SETTING), hub.guests_default)

    async def _write_seen_ips(self) -> None:
        """Write out the addresses users connected from since the last round (one
        pipeline; what an IP ban derived from a user bans). A Redis error loses them:
        the next connection of each user writes it again."""
        seen = {room: hub.seen_ips for room, hub in self.hubs.hubs.items() if hub.seen_ips}
        if not seen:
            return
        for hub in self.hubs.hubs.values():
            hub.seen_ips = {}
        try:
            await self.store.note_ips(seen)
        except StoreError as exc:
            log.warning("noting client addresses failed: %s", exc)

    def _reports(self, counts: dict[str, int], now_ms: int) -> dict[str, LocalViewers | None]:
        """This round's report per room (``None``: no viewers left here), from the
        counts each hub keeps as viewers come and go (``Hub.join``/``part``): no pass
        over the viewers."""
        reports: dict[str, LocalViewers | None] = {}
        users_total = anonymous_total = 0
        for room, n in counts.items():
            hub = self.hubs.hubs.get(room)
            if n <= 0 or hub is None:
                self.heads.pop(room, None)
                reports[room] = None
                continue
            head = self.heads.get(room)
            if head is None:
                head = self.heads[room] = HeadCount(self.settings.online_exact_max)
            users_total += len(hub.users)
            anonymous_total += hub.anonymous
            reports[room] = head.report(
                hub.users.keys(), hub.anonymous, len(hub.viewers), now_ms, hub.joined
            )
            hub.joined = set()
        self.metrics.viewers_local.labels("users").set(users_total)
        self.metrics.viewers_local.labels("anonymous").set(anonymous_total)
        return reports

    def reset(self, hub: Hub, seq: int, epoch: str) -> None:
        """The room's history epoch changed (its frames were reset or lost): follow the
        new numbering from ``seq`` and close the room's open connections with 1013, so
        that they resume with their old epoch and are told (``resume_failed``) instead
        of skipping the new frames their old position covers."""
        log.warning("room %s was reset (epoch %s -> %s)", hub.room, hub.epoch, epoch)
        self.metrics.room_resets.inc()
        hub.epoch, hub.last_seq = epoch, seq
        viewers = list(hub.viewers)
        hub.clear()
        for viewer in viewers:
            viewer.close(protocol.CLOSE_TRY_AGAIN, "room history reset: resume")

    def apply_staff(self, hubs: dict[str, Hub]) -> None:
        """These rooms' staff lists changed: give each open connection of them the role it
        now has there (``auth.in_room``), telling those whose role changed with a ``role``
        notice. One pass over the connections however many rooms changed; synchronous, so
        no connection joins half-way. A connection whose token has expired is left a
        viewer until it sends a fresh one."""
        now = time.time()
        for viewer in self.viewers:
            user = viewer.user
            hub = hubs.get(viewer.room)
            if hub is None or user is None or 0 < user.expires < now:
                continue
            updated = auth.in_room(user, hub.staff.get(user.uid))
            if updated is user:
                continue
            viewer.user = updated
            if updated.role != user.role:
                self.metrics.role_changes.inc()
                viewer.push_control(
                    protocol.notice("role", role=updated.role, user=updated.public())
                )
