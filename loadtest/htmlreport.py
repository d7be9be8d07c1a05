"""A self-contained HTML report: summary tables and inline SVG line plots (no scripts,
no CDN) of latency percentiles, rates, and server CPU/RSS over time, with the phases
shaded. ``render(report)`` takes the JSON report dict and returns the page.
"""

from __future__ import annotations

import html
import json
from typing import Any

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 220, 56, 130, 16, 28
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
PHASE_FILL = ("#f3f6fb", "#fbf5ec")


def _num(y: float) -> str:
    """A short axis label: 950, 12.5k, 3.4M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(y) >= div:
            return f"{y / div:.3g}{suffix}"
    return f"{y:.3g}"


def _esc(value: Any) -> str:
    return html.escape(str(value))


def svg_plot(
    title: str,
    xs: list[float],
    series: dict[str, list[float | None]],
    unit: str,
    phases: list[tuple[str, float, float]],
) -> str:
    """One line chart; ``None`` values break the line. Returns an ``<svg>`` element."""
    values = [v for ys in series.values() for v in ys if v is not None]
    if not xs or not values:
        return f"<p><em>{_esc(title)}: no data</em></p>"
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = max(values) * 1.1 or 1.0
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return PAD_T + ph - (y / y1) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">']
    parts.append(f"<title>{_esc(title)}</title>")
    for i, (name, start, end) in enumerate(phases):
        a, b = max(px(start), PAD_L), min(px(end), PAD_L + pw)
        if b > a:
            parts.append(
                f'<rect x="{a:.1f}" y="{PAD_T}" width="{b - a:.1f}" height="{ph}" '
                f'fill="{PHASE_FILL[i % 2]}"/><text x="{a + 3:.1f}" y="{PAD_T + 11}" '
                f'font-size="10" fill="#777">{_esc(name)}</text>'
            )
    for k in range(5):
        y = y1 * k / 4
        parts.append(
            f'<line x1="{PAD_L}" x2="{PAD_L + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            f'stroke="#ddd"/><text x="{PAD_L - 4}" y="{py(y) + 3:.1f}" font-size="10" '
            f'text-anchor="end">{_num(y)}</text>'
        )
    for k in range(6):
        x = x0 + (x1 - x0) * k / 5
        parts.append(
            f'<text x="{px(x):.1f}" y="{H - 8}" font-size="10" text-anchor="middle">{x:.0f}s</text>'
        )
    for i, (name, ys) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        segments: list[list[str]] = [[]]
        for x, yv in zip(xs, ys, strict=False):
            if yv is None:
                segments.append([])
            else:
                segments[-1].append(f"{px(x):.1f},{py(yv):.1f}")
        for seg in segments:
            if len(seg) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
                    f'points="{" ".join(seg)}"/>'
                )
        parts.append(
            f'<text x="{PAD_L + pw + 8}" y="{PAD_T + 14 + 14 * i}" font-size="11" '
            f'fill="{color}">{_esc(name)}</text>'
        )
    parts.append(
        f'<text x="{PAD_L}" y="{PAD_T - 4}" font-size="11" font-weight="bold">'
        f"{_esc(title)} ({_esc(unit)})</text></svg>"
    )
    return "".join(parts)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(report: dict[str, Any]) -> str:
    """The HTML page for a report dict (as written by ``--out``)."""
    ts = report.get("timeseries", [])
    xs = [float(r["t"]) for r in ts]
    sc = report["scenario"]
    phases = [(p["name"], p["start_s"], p["start_s"] + p["duration_s"]) for p in report["phases"]]

    def col(key: str, scale: float = 1.0) -> list[float | None]:
        return [None if r.get(key) is None else float(r[key]) * scale for r in ts]

    plots = [
        svg_plot(
            "latency (1 s windows)", xs, {"p50": col("p50_ms"), "p99": col("p99_ms")}, "ms", phases
        ),
        svg_plot(
            "comments",
            xs,
            {"sent/s": col("sent_per_s"), "acked/s": col("acked_per_s")},
            "per second",
            phases,
        ),
        svg_plot(
            "fan-out",
            xs,
            {"deliveries/s": col("deliveries_per_s"), "frames/s": col("frames_per_s")},
            "per second",
            phases,
        ),
        svg_plot(
            "CPU",
            xs,
            {"server": col("server_cpu_pct"), "redis": col("redis_cpu_pct")},
            "% of one core",
            phases,
        ),
        svg_plot("server RSS", xs, {"rss": col("server_rss_bytes", 1 / 2**20)}, "MiB", phases),
        svg_plot("connections", xs, {"connected": col("connected")}, "count", phases),
    ]
    phase_rows = []
    for p in report["phases"]:
        lat, srv = p["latency_ms"], p["server"] or {}
        phase_rows.append(
            [
                p["name"],
                p["duration_s"],
                p["comments_per_s"],
                p["deliveries_per_s"],
                lat["p50"],
                lat["p90"],
                lat["p99"],
                lat["p99_9"],
                lat["max"],
                srv.get("cpu_pct"),
                srv.get("frame_writes_per_cpu_s"),
                srv.get("comments_shed"),
                srv.get("items_dropped"),
            ]
        )
    phase_table = _table(
        phase_rows,
        [
            "phase",
            "s",
            "sent/s",
            "deliveries/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "cpu %",
            "writes/cpu-s",
            "shed",
            "dropped",
        ],
    )
    totals = {k: v for k, v in report["totals"].items() if not isinstance(v, dict)}
    lines = "".join(f"<li>{_esc(k)}: {_esc(v)}</li>" for k, v in totals.items())
    status = "OK" if report["ok"] else "NOT OK"
    # The run's warnings (short of target, a load process behind, a busy machine) and
    # failures come first: they say how far the figures below can be trusted.
    notes = [("failure", f) for f in report.get("failures") or []]
    notes += [("warning", w) for w in report.get("warnings") or []]
    warnings = (
        '<ul class="warnings">'
        + "".join(f"<li><strong>{kind}:</strong> {_esc(text)}</li>" for kind, text in notes)
        + "</ul>"
        if notes
        else "<p>No warnings.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>danmaku-loadtest {_esc(sc["name"])}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:1000px}}
table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right}}th{{background:#f4f4f4}}pre{{background:#f7f7f7;padding:8px;overflow:auto}}
.warnings li{{color:#8a4b00}}</style></head><body>
<h1>danmaku-loadtest: {_esc(sc["name"])} <small>({status})</small></h1>
<p>{_esc(sc.get("description", ""))}. Run {_esc(report["run_id"])} at {_esc(report["started_at"])}
against {_esc(report["target"].get("ws_url"))}.</p>
<h2>Warnings</h2>{warnings}
<h2>Phases</h2>{phase_table}
<h2>Plots</h2>{"".join(f"<div>{p}</div>" for p in plots)}
<h2>Totals</h2><ul>{lines}</ul>
<h2>Server</h2><pre>{_esc(json.dumps(report["server"], indent=1))}</pre>
<h2>Costs (for plan)</h2><pre>{_esc(json.dumps(report["costs"], indent=1))}</pre>
<h2>Checks</h2><pre>{_esc(json.dumps(report["checks"], indent=1))}</pre>
<h2>Errors</h2><pre>{_esc(json.dumps(report["totals"]["errors"]))}</pre>
</body></html>
"""
