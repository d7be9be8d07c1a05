"""The coordinator: starts the load-generator processes, keeps the clock, samples the
server, feeds the live display, and returns everything the report is built from.

Order of a run: server sample ``base`` (before any connection) -> processes connect
their initial viewers and senders -> ``ready`` sample -> ``idle_s`` of quiet -> ``t0``:
phases run, the server is sampled at every phase boundary and once a second for the
time series -> ``settle_s`` -> ``final`` sample -> processes close and send their
counters. Every wait is bounded; a process that fails or hangs ends the run with the
failure recorded in ``RunResult.failures``.
"""

from __future__ import annotations

import multiprocessing
import queue
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from loadtest.client import Counters
from loadtest.generator import Target, process_main
from loadtest.probe import Probe, ServerSample
from loadtest.scenario import Scenario
from loadtest.stats import Latency

SAMPLE_EVERY_S = 1.0


@dataclass
class Tick:
    """One row of the time series (cumulative client counts, server reading)."""

    t: float  # seconds since t0 (negative during setup)
    stage: int
    connected: int
    frames: int
    items: int
    bytes: int
    sent: int
    acked: int
    errors: int
    p50_ms: float
    p99_ms: float
    server: ServerSample


@dataclass
class RunResult:
    scenario: Scenario
    run_id: str
    target: dict[str, str]
    started_at: float
    t0: float = 0.0
    counters: Counters | None = None
    base: ServerSample | None = None
    ready: ServerSample | None = None
    boundaries: list[ServerSample] = field(default_factory=list)  # t0, phase ends...
    final: ServerSample | None = None
    ticks: list[Tick] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    probe_source: str = "metrics"
    scrape_failures: int = 0


Listener = Callable[[dict[str, Any]], None]


class _Hub:
    """Latest progress per process, merged for the display and the time series."""

    def __init__(self, procs: int) -> None:
        self.latest: dict[int, dict[str, Any]] = {}
        self.window = Latency()
        self.ready: set[int] = set()
        self.done: dict[int, Counters] = {}
        self.failures: list[str] = []
        self.procs = procs

    def handle(self, msg: tuple[str, int, Any]) -> None:
        kind, proc, body = msg
        if kind == "ready":
            self.ready.add(proc)
        elif kind == "progress":
            self.latest[proc] = body
            self.window.merge(Latency.decode(body["interval"]))
        elif kind == "done":
            self.done[proc] = Counters.decode(body)
        elif kind == "failed":
            self.failures.append(f"process {proc}: {body}")

    def totals(self) -> dict[str, int]:
        keys = ("connected", "frames", "items", "bytes", "sent", "acked", "errors", "stage")
        out = {k: 0 for k in keys}
        for snap in self.latest.values():
            for k in keys:
                out[k] = max(out[k], snap[k]) if k == "stage" else out[k] + snap[k]
        return out

    def take_window(self) -> Latency:
        w, self.window = self.window, Latency()
        return w


async def _pump(out_q: Any, hub: _Hub) -> None:
    def get() -> Any:
        try:
            return out_q.get(timeout=0.25)
        except queue.Empty:
            return None

    while True:
        msg = await trio.to_thread.run_sync(get, abandon_on_cancel=True)
        if msg is not None:
            hub.handle(msg)


async def _wait(cond: Callable[[], bool], timeout_s: float) -> bool:
    with trio.move_on_after(timeout_s):
        while not cond():  # noqa: ASYNC110 - the condition is fed by the queue pump
            await trio.sleep(0.05)
        return True
    return False


async def run(
    sc: Scenario,
    target: Target,
    probe: Probe,
    *,
    listener: Listener | None = None,
    target_info: dict[str, str] | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Run ``sc`` against ``target``; returns the raw results (see the module docstring).
    ``run_id`` (default: random) names the run's rooms (``generator.room_name``)."""
    run_id = run_id or secrets.token_hex(3)
    res = RunResult(sc, run_id, target_info or {"ws_url": target.ws_url}, time.time())
    res.probe_source = probe.source
    ctx = multiprocessing.get_context("spawn")
    out_q: Any = ctx.Queue()
    nprocs = sc.process_count
    in_qs: list[Any] = [ctx.Queue() for _ in range(nprocs)]
    hub = _Hub(nprocs)
    res.base = await probe.sample()
    scenario_dict = sc.to_dict()
    processes = [
        ctx.Process(
            target=process_main,
            args=(scenario_dict, target, run_id, p, in_qs[p], out_q),
            daemon=True,
            name=f"loadtest-{p}",
        )
        for p in range(nprocs)
    ]
    for proc in processes:
        proc.start()
    setup_s = sc.viewers / sc.connect_rate if sc.connect_rate else 0.0
    notify = listener or (lambda _: None)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, out_q, hub)
            ok = await _wait(lambda: len(hub.ready) == nprocs or bool(hub.failures), setup_s + 60)
            if not ok or hub.failures:
                res.failures += hub.failures or ["load processes did not get ready in time"]
                nursery.cancel_scope.cancel()
                return res
            res.ready = await probe.sample()
            t0_wall = time.time() + sc.idle_s
            res.t0 = t0_wall
            for q in in_qs:
                q.put(("start", t0_wall))
            nursery.start_soon(_sample_boundaries, sc, probe, res, t0_wall)
            nursery.start_soon(_time_series, sc, probe, res, hub, t0_wall, notify)
            end = sc.duration_s + sc.settle_s + 60
            ok = await _wait(
                lambda: len(hub.done) == nprocs or bool(hub.failures),
                sc.idle_s + end,
            )
            if not ok:
                res.failures.append("load processes did not finish in time")
            res.failures += hub.failures
            nursery.cancel_scope.cancel()
    finally:
        for q in in_qs:
            q.put(("abort", 0))
        for proc in processes:
            await trio.to_thread.run_sync(partial(proc.join, 10))
            if proc.is_alive():
                proc.kill()
    merged = Counters(len(sc.phases) + 2)
    for counters in hub.done.values():
        merged.merge(counters)
    res.counters = merged
    res.scrape_failures = probe.scrape_failures
    return res


async def _sample_boundaries(sc: Scenario, probe: Probe, res: RunResult, t0_wall: float) -> None:
    """Server samples at t0, at each phase end, and after the settle window."""
    times = [sc.phase_start(i) for i in range(len(sc.phases))] + [sc.duration_s]
    for rel in times:
        await trio.sleep(max(0.0, t0_wall + rel - time.time()))
        res.boundaries.append(await probe.sample())
    await trio.sleep(max(0.0, t0_wall + sc.duration_s + sc.settle_s - time.time()))
    res.final = await probe.sample()


async def _time_series(
    sc: Scenario,
    probe: Probe,
    res: RunResult,
    hub: _Hub,
    t0_wall: float,
    notify: Listener,
) -> None:
    """Once a second: a ``Tick`` row and a progress event for the display."""
    prev: Tick | None = None
    while True:
        await trio.sleep(SAMPLE_EVERY_S)
        tot = hub.totals()
        window = hub.take_window()
        server = await probe.sample()
        tick = Tick(
            t=round(time.time() - t0_wall, 2),
            stage=tot["stage"],
            connected=tot["connected"],
            frames=tot["frames"],
            items=tot["items"],
            bytes=tot["bytes"],
            sent=tot["sent"],
            acked=tot["acked"],
            errors=tot["errors"],
            p50_ms=window.percentile(50),
            p99_ms=window.percentile(99),
            server=server,
        )
        res.ticks.append(tick)
        notify(progress_event(sc, tick, prev))
        prev = tick


def progress_event(sc: Scenario, tick: Tick, prev: Tick | None) -> dict[str, Any]:
    """What the live display shows: phase, elapsed, connections, rates, current p99."""
    dt = (tick.t - prev.t) if prev else SAMPLE_EVERY_S

    def rate(attr: str) -> float:
        now = float(getattr(tick, attr))
        before = float(getattr(prev, attr)) if prev else now
        return (now - before) / dt if dt > 0 else 0.0

    cpu = None
    if prev and tick.server.cpu_s is not None and prev.server.cpu_s is not None and dt > 0:
        cpu = 100.0 * (tick.server.cpu_s - prev.server.cpu_s) / dt
    n = len(sc.phases)
    phase = (
        "idle"
        if tick.stage == 0
        else "settle"
        if tick.stage > n
        else sc.phases[tick.stage - 1].name
    )
    return {
        "phase": phase,
        "elapsed_s": tick.t,
        "total_s": sc.duration_s,
        "connected": tick.connected,
        "frames_per_s": rate("frames"),
        "deliveries_per_s": rate("items"),
        "sent_per_s": rate("sent"),
        "acked_per_s": rate("acked"),
        "errors": tick.errors,
        "p50_ms": tick.p50_ms,
        "p99_ms": tick.p99_ms,
        "server_cpu_pct": cpu,
        "server_rss_mb": (tick.server.rss_bytes or 0) / 2**20,
    }
