"""``danmaku-loadtest plan``: turn per-unit costs into a deployment, with the arithmetic.

The model (docs/capacity.md explains it and its assumptions): every viewer receives one
frame per tick of its room (the busy-room upper bound), so gateways pay
``viewers x ticks/s`` frame writes plus an idle cost per connection plus ingest per
comment plus a read of every frame of each room they hold (how many rooms that is
depends on the layout: random placement or room-affine routing, so the gateway count
is per layout and the deployment is the room-affine one), and need memory per
connection; workers pay per frame built and per comment merged; Redis pays per comment
stored, per frame committed and per frame read by each gateway that has viewers in the
room. Each process is one core (trio is single
threaded) run at most at ``--utilisation``; processes are rounded up, workers get one
spare. ``compute`` is pure; ``--from report.json`` replaces the default unit costs with
the ones a loadtest measured.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeGuard


@dataclass(frozen=True)
class Costs:
    """Unit costs (defaults: the targets of issue 6; replace with measured ones).

    ``COST_HELP`` says what each one is and its unit (``plan --help`` shows it)."""

    cpu_us_per_frame_write: float = 10.0
    idle_cpu_us_per_conn_s: float = 1.0
    rss_bytes_per_conn: float = 20_000.0
    ingest_cpu_us_per_comment: float = 20.0
    worker_cpu_us_per_frame: float = 200.0
    worker_cpu_us_per_comment: float = 10.0
    redis_cpu_us_per_comment: float = 5.0
    redis_cpu_us_per_frame: float = 30.0
    redis_cpu_us_per_frame_read: float = 5.0
    bytes_per_frame_write: float = 1_500.0
    bytes_per_comment: float = 300.0
    bytes_per_frame: float = 1_500.0
    gateway_fixed_cpu_cores: float = 0.0
    redis_cpu_us_per_notice: float = 1.0
    gateway_cpu_us_per_frame_read: float = 40.0


#: field -> (what it is, its unit), for ``--help`` and the printed plan.
COST_HELP: dict[str, tuple[str, str]] = {
    "cpu_us_per_frame_write": ("gateway CPU to deliver one frame to one viewer", "µs"),
    "idle_cpu_us_per_conn_s": ("gateway CPU per connected viewer per second", "µs"),
    "rss_bytes_per_conn": ("gateway memory per connection", "bytes"),
    "ingest_cpu_us_per_comment": ("gateway CPU to validate and pipeline a comment", "µs"),
    "worker_cpu_us_per_frame": ("worker CPU per frame built (read, merge, commit)", "µs"),
    "worker_cpu_us_per_comment": ("worker CPU per comment merged", "µs"),
    "redis_cpu_us_per_comment": ("Redis CPU per stored comment (Lua + XADD)", "µs"),
    "redis_cpu_us_per_frame": ("Redis CPU per frame commit (Lua + XADD)", "µs"),
    "redis_cpu_us_per_frame_read": ("Redis CPU per frame read by one gateway", "µs"),
    "bytes_per_frame_write": ("wire bytes per frame write (egress)", "bytes"),
    "bytes_per_comment": ("Redis memory per stored comment", "bytes"),
    "bytes_per_frame": ("Redis memory per stored frame", "bytes"),
    "gateway_fixed_cpu_cores": (
        "CPU a gateway process burns with no viewers (background loops), per process",
        "cores",
    ),
    "redis_cpu_us_per_notice": (
        "Redis CPU per notice (one per frame per gateway holding the room: written with the "
        "commit, read in batches)",
        "µs",
    ),
    "gateway_cpu_us_per_frame_read": (
        "gateway CPU per frame it reads from Redis (one per frame of each room it holds "
        "viewers of: the read, decode and encode-once; its writes are counted apart)",
        "µs",
    ),
}


@dataclass(frozen=True)
class Inputs:
    viewers: int
    rate: float  # comments/s over all rooms
    rooms: int
    tick_ms: float = 100.0
    display_budget: float = 40.0
    ingest_ceiling: float = 2000.0
    utilisation: float = 0.6
    gateway_mem_bytes: float = 4 * 2**30
    max_conns_per_gateway: int = 100_000
    redis_shard_mem_bytes: float = 8 * 2**30
    stream_maxlen: int = 100_000
    frames_history: int = 3000
    event_s: float = 3600.0
    cores_per_host: int = 1
    room_share: int = 2000
    costs: Costs = field(default_factory=Costs)


#: Inputs field -> (what it is, its unit), for ``--help``.
INPUT_HELP: dict[str, tuple[str, str]] = {
    "viewers": ("concurrent viewers", "viewers"),
    "rate": ("comments per second over all rooms", "comments/s"),
    "rooms": ("live rooms", "rooms"),
    "tick_ms": ("frame tick of the broadcast worker", "ms"),
    "display_budget": ("items per second a room's frames carry", "items/s"),
    "ingest_ceiling": ("comments per second per room admitted to Redis (0 = off)", "comments/s"),
    "utilisation": ("run every process at most this busy (headroom = 1 - it)", "fraction 0-1"),
    "gateway_mem_bytes": ("memory of a gateway process", "bytes"),
    "max_conns_per_gateway": ("connections one gateway process may hold", "connections"),
    "redis_shard_mem_bytes": ("memory of one Redis shard", "bytes"),
    "stream_maxlen": ("comments kept per room stream (DANMAKU_STREAM_MAXLEN)", "comments"),
    "frames_history": ("frames kept per room (DANMAKU_FRAMES_HISTORY)", "frames"),
    "event_s": ("how long the event runs (how much room history accumulates)", "s"),
    "cores_per_host": (
        "cores of a gateway host: `danmaku gateway --processes 0` runs one process per core",
        "cores",
    ),
    "room_share": (
        "viewers of one room per gateway before routing spreads the room to the next "
        "gateway (DANMAKU_ROOM_SHARE; the room-affine layout)",
        "viewers",
    ),
}

LAYOUTS = ("random", "room-affine")


@dataclass
class Layout:
    """Redis for one way of placing viewers on gateways: ``random`` (a load balancer, or
    clients that ignore the routing hint: a room's viewers on up to every gateway) or
    ``room-affine`` (clients follow ``GET /api/rooms/{room}/gateway``: a room on
    ``ceil(viewers per room / room_share)`` gateways)."""

    name: str
    g_room: float  # gateways that hold a room's viewers, so read its frames and notices
    frame_reads: float  # /s over all gateways
    notices: float  # /s over all gateways
    redis_cpu: float  # cores
    shards_cpu: int
    shards: int
    hottest_room: float  # cores of one room on its shard
    gateways: int = 0  # gateway processes this layout needs (their frame reads included)
    gateway_read_cpu: float = 0.0  # cores all gateways spend reading frames


def gateways_per_room(layout: str, viewers: float, gateways: int, share: int) -> int:
    """``G_room``: how many gateways hold viewers of a room of ``viewers``, so read its
    frames. ``random``: each viewer may land on any gateway, so up to one per viewer (the
    upper bound; the plan uses ``layout_g_room``); ``room-affine``:
    ``ceil(viewers / share)``; at least 1, at most ``gateways``."""
    need = viewers if layout == "random" else viewers / max(1, share)
    return min(gateways, max(1, math.ceil(need)))


def expected_distinct(connections: float, gateways: int) -> float:
    """Gateways that hold at least one of ``connections`` placed uniformly at random on
    ``gateways`` (balls in bins): ``G(1 - (1 - 1/G)^n)``, what a load balancer really
    gives a room, where ``min(G, n)`` is the upper bound (a simulated fleet measured 5.0
    against 4.9 expected and 6.1 upper bound: docs/benchmarks.md)."""
    if gateways <= 1:
        return float(min(gateways, 1))
    # -G x expm1(n x log1p(-1/G)): exact where (1 - 1/G)^n would round to 1
    return -gateways * math.expm1(connections * math.log1p(-1.0 / gateways))


def layout_g_room(layout: str, viewers: float, gateways: int, share: int) -> float:
    """``G_room`` the plan uses: room-affine, ``gateways_per_room`` (routing places the
    room); random, the expected distinct gateways its viewers land on (at least 1, as
    every room is read by one gateway at least)."""
    if layout == "random":
        return max(1.0, expected_distinct(viewers, gateways))
    return float(gateways_per_room(layout, viewers, gateways, share))


def gateways_needed(
    base: float, avail: float, floor: int, read_all: float, g_room: Callable[[int], float]
) -> int:
    """The smallest gateway count ``G >= floor`` whose CPU (``G x avail`` cores) covers
    ``base`` cores of viewers and comments plus the frame reads, ``read_all`` cores per
    gateway reading every room times ``g_room(G)`` (how many gateways hold a room).

    ``g_room(G) / G`` (the share of rooms one gateway holds) never grows with ``G``, so
    the spare CPU per gateway only grows with ``G``: the smallest count is found by
    doubling, then bisection. Always finite: ``g_room`` is bounded by a room's viewers."""

    def covers(g: int) -> bool:
        need = base + read_all * g_room(g)
        return g * avail >= need - 1e-9 * max(1.0, need)  # float rounding aside

    lo = max(1, floor)
    if covers(lo):
        return lo
    hi = lo * 2
    while not covers(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # covers(hi), not covers(lo)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if covers(mid) else (mid, hi)
    return hi


def frames_per_s(rate: float, tick_ms: float) -> float:
    """Frames a room builds per second at ``rate`` comments/s (Poisson arrivals): one
    per tick that had a comment."""
    ticks = 1000.0 / tick_ms
    return ticks * (1 - math.exp(-rate * tick_ms / 1000.0))


@dataclass
class Step:
    """One line of the arithmetic: what, the formula with numbers, the result."""

    what: str
    formula: str
    value: float
    unit: str = ""


@dataclass
class Plan:
    gateways: int
    workers: int
    redis_shards: int
    steps: list[Step]
    warnings: list[str]
    gateway_hosts: int = 0
    egress_gbit_per_host: float = 0.0
    #: both layouts for the same event; ``redis_shards`` is the room-affine one's
    layouts: list[Layout] = field(default_factory=list)

    def layout(self, name: str) -> Layout:
        return next(lay for lay in self.layouts if lay.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gateways": self.gateways,
            "gateway_hosts": self.gateway_hosts,
            "egress_gbit_per_host": self.egress_gbit_per_host,
            "workers": self.workers,
            "redis_shards": self.redis_shards,
            "layouts": {lay.name: asdict(lay) for lay in self.layouts},
            "steps": [asdict(s) for s in self.steps],
            "warnings": self.warnings,
        }


def compute(inp: Inputs) -> Plan:
    """The deployment for ``inp`` (pure; every number it uses is in ``steps``)."""
    c, u = inp.costs, inp.utilisation
    steps: list[Step] = []
    warnings: list[str] = []

    def step(what: str, formula: str, value: float, unit: str = "") -> float:
        steps.append(Step(what, formula, value, unit))
        return value

    ticks = step("ticks per room", f"1000 / {inp.tick_ms:g} ms", 1000.0 / inp.tick_ms, "/s")
    per_room = step("comments per room", f"{inp.rate:g} / {inp.rooms}", inp.rate / inp.rooms, "/s")
    admitted_room = per_room
    if inp.ingest_ceiling > 0 and per_room > inp.ingest_ceiling:
        admitted_room = inp.ingest_ceiling
        warnings.append(
            f"{per_room:g}/s per room exceeds the ingest ceiling; {per_room - admitted_room:g}/s "
            "per room are shed at the gateways (acked, not stored)"
        )
    admitted = step(
        "comments admitted", f"{admitted_room:g} x {inp.rooms}", admitted_room * inp.rooms, "/s"
    )
    p_busy = 1 - math.exp(-per_room * inp.tick_ms / 1000.0)
    frames = step(
        "frames built",
        f"{inp.rooms} rooms x {ticks:g} x P(tick has a comment)={p_busy:.3f}",
        inp.rooms * ticks * p_busy,
        "/s",
    )
    items = min(per_room, inp.display_budget) * inp.tick_ms / 1000.0
    step("items per frame", f"min({per_room:g}, budget {inp.display_budget:g}) x tick", items)
    # --- gateways
    writes = step(
        "frame writes", f"{inp.viewers} viewers x {ticks:g} (busy rooms)", inp.viewers * ticks, "/s"
    )
    gw_cpu = step(
        "gateway CPU",
        f"({writes:g} x {c.cpu_us_per_frame_write:g} + {inp.viewers} x "
        f"{c.idle_cpu_us_per_conn_s:g} + {inp.rate:g} x {c.ingest_cpu_us_per_comment:g}) µs",
        (
            writes * c.cpu_us_per_frame_write
            + inp.viewers * c.idle_cpu_us_per_conn_s
            + inp.rate * c.ingest_cpu_us_per_comment
        )
        / 1e6,
        "cores",
    )
    fixed = c.gateway_fixed_cpu_cores
    avail = u - fixed  # what one gateway process has left for viewers at utilisation u
    if fixed > 0 and avail > u / 4:
        per_process = f"({u:g} - {fixed:.3f} fixed per process)"
    else:
        if fixed > 0:
            warnings.append(
                f"a gateway's fixed CPU ({fixed:.3f} cores) leaves less than a quarter of "
                f"utilisation {u:g} for viewers: the fixed cost is left out of the gateway "
                "count (measure it on a gateway process of its own: `local --split`)"
            )
        avail, per_process = u, f"{u:g}"
    step(
        "gateways by CPU (no frame reads)",
        f"ceil({gw_cpu:.2f} / {per_process})",
        math.ceil(gw_cpu / avail),
    )
    mem = inp.viewers * c.rss_bytes_per_conn
    by_mem = step(
        "gateways by memory",
        f"ceil({inp.viewers} x {c.rss_bytes_per_conn:g} B / ({inp.gateway_mem_bytes / 2**30:g} GiB"
        f" x {u:g}))",
        math.ceil(mem / (inp.gateway_mem_bytes * u)),
    )
    by_conns = step(
        "gateways by connections",
        f"ceil({inp.viewers} / {inp.max_conns_per_gateway})",
        math.ceil(inp.viewers / inp.max_conns_per_gateway),
    )
    floor = int(max(by_mem, by_conns, 1))
    # --- gateways per layout: each gateway holding a room reads its frames (G_room of them)
    per_room_viewers = inp.viewers / inp.rooms
    share = max(1, int(inp.room_share))
    read_cores = frames * c.gateway_cpu_us_per_frame_read / 1e6  # one gateway reading all
    by_layout: dict[str, int] = {}
    g_rooms: dict[str, float] = {}  # G_room at each layout's own gateway count
    for name in LAYOUTS:

        def g_room_at(g: int, name: str = name) -> float:
            return layout_g_room(name, per_room_viewers, g, share)

        g = by_layout[name] = gateways_needed(gw_cpu, avail, floor, read_cores, g_room_at)
        g_room = g_rooms[name] = g_room_at(g)
        step(
            f"gateway CPU reading frames ({name})",
            f"{frames:g} frames x G_room {g_room:,.1f} x {c.gateway_cpu_us_per_frame_read:g} µs",
            read_cores * g_room,
            "cores",
        )
        step(
            f"gateways ({name})",
            f"smallest G >= {floor} (memory, connections) with G x {avail:.3f} >= "
            f"{gw_cpu:.2f} + frame reads at G",
            g,
        )
    # The deployment follows the routing (clients that ignore it cost the random layout).
    gateways = by_layout["room-affine"]
    step("gateways", "the room-affine layout's", gateways)
    spread = by_layout["random"]
    if spread > 2 * gateways:
        reads_each = frames * g_rooms["random"] / spread
        warnings.append(
            f"random: viewers spread at random need {spread:,} gateways, not {gateways:,}: "
            f"each holds viewers of many rooms and reads their frames ({reads_each:,.0f}/s); "
            "route rooms (GET /api/rooms/{room}/gateway)"
        )
    gbit = writes * c.bytes_per_frame_write * 8 / 1e9
    step("egress", f"{writes:g} x {c.bytes_per_frame_write:g} B x 8", gbit, "Gbit/s")
    step("egress per gateway", f"{gbit:.2f} / {gateways}", gbit / gateways, "Gbit/s")
    cores = max(1, int(inp.cores_per_host))
    hosts = step("gateway hosts", f"ceil({gateways} / {cores} cores)", math.ceil(gateways / cores))
    step("egress per gateway host", f"{gbit:.2f} / {hosts:g}", gbit / hosts, "Gbit/s")
    # --- workers
    wk_cpu = step(
        "worker CPU",
        f"({frames:g} x {c.worker_cpu_us_per_frame:g} + {admitted:g} x "
        f"{c.worker_cpu_us_per_comment:g}) µs",
        (frames * c.worker_cpu_us_per_frame + admitted * c.worker_cpu_us_per_comment) / 1e6,
        "cores",
    )
    workers = int(
        step("workers", f"ceil({wk_cpu:.2f} / {u:g}) + 1 spare", math.ceil(wk_cpu / u) + 1)
    )
    # --- Redis: what every layout shares (comments stored, frames committed, memory)
    kept = min(inp.stream_maxlen, admitted_room * inp.event_s)
    rd_mem = step(
        "Redis memory",
        f"{inp.rooms} x ({kept:g} comments x {c.bytes_per_comment:g} B + "
        f"{inp.frames_history} frames x {c.bytes_per_frame:g} B)",
        inp.rooms * (kept * c.bytes_per_comment + inp.frames_history * c.bytes_per_frame),
        "bytes",
    )
    shards_mem = int(
        step(
            "Redis shards by memory",
            f"ceil({rd_mem / 2**30:.1f} GiB / ({inp.redis_shard_mem_bytes / 2**30:g} GiB x {u:g}))",
            math.ceil(rd_mem / (inp.redis_shard_mem_bytes * u)),
        )
    )
    # --- Redis per layout: how many gateways read each room's frames and notices
    layouts = []
    for name in LAYOUTS:
        lay_gw = by_layout[name]
        g_room = g_rooms[name]
        if name == "random":
            how = (
                f"{lay_gw} x (1 - (1 - 1/{lay_gw})^{per_room_viewers:g} viewers per room): "
                "expected distinct"
            )
        else:
            how = f"min({lay_gw} gateways, ceil({per_room_viewers:g} / share {share}))"
        step(f"G_room ({name})", how, g_room, "gateways")
        reads = step(f"frame reads ({name})", f"{frames:g} x {g_room:g}", frames * g_room, "/s")
        notices = step(
            f"notices ({name})",
            f"{frames:g} x {g_room:g} (one per frame per gateway holding the room)",
            frames * g_room,
            "/s",
        )
        rd_cpu = step(
            f"Redis CPU ({name})",
            f"({admitted:g} x {c.redis_cpu_us_per_comment:g} + {frames:g} x "
            f"{c.redis_cpu_us_per_frame:g} + {reads:g} reads x {c.redis_cpu_us_per_frame_read:g}"
            f" + {notices:g} notices x {c.redis_cpu_us_per_notice:g}) µs",
            (
                admitted * c.redis_cpu_us_per_comment
                + frames * c.redis_cpu_us_per_frame
                + reads * c.redis_cpu_us_per_frame_read
                + notices * c.redis_cpu_us_per_notice
            )
            / 1e6,
            "cores",
        )
        shards_cpu = math.ceil(rd_cpu / u)
        layout_shards = int(
            step(
                f"Redis shards ({name})",
                f"max(ceil({rd_cpu:.2f} / {u:g}), {shards_mem} by memory, 1)",
                max(shards_cpu, shards_mem, 1),
            )
        )
        hot = step(
            f"hottest room on its shard ({name})",
            "one room stays on one shard (hash tag)",
            admitted_room * c.redis_cpu_us_per_comment / 1e6
            + ticks
            * (
                c.redis_cpu_us_per_frame
                + g_room * (c.redis_cpu_us_per_frame_read + c.redis_cpu_us_per_notice)
            )
            / 1e6,
            "cores",
        )
        if hot > u:
            warnings.append(
                f"{name}: a single room needs more than one Redis shard can give: lower the "
                "ceiling" + (" or route rooms (room-affine)" if name == "random" else "")
            )
        layouts.append(
            Layout(
                name,
                g_room,
                reads,
                notices,
                rd_cpu,
                shards_cpu,
                layout_shards,
                hot,
                lay_gw,
                read_cores * g_room,
            )
        )
    shards = layouts[-1].shards
    step("Redis shards", "the room-affine layout's", shards)
    return Plan(gateways, workers, shards, steps, warnings, int(hosts), gbit / hosts, layouts)


REPORT_COSTS = {
    # report "costs" key -> Costs field it replaces
    "cpu_us_per_frame_write": "cpu_us_per_frame_write",
    "rss_bytes_per_conn": "rss_bytes_per_conn",
    "redis_cpu_us_per_comment": "redis_cpu_us_per_comment",
    "bytes_per_frame_write": "bytes_per_frame_write",
}
EXTRAPOLATION_WARN = 10.0  # warn when a plan's gateway holds this many times the measured


class SourceError(Exception):
    """A ``--from`` file the planner cannot use; ``str()`` is the one line to print."""


@dataclass
class Source:
    """What a ``--from`` file gave the plan: costs, what was taken from it (one line each),
    warnings about it, the connections per process it measured (``lo``, ``hi``), and the
    relative uncertainty of each cost it fitted (field -> fraction, e.g. 0.1 = ±10%)."""

    costs: Costs
    used: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    measured_conns: tuple[float, float] | None = None
    uncertainty: dict[str, float] = field(default_factory=dict)
    #: comments per frame write of the one run measured (``None``: not a single run).
    comments_per_write: float | None = None
    #: per-process rates the costs were measured at (``"comments"``, ``"frames read"``:
    #: per second, lowest and highest), for the extrapolation warnings
    measured_rates: dict[str, tuple[float, float]] = field(default_factory=dict)


def _positive(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def costs_from_report(report: dict[str, Any], base: Costs | None = None) -> tuple[Costs, list[str]]:
    """Unit costs with the measured ones of a loadtest report (positive numbers only).

    One run cannot tell fixed costs from per-connection ones: its idle CPU is taken as
    a fixed cost per gateway process (``gateway_fixed_cpu_cores``, an upper bound) and
    the per-connection idle cost keeps its default. Dividing the idle CPU by a small
    population instead (the old way) made 300 connections look like 300 µs each and
    planned thousands of gateways."""
    values = asdict(base or Costs())
    used = []
    costs = report.get("costs") or {}
    for key, name in REPORT_COSTS.items():
        value = costs.get(key)
        if _positive(value):
            values[name] = float(value)
            used.append(f"{name} = {value:g} (measured)")
    idle = (report.get("server") or {}).get("idle") or {}
    if _positive(idle.get("cpu_s")) and _positive(idle.get("wall_s")):
        values["gateway_fixed_cpu_cores"] = float(idle["cpu_s"]) / float(idle["wall_s"])
        used.append(
            f"gateway_fixed_cpu_cores = {values['gateway_fixed_cpu_cores']:.3f} "
            "(measured idle CPU, all of it taken as fixed)"
        )
    return Costs(**values), used


def read_source(path: Path) -> Source:
    """Costs from a loadtest report or a calibration (``danmaku-loadtest calibrate``).
    ``SourceError`` (one line) for a file that is missing, unreadable or neither."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"{path}: not JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict):
        raise SourceError(f"{path}: not a loadtest report or calibration (not an object)")
    if str(doc.get("schema", "")).startswith("danmaku-loadtest-calibration/"):
        from loadtest.calibrate import source_from_calibration

        try:
            return source_from_calibration(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"{path}: a malformed calibration ({exc!r})") from None
    if not isinstance(doc.get("costs"), dict):
        raise SourceError(
            f'{path}: not a loadtest report or calibration (no "costs"; write one with '
            "`danmaku-loadtest local ... --out FILE` or `danmaku-loadtest calibrate`)"
        )
    costs, used = costs_from_report(doc)
    conns = doc["costs"].get("connections")
    src = Source(costs, used)
    if _positive(conns):
        src.measured_conns = (float(conns), float(conns))
    src.warnings.append(
        "costs from one run: fixed and per-connection costs cannot be told apart, so its "
        "idle CPU counts as a fixed cost per gateway and the per-connection idle cost keeps "
        "its default; `danmaku-loadtest calibrate` fits both"
    )
    phases = (doc.get("server") or {}).get("phases") or {}
    writes, comments = phases.get("frame_writes"), phases.get("comments_accepted")
    if _positive(writes) and _positive(comments):
        src.comments_per_write = float(comments) / float(writes)
    if str((doc.get("target") or {}).get("mode", "")) == "local":
        src.warnings.append(
            "measured on `danmaku up` (web app and worker in the gateway's process): the "
            "gateway costs are upper bounds (`local --split` measures a gateway alone)"
        )
    return src


def extrapolation_warnings(plan: Plan, inp: Inputs, src: Source) -> list[str]:
    """A warning when one gateway process of the plan holds more than
    ``EXTRAPOLATION_WARN`` times the connections the source measured (or fewer than a
    tenth of them)."""
    out = []
    writes = inp.viewers * 1000.0 / inp.tick_ms
    mix = src.comments_per_write
    if mix is not None and inp.rate > 0 and mix > EXTRAPOLATION_WARN * inp.rate / writes:
        out.append(
            f"the run sent 1 comment per {1 / mix:,.0f} frame writes, this plan 1 per "
            f"{writes / inp.rate:,.0f}: its per-write cost includes comment work (ingest, "
            "merging) that does not grow with viewers, so the gateway count is an upper "
            "bound; `danmaku-loadtest calibrate` separates them"
        )
    if plan.gateways > 0:
        routed = plan.layout("room-affine")
        per_gateway = {
            "comments": inp.rate / plan.gateways,
            "frames read": routed.frame_reads / max(1, routed.gateways),
        }
        for what, (lo, hi) in src.measured_rates.items():
            rate = per_gateway[what]
            if rate > hi * EXTRAPOLATION_WARN or rate * EXTRAPOLATION_WARN < lo:
                out.append(
                    f"extrapolating: a gateway of this plan takes {rate:,.0f} {what}/s, the "
                    f"costs were measured at {lo:,.0f}-{hi:,.0f}/s; a cost per unit changes "
                    "with the rate (Redis round trips and wake-ups are shared by more units): "
                    "calibrate nearer the planned rate"
                )
    if src.measured_conns is None or plan.gateways <= 0:
        return out
    lo, hi = src.measured_conns
    per = inp.viewers / plan.gateways
    if per > hi * EXTRAPOLATION_WARN or per * EXTRAPOLATION_WARN < lo:
        out.append(
            f"extrapolating: a gateway of this plan holds {per:,.0f} connections, the costs "
            f"were measured at {lo:,.0f}-{hi:,.0f} ({max(per / hi, lo / per):.0f}x beyond the "
            "measured range); measure nearer the planned population"
        )
    return out


def _help(what: str, unit: str, default: Any) -> str:
    shown = f"{default:,g}" if isinstance(default, int | float) else str(default)
    return f"{what} [{unit}] (default: {shown})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    for name in ("viewers", "rate", "rooms"):
        what, unit = INPUT_HELP[name]
        p.add_argument(
            "--" + name,
            type=int if name != "rate" else float,
            required=True,
            help=f"{what} [{unit}] (required)",
        )
    p.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="costs from a loadtest JSON report (`local/run --out`) or a calibration "
        "(`calibrate --out`) [file] (default: none: the default unit costs below)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON (default: text)")
    p.add_argument(
        "--html",
        type=Path,
        help="also write the plan as a page: deployment per role drawn, egress per host, "
        "warnings, the arithmetic [file] (default: none)",
    )
    for f in fields(Inputs):
        if f.name in ("viewers", "rate", "rooms", "costs"):
            continue
        what, unit = INPUT_HELP[f.name]
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=float,
            default=None,
            metavar="N",
            help=_help(what, unit, f.default),
        )
    for f in fields(Costs):
        what, unit = COST_HELP[f.name]
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=float,
            default=None,
            metavar="N",
            help=_help(what, unit, f.default) + "; wins over --from",
        )


def input_problem(inp: Inputs) -> str | None:
    """The first input the plan cannot be computed with, as one line, or ``None``."""
    if inp.viewers < 1 or inp.rooms < 1:
        return "--viewers and --rooms must be 1 or more"
    if not math.isfinite(inp.rate) or inp.rate < 0:
        return "--rate must be 0 or more"
    if not 0 < inp.utilisation <= 1:
        return "--utilisation must be above 0 and at most 1"
    if inp.tick_ms <= 0:
        return "--tick-ms must be above 0"
    if inp.room_share < 1:
        return "--room-share must be 1 or more"
    for name in ("gateway_mem_bytes", "max_conns_per_gateway", "redis_shard_mem_bytes"):
        if getattr(inp, name) <= 0:
            return f"--{name.replace('_', '-')} must be above 0"
    for f in fields(Costs):
        value = getattr(inp.costs, f.name)
        if not math.isfinite(value) or value < 0:
            return f"--{f.name.replace('_', '-')} must be 0 or more"
    return None


def main(args: argparse.Namespace) -> int:
    src = Source(Costs())
    try:
        if args.source:
            src = read_source(args.source)
    except SourceError as exc:
        print(f"danmaku-loadtest plan: {exc}", file=sys.stderr)
        return 2
    overrides = {f.name: getattr(args, f.name) for f in fields(Costs)}
    costs = Costs(**{**asdict(src.costs), **{k: v for k, v in overrides.items() if v is not None}})
    kwargs: dict[str, Any] = {}
    for f in fields(Inputs):
        if f.name in ("viewers", "rate", "rooms", "costs"):
            continue
        value = getattr(args, f.name)
        if value is not None:
            kwargs[f.name] = int(value) if f.type == "int" else value
    inp = Inputs(args.viewers, args.rate, args.rooms, costs=costs, **kwargs)
    problem = input_problem(inp)
    if problem:
        print(f"danmaku-loadtest plan: {problem}", file=sys.stderr)
        return 2
    plan = compute(inp)
    plan.warnings = src.warnings + plan.warnings + extrapolation_warnings(plan, inp, src)
    spread = plan_uncertainty(inp, src)
    if args.html:
        from loadtest.planhtml import render

        try:
            args.html.write_text(render(inp, plan, src.used, spread))
        except OSError as exc:
            print(f"danmaku-loadtest plan: {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if args.json:
        out = {"inputs": asdict(inp), **plan.to_dict()}
        if spread is not None:
            out["gateways_range"] = list(spread)
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"plan: {inp.viewers} viewers, {inp.rate:g} comments/s, {inp.rooms} rooms, "
        f"tick {inp.tick_ms:g} ms, utilisation {inp.utilisation:g}"
    )
    for line in src.used:
        print(f"  cost {line}")
    for s in plan.steps:
        value = f"{s.value:,.2f}".rstrip("0").rstrip(".")
        print(f"  {s.what:28} = {s.formula}  -> {value} {s.unit}".rstrip())
    for w in plan.warnings:
        print(f"  warning: {w}")
    if spread is not None:
        print(
            f"  uncertainty: the fitted costs' ranges give {spread[0]}-{spread[1]} gateways "
            f"(each cost at its fit ± its standard error)"
        )
    print(layout_table(plan))
    cores = max(1, int(inp.cores_per_host))
    print(
        f"deployment: gateways {plan.gateways} processes on {plan.gateway_hosts} host(s) of "
        f"{cores} core(s) (`danmaku gateway --processes {cores}`), "
        f"{plan.egress_gbit_per_host:.2f} Gbit/s egress per host; "
        f"workers {plan.workers} processes; Redis {plan.redis_shards} shard(s) room-affine, "
        f"{plan.layout('random').shards} with random assignment "
        f"(each process on its own core, {(1 - inp.utilisation) * 100:.0f}% headroom)"
    )
    return 0


def layout_rows(plan: Plan) -> list[tuple[str, list[str]]]:
    """The layouts side by side: (what, one figure per layout in ``LAYOUTS`` order)."""
    lays = [plan.layout(name) for name in LAYOUTS]
    return [
        ("gateway processes (their frame reads included)", [f"{x.gateways:,}" for x in lays]),
        ("gateway CPU reading frames (cores, all)", [f"{x.gateway_read_cpu:,.2f}" for x in lays]),
        ("G_room: gateways reading a room", [f"{x.g_room:,.1f}".removesuffix(".0") for x in lays]),
        ("frame reads/s (all gateways)", [f"{x.frame_reads:,.0f}" for x in lays]),
        ("notices/s (all gateways)", [f"{x.notices:,.0f}" for x in lays]),
        (
            "frame reads/s per gateway",
            [f"{x.frame_reads / max(1, x.gateways):,.0f}" for x in lays],
        ),
        ("Redis CPU (cores)", [f"{x.redis_cpu:,.2f}" for x in lays]),
        ("Redis shards by CPU", [f"{x.shards_cpu:,}" for x in lays]),
        ("Redis shards (CPU and memory)", [f"{x.shards:,}" for x in lays]),
        ("hottest room on its shard (cores)", [f"{x.hottest_room:.3f}" for x in lays]),
    ]


def layout_table(plan: Plan) -> str:
    """``layout_rows`` as text columns."""
    lines = [f"layouts (same event):  {'':34}{LAYOUTS[0]:>14}{LAYOUTS[1]:>14}"]
    for what, values in layout_rows(plan):
        lines.append(f"  {what:56}" + "".join(f"{v:>14}" for v in values))
    return "\n".join(lines)


def plan_uncertainty(inp: Inputs, src: Source) -> tuple[int, int] | None:
    """The gateway count with every fitted cost at its low and at its high end, or
    ``None`` when the source carries no uncertainty (defaults, one report)."""
    if not src.uncertainty:
        return None
    ends = []
    for sign in (-1, 1):
        values = asdict(inp.costs)
        for name, rel in src.uncertainty.items():
            values[name] = max(0.0, values[name] * (1 + sign * rel))
        ends.append(compute(replace(inp, costs=Costs(**values))).gateways)
    return min(ends), max(ends)
