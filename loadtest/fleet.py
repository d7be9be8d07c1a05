"""``danmaku-loadtest fleet``: a simulated fleet on one machine, random assignment
against room-affine routing, and the plan's prediction for both.

One ``FleetSystem`` (a redis-server, ``--workers`` workers, ``--gateways`` gateway
processes on ports of their own, the web app) serves two runs of the same load, one
after the other, each with rooms of its own:

* **random**: every viewer and sender connects to a gateway drawn at random (what a
  load balancer in front of all gateways does);
* **room-affine**: every connection first asks ``GET /api/rooms/{room}/gateway`` and
  goes where the answer says (what the player does).

The rooms have a Zipf size distribution (``--zipf``: one celebrity room and a long
tail); senders are spread over the rooms by ``--sender-zipf`` (default 0: every room
gets comments, so every room is read). Measured over the phase, per layout (``FleetProbe``):
Redis CPU (``/proc`` of the redis-server), frames each gateway read from Redis
(``danmaku_gateway_frames_total``) and the rooms it held (``danmaku_gateway_rooms``),
how many gateways hold each room (the gateways' presence reports in Redis), the CPU of
gateways, workers and web app, and the harness's end-to-end latency. ``fleetmodel``
predicts the same figures with the plan's arithmetic; both tables are printed, and
``--out`` writes everything (the two runs' reports included) as JSON.

The random run goes first: rooms the first run leaves behind (idle, their leases still
held by the workers until ``DANMAKU_ROOM_IDLE_S``) are charged to the room-affine run,
never the other way round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
import trio

from danmaku.auth import new_secret
from danmaku.store import keys
from loadtest import procstat
from loadtest.display import Display
from loadtest.fleetmodel import LAYOUTS, Fleet, RoomLoad, compare, predict, prediction_table
from loadtest.fleetsystem import FleetSystem
from loadtest.generator import Target, room_name, sender_rooms, spread
from loadtest.localserver import server_env
from loadtest.probe import Probe, ServerSample, scrape
from loadtest.report import build
from loadtest.runner import run
from loadtest.scenario import Scenario, ScenarioError
from loadtest.stats import metric_total

ONLINE_FRESH_MS = 5000  # as the store reads presence: older reports are of a dead gateway


@dataclass
class FleetSample(ServerSample):
    """A ``ServerSample`` of the whole fleet (counters summed over gateways and workers,
    CPU over every danmaku process) plus what each gateway did and which gateways hold
    each room."""

    gateways: list[dict[str, float]] = field(default_factory=list)
    workers_cpu_s: float = 0.0
    web_cpu_s: float = 0.0
    room_gateways: dict[str, int] = field(default_factory=dict)


def _sum_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    return out


def read_room_gateways(url: str, rooms: list[str]) -> dict[str, int]:
    """Per room, the gateways whose fresh presence report says they hold connections."""
    now_ms = int(time.time() * 1000)
    out: dict[str, int] = {}
    try:
        with redis.Redis.from_url(url, socket_timeout=5) as r:
            pipe = r.pipeline(transaction=False)
            for room in rooms:
                pipe.hgetall(keys.online(room))
            replies = pipe.execute()
    except redis.RedisError:
        return out
    for room, reply in zip(rooms, replies, strict=True):
        n = 0
        for value in reply.values():
            conns, _, rest = value.decode().partition(":")
            stamp = rest.partition(":")[0]
            fresh = stamp.isdigit() and now_ms - int(stamp) <= ONLINE_FRESH_MS
            n += conns.isdigit() and int(conns) > 0 and fresh
        out[room] = n
    return out


class FleetProbe(Probe):
    """Samples every process of a ``FleetSystem`` (see ``FleetSample``)."""

    def __init__(self, system: FleetSystem, rooms: list[str]) -> None:
        super().__init__(system.web.urls["metrics"])
        self.system = system
        self.rooms = rooms
        self.source = "proc"

    async def sample(self) -> ServerSample:
        gws, wks = self.system.gateways, self.system.workers
        scraped: dict[str, dict[str, float]] = {}

        async def one(name: str, url: str) -> None:
            scraped[name] = await trio.to_thread.run_sync(scrape, url)

        async with trio.open_nursery() as nursery:
            for role in [*gws, *wks]:
                nursery.start_soon(one, role.name, role.urls["metrics"])
        rooms = await trio.to_thread.run_sync(read_room_gateways, self.system.redis_url, self.rooms)
        if any(not scraped[r.name] for r in [*gws, *wks]):
            self.scrape_failures += 1
        s = FleetSample(at=time.time(), metrics=_sum_metrics(list(scraped.values())))
        s.host_busy_s = procstat.host_busy_s()

        def cpu(pid: int) -> float:
            got = procstat.sample(pid)
            return got.cpu_s if got else 0.0

        for role in gws:
            m = scraped[role.name]
            s.gateways.append(
                {
                    "cpu_s": cpu(role.proc.pid),
                    "frames_received": metric_total(m, "danmaku_gateway_frames_total"),
                    "rooms": metric_total(m, "danmaku_gateway_rooms"),
                    "connections": metric_total(m, "danmaku_connections_open"),
                    "frame_writes": metric_total(m, "danmaku_frame_writes_total"),
                }
            )
        s.workers_cpu_s = sum(cpu(p) for p in self.system.pids("worker"))
        s.web_cpu_s = sum(cpu(p) for p in self.system.pids("web"))
        s.cpu_s = sum(g["cpu_s"] for g in s.gateways) + s.workers_cpu_s + s.web_cpu_s
        s.rss_bytes = sum(
            (procstat.sample(r.proc.pid) or procstat.ProcSample(0, 0)).rss_bytes
            for r in self.system.roles
        )
        if self.system.redis is not None:
            red = procstat.sample(self.system.redis.pid)
            if red:
                s.redis_cpu_s, s.redis_rss_bytes = red.cpu_s, red.rss_bytes
        s.room_gateways = rooms
        return s


def scenario(args: argparse.Namespace) -> Scenario:
    """The load of each layout's run."""
    return Scenario.from_dict(
        {
            "name": "fleet",
            "description": "a celebrity room and a long tail over a fleet of gateways",
            "viewers": args.viewers,
            "senders": args.senders,
            "rooms": args.rooms,
            "zipf_s": args.zipf,
            "sender_zipf_s": args.sender_zipf,
            "tick_ms": 100,
            "sample_fraction": 0.2,
            "max_sampled": 200,
            "connect_rate": args.connect_rate,
            "idle_s": 2.0,
            "settle_s": 2.0,
            "procs": args.procs,
            "sender_procs": 1,
            "seed": args.seed,
            "arrivals": "jitter",
            "phases": [{"name": "steady", "duration_s": args.duration, "rate": args.rate}],
        }
    )


def fleet_model(sc: Scenario, gateways: int, share: int) -> Fleet:
    """The fleet as the model sees it: each room's connections and comment rate, from
    the same layout the load processes compute."""
    conns = [0] * sc.rooms
    for k in spread(sc.total_viewers, sc.rooms, sc.zipf_s, sc.seed):
        conns[k] += 1
    senders = [0] * sc.rooms
    for k in sender_rooms(sc):
        senders[k] += 1
    rate = sc.phases[0].rate
    rooms = tuple(
        RoomLoad(conns[k] + senders[k], rate * senders[k] / max(1, sc.senders))
        for k in range(sc.rooms)
    )
    return Fleet(rooms, gateways, share, sc.tick_ms)


def measure(
    ready: Any, res_boundaries: list[Any], report: dict[str, Any], fleet: Fleet
) -> dict[str, Any]:
    """A layout's figures over its phase (the first and last boundary samples); Redis's
    idle CPU over the quiet window before it (``ready`` to the first boundary)."""
    a, b = res_boundaries[0], res_boundaries[-1]
    wall = max(1e-9, b.at - a.at)
    idle = None
    if ready is not None and ready.redis_cpu_s is not None and a.redis_cpu_s is not None:
        idle = (a.redis_cpu_s - ready.redis_cpu_s) / max(1e-9, a.at - ready.at)
    reads = [
        (gb["frames_received"] - ga["frames_received"]) / wall
        for ga, gb in zip(a.gateways, b.gateways, strict=True)
    ]
    held = [g["rooms"] for g in b.gateways]
    per_room = b.room_gateways  # room_name(run_id, k) in k order; {} if Redis did not answer
    order = list(per_room) if len(per_room) == len(fleet.rooms) else []
    sizes = [r.connections for r in fleet.rooms]
    biggest = max(range(len(sizes)), key=lambda i: sizes[i])
    small = [per_room[order[k]] for k in range(len(order)) if sizes[k] < fleet.share]
    lat = report["phases"][0]["latency_ms"]
    redis_cpu = (b.redis_cpu_s - a.redis_cpu_s) / wall if b.redis_cpu_s is not None else None
    comments = (b.counter("comments_accepted") - a.counter("comments_accepted")) / wall
    frames = (b.counter("frames_built") - a.counter("frames_built")) / wall
    return {
        "frame_reads_per_gateway": sum(reads) / len(reads),
        "frame_reads_per_gateway_max": max(reads),
        "frame_reads_by_gateway": [round(x, 1) for x in reads],
        "rooms_per_gateway": sum(held) / len(held),
        "rooms_by_gateway": held,
        "gateways_per_room": sum(per_room.values()) / len(order) if order else None,
        "gateways_per_room_bound": sum(per_room.values()) / len(order) if order else None,
        "celebrity_gateways": float(per_room[order[biggest]]) if order else None,
        "small_room_gateways": sum(small) / len(small) if small else None,
        "small_rooms_on_one_gateway": sum(1 for n in small if n == 1),
        "small_rooms": len(small),
        "gateways_by_room": [per_room[r] for r in order],
        "frames_built": frames,
        "frame_reads": sum(reads),
        "comments_accepted": comments,
        "redis_cpu": redis_cpu,
        "redis_cpu_idle": idle,
        "redis_us_per_comment": redis_cpu * 1e6 / comments if redis_cpu and comments else None,
        "redis_us_per_frame": redis_cpu * 1e6 / frames if redis_cpu and frames else None,
        "gateways_cpu": sum(
            gb["cpu_s"] - ga["cpu_s"] for ga, gb in zip(a.gateways, b.gateways, strict=True)
        )
        / wall,
        "workers_cpu": (b.workers_cpu_s - a.workers_cpu_s) / wall,
        "web_cpu": (b.web_cpu_s - a.web_cpu_s) / wall,
        "latency_p50_ms": lat["p50"],
        "latency_p99_ms": lat["p99"],
        "latency_samples": lat["count"],
        "host_cpu_pct": (report["phases"][0].get("server") or {}).get("host_cpu_pct"),
        "other_cpu_pct": (report["phases"][0].get("server") or {}).get("other_cpu_pct"),
        "errors": report["totals"].get("errors") or {},
        "warnings": report.get("warnings") or [],
    }


#: figure key -> (what, how printed) of the measured table
MEASURED_ROWS: list[tuple[str, str, str]] = [
    ("redis_cpu", "Redis CPU (cores)", "{:.3f}"),
    (
        "redis_cpu_idle",
        "Redis CPU, viewers connected, no comments yet (presence, sweeps; 2 s)",
        "{:.3f}",
    ),
    ("redis_us_per_comment", "Redis CPU per comment (µs)", "{:,.0f}"),
    ("redis_us_per_frame", "Redis CPU per frame built (µs)", "{:,.0f}"),
    ("frame_reads_per_gateway", "frame reads/s per gateway (mean)", "{:,.1f}"),
    ("frame_reads_per_gateway_max", "frame reads/s per gateway (max)", "{:,.1f}"),
    ("frame_reads", "frame reads/s (all gateways)", "{:,.1f}"),
    ("rooms_per_gateway", "rooms held per gateway (mean)", "{:,.1f}"),
    ("gateways_per_room", "gateways per room (mean)", "{:,.2f}"),
    ("celebrity_gateways", "gateways of the largest room", "{:,.0f}"),
    ("small_room_gateways", "gateways per room under one share (mean)", "{:,.2f}"),
    ("frames_built", "frames built/s", "{:,.1f}"),
    ("comments_accepted", "comments accepted/s", "{:,.1f}"),
    ("gateways_cpu", "gateway CPU, all gateways (cores)", "{:.3f}"),
    ("workers_cpu", "worker CPU (cores)", "{:.3f}"),
    ("web_cpu", "web app CPU (cores)", "{:.3f}"),
    ("latency_p50_ms", "latency p50 (ms)", "{:,.0f}"),
    ("latency_p99_ms", "latency p99 (ms)", "{:,.0f}"),
    ("other_cpu_pct", "other work on the machine (% of a core)", "{:,.0f}"),
]


def measured_table(measured: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| measured | " + " | ".join(LAYOUTS) + " |", "| --- |" + " --- |" * len(LAYOUTS)]
    for key, what, fmt in MEASURED_ROWS:
        cells = []
        for layout in LAYOUTS:
            value = (measured.get(layout) or {}).get(key)
            cells.append("-" if value is None else fmt.format(value))
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gateways", type=int, default=8, help="gateway processes (default: 8)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--rooms", type=int, default=80, help="rooms (default: 80)")
    p.add_argument("--viewers", type=int, default=1000, help="viewers (default: 1,000)")
    p.add_argument("--senders", type=int, default=80, help="senders (default: 80)")
    p.add_argument("--rate", type=float, default=160.0, help="comments/s in all (default: 160)")
    p.add_argument("--duration", type=float, default=40.0, help="seconds measured per layout")
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of room sizes")
    p.add_argument(
        "--sender-zipf",
        type=float,
        default=0.0,
        help="Zipf exponent of the senders' rooms (default: 0: every room gets comments)",
    )
    p.add_argument(
        "--room-share",
        type=int,
        default=100,
        help="DANMAKU_ROOM_SHARE: viewers of a room per gateway (default: 100)",
    )
    p.add_argument(
        "--connect-rate",
        type=float,
        default=50.0,
        help="connections/s at start (default: 50; each routed one is also a request to the "
        "web app, and routing sees a room's viewers through presence reports ~1 s late)",
    )
    p.add_argument("--procs", type=int, default=2, help="viewer load processes (default: 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--layouts",
        default=",".join(LAYOUTS),
        help=f"which layouts to run, in order (default: {','.join(LAYOUTS)})",
    )
    p.add_argument("--out", type=Path, help="write everything (both reports too) as JSON")
    p.add_argument("--quiet", action="store_true", help="no live display")


def run_fleet(args: argparse.Namespace) -> dict[str, Any]:
    """Start the fleet, run each layout, stop it; the document ``--out`` writes."""
    sc = scenario(args)
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    fleet = fleet_model(sc, args.gateways, args.room_share)
    secret = new_secret()
    env = server_env(sc, secret)
    env |= {"DANMAKU_ROOM_SHARE": str(args.room_share), "DANMAKU_DRAIN_S": "1"}
    system = FleetSystem(args.gateways, args.workers, env)
    out: dict[str, Any] = {"schema": "danmaku-loadtest-fleet/1", "scenario": sc.to_dict()}
    out["fleet"] = {"gateways": args.gateways, "workers": args.workers, "share": args.room_share}
    out["room_connections"] = [r.connections for r in fleet.rooms]
    out["predicted"] = {lay: predict(fleet, lay) for lay in LAYOUTS}
    out["measured"], out["reports"] = {}, {}
    system.start()
    try:
        for i, layout in enumerate(layouts):
            run_id = f"f{i}{new_secret()[:4]}"
            rooms = [room_name(run_id, k) for k in range(sc.rooms)]
            urls = system.gateway_urls
            if layout == "random":
                target = Target(urls[0], secret, ws_urls=urls)
            else:
                target = Target(urls[0], secret, route_url=system.web_url)
            probe = FleetProbe(system, rooms)
            info = {"mode": f"fleet-{layout}", "ws_url": ",".join(urls)}
            info["web_url"] = system.web_url
            with Display(quiet=args.quiet) as display:
                res = trio.run(
                    partial(
                        run,
                        sc,
                        target,
                        probe,
                        listener=display.update,
                        target_info=info,
                        run_id=run_id,
                    )
                )
            report = build(res)
            out["reports"][layout] = report
            if res.failures or len(res.boundaries) < 2:
                hint = " (a lower --connect-rate: routed connections each ask the web app)"
                raise RuntimeError(
                    f"fleet: the {layout} run failed: {res.failures}"
                    + (hint if layout == "room-affine" else "")
                )
            out["measured"][layout] = measure(res.ready, res.boundaries, report, fleet)
    finally:
        system.stop()
    out["rows"] = [
        {**vars(r), "error": r.error} for r in compare(out["predicted"], out["measured"])
    ]
    return out


def summary(doc: dict[str, Any]) -> list[str]:
    sc, fl = doc["scenario"], doc["fleet"]
    conns = doc["room_connections"]
    lines = [
        f"fleet: {fl['gateways']} gateways, {fl['workers']} workers, 1 redis-server, web app; "
        f"{sc['rooms']} rooms (largest {max(conns)} connections, smallest {min(conns)}), "
        f"{sc['viewers']} viewers, {sc['senders']} senders at {sc['phases'][0]['rate']:g}/s, "
        f"share {fl['share']}, {sc['phases'][0]['duration_s']:g} s per layout",
        "",
        *measured_table(doc["measured"]),
        "",
        "prediction (the plan's model per room; Redis CPU with the plan's default costs, "
        "which are not this machine's):",
        *prediction_table(compare(doc["predicted"], doc["measured"])),
    ]
    for layout, m in doc["measured"].items():
        for w in m.get("warnings") or []:
            lines.append(f"warning ({layout}): {w}")
        if m.get("errors"):
            lines.append(f"errors ({layout}): {m['errors']}")
    return lines


def main(args: argparse.Namespace) -> int:
    for name in ("gateways", "workers", "rooms", "senders", "room_share", "procs"):
        if getattr(args, name) < 1:
            print(
                f"danmaku-loadtest fleet: --{name.replace('_', '-')} must be 1 or more",
                file=sys.stderr,
            )
            return 2
    unknown = set(x.strip() for x in args.layouts.split(",") if x.strip()) - set(LAYOUTS)
    if unknown:
        print(f"danmaku-loadtest fleet: unknown layout(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    try:
        scenario(args)
    except ScenarioError as exc:
        print(f"danmaku-loadtest fleet: {exc}", file=sys.stderr)
        return 2
    try:
        doc = run_fleet(args)
    except RuntimeError as exc:
        print(f"danmaku-loadtest fleet: {' '.join(str(exc).split())[:2000]}", file=sys.stderr)
        return 1
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for line in summary(doc):
        print(line)
    if args.out:
        print(f"report: {args.out}")
    errors = any(m.get("errors") for m in doc["measured"].values())
    return 1 if errors else 0
