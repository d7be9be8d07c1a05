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

Here: the loops, discovery and leases, the tick's reads and commits. What the worker
keeps of a held room and its online figures: ``rooms.py`` (``HeldRoom``); one room's
frame of a tick: ``frame_build.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import Callable

import orjson
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules import balance
from danmaku.rules.merge import Draft
from danmaku.store import FrameCommit, Lease, StoreError
from danmaku.store.interfaces import FrameStore
from danmaku.store.records import COMMIT_FAILED
from danmaku.supervise import Backoff, LoopHealth, supervise
from danmaku.worker.frame_build import build, committed
from danmaku.worker.quarantine import RoomQuarantine
from danmaku.worker.rooms import HOT_WINDOW_S, MAX_WAIT_CAP_S, ONLINE_EVERY_S, HeldRoom, take

log = logging.getLogger(__name__)

DISCOVER_EVERY_S = 0.5
# Rooms looked at per discovery round, at most: the most recently active ones plus one
# page of a scan over all active rooms (so every room is seen within a few rounds, and a
# round's work is bounded however many rooms there are).
DISCOVER_PAGE = 500
# Rooms whose viewers, settings and live figures the online round reads: those with
# comments this recently (the others build no frames, and their figures are all 0).
RECENT_S = 5.0


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
        self.rooms: dict[str, HeldRoom] = {}
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
            live.apply_online(n, room_settings, highlighted, self.settings)
            stats[room] = live.report()
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
            seen = shown.get(lease.room, set())
            self.rooms[lease.room] = take(lease, self.settings, self._rng, seen, now)
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
            if (r := self.rooms.get(room)) is not None and r.busy_now(now)
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
        drafts: list[tuple[HeldRoom, Draft, FrameCommit]] = []
        for room, r in held.items():
            if room in got.failed:
                self._room_failed(room, "read", got.failed[room])
                continue
            try:
                built = build(r, got, now_wall, now, self.settings.max_items_per_tick, self.metrics)
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
                        committed(r, d, self.metrics)
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
            if still is not None and still.busy_now(now):
                self._busy.add(room)
        await self._release_failed()
        return done
