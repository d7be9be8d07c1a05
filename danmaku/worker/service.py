"""``BroadcastWorker``: a trio service that turns room streams into frames.

Every tick (``tick_ms``) it reads, for the rooms whose lease it holds *and* that have
something new (comments or moderation changes: the shared hot set, or work of their own),
the comments after each room's cursor (one pipeline), merges each room's into a frame
(pure ``RoomMerger``) and commits all frames (one pipeline of fenced Lua commits). A held
room with nothing new costs a tick nothing. Around that: discovery (take leases of rooms
with comments that nobody holds, a bounded page per round over however many there are),
renewal (lose a room the moment its lease is gone) and release (rooms without comments
for ``room_idle_s``; a room with viewers and no comments needs no worker at all).

Failure stays where it starts: each loop (tick, discover, renew, online) runs under
``supervise`` (any exception restarts that loop after a capped backoff, shown in
``/readyz`` through ``LoopHealth``), a Redis outage is retried on the next round, and each
room of a tick has its own boundary: a room whose read, merge or commit fails is
released, counted in ``danmaku_room_errors_total{stage}``, logged once and left alone for
a backoff (``RoomQuarantine``) while the other rooms' frames go on.

Start with ``await nursery.start(worker.run)``; cancel to stop: leases are released on
the way out (bounded by a short shielded timeout), and a worker that dies without
releasing simply lets its leases expire; the next holder resumes from the committed
cursor, so nothing is lost or repeated either way.
"""

from __future__ import annotations

import contextlib
import logging
import math
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
from danmaku.rules.items import Item
from danmaku.rules.merge import Draft, RoomMerger, Selector, stream_id_ms
from danmaku.rules.sampling import BudgetMeter, FrameSampler, Selection
from danmaku.rules.smoothing import Smoother
from danmaku.store import FrameCommit, Lease, StoreError
from danmaku.store.interfaces import FrameStore
from danmaku.store.records import COMMIT_FAILED, TickRead
from danmaku.supervise import Backoff, LoopHealth, supervise
from danmaku.worker.quarantine import RoomQuarantine

log = logging.getLogger(__name__)

DISCOVER_EVERY_S = 0.5
# Rooms looked at per discovery round, at most: the most recently active ones plus one
# page of a scan over all active rooms (so every room is seen within a few rounds, and a
# round's work is bounded however many rooms there are).
DISCOVER_PAGE = 500
# A room is read in a tick only if it was "hot" (comments stored, moderation change) this
# recently, or still has work: idle rooms cost nothing per tick. The window also covers
# clock skew between gateway and worker hosts (scores are the gateway's clock).
HOT_WINDOW_S = 2.0
ONLINE_EVERY_S = 1.0
# Rooms whose viewers, settings and live figures the online round reads: those with
# comments this recently (the others build no frames, and their figures are all 0).
RECENT_S = 5.0
# The longest a room's comments may wait for a frame (its ``max_wait_s``, at most this):
# how far back a worker taking a room over looks for comments already shown.
MAX_WAIT_CAP_S = 5.0


def sampling_selector(
    sampler: FrameSampler, meter: BudgetMeter | None = None, backlog_s: float = math.inf
) -> Selector:
    """Adapt the spike-control sampler to the merger's selector interface. With a
    ``meter``, priority items waiting for a frame are capped at ``backlog_s`` seconds of
    the room's display budget (``FrameSampler.select``'s ``max_carry``)."""

    def select(items: list[Item], budget: int) -> Selection:
        cap = None
        if meter is not None and math.isfinite(backlog_s):
            cap = math.ceil(max(0.0, meter.per_second) * backlog_s)
        return sampler.select(items, budget, max_carry=cap)

    return select


@dataclass
class _Room:
    lease: Lease
    merger: RoomMerger
    smoother: Smoother  # the room's display budget per second: pacing, queue, sampling
    last_active: float  # trio time of the last comment (or of taking the room)
    online: int = 0
    latencies: list[float] = field(default_factory=list)  # ms, items shown since the report
    catching_up: bool = True  # read every tick until a read finds nothing (takeover backlog)
    last_comments: float = float("-inf")  # trio time of the last read that found comments
    comments_in: int = 0  # since the last stats report
    shown: int = 0
    dropped: int = 0
    stats_live: bool = False  # its last stats report was not all zeros


class BroadcastWorker:
    def __init__(
        self,
        store: FrameStore,
        settings: Settings,
        metrics: Metrics,
        *,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        health: LoopHealth | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.health = health if health is not None else LoopHealth(metrics)
        self.worker_id = worker_id or f"w-{secrets.token_hex(4)}"
        self._clock = clock
        self._rng = random.Random(seed)
        self.rooms: dict[str, _Room] = {}
        self.quarantine = RoomQuarantine()
        # Rooms read every tick whatever the hot set says (see ``_busy``): kept up to
        # date as rooms change, so a tick never walks the idle ones.
        self._busy: set[str] = set()
        self._scan_cursor = 0  # discovery's scan over all active rooms
        # Hot rooms this worker does not hold and need not look at again before the
        # time given (held by another worker, or looked at by the last discovery).
        self._looked_at: dict[str, float] = {}
        self._hot_unknown: set[str] = set()  # hot rooms for the next discovery, first
        self._wake_discovery = trio.Event()
        self._to_release: dict[str, str] = {}  # leases of failed rooms, given back soon
        self._store_down: set[str] = set()  # loops in a Redis outage (logged once)

    # ---- lifecycle ----------------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[BroadcastWorker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled. Started means: the first discovery has been attempted."""
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._discover_once()
                except Exception as exc:  # the discover loop tries again (and reports)
                    log.warning("first discovery failed (%r); retrying", exc)
                nursery.start_soon(supervise, "discover", self._discover_loop, self.health)
                nursery.start_soon(supervise, "renew", self._renew_loop, self.health)
                nursery.start_soon(supervise, "online", self._online_loop, self.health)
                task_status.started(self)
                # Ticks are what viewers wait for: a failing tick loop retries within 5 s.
                await supervise("tick", self._tick_loop, self.health, Backoff(cap=5.0))
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.release_all()

    async def release_all(self) -> None:
        """Give back every lease we hold (another worker takes over at once). Idempotent."""
        held = {room: r.lease.token for room, r in self.rooms.items()}
        held |= self._to_release
        self.rooms.clear()
        self._busy.clear()
        self._to_release = {}
        self.metrics.rooms_held.set(0)
        try:
            await self.store.worker_gone(self.worker_id)
            await self.store.release(held)
            self.metrics.leases.labels("released").inc(len(held))
        except StoreError as exc:
            log.warning("release on shutdown failed (leases will expire): %s", exc)

    # ---- loops (each runs under ``supervise``) ----------------------------------------
    def _store_failed(self, loop: str, exc: StoreError) -> None:
        """A Redis failure in ``loop``: retried next round; logged once per outage."""
        if loop not in self._store_down:
            self._store_down.add(loop)
            log.warning("%s: Redis failed, retrying every round: %s", loop, exc)

    def _store_ok(self, loop: str) -> None:
        if loop in self._store_down:
            self._store_down.discard(loop)
            log.warning("%s: Redis answers again", loop)

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
                self._store_ok("tick")
            except StoreError as exc:
                self._store_failed("tick", exc)
            self.metrics.tick_duration.observe(time.perf_counter() - started)

    async def _discover_loop(self) -> None:
        while True:
            with trio.move_on_after(DISCOVER_EVERY_S):
                await self._wake_discovery.wait()
            self._wake_discovery = trio.Event()
            try:
                await self._discover_once()
                self._store_ok("discover")
            except StoreError as exc:
                self._store_failed("discover", exc)
            # Woken early (a hot room nobody seems to hold): at most a round per tick.
            await trio.sleep(self.settings.tick_s)

    async def _renew_loop(self) -> None:
        every = self.settings.lease_ms / 3000
        while True:
            await trio.sleep(every)
            held = {room: r.lease.token for room, r in self.rooms.items()}
            if not held:
                continue
            try:
                lost = await self.store.renew(held, self.settings.lease_ms)
                self._store_ok("renew")
            except StoreError as exc:
                self._store_failed("renew", exc)
                continue
            for room in lost:
                r = self.rooms.get(room)
                if r is not None and r.lease.token == held[room]:  # not taken anew since
                    self._drop(room, "lost")

    async def _online_loop(self) -> None:
        while True:
            await trio.sleep(ONLINE_EVERY_S)
            try:
                await self._online_once()
                self._store_ok("online")
            except StoreError as exc:
                self._store_failed("online", exc)

    async def _online_once(self) -> None:
        """Viewers, settings and live figures of the rooms with recent comments; release
        rooms without comments for ``room_idle_s``. Rooms without recent comments cost
        nothing here but one comparison (they build no frames; their figures are 0)."""
        now = trio.current_time()
        idle: dict[str, str] = {}
        recent: list[str] = []
        waiting = 0
        for room, r in self.rooms.items():
            waiting += len(r.merger.waiting)
            if now - r.last_active > self.settings.room_idle_s and not r.merger.has_work():
                idle[room] = r.lease.token
            elif now - r.last_comments <= RECENT_S or r.stats_live or room in self._busy:
                recent.append(room)
        self.metrics.comments_waiting.set(waiting)
        for room in idle:
            self._drop(room, "released")
        if idle:
            await self.store.release(idle)
        if not recent:
            return
        self.metrics.room_reads.labels("online").inc(len(recent))
        counts = await self.store.online_counts(recent)
        stats = {}
        for room, (n, room_settings, highlighted) in counts.items():
            live = self.rooms.get(room)
            if live is None:
                continue
            r = live
            r.online = n
            r.merger.highlighted = highlighted
            sm, conf = r.smoother, self.settings
            sm.per_second = room_settings.get("budget", conf.display_budget)
            sm.window_s = room_settings.get("smooth_window_s", conf.smooth_window_s)
            wait = room_settings.get("max_wait_s", conf.max_wait_s)
            sm.max_wait_s = min(wait, max(conf.max_wait_s, MAX_WAIT_CAP_S))
            stats[room] = {
                "comments_per_s": r.comments_in / ONLINE_EVERY_S,
                "shown_per_s": r.shown / ONLINE_EVERY_S,
                "dropped_per_s": r.dropped / ONLINE_EVERY_S,
                "latency_p99_ms": _p99(r.latencies),
            }
            # One report of zeros after the last busy one, then none: the figures expire.
            r.stats_live = bool(r.comments_in or r.shown or r.dropped)
            r.comments_in = r.shown = r.dropped = 0
            r.latencies = []
        await self.store.write_stats(stats)

    # ---- discovery ----------------------------------------------------------------------
    async def _discover_once(self) -> None:
        """Heartbeat, then move toward this worker's fair share of the active rooms (rooms
        with comments or moderation changes within ``room_idle_s``): take unheld ones up
        to the share, the most recently active and hot rooms first, then a page of a scan
        over all of them; give back the least active above the share. Bounded work per
        round: about ``2 x DISCOVER_PAGE`` rooms looked at, however many are active."""
        # A worker counts as live as long as its leases would: when a dead worker's leases
        # expire it also leaves the count, so the others' fair share covers its rooms.
        fresh_ms = self.settings.lease_ms + int(DISCOVER_EVERY_S * 1000)
        live = await self.store.worker_heartbeat(self.worker_id, fresh_ms)
        now_ms = int(self._clock() * 1000)
        page = await self.store.active_rooms(
            now_ms - int(self.settings.room_idle_s * 1000),
            now_ms - int(HOT_WINDOW_S * 1000),
            self._scan_cursor,
            DISCOVER_PAGE,
        )
        self._scan_cursor = page.cursor
        await self._release_failed()
        target, ceiling = balance.fair_share(max(page.total, len(self.rooms)), live)
        if len(self.rooms) > ceiling:
            held = sorted(self.rooms, key=lambda room: -self.rooms[room].last_active)
            excess = {room: self.rooms[room].lease.token for room in held[target:]}
            for room in excess:
                self._drop(room, "released")
            await self.store.release(excess)
            return
        now = trio.current_time()
        self.quarantine.forget_recovered(now)
        first = [*self._hot_unknown, *page.recent]
        self._hot_unknown = set()
        self._rng.shuffle(page.page)  # workers discovering at once try different rooms
        candidates = [
            room
            for room in dict.fromkeys([*first, *page.page])
            if room not in self.rooms and not self.quarantine.blocked(room, now)
        ]
        room_for = target - len(self.rooms)
        if room_for <= 0 or not candidates:
            self._note_looked_at(candidates, now, DISCOVER_EVERY_S)
            return
        unheld = await self.store.unleased(candidates)
        free = set(unheld)
        self._note_looked_at([r for r in candidates if r not in free], now, self._lease_s)
        self._note_looked_at(unheld[room_for:], now, DISCOVER_EVERY_S)
        wanted = unheld[:room_for]
        if not wanted:
            return
        token = f"{self.worker_id}:{secrets.token_hex(6)}"
        taken = await self.store.acquire(wanted, token, self.settings.lease_ms)
        now = trio.current_time()
        shown = await self._recently_shown([lease for lease in taken if lease.seq > 0])
        for lease in taken:
            sampler = FrameSampler(random.Random(self._rng.random()))
            smoother = Smoother(
                sampler,
                self.settings.display_budget,
                tick_s=self.settings.tick_s,
                window_s=self.settings.smooth_window_s,
                max_wait_s=self.settings.max_wait_s,
                backlog_s=self.settings.priority_backlog_s,
            )
            merger = RoomMerger(lease.room, lease.seq, lease.cursor, smoother=smoother)
            merger.seen = shown.get(lease.room, set())
            self.rooms[lease.room] = _Room(lease, merger, smoother, last_active=now)
            self._busy.add(lease.room)  # catching up: read at once
            self._looked_at.pop(lease.room, None)
            self.quarantine.retried(lease.room, now)
            self.metrics.leases.labels("takeover" if lease.seq > 0 else "acquired").inc()
        lost_race = set(wanted) - {lease.room for lease in taken}
        self._note_looked_at(list(lost_race), now, self._lease_s)
        self.metrics.rooms_held.set(len(self.rooms))

    async def _recently_shown(self, leases: list[Lease]) -> dict[str, set[str]]:
        """Per room taken over: the ids its last frames showed. Comments waited in the
        previous holder's queue behind the committed cursor, so they are read again;
        those already shown are skipped (``RoomMerger.seen``). Best effort per room: a
        failed read leaves that room without (a takeover during a Redis failure)."""
        wait = max(self.settings.max_wait_s, MAX_WAIT_CAP_S)
        n = math.ceil(wait / max(self.settings.tick_s, 1e-3)) + 2
        out: dict[str, set[str]] = {}
        for lease in leases:
            try:
                frames = await self.store.frames_after(lease.room, max(0, lease.seq - n), n)
            except StoreError as exc:
                log.warning("room %s: recent frames not read at takeover: %s", lease.room, exc)
                continue
            ids: set[str] = set()
            for f in frames:
                try:
                    items = orjson.loads(f.payload).get("items", [])
                    ids.update(str(i["id"]) for i in items if isinstance(i, dict) and "id" in i)
                except (orjson.JSONDecodeError, AttributeError, TypeError):
                    continue
            out[lease.room] = ids
        return out

    @property
    def _lease_s(self) -> float:
        return self.settings.lease_ms / 1000

    def _note_looked_at(self, rooms: list[str], now: float, for_s: float) -> None:
        """Remember not to wake discovery for these hot rooms for ``for_s``; bounded."""
        if len(self._looked_at) > 4 * DISCOVER_PAGE:
            self._looked_at = {r: t for r, t in self._looked_at.items() if t > now}
        for room in rooms:
            self._looked_at[room] = now + for_s

    def _drop(self, room: str, event: str) -> None:
        self._busy.discard(room)
        if self.rooms.pop(room, None) is not None:
            self.metrics.leases.labels(event).inc()
            self.metrics.rooms_held.set(len(self.rooms))

    # ---- per-room boundary ----------------------------------------------------------------
    def _room_failed(self, room: str, stage: str, error: object) -> None:
        """The room's tick failed at ``stage``: release it (soon, with the next store call),
        count, log once, and leave it alone for its backoff. Other rooms go on."""
        r = self.rooms.get(room)
        if r is None:
            return
        delay = self.quarantine.failed(room, trio.current_time())
        self.metrics.room_errors.labels(stage).inc()
        log.warning(
            "room %s failed at %s (%s); released, retried in %.1f s", room, stage, error, delay
        )
        self._to_release[room] = r.lease.token
        self._drop(room, "released")

    async def _release_failed(self) -> None:
        if self._to_release:
            leases, self._to_release = self._to_release, {}
            with contextlib.suppress(StoreError):  # else the leases expire on their own
                await self.store.release(leases)

    # ---- the tick -----------------------------------------------------------------------
    async def tick(self) -> int:
        """Read, merge and commit one tick for every held room with something new; return
        frames committed. Work is proportional to the busy and hot rooms, never to the
        rooms held: an idle held room is not even looked at."""
        if not self.rooms:
            return 0
        now = trio.current_time()
        read = {
            room
            for room in self._busy
            if (r := self.rooms.get(room)) is not None and self._busy_now(r, now)
        }
        self._busy = set(read)
        if len(read) < len(self.rooms):
            # Only rooms we do not already know to be busy need the shared hot set: a
            # busy room (say one celebrity room in a spike) costs no extra round trip.
            hot = await self.store.hot_rooms(int((self._clock() - HOT_WINDOW_S) * 1000))
            for room in hot:
                if room in self.rooms:
                    read.add(room)
                elif self._looked_at.get(room, -math.inf) <= now:
                    self._hot_unknown.add(room)  # nobody may hold it: discover it now
            if self._hot_unknown:
                self._wake_discovery.set()
        if not read:
            return 0
        held = {room: self.rooms[room] for room in read}
        self.metrics.room_reads.labels("tick").inc(len(held))
        got = await self.store.read_comments(
            {room: r.merger.read_cursor for room, r in held.items()},
            self.settings.max_items_per_tick,
        )
        now_wall = self._clock()
        now = trio.current_time()
        drafts: list[tuple[_Room, Draft, FrameCommit]] = []
        for room, r in held.items():
            if room in got.failed:
                self._room_failed(room, "read", got.failed[room])
                continue
            try:
                built = self._build(r, got, now_wall, now)
            except Exception as exc:  # this room only
                self._room_failed(room, "merge", repr(exc))
                continue
            if built is not None:
                drafts.append((r, *built))
        done = 0
        if drafts:
            results = await self.store.commit([c for _, _, c in drafts])
            for (r, d, _), result in zip(drafts, results, strict=True):
                room = r.merger.room
                if self.rooms.get(room) is not r:
                    continue  # dropped while we were committing
                if result.code == 1:
                    try:
                        self._committed(r, d)
                    except Exception as exc:  # the frame stands; the room starts over
                        self._room_failed(room, "commit", repr(exc))
                        continue
                    done += 1
                elif result.code == COMMIT_FAILED:
                    self._room_failed(room, "commit", result.error)
                else:
                    reason = "lease_lost" if result.code == -1 else "seq_moved"
                    self.metrics.commit_conflicts.labels(reason).inc()
                    self._drop(room, "lost")
        for room in held:
            still = self.rooms.get(room)
            if still is not None and self._busy_now(still, now):
                self._busy.add(room)
        await self._release_failed()
        return done

    def _build(
        self, r: _Room, got: TickRead, now_wall: float, now: float
    ) -> tuple[Draft, FrameCommit] | None:
        """Feed one room's read into its merger; its next frame to commit, if any."""
        room = r.merger.room
        r.merger.retract(got.retracts.get(room, []))
        comments = got.comments.get(room)
        r.catching_up = len(comments or ()) >= self.settings.max_items_per_tick
        if comments:
            invalid = r.merger.invalid
            r.merger.add((c.id, c.payload) for c in comments)
            if r.merger.invalid > invalid:
                self.metrics.comments_invalid.inc(r.merger.invalid - invalid)
            r.last_active = r.last_comments = now
        if room in got.deleted:
            r.merger.drop(got.deleted[room])
        draft = r.merger.build(now_wall, clock=now)  # waits measured on trio's clock
        if draft is None:
            return None
        broadcast, start_ms, end_ms = got.on_air.get(room, ("", 0, 0))
        commit = FrameCommit(
            room=room,
            token=r.lease.token,
            seq=draft.seq,
            cursor=draft.cursor,
            payload=encode_frame(
                room, draft.seq, draft.ts_ms, draft.items, draft.dropped, r.online, draft.retract
            ),
            retracted=len(draft.retract),
            broadcast=broadcast,
            recorded=_recording(r.merger.pending[: draft.consumed], start_ms, end_ms)
            if broadcast
            else (),
        )
        return draft, commit

    def _committed(self, r: _Room, d: Draft) -> None:
        r.merger.committed(d)
        r.comments_in += d.consumed
        r.shown += len(d.items)
        if len(r.latencies) < 10_000:
            r.latencies.extend(d.ts_ms - int(i.get("ts", d.ts_ms)) for i in d.items)
        r.dropped += d.dropped
        self._observe(d)

    @staticmethod
    def _busy_now(r: _Room, now: float) -> bool:
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


# What replay keeps of paid, gift and system items besides (issue 24).
PLATFORM = frozenset({"kind", "amount", "currency", "gift", "tier"})


def _recording(items: list[Item], start_ms: int, end_ms: int) -> list[tuple[str, bytes]]:
    """What replay keeps of each comment accepted between start and end (0 = on air):
    author, style, and its offset in the broadcast."""
    out = []
    for i in items:
        ts = int(i.get("ts", 0))
        if ts < start_ms or (end_ms and ts > end_ms):
            continue
        kept: dict[str, Any] = {
            k: i[k]
            for k in ("uid", "nick", "text", "color", "mode", "prio", "ts", "role")
            if k in i
        }
        kept |= {k: v for k, v in i.items() if k in PLATFORM}
        kept["offset_ms"] = ts - start_ms
        out.append((str(i["id"]), orjson.dumps(kept)))
    return out
