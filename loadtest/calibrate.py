"""``danmaku-loadtest calibrate``: fixed and per-unit gateway costs from runs at a few sizes.

One run's totals divided by its population make fixed costs look like per-connection
ones (300 connections and a process's background loops: 300 µs a connection). Runs at
two or three populations tell them apart. Each run gives two windows of the measured
server process (the gateway with ``--split``): the quiet window after connecting and
the phases. Each window is one row of a weighted least-squares fit (weights = the
window's seconds) of

    server cores = fixed + c_conn x connections + c_write x frame writes/s
                   + c_comment x comments/s + c_read x frames read/s

(frames read: what the gateway read from Redis, one per frame of each room it holds).
In one room at one comment rate the gateway reads frames in a fixed ratio to the
comments it takes in, so the two cannot be told apart: the fit then leaves ``c_read``
out (the per-comment cost carries it) and says so. ``--spread-rooms N`` runs each size
a second time with the same comments spread over N rooms, which reads more frames per
comment and tells the two apart.

The calibration (schema ``danmaku-loadtest-calibration/1``) keeps the fitted costs,
their standard errors, the per-run figures and the measured range (connections and
frame writes/s of the runs); ``plan --from`` reads it (``source_from_calibration``)
and warns when a plan's gateway holds more than 10x the measured connections.
Everything but ``main`` is pure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest.fit import FitError, fit
from loadtest.plan import Costs, Source

SCHEMA = "danmaku-loadtest-calibration/1"
COLUMNS = (
    "fixed_cores",
    "cpu_us_per_conn_s",
    "cpu_us_per_frame_write",
    "cpu_us_per_comment",
    "cpu_us_per_frame_read",
)
#: comments per frame read must differ by this factor between runs to fit c_read apart
READS_APART = 1.5
#: fitted column -> Costs field (µs columns are fitted in seconds and scaled by 1e6)
TO_COSTS = {
    "fixed_cores": "gateway_fixed_cpu_cores",
    "cpu_us_per_conn_s": "idle_cpu_us_per_conn_s",
    "cpu_us_per_frame_write": "cpu_us_per_frame_write",
    "cpu_us_per_comment": "ingest_cpu_us_per_comment",
    "cpu_us_per_frame_read": "gateway_cpu_us_per_frame_read",
}


@dataclass
class Window:
    """One measured window of one run: the server's CPU seconds over ``wall_s`` with
    ``conns`` connected, ``writes`` frame writes, ``comments`` comments accepted,
    ``bytes_out`` written and ``frames_read`` frames read from Redis."""

    conns: float
    wall_s: float
    cpu_s: float
    writes: float = 0.0
    comments: float = 0.0
    bytes_out: float = 0.0
    frames_read: float = 0.0

    def row(self, columns: int = len(COLUMNS)) -> tuple[list[float], float, float]:
        """The fit's row: the first ``columns`` of ``COLUMNS`` per second, CPU, weight."""
        w = self.wall_s
        x = [1.0, self.conns, self.writes / w, self.comments / w, self.frames_read / w]
        return x[:columns], self.cpu_s / w, w


class CalibrationError(ValueError):
    """The reports cannot be fitted (one line)."""


def windows(report: dict[str, Any]) -> list[Window]:
    """The idle and the phases window of a loadtest report (those it measured)."""
    server = report.get("server") or {}
    conns = float((report.get("costs") or {}).get("connections") or 0)
    out = []
    idle = server.get("idle") or {}
    if idle.get("cpu_s") is not None and (idle.get("wall_s") or 0) > 0:
        out.append(Window(conns, float(idle["wall_s"]), float(idle["cpu_s"])))
    ph = server.get("phases") or {}
    if ph.get("cpu_s") is not None and (ph.get("wall_s") or 0) > 0:
        out.append(
            Window(
                conns,
                float(ph["wall_s"]),
                float(ph["cpu_s"]),
                float(ph.get("frame_writes") or 0),
                float(ph.get("comments_accepted") or 0),
                float(ph.get("bytes_out") or 0),
                float(ph.get("frames_read") or 0),
            )
        )
    return out


def reads_apart(busy: Sequence[Window]) -> bool:
    """Whether the runs read frames in different ratios to their comments (by at least
    ``READS_APART``), so the fit can tell the per-frame-read cost from the per-comment one."""
    ratios = [w.comments / w.frames_read for w in busy if w.frames_read > 0 and w.comments > 0]
    return len(ratios) >= 2 and max(ratios) >= READS_APART * min(ratios)


def calibrate(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The calibration document fitted from ``reports`` (two or more populations)."""
    runs = [(r, windows(r)) for r in reports]
    sizes = sorted({w.conns for _, ws in runs for w in ws})
    if len(sizes) < 2:
        raise CalibrationError(
            "calibration needs runs at two or more populations (connections); got "
            + (", ".join(f"{s:g}" for s in sizes) or "none with server figures")
        )
    busy = [w for _, ws in runs for w in ws if w.writes > 0]
    columns = COLUMNS if reads_apart(busy) else COLUMNS[:-1]
    rows = [w.row(len(columns)) for _, ws in runs for w in ws]
    try:
        result = fit(rows, columns)
    except FitError as exc:
        raise CalibrationError(str(exc)) from None
    costs: dict[str, float | None] = {}
    stderr: dict[str, float | None] = {}
    warnings: list[str] = []
    if len(columns) < len(COLUMNS):
        costs["cpu_us_per_frame_read"] = stderr["cpu_us_per_frame_read"] = None
        warnings.append(
            "the runs read frames in one ratio to their comments (one room at one rate): "
            "cpu_us_per_comment carries the gateway's frame reads too; `--spread-rooms N` "
            "fits them apart"
        )
    for col in columns:
        scale = 1.0 if col == "fixed_cores" else 1e6
        value = result.coef[col] * scale
        err = result.stderr[col]
        if value < 0:
            warnings.append(
                f"{col} fitted below zero ({value:.3g}): noise larger than the cost; taken as 0"
            )
            value = 0.0
        costs[col] = value
        stderr[col] = None if err is None else err * scale
    writes = sum(w.writes for w in busy)
    bytes_per_write = sum(w.bytes_out for w in busy) / writes if writes else None
    rates = [w.writes / w.wall_s for w in busy]
    conn_s = sum(w.conns * w.wall_s for w in busy)
    return {
        "schema": SCHEMA,
        "model": "server cores = fixed + c_conn x connections + c_write x frame writes/s "
        "+ c_comment x comments/s + c_read x frames read/s (weighted least squares over "
        "each run's idle and phase windows; c_read only when the runs tell it apart)",
        "server": _server_kind(reports),
        "costs": costs,
        "stderr": stderr,
        "bytes_per_frame_write": bytes_per_write,
        # Frames a connection received per second in these runs: what the scenario's
        # comment pattern gives (even arrivals fill every tick; Poisson ones do not).
        "frame_writes_per_conn_s": writes / conn_s if conn_s else None,
        "rss_bytes_per_conn": _rss_slope(reports),
        "measured": {
            "connections": [sizes[0], sizes[-1]],
            "frame_writes_per_s": [min(rates), max(rates)] if rates else None,
            "comments_per_s": _range([w.comments / w.wall_s for w in busy]),
            "frames_read_per_s": _range([w.frames_read / w.wall_s for w in busy]),
        },
        "runs": [
            {
                "connections": ws[0].conns if ws else None,
                "rooms": (r.get("scenario") or {}).get("rooms"),
                "windows": [asdict(w) for w in ws],
                "run_id": r.get("run_id"),
            }
            for r, ws in runs
        ],
        "dof": result.dof,
        "warnings": warnings,
    }


def _range(values: Sequence[float]) -> list[float] | None:
    """``[min, max]`` of the positive ``values``, ``None`` without any."""
    positive = [v for v in values if v > 0]
    return [min(positive), max(positive)] if positive else None


def _server_kind(reports: Sequence[dict[str, Any]]) -> str:
    modes = {str((r.get("target") or {}).get("mode", "")) for r in reports}
    return modes.pop() if len(modes) == 1 else "mixed"


def _rss_slope(reports: Sequence[dict[str, Any]]) -> float | None:
    """Memory per connection: the slope of (RSS connected - RSS before) over connections."""
    rows = []
    for r in reports:
        rss = (r.get("server") or {}).get("rss_bytes") or {}
        conns = (r.get("costs") or {}).get("connections")
        if rss.get("base") is not None and rss.get("ready") is not None and conns:
            rows.append(([1.0, float(conns)], float(rss["ready"] - rss["base"]), 1.0))
    try:
        slope = fit(rows, ("base", "per_conn")).coef["per_conn"]
    except FitError:
        return None
    return slope if slope > 0 else None


def source_from_calibration(doc: dict[str, Any]) -> Source:
    """The plan's costs from a calibration: the fitted ones replace the defaults, with
    their relative standard errors as the plan's uncertainty."""
    values = asdict(Costs())
    used: list[str] = []
    uncertainty: dict[str, float] = {}
    for col, name in TO_COSTS.items():
        if doc["costs"].get(col) is None:
            continue  # not fitted apart: the default stays (and the warning says why)
        value = float(doc["costs"][col])
        values[name] = value
        err = doc.get("stderr", {}).get(col)
        text = f"{name} = {value:.4g}"
        if err is not None:
            text += f" ± {float(err):.2g}"
            if value > 0:
                uncertainty[name] = float(err) / value
        used.append(text + " (calibrated)")
    for key in ("bytes_per_frame_write", "rss_bytes_per_conn"):
        extra = doc.get(key)
        if isinstance(extra, int | float) and extra > 0:
            values[key] = float(extra)
            used.append(f"{key} = {extra:.4g} (calibrated)")
    measured = doc["measured"]
    lo, hi = (float(v) for v in measured["connections"])
    warnings = [f"calibration: {w}" for w in doc.get("warnings", [])]
    # Per-process rates the costs were measured at (the plan warns far outside them).
    rates = {"comments": measured.get("comments_per_s")}
    if doc["costs"].get("cpu_us_per_frame_read") is not None:
        rates["frames read"] = measured.get("frames_read_per_s")
    if doc.get("server") == "local":
        warnings.append(
            "calibrated on `danmaku up` (web app and worker in the gateway's process): the "
            "gateway costs are upper bounds (`calibrate --split` measures a gateway alone)"
        )
    src = Source(Costs(**values), used, warnings, (lo, hi), uncertainty)
    src.measured_rates = {k: (float(v[0]), float(v[1])) for k, v in rates.items() if v}
    return src


def predict(
    doc: dict[str, Any],
    conns: float,
    writes_per_s: float,
    comments_per_s: float,
    reads_per_s: float = 0.0,
) -> float:
    """Server cores the calibration predicts for one process (``reads_per_s``: frames it
    reads from Redis; counted only when the calibration fitted their cost apart)."""
    c = doc["costs"]
    return float(
        c["fixed_cores"]
        + (
            c["cpu_us_per_conn_s"] * conns
            + c["cpu_us_per_frame_write"] * writes_per_s
            + c["cpu_us_per_comment"] * comments_per_s
            + (c.get("cpu_us_per_frame_read") or 0.0) * reads_per_s
        )
        / 1e6
    )


def _busy_windows(doc: dict[str, Any], rooms: int) -> list[dict[str, Any]]:
    return [
        w
        for run in doc.get("runs", [])
        if run.get("rooms") == rooms
        for w in run.get("windows", [])
        if w.get("writes") and w.get("wall_s")
    ]


def reads_per_s(doc: dict[str, Any], rooms: int) -> float | None:
    """Frames read per second by the calibration's runs with ``rooms`` rooms (their
    mean), or ``None`` when no run had that many: the same scenario reads the same
    frames whatever its viewers, as long as every room has some."""
    rates = [w.get("frames_read", 0.0) / w["wall_s"] for w in _busy_windows(doc, rooms)]
    return sum(rates) / len(rates) if rates else None


def writes_per_conn_s(doc: dict[str, Any], rooms: int) -> float | None:
    """Frames a connection received per second in the runs with ``rooms`` rooms (the
    scenario's comment pattern at that spread), or ``None`` when no run had that many."""
    busy = _busy_windows(doc, rooms)
    conn_s = sum(w["conns"] * w["wall_s"] for w in busy)
    return sum(w["writes"] for w in busy) / conn_s if conn_s else None


def summary_lines(doc: dict[str, Any]) -> list[str]:
    lo, hi = doc["measured"]["connections"]
    out = [f"calibration ({doc['server']}): {len(doc['runs'])} runs, {lo:g}-{hi:g} connections"]
    for col in COLUMNS:
        value, err = doc["costs"].get(col), doc["stderr"].get(col)
        if value is None:
            out.append(f"  {col:24} not fitted apart (see the warning)")
            continue
        pm = f" ± {err:.3g}" if err is not None else ""
        out.append(f"  {col:24} {value:.4g}{pm}")
    if doc.get("bytes_per_frame_write"):
        out.append(f"  {'bytes_per_frame_write':24} {doc['bytes_per_frame_write']:.4g}")
    if doc.get("rss_bytes_per_conn"):
        out.append(f"  {'rss_bytes_per_conn':24} {doc['rss_bytes_per_conn']:.4g}")
    for w in doc.get("warnings", []):
        out.append(f"  warning: {w}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes",
        default="100,200,300,400,500",
        help="viewer populations to run, comma-separated; five give the per-write cost a "
        "firm slope on a small machine (docs/capacity.md) [viewers] (default: "
        "100,200,300,400,500)",
    )
    p.add_argument(
        "--reports",
        nargs="+",
        type=Path,
        metavar="REPORT",
        help="fit these loadtest JSON reports instead of running (default: run --sizes)",
    )
    p.add_argument(
        "--spread-rooms",
        type=int,
        default=0,
        metavar="N",
        help="also run each size with the same comments spread over N rooms (senders "
        "raised to N so every room gets some): more frames read per comment, which fits "
        "the gateway's per-frame-read cost apart from the per-comment one [rooms] "
        "(default: 0 = off)",
    )
    p.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="measure `danmaku up` (all roles in one process) instead of a gateway of its "
        "own (default: split: redis-server, gateway and worker as separate processes)",
    )


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CalibrationError(f"--sizes {text!r}: comma-separated whole numbers") from None
    if len(set(sizes)) < 2 or min(sizes) < 1:
        raise CalibrationError(f"--sizes {text!r}: two or more different populations, each >= 1")
    return sorted(set(sizes))


#: ``run_local(viewers, split, rooms)``: a local run's report (``rooms`` ``None``: the
#: scenario's own).
RunLocal = Callable[[int, bool, int | None], dict[str, Any]]


def run_reports(
    sizes: Sequence[int], split: bool, run_local: RunLocal, spread_rooms: int = 0
) -> list[dict[str, Any]]:
    """One local run per size, smallest first, and one more per size over
    ``spread_rooms`` rooms when that is set (printing a line per run)."""
    reports = []
    for n in sizes:
        for rooms in (None, spread_rooms or None) if spread_rooms else (None,):
            report = run_local(n, split, rooms)
            conns = (report.get("costs") or {}).get("connections")
            ph = (report.get("server") or {}).get("phases") or {}
            where = f", {rooms} rooms" if rooms else ""
            print(
                f"calibrate: {n} viewers{where}: {conns} connections, server "
                f"{ph.get('cpu_pct')}% of a core",
                flush=True,
            )
            reports.append(report)
    return reports


def spread_rooms(args: argparse.Namespace) -> int:
    """``--spread-rooms``, checked (``CalibrationError`` below 0)."""
    n = int(getattr(args, "spread_rooms", 0) or 0)
    if n < 0:
        raise CalibrationError(f"--spread-rooms {n}: 0 (off) or a number of rooms")
    return n


def load_reports(paths: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(f"{path}: no such file") from None
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{path}: not a JSON report ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("server"), dict):
            raise CalibrationError(f'{path}: not a loadtest report (no "server")')
        out.append(doc)
    return out


def main(args: argparse.Namespace, run_local: RunLocal) -> int:
    try:
        if args.reports:
            reports = load_reports(args.reports)
        else:
            reports = run_reports(
                parse_sizes(args.sizes), args.split, run_local, spread_rooms(args)
            )
        doc = calibrate(reports)
    except CalibrationError as exc:
        print(f"danmaku-loadtest calibrate: {exc}", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for line in summary_lines(doc):
        print(line)
    if args.out:
        print(f"calibration: {args.out}")
    return 0
