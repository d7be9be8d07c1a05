"""``FrameFeed``: brings the local rooms' new frames and control events to their hubs.

No key every gateway reads: each feed has a notice stream of its own and registers, per
local room, that it holds the room (``store.notices``); workers, moderation and paid pins
name a room only in the streams of its holders. The feed blocks on its stream and reads
the named rooms' news in the waiting thread (one round trip after the notice), from each
hub's cursor, so a notice that is late, lost or repeated delays or repeats a read, never a
frame. Without a notice it reads (``rules.notices.FeedSchedule``):

* a room that just became local at once (its registration wakes the wait), then every
  ``poll_s`` for ``fresh_s`` (committers may still use holders read before it joined);
* a room that got no notice and no read for ``sweep_s`` (a lost notice, a committer that
  died between its commit and its notice; or simply an idle room), once per ``sweep_s``.

So its Redis cost follows the rooms that move, join or go quiet, never every local room
every second. Registrations are refreshed every third of their TTL, dropped when a room
empties, and all of them (and the stream) when the feed stops.
"""

from __future__ import annotations

import logging
import secrets

import trio

from danmaku.config import DEFAULTS, Settings
from danmaku.gateway.hub import RoomHubs
from danmaku.metrics import Metrics
from danmaku.rules.notices import FeedSchedule
from danmaku.store import CommittedFrame, ControlEvent, StoreError
from danmaku.store.interfaces import FeedStore

log = logging.getLogger(__name__)


class FrameFeed:
    """One per gateway: ``run`` it as a service. ``id`` names its notice stream."""

    READ_COUNT = 64  # frames per room per read; a room with more is read again at once
    PRUNE_EVERY = 4  # refreshes of the registrations per pruning of expired ones

    def __init__(
        self,
        hubs: RoomHubs,
        store: FeedStore,
        metrics: Metrics,
        *,
        block_ms: int = 1000,
        sweep_s: float = DEFAULTS.feed_sweep_s,
        holder_ttl_s: float = DEFAULTS.notice_holder_ttl_s,
        fresh_s: float = DEFAULTS.notice_holders_cache_ms / 1000 + 0.5,
        poll_s: float = DEFAULTS.tick_s,
        feed_id: str | None = None,
    ) -> None:
        self.hubs = hubs
        self.store = store
        self.metrics = metrics
        self.block_ms = block_ms
        self.id = feed_id or f"n-{secrets.token_hex(6)}"
        self._ttl_ms = max(1, int(holder_ttl_s * 1000))
        self._timing = {
            "sweep_s": sweep_s,
            "fresh_s": fresh_s,
            "poll_s": poll_s,
            "refresh_s": holder_ttl_s / 3,
        }
        self.schedule = FeedSchedule(**self._timing)
        self._changed = trio.Event()
        self._refreshes = 0
        hubs.on_change = self._on_change

    @classmethod
    def from_settings(
        cls, hubs: RoomHubs, store: FeedStore, metrics: Metrics, settings: Settings
    ) -> FrameFeed:
        return cls(
            hubs,
            store,
            metrics,
            sweep_s=settings.feed_sweep_s,
            holder_ttl_s=settings.notice_holder_ttl_s,
            # A committer may have read the holders just before this gateway joined and
            # use them for the cache period; its next commit after that is within a tick.
            fresh_s=settings.notice_holders_cache_ms / 1000 + 2 * settings.tick_s + 0.25,
            poll_s=settings.tick_s,
        )

    def _on_change(self) -> None:
        self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # A restart (supervise) registers every local room again at once.
        self.schedule = FeedSchedule(**self._timing)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._hold_loop)
                await self._wait_loop()
        finally:
            # Best effort: registrations left behind expire after their TTL anyway.
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await self.store.notices.close(self.id, self.schedule.local)
                except StoreError as exc:
                    log.info("frame feed %s: not unregistered (%s)", self.id, exc)

    async def _hold_loop(self) -> None:
        """Register the rooms that became local (and wake the wait to read them), drop
        those that are not any more, refresh all before their TTL runs out."""
        while True:
            self._changed = trio.Event()
            now = trio.current_time()
            added, removed = self.schedule.sync(self.hubs.hubs.keys(), now)
            refresh = self.schedule.refresh_due(now)
            if added or removed or refresh:
                try:
                    await self.store.notices.hold(
                        self.id,
                        self.schedule.local if refresh else added,
                        removed,
                        self._ttl_ms,
                        wake=sorted(added),
                        # dead gateways' entries: at new rooms, and every PRUNE_EVERY
                        # refreshes (a third fewer commands per refresh)
                        prune=not refresh or self._refreshes % self.PRUNE_EVERY == 0,
                    )
                except StoreError as exc:
                    # New rooms are polled while fresh; retry all of them soon.
                    log.warning("frame feed %s: registration failed: %s", self.id, exc)
                    self.schedule.refresh_now()
                    await trio.sleep(0.5)
                    continue
                self.schedule.registered(added, trio.current_time())
                if refresh:
                    self.schedule.refreshed(now)
                    self._refreshes += 1
            with trio.move_on_after(self.schedule.next_refresh_s(trio.current_time())):
                await self._changed.wait()

    async def _wait_loop(self) -> None:
        position: str | None = None
        while True:
            # A round with nothing due and no wait (a clock edge) must still yield.
            await trio.lowlevel.checkpoint()
            try:
                if position is None:
                    position = await self.store.notices.open(self.id, self._ttl_ms)
                rooms: set[str] = set()
                wait = self.schedule.wait_s(trio.current_time(), self.block_ms / 1000)
                if wait > 0:
                    # The rooms named by a notice are read in the wait's own thread (from
                    # their hubs' cursors): one trip through the event loop per wake.
                    position, named, frames, controls = await self.store.wait_notices(
                        self.id, position, max(1, round(wait * 1000)), self._cursor, self.READ_COUNT
                    )
                    self._deliver(frames, controls)
                    held = [room for room in named if room in self.hubs.hubs]
                    self.metrics.notices_received.labels("held").inc(len(held))
                    if len(held) < len(named):
                        self.metrics.notices_received.labels("stale").inc(len(named) - len(held))
                    self.schedule.heard(held, trio.current_time())
                    rooms = _full(frames, self.READ_COUNT)
                fresh, quiet = self.schedule.due(trio.current_time())
                rooms |= fresh | quiet
                news: set[str] = set()
                while rooms:
                    self.schedule.heard(rooms, trio.current_time())
                    got, rooms = await self._read(rooms)
                    news |= got
                if quiet:
                    missed = len(quiet & news)
                    self.metrics.feed_swept.labels("missed").inc(missed)
                    self.metrics.feed_swept.labels("idle").inc(len(quiet) - missed)
            except StoreError as exc:
                log.warning("frame feed: %s", exc)
                await trio.sleep(0.5)

    def _cursor(self, room: str) -> tuple[int, str] | None:
        """Where ``room``'s news starts, if it is local. Called from the store's waiting
        thread, for the rooms a notice names (not a snapshot of every room per wake):
        one dict lookup and two attribute reads, each atomic; a cursor read just before
        the event loop moves it only makes the feed read frames it then skips."""
        hub = self.hubs.hubs.get(room)
        return None if hub is None else (hub.last_seq, hub.control_id)

    async def _read(self, rooms: set[str]) -> tuple[set[str], set[str]]:
        """Read and deliver ``rooms``' news; return the rooms that had news and those
        that may have more."""
        hubs = self.hubs.hubs
        frames, controls = await self.store.read_events(
            {room: hubs[room].last_seq for room in rooms if room in hubs},
            {room: hubs[room].control_id for room in rooms if room in hubs},
            self.READ_COUNT,
        )
        self._deliver(frames, controls)
        return {f.room for f in frames} | {c.room for c in controls}, _full(frames, self.READ_COUNT)

    def _deliver(self, frames: list[CommittedFrame], controls: list[ControlEvent]) -> None:
        for event in controls:
            control_hub = self.hubs.hubs.get(event.room)
            if control_hub is not None and _newer(event.id, control_hub.control_id):
                control_hub.control(event)
        by_room: dict[str, list[CommittedFrame]] = {}
        for frame in frames:  # in seq order per room
            by_room.setdefault(frame.room, []).append(frame)
        for room, run in by_room.items():
            hub = self.hubs.hubs.get(room)
            if hub is not None:
                self.metrics.frames_received.inc(len(run))
                hub.deliver(run, self.metrics)


def _newer(a: str, b: str) -> bool:
    """Stream id ``a`` comes after ``b``."""
    ta, tb = a.partition("-"), b.partition("-")
    return (int(ta[0]), int(ta[2] or 0)) > (int(tb[0]), int(tb[2] or 0))


def _full(frames: list[CommittedFrame], count: int) -> set[str]:
    """Rooms that got ``count`` frames in one read: they may have more."""
    per_room: dict[str, int] = {}
    for frame in frames:
        per_room[frame.room] = per_room.get(frame.room, 0) + 1
    return {room for room, n in per_room.items() if n >= count}
