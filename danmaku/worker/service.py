"""``BroadcastWorker``: a trio service that turns room streams into frames.

Every tick (``tick_ms``) it reads, for all rooms whose lease it holds, the comments after
each room's cursor (one pipeline), merges each room's into a frame (pure ``RoomMerger``)
and commits all frames (one pipeline of fenced Lua commits). Around that: discovery
(take leases of active rooms nobody holds), renewal (lose a room the moment its lease is
gone) and release (rooms idle for ``room_idle_s``).

Start with ``await nursery.start(worker.run)``; cancel to stop: leases are released on
the way out (bounded by a short shielded timeout), and a worker that dies without
releasing simply lets its leases expire; the next holder resumes from the committed
cursor, so nothing is lost or repeated either way.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.protocol import encode_frame
from danmaku.rules import balance
from danmaku.rules.merge import Draft, Item, Pick, RoomMerger, Selector, stream_id_ms
from danmaku.rules.sampling import BudgetMeter, FrameSampler
from danmaku.store import FrameCommit, Lease, Store, StoreError

log = logging.getLogger(__name__)

DISCOVER_EVERY_S = 0.5
# A room is read in a tick only if it was "hot" (comments stored, moderation change) this
# recently, or still has work: idle rooms cost nothing per tick. The window also covers
# clock skew between gateway and worker hosts (scores are the gateway's clock).
HOT_WINDOW_S = 2.0
ONLINE_EVERY_S = 1.0


def sampling_selector(sampler: FrameSampler) -> Selector:
    """Adapt the spike-control sampler to the merger's selector interface."""

    def select(items: list[Item], budget: int) -> Pick:
        sel = sampler.select(items, budget)
        return Pick(sel.items, sel.dropped, sel.carry, sel.dropped_by_tier, sel.folded)

    return select


@dataclass
class _Room:
    lease: Lease
    merger: RoomMerger
    meter: BudgetMeter  # the room's display budget, items per second -> per frame
    last_active: float  # trio time of the last comment or viewer seen
    online: int = 0
    latencies: list[float] = field(default_factory=list)  # ms, items shown since the report
    catching_up: bool = True  # read every tick until a read finds nothing (takeover backlog)
    last_comments: float = float("-inf")  # trio time of the last read that found comments
    comments_in: int = 0  # since the last stats report
    shown: int = 0
    dropped: int = 0


class BroadcastWorker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        *,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.worker_id = worker_id or f"w-{secrets.token_hex(4)}"
        self._clock = clock
        self._rng = random.Random(seed)
        self.rooms: dict[str, _Room] = {}

    # ---- lifecycle ----------------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[BroadcastWorker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled. Started means: the first discovery has been attempted."""
        try:
            async with trio.open_nursery() as nursery:
                await self._discover_once()
                nursery.start_soon(self._discover_loop)
                nursery.start_soon(self._renew_loop)
                nursery.start_soon(self._online_loop)
                task_status.started(self)
                await self._tick_loop()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.release_all()

    async def release_all(self) -> None:
        """Give back every lease we hold (another worker takes over at once). Idempotent."""
        held = {room: r.lease.token for room, r in self.rooms.items()}
        self.rooms.clear()
        self.metrics.rooms_held.set(0)
        try:
            await self.store.worker_gone(self.worker_id)
            await self.store.release(held)
            self.metrics.leases.labels("released").inc(len(held))
        except StoreError as exc:
            log.warning("release on shutdown failed (leases will expire): %s", exc)

    # ---- loops ------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        tick = self.settings.tick_s
        deadline = trio.current_time()
        while True:
            deadline += tick
            now = trio.current_time()
            if deadline < now - tick:  # fell far behind: skip missed ticks, do not burst
                deadline = now
            await trio.sleep_until(deadline)
            self.metrics.tick_lag.observe(max(0.0, trio.current_time() - deadline))
            started = time.perf_counter()
            try:
                await self.tick()
            except StoreError as exc:
                log.warning("tick failed, retrying next tick: %s", exc)
            self.metrics.tick_duration.observe(time.perf_counter() - started)

    async def _discover_loop(self) -> None:
        while True:
            await trio.sleep(DISCOVER_EVERY_S)
            try:
                await self._discover_once()
            except StoreError as exc:
                log.warning("discovery failed: %s", exc)

    async def _renew_loop(self) -> None:
        every = self.settings.lease_ms / 3000
        while True:
            await trio.sleep(every)
            held = {room: r.lease.token for room, r in self.rooms.items()}
            if not held:
                continue
            try:
                lost = await self.store.renew(held, self.settings.lease_ms)
            except StoreError as exc:
                log.warning("lease renewal failed: %s", exc)
                continue
            for room in lost:
                self._drop(room, "lost")

    async def _online_loop(self) -> None:
        while True:
            await trio.sleep(ONLINE_EVERY_S)
            if not self.rooms:
                continue
            try:
                counts = await self.store.online_counts(list(self.rooms))
            except StoreError as exc:
                log.warning("online counts failed: %s", exc)
                continue
            now = trio.current_time()
            idle: dict[str, str] = {}
            for room, (n, room_settings, highlighted) in counts.items():
                r = self.rooms.get(room)
                if r is None:
                    continue
                r.online = n
                r.merger.highlighted = highlighted
                r.meter.per_second = room_settings.get("budget", self.settings.display_budget)
                if n > 0:
                    r.last_active = now
                elif now - r.last_active > self.settings.room_idle_s and not r.merger.has_work():
                    idle[room] = r.lease.token
            for room in idle:
                self._drop(room, "released")
            if idle:
                await self.store.release(idle)
            stats = {}
            for room, r in self.rooms.items():
                stats[room] = {
                    "comments_per_s": r.comments_in / ONLINE_EVERY_S,
                    "shown_per_s": r.shown / ONLINE_EVERY_S,
                    "dropped_per_s": r.dropped / ONLINE_EVERY_S,
                    "latency_p99_ms": _p99(r.latencies),
                }
                r.comments_in = r.shown = r.dropped = 0
                r.latencies = []
            await self.store.write_stats(stats)

    # ---- steps ------------------------------------------------------------------------
    async def _discover_once(self) -> None:
        """Heartbeat, then move toward this worker's fair share of the active rooms:
        take unheld ones up to the share, give back the least active above it."""
        # A worker counts as live as long as its leases would: when a dead worker's leases
        # expire it also leaves the count, so the others' fair share covers its rooms.
        fresh_ms = self.settings.lease_ms + int(DISCOVER_EVERY_S * 1000)
        live = await self.store.worker_heartbeat(self.worker_id, fresh_ms)
        since_ms = int((self._clock() - self.settings.room_idle_s) * 1000)
        active = await self.store.active_rooms(since_ms)
        unheld = await self.store.unleased([room for room in active if room not in self.rooms])
        self._rng.shuffle(unheld)  # workers discovering at once try different rooms first
        held = sorted(self.rooms, key=lambda room: -self.rooms[room].last_active)
        wanted, excess = balance.plan(held, unheld, len(active), live)
        if excess:
            leases = {room: self.rooms[room].lease.token for room in excess}
            for room in excess:
                self._drop(room, "released")
            await self.store.release(leases)
        if not wanted:
            return
        token = f"{self.worker_id}:{secrets.token_hex(6)}"
        taken = await self.store.acquire(wanted, token, self.settings.lease_ms)
        now = trio.current_time()
        for lease in taken:
            sampler = FrameSampler(random.Random(self._rng.random()))
            merger = RoomMerger(lease.room, lease.seq, lease.cursor, sampling_selector(sampler))
            meter = BudgetMeter(self.settings.display_budget)
            self.rooms[lease.room] = _Room(lease, merger, meter, last_active=now)
            self.metrics.leases.labels("takeover" if lease.seq > 0 else "acquired").inc()
        self.metrics.rooms_held.set(len(self.rooms))

    def _drop(self, room: str, event: str) -> None:
        if self.rooms.pop(room, None) is not None:
            self.metrics.leases.labels(event).inc()
            self.metrics.rooms_held.set(len(self.rooms))

    async def tick(self) -> int:
        """Read, merge and commit one tick for every held room; return frames committed."""
        if not self.rooms:
            return 0
        now = trio.current_time()
        busy = {room for room, r in self.rooms.items() if self._busy(r, now)}
        hot: set[str] = set()
        if len(busy) < len(self.rooms):
            # Only rooms we do not already know to be busy need the shared hot set: a
            # busy room (say one celebrity room in a spike) costs no extra round trip.
            hot = await self.store.hot_rooms(int((self._clock() - HOT_WINDOW_S) * 1000))
        held = {room: r for room, r in self.rooms.items() if room in hot or room in busy}
        if not held:
            return 0
        read, retracts, on_air, deleted = await self.store.read_comments(
            {room: r.merger.read_cursor for room, r in held.items()},
            self.settings.max_items_per_tick,
        )
        now_wall = self._clock()
        now = trio.current_time()
        drafts: list[tuple[_Room, Draft]] = []
        for room, r in held.items():
            r.merger.retract(retracts.get(room, []))
            comments = read.get(room)
            r.catching_up = len(comments or ()) >= self.settings.max_items_per_tick
            if comments:
                r.merger.add((c.id, c.payload) for c in comments)
                r.last_active = r.last_comments = now
            if room in deleted:
                r.merger.drop(deleted[room])
            draft = r.merger.build(now_wall, r.meter.take(self.settings.tick_s))
            if draft is not None:
                drafts.append((r, draft))
        if not drafts:
            return 0
        commits = []
        for r, d in drafts:
            broadcast, start_ms, end_ms = on_air.get(r.merger.room, ("", 0, 0))
            commits.append(
                FrameCommit(
                    room=r.merger.room,
                    token=r.lease.token,
                    seq=d.seq,
                    cursor=d.cursor,
                    payload=encode_frame(
                        r.merger.room, d.seq, d.ts_ms, d.items, d.dropped, r.online, d.retract
                    ),
                    retracted=len(d.retract),
                    broadcast=broadcast,
                    recorded=_recording(r.merger.pending[: d.consumed], start_ms, end_ms)
                    if broadcast
                    else (),
                )
            )
        results = await self.store.commit(commits)
        done = 0
        for (r, d), result in zip(drafts, results, strict=True):
            if self.rooms.get(r.merger.room) is not r:
                continue  # dropped while we were committing
            if result == 1:
                r.merger.committed(d)
                r.comments_in += d.consumed
                r.shown += len(d.items)
                if len(r.latencies) < 10_000:
                    r.latencies.extend(d.ts_ms - int(i.get("ts", d.ts_ms)) for i in d.items)
                r.dropped += d.dropped
                done += 1
                self._observe(d)
            else:
                reason = "lease_lost" if result == -1 else "seq_moved"
                self.metrics.commit_conflicts.labels(reason).inc()
                self._drop(r.merger.room, "lost")
        return done

    @staticmethod
    def _busy(r: _Room, now: float) -> bool:
        """Read this tick whatever the hot set says: a takeover backlog, comments
        waiting (priority carry), or comments found within the last half of the hot
        window (the room is surely still in the hot set, moderation changes included,
        since the read returns those too)."""
        return r.catching_up or r.merger.has_work() or now - r.last_comments < HOT_WINDOW_S / 2

    def _observe(self, d: Draft) -> None:
        m = self.metrics
        m.frames_built.inc()
        m.frame_items.observe(len(d.items))
        for tier, n in d.dropped_by_tier.items():
            m.items_dropped.labels(str(tier)).inc(n)
        if d.folded:
            m.items_folded.inc(d.folded)
        merge = m.latency.labels("merge")
        for item in d.items:
            merge.observe(max(0.0, (d.ts_ms - stream_id_ms(str(item["id"]))) / 1000))


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])


def _recording(items: list[Item], start_ms: int, end_ms: int) -> list[tuple[str, bytes]]:
    """What replay keeps of each comment accepted between start and end (0 = on air):
    author, style, and its offset in the broadcast."""
    out = []
    for i in items:
        ts = int(i.get("ts", 0))
        if ts < start_ms or (end_ms and ts > end_ms):
            continue
        kept: dict[str, Any] = {
            k: i[k] for k in ("uid", "nick", "text", "color", "mode", "prio", "ts") if k in i
        }
        kept["offset_ms"] = ts - start_ms
        out.append((str(i["id"]), orjson.dumps(kept)))
    return out
