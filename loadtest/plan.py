"""``danmaku-loadtest plan``: turn per-unit costs into a deployment, with the arithmetic.

The model (docs/capacity.md explains it and its assumptions): every viewer receives one
frame per tick of its room (the busy-room upper bound), so gateways pay
``viewers x ticks/s`` frame writes plus an idle cost per connection plus ingest per
comment, and need memory per connection; workers pay per frame built and per comment
merged; Redis pays per comment stored, per frame committed and per frame read by each
gateway that has viewers in the room. Each process is one core (trio is single
threaded) run at most at ``--utilisation``; processes are rounded up, workers get one
spare. ``compute`` is pure; ``--from report.json`` replaces the default unit costs with
the ones a loadtest measured.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Costs:
    """Unit costs (defaults: the targets of issue 6; replace with measured ones)."""

    cpu_us_per_frame_write: float = 10.0  # gateway CPU to deliver one frame to one viewer
    idle_cpu_us_per_conn_s: float = 1.0  # gateway CPU per connected viewer per second
    rss_bytes_per_conn: float = 20_000.0  # gateway memory per connection
    ingest_cpu_us_per_comment: float = 20.0  # gateway CPU to validate + pipeline a comment
    worker_cpu_us_per_frame: float = 200.0  # worker CPU per frame built (read, merge, commit)
    worker_cpu_us_per_comment: float = 10.0  # worker CPU per comment merged
    redis_cpu_us_per_comment: float = 5.0  # Redis CPU per stored comment (Lua + XADD)
    redis_cpu_us_per_frame: float = 30.0  # Redis CPU per frame commit (Lua + XADD)
    redis_cpu_us_per_frame_read: float = 5.0  # Redis CPU per frame read by one gateway
    bytes_per_frame_write: float = 1_500.0  # wire bytes per frame write
    bytes_per_comment: float = 300.0  # Redis memory per stored comment
    bytes_per_frame: float = 1_500.0  # Redis memory per stored frame


@dataclass(frozen=True)
class Inputs:
    viewers: int
    rate: float  # comments/s over all rooms
    rooms: int
    tick_ms: float = 100.0
    display_budget: float = 40.0  # items/s a room's frames carry
    ingest_ceiling: float = 2000.0  # comments/s per room admitted (0 = off)
    utilisation: float = 0.6  # run every process at most this busy (headroom = 1 - it)
    gateway_mem_bytes: float = 4 * 2**30
    max_conns_per_gateway: int = 100_000
    redis_shard_mem_bytes: float = 8 * 2**30
    stream_maxlen: int = 100_000
    frames_history: int = 3000
    event_s: float = 3600.0  # how long the event runs (how much room history accumulates)
    costs: Costs = field(default_factory=Costs)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "gateways": self.gateways,
            "workers": self.workers,
            "redis_shards": self.redis_shards,
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
    by_cpu = step("gateways by CPU", f"ceil({gw_cpu:.2f} / {u:g})", math.ceil(gw_cpu / u))
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
    gateways = int(max(by_cpu, by_mem, by_conns, 1))
    step("gateways", "max of the above (at least 1)", gateways)
    gbit = writes * c.bytes_per_frame_write * 8 / 1e9
    step("egress", f"{writes:g} x {c.bytes_per_frame_write:g} B x 8", gbit, "Gbit/s")
    step("egress per gateway", f"{gbit:.2f} / {gateways}", gbit / gateways, "Gbit/s")
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
    # --- Redis
    readers = min(gateways, max(1, math.ceil(inp.viewers / inp.rooms)))
    rd_cpu = step(
        "Redis CPU",
        f"({admitted:g} x {c.redis_cpu_us_per_comment:g} + {frames:g} x "
        f"{c.redis_cpu_us_per_frame:g} + {frames:g} x {readers} gateways x "
        f"{c.redis_cpu_us_per_frame_read:g}) µs",
        (
            admitted * c.redis_cpu_us_per_comment
            + frames * c.redis_cpu_us_per_frame
            + frames * readers * c.redis_cpu_us_per_frame_read
        )
        / 1e6,
        "cores",
    )
    kept = min(inp.stream_maxlen, admitted_room * inp.event_s)
    rd_mem = step(
        "Redis memory",
        f"{inp.rooms} x ({kept:g} comments x {c.bytes_per_comment:g} B + "
        f"{inp.frames_history} frames x {c.bytes_per_frame:g} B)",
        inp.rooms * (kept * c.bytes_per_comment + inp.frames_history * c.bytes_per_frame),
        "bytes",
    )
    shards_cpu = math.ceil(rd_cpu / u)
    shards_mem = math.ceil(rd_mem / (inp.redis_shard_mem_bytes * u))
    shards = int(
        step(
            "Redis shards",
            f"max(ceil({rd_cpu:.2f} / {u:g}), ceil({rd_mem / 2**30:.1f} GiB / "
            f"({inp.redis_shard_mem_bytes / 2**30:g} GiB x {u:g})), 1)",
            max(shards_cpu, shards_mem, 1),
        )
    )
    hot = (
        admitted_room * c.redis_cpu_us_per_comment / 1e6
        + ticks * (c.redis_cpu_us_per_frame + readers * c.redis_cpu_us_per_frame_read) / 1e6
    )
    step("hottest room on its shard", "one room stays on one shard (hash tag)", hot, "cores")
    if hot > u:
        warnings.append("a single room needs more than one Redis shard can give: lower the ceiling")
    return Plan(gateways, workers, shards, steps, warnings)


REPORT_COSTS = {
    # report "costs" key -> Costs field it replaces
    "cpu_us_per_frame_write": "cpu_us_per_frame_write",
    "idle_cpu_us_per_conn_s": "idle_cpu_us_per_conn_s",
    "rss_bytes_per_conn": "rss_bytes_per_conn",
    "redis_cpu_us_per_comment": "redis_cpu_us_per_comment",
    "bytes_per_frame_write": "bytes_per_frame_write",
}


def costs_from_report(report: dict[str, Any], base: Costs | None = None) -> tuple[Costs, list[str]]:
    """Unit costs with the measured ones of a loadtest report (positive numbers only)."""
    values = asdict(base or Costs())
    used = []
    for key, name in REPORT_COSTS.items():
        value = (report.get("costs") or {}).get(key)
        if isinstance(value, int | float) and value > 0:
            values[name] = float(value)
            used.append(f"{name} = {value:g} (measured)")
    return Costs(**values), used


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--viewers", type=int, required=True, help="concurrent viewers")
    p.add_argument("--rate", type=float, required=True, help="comments/s over all rooms")
    p.add_argument("--rooms", type=int, required=True, help="live rooms")
    p.add_argument("--from", dest="source", type=Path, help="a loadtest JSON report")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    for f in fields(Inputs):
        if f.name in ("viewers", "rate", "rooms", "costs"):
            continue
        p.add_argument("--" + f.name.replace("_", "-"), type=float, default=None)
    for f in fields(Costs):
        p.add_argument("--" + f.name.replace("_", "-"), type=float, default=None)


def main(args: argparse.Namespace) -> int:
    costs, used = Costs(), list[str]()
    if args.source:
        costs, used = costs_from_report(json.loads(args.source.read_text()))
    overrides = {f.name: getattr(args, f.name) for f in fields(Costs)}
    costs = Costs(**{**asdict(costs), **{k: v for k, v in overrides.items() if v is not None}})
    kwargs: dict[str, Any] = {}
    for f in fields(Inputs):
        if f.name in ("viewers", "rate", "rooms", "costs"):
            continue
        value = getattr(args, f.name)
        if value is not None:
            kwargs[f.name] = int(value) if f.type == "int" else value
    inp = Inputs(args.viewers, args.rate, args.rooms, costs=costs, **kwargs)
    plan = compute(inp)
    if args.json:
        print(json.dumps({"inputs": asdict(inp), **plan.to_dict()}, indent=2))
        return 0
    print(
        f"plan: {inp.viewers} viewers, {inp.rate:g} comments/s, {inp.rooms} rooms, "
        f"tick {inp.tick_ms:g} ms, utilisation {inp.utilisation:g}"
    )
    for line in used:
        print(f"  cost {line}")
    for s in plan.steps:
        value = f"{s.value:,.2f}".rstrip("0").rstrip(".")
        print(f"  {s.what:28} = {s.formula}  -> {value} {s.unit}".rstrip())
    for w in plan.warnings:
        print(f"  warning: {w}")
    print(
        f"deployment: {plan.gateways} gateways, {plan.workers} workers, "
        f"{plan.redis_shards} Redis shards (each a process on its own core, "
        f"{(1 - inp.utilisation) * 100:.0f}% headroom)"
    )
    return 0
