"""What the plan's model predicts for a simulated fleet, and the table that sets it
against what the fleet measured (``danmaku-loadtest fleet``).

The fleet's rooms are not of one size (one celebrity room, a long tail), so the plan's
per-room arithmetic (``plan.gateways_per_room``, ``plan.frames_per_s``) is applied to
each room with its own connections and comment rate and summed, for both layouts:

* ``G_room`` of a room of ``n`` connections (``plan.layout_g_room``): random, the
  expected distinct gateways ``G x (1 - (1 - 1/G)^n)``; room-affine
  ``min(G, ceil(n / share))`` (at least 1);
* frames/s of a room at ``λ`` comments/s: ``ticks x (1 - e^(-λ x tick))``;
* frame reads/s = Σ frames_r x G_room_r (each gateway holding the room reads each
  frame), per gateway = that / G; rooms read per gateway = Σ G_room_r / G;
* Redis CPU = comments x c_comment + frames x c_frame + reads x (c_read + c_notice)
  (the plan's costs: defaults unless given). The plan has no term for the gateways'
  presence reports (one per room held, twice a second), which also grow with the rooms
  each gateway holds.

The table also gives the upper bound ``min(G, n)`` of the random layout (what the plan
used until issue 22), reached only when ``n`` is well above ``G``.

Pure: no I/O. ``predict`` gives the figures, ``compare`` pairs them with measured ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loadtest.plan import (
    Costs,
    frames_per_s,
    gateways_per_room,
    layout_g_room,
)
from loadtest.validate import relative_error

LAYOUTS = ("random", "room-affine")


@dataclass(frozen=True)
class RoomLoad:
    """One room of the fleet: its connections (viewers and senders: senders watch their
    room) and its comments/s."""

    connections: int
    rate: float


@dataclass(frozen=True)
class Fleet:
    rooms: tuple[RoomLoad, ...]
    gateways: int
    share: int
    tick_ms: float


#: figure key -> (what it is, unit); the order of the printed table
FIGURES: dict[str, tuple[str, str]] = {
    "frame_reads_per_gateway": ("frame reads/s per gateway", "/s"),
    "rooms_per_gateway": ("rooms read per gateway", "rooms"),
    "gateways_per_room": ("gateways per room (mean)", "gateways"),
    "gateways_per_room_bound": (
        "gateways per room (mean), upper bound: random min(G, n)",
        "gateways",
    ),
    "celebrity_gateways": ("gateways of the largest room", "gateways"),
    "small_room_gateways": ("gateways per room, rooms under one share (mean)", "gateways"),
    "frames_built": ("frames built/s (all rooms)", "/s"),
    "frame_reads": ("frame reads/s (all gateways): Redis read load", "/s"),
    "redis_cpu": ("Redis CPU", "cores"),
}


def predict(fleet: Fleet, layout: str, costs: Costs | None = None) -> dict[str, float]:
    """The plan's figures (keys of ``FIGURES``) for ``fleet`` in ``layout``."""
    c = costs or Costs()
    g_rooms = [
        layout_g_room(layout, r.connections, fleet.gateways, fleet.share) for r in fleet.rooms
    ]
    bound = [
        gateways_per_room(layout, r.connections, fleet.gateways, fleet.share) for r in fleet.rooms
    ]
    frames = [frames_per_s(r.rate, fleet.tick_ms) for r in fleet.rooms]
    reads = sum(f * g for f, g in zip(frames, g_rooms, strict=True))
    comments = sum(r.rate for r in fleet.rooms)
    biggest = max(range(len(fleet.rooms)), key=lambda i: fleet.rooms[i].connections)
    small = [g for r, g in zip(fleet.rooms, g_rooms, strict=True) if r.connections < fleet.share]
    redis_us = (
        comments * c.redis_cpu_us_per_comment
        + sum(frames) * c.redis_cpu_us_per_frame
        + reads * (c.redis_cpu_us_per_frame_read + c.redis_cpu_us_per_notice)
    )
    return {
        "frame_reads_per_gateway": reads / fleet.gateways,
        "gateways_per_room_bound": sum(bound) / len(bound),
        "rooms_per_gateway": sum(g_rooms) / fleet.gateways,
        "gateways_per_room": sum(g_rooms) / len(g_rooms),
        "celebrity_gateways": float(g_rooms[biggest]),
        "small_room_gateways": sum(small) / len(small) if small else 0.0,
        "frames_built": sum(frames),
        "frame_reads": reads,
        "redis_cpu": redis_us / 1e6,
    }


@dataclass
class Row:
    key: str
    layout: str
    predicted: float
    measured: float | None

    @property
    def error(self) -> float | None:
        return relative_error(self.predicted, self.measured)


def compare(
    predicted: Mapping[str, Mapping[str, float]],
    measured: Mapping[str, Mapping[str, float | None]],
) -> list[Row]:
    """Predicted against measured, per figure and layout (layout -> figure -> value)."""
    rows = []
    for key in FIGURES:
        for layout in LAYOUTS:
            if layout in predicted:
                value = (measured.get(layout) or {}).get(key)
                rows.append(Row(key, layout, predicted[layout][key], value))
    return rows


def _num(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if unit == "cores" else f"{x:,.1f}"


def prediction_table(rows: Sequence[Row]) -> list[str]:
    """Markdown: one line per figure, both layouts' predicted / measured / error."""
    head = "| figure | " + " | ".join(f"{lay} predicted / measured (error)" for lay in LAYOUTS)
    lines = [head + " |", "| --- |" + " --- |" * len(LAYOUTS)]
    for key, (what, unit) in FIGURES.items():
        cells = []
        for layout in LAYOUTS:
            row = next((r for r in rows if r.key == key and r.layout == layout), None)
            if row is None:
                cells.append("-")
                continue
            err = "" if row.error is None else f" ({row.error:+.0%})"
            cells.append(f"{_num(row.predicted, unit)} / {_num(row.measured, unit)}{err}")
        lines.append(f"| {what} ({unit}) | " + " | ".join(cells) + " |")
    return lines
