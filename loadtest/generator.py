"""One load-generator process: its share of viewers and senders, driven on a shared clock.

The layout (which room each viewer and sender joins, who is sampled, who reconnects or
stalls in which phase) is a pure function of the scenario, the run id and the process
index, so every process computes its own share with no coordination beyond the start
time. Viewer process ``p`` of ``procs`` takes the viewers whose global index is
``p mod procs``; the senders run in processes of their own after those
(``Scenario.senders_of``), unless ``sender_procs`` is 0.

Each process measures itself (``ProcStats``): CPU and wall seconds per stage and the
lag of its event loop, so a report can tell a saturated load generator from a slow
server.

Protocol with the coordinator (``multiprocessing`` queues): the process connects its
initial viewers and senders, puts ``("ready", p, info)``, waits for ``("start",
t0_wall)``, runs the phases, puts ``("progress", p, snapshot)`` every second and finally
``("done", p, counters)``, or ``("failed", p, traceback)``. Every wait is bounded.
"""

from __future__ import annotations

import queue
import random
import time
import traceback
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import trio

from danmaku import auth
from loadtest.client import (
    Conn,
    ConnSpec,
    Counters,
    DueFn,
    ProcStats,
    SenderPlan,
    close_all,
    run_sender,
    run_viewer,
)
from loadtest.scenario import Scenario
from loadtest.stats import apportion, zipf_weights

PROGRESS_EVERY_S = 0.25
START_TIMEOUT_S = 120.0
LAG_EVERY_S = 0.05


@dataclass(frozen=True)
class Target:
    """Where to connect and how senders get tokens (``secret`` to mint, else ``tokens``).

    Where each connection goes (``danmaku-loadtest fleet``): with ``route_url`` (a web
    app's base URL) it asks ``GET /api/rooms/{room}/gateway`` before every connection
    attempt and follows the answer (room-affine routing); else with ``ws_urls`` it goes
    to one of them drawn from its own index and the seed (a load balancer spreading
    viewers at random); else to ``ws_url``."""

    ws_url: str
    secret: str | None
    tokens: tuple[str, ...] = ()
    ws_urls: tuple[str, ...] = ()
    route_url: str = ""

    def url_of(self, key: int, seed: int) -> str:
        """The fixed URL of connection ``key`` (a seeded uniform draw over ``ws_urls``)."""
        if not self.ws_urls:
            return self.ws_url
        return self.ws_urls[random.Random(seed * 1_000_003 + key).randrange(len(self.ws_urls))]


class GatewayHint:
    """Asks the web app where a connection for a room should go (``GET
    /api/rooms/{room}/gateway``, the room-affine routing a player follows). An answer
    that fails is counted (``route_failed``) and the connection goes to ``fallback``."""

    def __init__(self, http: httpx.AsyncClient, web_url: str, fallback: str, c: Counters) -> None:
        self.http = http
        self.web_url = web_url.rstrip("/")
        self.fallback = fallback
        self.c = c

    async def __call__(self, room: str) -> str:
        try:
            resp = await self.http.get(f"{self.web_url}/api/rooms/{room}/gateway")
            resp.raise_for_status()
            url = resp.json()["url"]
            if isinstance(url, str) and url:
                return url
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        self.c.errors.add("route_failed")
        return self.fallback


def room_name(run_id: str, k: int) -> str:
    return f"lt{run_id}-{k}"


def spread(count: int, rooms: int, zipf_s: float, seed: int) -> list[int]:
    """Room index of each of ``count`` members: Zipf shares, shuffled deterministically
    so any prefix (the initial viewers, a join group) is spread like the whole."""
    shares = apportion(count, zipf_weights(rooms, zipf_s))
    out = [k for k, n in enumerate(shares) for _ in range(n)]
    random.Random(seed).shuffle(out)
    return out


@dataclass
class ViewerSlot:
    index: int
    room: int
    connect_at: float  # seconds relative to t0 (negative: during setup)
    spec: ConnSpec


def viewer_slots(
    sc: Scenario, run_id: str, ws_url: str | Target, proc: int, procs: int
) -> list[ViewerSlot]:
    """This process's viewers with their rooms, sampling and per-phase fates.

    Initial viewers connect during setup (``connect_at`` < 0, spaced by the global
    ``connect_rate``); a phase's ``join`` group connects from that phase's start. A
    ``Target`` gives each viewer its URL (``Target.url_of``).
    """
    target = ws_url if isinstance(ws_url, Target) else Target(ws_url, None)
    rooms = spread(sc.total_viewers, sc.rooms, sc.zipf_s, sc.seed)
    rng = random.Random(sc.seed * 7919 + proc)
    setup_s = sc.viewers / sc.connect_rate if sc.connect_rate else 0.0
    slots: list[ViewerSlot] = []
    sampled = 0
    group_start, group_rate, group_first = -setup_s, sc.connect_rate, 0
    bounds = [(sc.viewers, -setup_s, sc.connect_rate, 0)]
    acc = sc.viewers
    for i, ph in enumerate(sc.phases):
        bounds.append((acc + ph.join, sc.phase_start(i), ph.join_rate, acc))
        acc += ph.join
    for g in range(sc.total_viewers):
        if g % procs != proc:
            continue
        for end, start, rate, first in bounds:
            if g < end:
                group_start, group_rate, group_first = start, rate, first
                break
        offset = (g - group_first) / group_rate if group_rate else 0.0
        is_sampled = sampled < sc.max_sampled and (
            rng.random() < sc.sample_fraction or (sampled == 0 and sc.sample_fraction > 0)
        )
        sampled += is_sampled
        url = target.url_of(g, sc.seed)
        spec = ConnSpec(url=url, room=room_name(run_id, rooms[g]), sampled=is_sampled)
        slots.append(ViewerSlot(g, rooms[g], group_start + offset, spec))
    return slots


def assign_fates(sc: Scenario, slots: list[ViewerSlot], t0: float, proc: int) -> None:
    """Mark viewers that reconnect or stall in each phase (trio times from ``t0``)."""
    rng = random.Random(sc.seed * 104729 + proc)
    for i, ph in enumerate(sc.phases):
        start = sc.phase_start(i)
        present = [s for s in slots if s.connect_at <= start]
        for s in present:
            reconnect = ph.reconnect_fraction and rng.random() < ph.reconnect_fraction
            if reconnect and s.spec.reconnect_at is None:
                s.spec.set_reconnect(t0 + start + rng.uniform(0, ph.reconnect_spread_s))
            if ph.slow_fraction and rng.random() < ph.slow_fraction and s.spec.slow_from is None:
                s.spec.slow_from = t0 + start
                s.spec.slow_until = t0 + start + ph.duration_s


def sender_rooms(sc: Scenario) -> list[int]:
    zipf_s = sc.zipf_s if sc.sender_zipf_s is None else sc.sender_zipf_s
    return spread(sc.senders, sc.rooms, zipf_s, sc.seed + 1)


def due_fn(sc: Scenario, t0: float) -> DueFn:
    """The send schedule on the trio clock: comment ``n`` of the run is due at ``t0 +
    due_time(n + arrival_offset(n))``, counted in the stage of its phase; None past the
    last phase."""

    def due(n: int) -> tuple[float, int] | None:
        rel = sc.due_time(n + sc.arrival_offset(n))
        if rel is None:
            return None
        return t0 + rel, sc.phase_at(rel) + 1

    return due


class _Meter:
    """Charges CPU and wall time to the current stage at every stage change."""

    def __init__(self, c: Counters, stats: ProcStats) -> None:
        self.c, self.stats = c, stats
        self.cpu, self.wall = time.process_time(), trio.current_time()

    def switch(self, stage: int) -> None:
        cpu, wall = time.process_time(), trio.current_time()
        self.stats.cpu_s[self.c.stage] += cpu - self.cpu
        self.stats.wall_s[self.c.stage] += wall - self.wall
        self.cpu, self.wall = cpu, wall
        self.c.stage = stage


async def _stage_clock(sc: Scenario, meter: _Meter, t0: float) -> None:
    for i in range(len(sc.phases)):
        await trio.sleep_until(t0 + sc.phase_start(i))
        meter.switch(i + 1)
    await trio.sleep_until(t0 + sc.duration_s)
    meter.switch(len(sc.phases) + 1)


async def _lag_monitor(c: Counters, stats: ProcStats) -> None:
    """Record how late a ``LAG_EVERY_S`` timer fires, and the viewer-seconds of
    connected viewers, per stage."""
    last = trio.current_time()
    while True:
        at = last + LAG_EVERY_S
        await trio.sleep_until(at)
        now = trio.current_time()
        stats.lag[c.stage].record((now - at) * 1000.0)
        c.stages[c.stage].viewer_seconds += c.viewers_open * (now - last)
        last = now


def snapshot(c: Counters) -> dict[str, Any]:
    """Cumulative counts plus the latency recorded since the last snapshot (cheap: no
    histogram merging, it runs several times a second)."""
    snap: dict[str, Any] = {
        key: sum(getattr(st, key) for st in c.stages)
        for key in ("frames", "items", "bytes", "sent", "acked")
    }
    snap |= {
        "stage": c.stage,
        "connected": c.connected,
        "errors": sum(c.errors.values()),
        "interval": c.interval.encode(),
    }
    c.interval = type(c.interval)()
    return snap


async def _progress(out_q: Any, proc: int, c: Counters) -> None:
    while True:
        await trio.sleep(PROGRESS_EVERY_S)
        out_q.put(("progress", proc, snapshot(c)))


def role_of(viewers: int, senders: int) -> str:
    return "+".join(x for x, n in (("viewers", viewers), ("senders", senders)) if n) or "idle"


async def run_process(
    sc: Scenario, target: Target, run_id: str, proc: int, in_q: Any, out_q: Any
) -> None:
    """Drive this process's share of the scenario (see the module docstring)."""
    stages = len(sc.phases) + 2
    c = Counters(stages)
    slots = viewer_slots(sc, run_id, target, proc, sc.procs) if proc < sc.procs else []
    my_senders = sc.senders_of(proc)
    stats = ProcStats.new(
        proc, role_of(len(slots), len(my_senders)), len(slots), len(my_senders), stages
    )
    c.procs[proc] = stats
    async with AsyncExitStack() as stack:
        hint: GatewayHint | None = None
        if target.route_url:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))
            hint = GatewayHint(http, target.route_url, target.ws_url, c)
            for slot in slots:
                slot.spec.resolve = hint
        await _drive(sc, target, run_id, proc, in_q, out_q, c, stats, slots, hint)
    out_q.put(("done", proc, c.encode()))


async def _drive(
    sc: Scenario,
    target: Target,
    run_id: str,
    proc: int,
    in_q: Any,
    out_q: Any,
    c: Counters,
    stats: ProcStats,
    slots: list[ViewerSlot],
    hint: GatewayHint | None,
) -> None:
    registry: list[Conn] = []
    my_senders = sc.senders_of(proc)
    meter = _Meter(c, stats)
    s_rooms = sender_rooms(sc)
    setup_start = trio.current_time()
    setup_s = sc.viewers / sc.connect_rate if sc.connect_rate else 0.0
    initial = [s for s in slots if s.connect_at < 0]
    async with trio.open_nursery() as conns:
        conns.start_soon(_progress, out_q, proc, c)
        conns.start_soon(_lag_monitor, c, stats)
        # setup: connect initial viewers (paced) and senders
        for s in initial:
            at = setup_start + setup_s + s.connect_at
            conns.start_soon(run_viewer, s.spec, c, at, registry)
        started = trio.Event()
        t0_box: list[float] = []

        async def wait_start() -> DueFn:
            await started.wait()
            return due_fn(sc, t0_box[0])

        for j in my_senders:
            uid = f"lt{run_id}s{j}"
            tok = (
                auth.mint(target.secret, uid=uid, nick=f"load-{j}")
                if target.secret
                else target.tokens[j % len(target.tokens)]
            )
            url = target.url_of(-1 - j, sc.seed)  # senders: keys apart from the viewers'
            spec = ConnSpec(url=url, room=room_name(run_id, s_rooms[j]), token=tok, resolve=hint)
            plan = SenderPlan(uid, j, sc.senders, sc.max_inflight, sc.text_bytes)
            conns.start_soon(run_sender, spec, plan, c, wait_start, registry)
        expected = len(initial) + len(my_senders)
        with trio.move_on_after(setup_s + 30):
            while c.attempted < expected:  # noqa: ASYNC110 - polls a plain counter
                await trio.sleep(0.05)
        out_q.put(("ready", proc, {"connected": c.connected, "attempted": c.attempted}))
        cmd = await trio.to_thread.run_sync(partial(_get, in_q, START_TIMEOUT_S))
        if cmd is None or cmd[0] != "start":
            conns.cancel_scope.cancel()
            return
        t0 = trio.current_time() + (float(cmd[1]) - time.time())
        t0_box.append(t0)
        assign_fates(sc, slots, t0, proc)
        started.set()
        for s in slots:
            if s.connect_at >= 0:
                conns.start_soon(run_viewer, s.spec, c, t0 + s.connect_at, registry)
        conns.start_soon(_stage_clock, sc, meter, t0)
        await trio.sleep_until(t0 + sc.duration_s + sc.settle_s)
        meter.switch(c.stage)
        out_q.put(("progress", proc, snapshot(c)))
        await close_all(registry)
        conns.cancel_scope.cancel()


def _get(q: Any, timeout: float) -> Any:
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return None


def process_main(
    scenario: dict[str, Any],
    target: Target,
    run_id: str,
    proc: int,
    in_q: Any,
    out_q: Any,
) -> None:
    """Entry point of a load-generator process (picklable arguments only)."""
    try:
        sc = Scenario.from_dict(scenario)
        trio.run(run_process, sc, target, run_id, proc, in_q, out_q)
    except BaseException:
        out_q.put(("failed", proc, traceback.format_exc()))
