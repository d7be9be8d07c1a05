"""One load-generator process: its share of viewers and senders, driven on a shared clock.

The layout (which room each viewer and sender joins, who is sampled, who reconnects or
stalls in which phase) is a pure function of the scenario, the run id and the process
index, so every process computes its own share with no coordination beyond the start
time. Process ``p`` of ``P`` takes the viewers and senders whose global index is
``p mod P``.

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
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from danmaku import auth
from loadtest.client import (
    Conn,
    ConnSpec,
    Counters,
    RateFn,
    SenderPlan,
    close_all,
    run_sender,
    run_viewer,
)
from loadtest.scenario import Scenario
from loadtest.stats import apportion, zipf_weights

PROGRESS_EVERY_S = 1.0
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Target:
    """Where to connect and how senders get tokens (``secret`` to mint, else ``tokens``)."""

    ws_url: str
    secret: str | None
    tokens: tuple[str, ...] = ()


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


def viewer_slots(sc: Scenario, run_id: str, ws_url: str, proc: int, procs: int) -> list[ViewerSlot]:
    """This process's viewers with their rooms, sampling and per-phase fates.

    Initial viewers connect during setup (``connect_at`` < 0, spaced by the global
    ``connect_rate``); a phase's ``join`` group connects from that phase's start.
    """
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
        spec = ConnSpec(url=ws_url, room=room_name(run_id, rooms[g]), sampled=is_sampled)
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
    return spread(sc.senders, sc.rooms, sc.zipf_s, sc.seed + 1)


def sender_rate_fn(sc: Scenario, t0: float) -> RateFn:
    """Per-sender comments/s at trio time ``now``; None after the last phase."""
    senders = max(sc.senders, 1)

    def rate_at(now: float) -> float | None:
        t = now - t0
        if t >= sc.duration_s:
            return None
        if t < 0:
            return 0.0
        i = sc.phase_at(t)
        return sc.phases[i].rate_at(t - sc.phase_start(i)) / senders

    return rate_at


async def _stage_clock(sc: Scenario, c: Counters, t0: float) -> None:
    for i in range(len(sc.phases)):
        await trio.sleep_until(t0 + sc.phase_start(i))
        c.stage = i + 1
    await trio.sleep_until(t0 + sc.duration_s)
    c.stage = len(sc.phases) + 1


def snapshot(c: Counters) -> dict[str, Any]:
    """Cumulative counts plus the latency recorded since the last snapshot."""
    tot = c.total()
    snap = {
        "stage": c.stage,
        "connected": c.connected,
        "frames": tot.frames,
        "items": tot.items,
        "bytes": tot.bytes,
        "sent": tot.sent,
        "acked": tot.acked,
        "errors": sum(c.errors.values()),
        "interval": c.interval.encode(),
    }
    c.interval = type(c.interval)()
    return snap


async def _progress(out_q: Any, proc: int, c: Counters) -> None:
    while True:
        await trio.sleep(PROGRESS_EVERY_S)
        out_q.put(("progress", proc, snapshot(c)))


async def run_process(
    sc: Scenario, target: Target, run_id: str, proc: int, procs: int, in_q: Any, out_q: Any
) -> None:
    """Drive this process's share of the scenario (see the module docstring)."""
    c = Counters(len(sc.phases) + 2)
    registry: list[Conn] = []
    slots = viewer_slots(sc, run_id, target.ws_url, proc, procs)
    my_senders = [j for j in range(sc.senders) if j % procs == proc]
    s_rooms = sender_rooms(sc)
    setup_start = trio.current_time()
    setup_s = sc.viewers / sc.connect_rate if sc.connect_rate else 0.0
    initial = [s for s in slots if s.connect_at < 0]
    async with trio.open_nursery() as conns:
        conns.start_soon(_progress, out_q, proc, c)
        # setup: connect initial viewers (paced) and senders
        for s in initial:
            at = setup_start + setup_s + s.connect_at
            conns.start_soon(run_viewer, conns, s.spec, c, at, registry)
        started = trio.Event()
        t0_box: list[float] = []

        async def wait_start() -> tuple[float, RateFn]:
            await started.wait()
            return t0_box[0], sender_rate_fn(sc, t0_box[0])

        for j in my_senders:
            uid = f"lt{run_id}s{j}"
            tok = (
                auth.mint(target.secret, uid=uid, nick=f"load-{j}")
                if target.secret
                else target.tokens[j % len(target.tokens)]
            )
            spec = ConnSpec(url=target.ws_url, room=room_name(run_id, s_rooms[j]), token=tok)
            per = sc.max_sender_rate() or 1.0
            plan = SenderPlan(uid, (j / max(sc.senders, 1)) / per, sc.max_inflight, sc.text_bytes)
            conns.start_soon(run_sender, conns, spec, plan, c, wait_start, registry)
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
                conns.start_soon(run_viewer, conns, s.spec, c, t0 + s.connect_at, registry)
        conns.start_soon(_stage_clock, sc, c, t0)
        await trio.sleep_until(t0 + sc.duration_s + sc.settle_s)
        out_q.put(("progress", proc, snapshot(c)))
        await close_all(registry)
        conns.cancel_scope.cancel()
    out_q.put(("done", proc, c.encode()))


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
    procs: int,
    in_q: Any,
    out_q: Any,
) -> None:
    """Entry point of a load-generator process (picklable arguments only)."""
    try:
        sc = Scenario.from_dict(scenario)
        trio.run(run_process, sc, target, run_id, proc, procs, in_q, out_q)
    except BaseException:
        out_q.put(("failed", proc, traceback.format_exc()))
