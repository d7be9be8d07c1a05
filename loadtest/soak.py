"""Summarise a soak run (``make soak``): memory growth per hour, latency per minute,
errors. ``python -m loadtest.soak REPORT.json`` prints markdown for docs/benchmarks.md.

Growth is the least-squares slope of the server's RSS at the phase boundaries, leaving
out the first phase (connections, caches and allocator arenas settle there), scaled to
an hour. Pure functions over the report dict; the only I/O is reading the file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys over xs (None with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Per-phase rows and the soak's figures (RSS in MB, growth in MB/hour)."""
    rows = []
    for ph in report["phases"]:
        server = ph.get("server") or {}
        rows.append(
            {
                "name": ph["name"],
                "end_s": ph["start_s"] + ph["duration_s"],
                "sent": ph["comments_sent"],
                "acked": ph["comments_acked"],
                "p50_ms": ph["latency_ms"].get("p50"),
                "p99_ms": ph["latency_ms"].get("p99"),
                "seq_gaps": ph["seq_gaps"],
                "rss_mb": (server.get("rss_bytes_end") or 0) / 2**20 or None,
                "cpu_pct": server.get("cpu_pct"),
            }
        )
    points = [(r["end_s"], r["rss_mb"]) for r in rows[1:] if r["rss_mb"]]
    per_s = slope([p[0] for p in points], [p[1] for p in points])
    totals = report["totals"]
    return {
        "rows": rows,
        "growth_mb_per_hour": None if per_s is None else per_s * 3600,
        "rss_first_mb": rows[0]["rss_mb"] if rows else None,
        "rss_last_mb": rows[-1]["rss_mb"] if rows else None,
        "p99_ms": totals["latency_ms"].get("p99"),
        "p99_max_minute_ms": max((r["p99_ms"] or 0 for r in rows), default=None),
        "errors": totals["errors"],
        "closes": totals["closes"],
        "sent": totals["comments_sent"],
        "acked": totals["comments_acked"],
        "seq_gaps": totals["seq_gaps"],
    }


def markdown(s: dict[str, Any]) -> str:
    def f(x: Any, nd: int = 0) -> str:
        return "-" if x is None else f"{x:,.{nd}f}"

    lines = [
        "| minute | sent | acked | p50 ms | p99 ms | seq gaps | server RSS MB | server CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['name']} | {f(r['sent'])} | {f(r['acked'])} | {f(r['p50_ms'])} | "
            f"{f(r['p99_ms'])} | {r['seq_gaps']} | {f(r['rss_mb'], 1)} | {f(r['cpu_pct'], 1)} |"
        )
    lines += [
        "",
        f"RSS {f(s['rss_first_mb'], 1)} MB after the first minute, {f(s['rss_last_mb'], 1)} MB"
        f" at the end: growth **{f(s['growth_mb_per_hour'], 1)} MB/hour** (slope after"
        f" minute 1). p99 {f(s['p99_ms'])} ms overall, worst minute {f(s['p99_max_minute_ms'])}"
        f" ms. {f(s['sent'])} sent, {f(s['acked'])} acked, errors {s['errors'] or 0},"
        f" seq gaps {s['seq_gaps']}, closes {s['closes'] or {}}.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m loadtest.soak REPORT.json", file=sys.stderr)
        return 2
    with open(args[0]) as fh:
        print(markdown(summarise(json.load(fh))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
