"""``danmaku-loadtest validate``: does a calibrated plan come true?

Calibrate at small populations (``--sizes``), predict a larger run (``--target``
viewers, 4-5x the largest size) with the plan's own model, run it, and compare three
figures of the measured server (the gateway alone with the default ``--split``):

* **gateway CPU** (cores over the phases) = fixed + c_conn x connections
  + c_write x frame writes/s + c_comment x comments/s (the calibration's fit);
* **frame writes/s** = connections x the frames per connection-second the calibration
  runs received (the same scenario at a smaller population: every connection of a room
  receives every frame, senders watch their room too); a calibration without that
  figure uses the plan's model, ticks/s x P(a room's tick has a comment), Poisson;
* **egress** (bytes/s written) = frame writes/s x bytes per frame write (calibrated).

It prints predicted vs measured with the relative error of each and exits 1 when any
is beyond ``--tolerance`` (default 0.2 = ±20%), 2 on bad usage. ``predict`` and
``compare`` are pure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.calibrate import (
    CalibrationError,
    RunLocal,
    calibrate,
    load_reports,
    parse_sizes,
    reads_per_s,
    run_reports,
    spread_rooms,
    summary_lines,
    writes_per_conn_s,
)
from loadtest.calibrate import predict as predict_cores
from loadtest.plan import frames_per_s


def relative_error(predicted: float, measured: float | None) -> float | None:
    """(measured - predicted) / predicted; ``None`` when not measured or predicted 0."""
    if measured is None or predicted == 0:
        return None
    return (measured - predicted) / predicted


@dataclass
class Figure:
    name: str
    unit: str
    predicted: float
    measured: float | None

    @property
    def error(self) -> float | None:
        return relative_error(self.predicted, self.measured)


def predict(
    doc: dict[str, Any], conns: float, rate: float, rooms: int, tick_ms: float
) -> list[Figure]:
    """The three figures the calibration ``doc`` predicts for a run with ``conns``
    connections spread over ``rooms`` rooms and ``rate`` comments/s in all (measured
    figures left ``None``)."""
    # The plan's model (Poisson arrivals): a room's frames/s, one per tick with a comment.
    room_frames = frames_per_s(rate / max(1, rooms), tick_ms)
    per_conn = writes_per_conn_s(doc, rooms) or doc.get("frame_writes_per_conn_s")
    # The calibration runs' own frames per connection-second (the same scenario's comment
    # pattern at a smaller population), else every connection gets its room's frames.
    writes = conns * float(per_conn) if per_conn else conns * room_frames
    # Frames the gateway reads: the calibration runs' own at this many rooms, else each
    # room's frames once.
    reads = reads_per_s(doc, rooms)
    if reads is None:
        reads = max(1, rooms) * room_frames
    cores = predict_cores(doc, conns, writes, rate, reads)
    egress = writes * float(doc.get("bytes_per_frame_write") or 0.0)
    return [
        Figure("gateway CPU", "cores", cores, None),
        Figure("frame writes", "/s", writes, None),
        Figure("egress", "bytes/s", egress, None),
    ]


def measured(report: dict[str, Any]) -> dict[str, float | None]:
    """The run's figures over its phases, by ``Figure.name``."""
    ph = (report.get("server") or {}).get("phases") or {}
    wall = ph.get("wall_s") or 0.0
    if wall <= 0:
        return {"gateway CPU": None, "frame writes": None, "egress": None}

    def rate(key: str) -> float | None:
        value = ph.get(key)
        return None if value is None else float(value) / wall

    return {
        "gateway CPU": rate("cpu_s"),
        "frame writes": rate("frame_writes"),
        "egress": rate("bytes_out"),
    }


def cost_of_measured_work(
    doc: dict[str, Any], conns: float, report: dict[str, Any]
) -> Figure | None:
    """The gateway CPU the calibration gives for the writes and comments the run really
    did, against the CPU it used: the cost model alone, whatever throughput a busy
    machine allowed (a starved run does fewer writes, each still costing its share)."""
    ph = (report.get("server") or {}).get("phases") or {}
    wall = ph.get("wall_s") or 0.0
    if wall <= 0 or ph.get("cpu_s") is None:
        return None
    writes = float(ph.get("frame_writes") or 0) / wall
    comments = float(ph.get("comments_accepted") or 0) / wall
    reads = float(ph.get("frames_read") or 0) / wall
    cores = predict_cores(doc, conns, writes, comments, reads)
    return Figure("gateway CPU for the measured work", "cores", cores, float(ph["cpu_s"]) / wall)


def compare(figures: list[Figure], tolerance: float) -> list[str]:
    """The figures beyond ``tolerance`` (or not measured), one line each; empty = pass."""
    out = []
    for f in figures:
        err = f.error
        if err is None:
            out.append(f"{f.name}: not measured")
        elif abs(err) > tolerance:
            out.append(f"{f.name}: {err:+.0%} (tolerance ±{tolerance:.0%})")
    return out


def table(figures: list[Figure]) -> list[str]:
    lines = ["| figure | predicted | measured | error |", "| --- | --- | --- | --- |"]
    for f in figures:
        m = "-" if f.measured is None else f"{f.measured:,.3g} {f.unit}"
        e = "-" if f.error is None else f"{f.error:+.1%}"
        lines.append(f"| {f.name} | {f.predicted:,.3g} {f.unit} | {m} | {e} |")
    return lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        type=int,
        default=None,
        help="viewers of the run predicted and measured [viewers] (default: 5x the "
        "largest --sizes)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.2,
        help="largest relative error that passes [fraction] (default: 0.2 = ±20%%)",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        help="use this calibration (`calibrate --out`) instead of calibrating first "
        "[file] (default: calibrate at --sizes)",
    )


def main(args: argparse.Namespace, run_local: RunLocal, shape: Callable[[int], Any]) -> int:
    """``shape(viewers)`` is the resolved scenario of a run with that many viewers (its
    ``senders``, ``rooms``, ``tick_ms`` and phases' rate feed the prediction)."""
    try:
        sizes = parse_sizes(args.sizes)
        if args.calibration:
            doc = json.loads(args.calibration.read_text())
        elif args.reports:
            doc = calibrate(load_reports(args.reports))
        else:
            doc = calibrate(run_reports(sizes, args.split, run_local, spread_rooms(args)))
    except CalibrationError as exc:
        print(f"danmaku-loadtest validate: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"danmaku-loadtest validate: {args.calibration}: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(doc):
        print(line)
    target = args.target or 5 * max(sizes)
    sc = shape(target)
    rate = sum(ph.offered for ph in sc.phases) / max(sc.duration_s, 1e-9)
    conns = sc.total_viewers + sc.senders
    figures = predict(doc, conns, rate, sc.rooms, sc.tick_ms)
    hi = doc["measured"]["connections"][1]
    print(f"predict: {target} viewers ({conns} connections, {conns / hi:.1f}x the largest run)")
    report = run_local(target, args.split, None)
    got = measured(report)
    for f in figures:
        f.measured = got[f.name]
    for line in table(figures):
        print(line)
    work = cost_of_measured_work(doc, conns, report)
    if work is not None:
        # Not judged: a starved run does less work; this checks the cost per unit alone.
        print(
            f"gateway CPU for the work the run did ({got['frame writes'] or 0:,.0f} writes/s): "
            f"predicted {work.predicted:.3g} cores, measured {work.measured:.3g} "
            f"({(work.error or 0):+.1%})"
        )
    for warning in report.get("warnings") or []:
        print(f"warning (the measured run): {warning}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "calibration": doc,
                    "target_viewers": target,
                    "connections": conns,
                    "figures": [{**vars(f), "error": f.error} for f in figures],
                    "report": report,
                },
                indent=2,
            )
            + "\n"
        )
    failed = compare(figures, args.tolerance)
    for line in failed:
        print(f"FAIL {line}")
    if not failed:
        print(f"ok: every figure within ±{args.tolerance:.0%}")
    return 1 if failed else 0
