"""``plan --html``: the deployment as a page: per role its processes, hosts and egress,
drawn as bars (inline SVG, no scripts), then the warnings and every step of the
arithmetic. ``render(inputs, plan, used, spread)`` returns the page."""

from __future__ import annotations

import html
from typing import Any

from loadtest.plan import LAYOUTS, Inputs, Plan, layout_rows

BAR_W, BAR_H = 520, 22
COLORS = {"gateway": "#1f77b4", "worker": "#2ca02c", "Redis": "#d62728"}


def _esc(value: Any) -> str:
    return html.escape(str(value))


def roles(inp: Inputs, plan: Plan) -> list[dict[str, Any]]:
    """One row per role: processes, hosts and egress per host (gateways only)."""
    cores = max(1, int(inp.cores_per_host))
    return [
        {
            "role": "gateway",
            "processes": plan.gateways,
            "hosts": plan.gateway_hosts,
            "per_host": f"{cores} processes (`danmaku gateway --processes {cores}`)",
            "egress": f"{plan.egress_gbit_per_host:.2f} Gbit/s",
        },
        {
            "role": "worker",
            "processes": plan.workers,
            "hosts": -(-plan.workers // cores),
            "per_host": f"{cores} processes (side by side)",
            "egress": "-",
        },
        {
            "role": "Redis",
            "processes": plan.redis_shards,
            "hosts": plan.redis_shards,
            "per_host": "1 shard",
            "egress": "-",
        },
    ]


def _bars(rows: list[dict[str, Any]]) -> str:
    top = max((r["processes"] for r in rows), default=1) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{BAR_W + 220}" '
        f'height="{len(rows) * (BAR_H + 8) + 8}" role="img"><title>processes per role</title>'
    ]
    for i, r in enumerate(rows):
        y = 8 + i * (BAR_H + 8)
        w = max(2.0, BAR_W * r["processes"] / top)
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="13">{_esc(r["role"])}</text>'
            f'<rect x="80" y="{y}" width="{w:.1f}" height="{BAR_H}" '
            f'fill="{COLORS.get(r["role"], "#777")}"/>'
            f'<text x="{80 + w + 6:.1f}" y="{y + 15}" font-size="13">'
            f"{r['processes']:,} processes, {r['hosts']:,} hosts</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render(inp: Inputs, plan: Plan, used: list[str], spread: tuple[int, int] | None = None) -> str:
    rows = roles(inp, plan)
    table = "".join(
        f"<tr><td>{_esc(r['role'])}</td><td>{r['processes']:,}</td><td>{r['hosts']:,}</td>"
        f"<td>{_esc(r['per_host'])}</td><td>{_esc(r['egress'])}</td></tr>"
        for r in rows
    )
    warnings = (
        "<ul>" + "".join(f"<li>{_esc(w)}</li>" for w in plan.warnings) + "</ul>"
        if plan.warnings
        else "<p>No warnings.</p>"
    )
    steps = "".join(
        f"<tr><td>{_esc(s.what)}</td><td>{_esc(s.formula)}</td>"
        f"<td>{s.value:,.2f}</td><td>{_esc(s.unit)}</td></tr>"
        for s in plan.steps
    )
    costs = "".join(f"<li>{_esc(u)}</li>" for u in used) or "<li>defaults</li>"
    layouts = "".join(
        f"<tr><td>{_esc(what)}</td>" + "".join(f"<td>{_esc(v)}</td>" for v in values) + "</tr>"
        for what, values in layout_rows(plan)
    )
    layout_head = "".join(f"<th>{_esc(name)}</th>" for name in LAYOUTS)
    spread_text = (
        f"<p>Uncertainty: {spread[0]:,}-{spread[1]:,} gateways with every fitted cost at its "
        "fit ± its standard error.</p>"
        if spread
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>danmaku capacity plan</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:1000px}}
table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px}}
th{{background:#f4f4f4}}li{{margin:2px 0}}</style></head><body>
<h1>Capacity plan</h1>
<p>{inp.viewers:,} viewers, {inp.rate:,g} comments/s, {inp.rooms:,} rooms, tick {inp.tick_ms:g} ms,
utilisation {inp.utilisation:g}, {inp.cores_per_host} core(s) per host.</p>
<h2>Deployment per role</h2>{_bars(rows)}
<table><tr><th>role</th><th>processes</th><th>hosts</th><th>per host</th>
<th>egress per host</th></tr>{table}</table>{spread_text}
<h2>Layouts: random vs room-affine</h2>
<p>Gateways and Redis for the same event with viewers placed at random (a load balancer,
or clients that ignore the routing hint) and routed to their room's gateways (room share
{inp.room_share:,}).
The deployment above uses the room-affine figure.</p>
<table><tr><th></th>{layout_head}</tr>{layouts}</table>
<h2>Warnings</h2>{warnings}
<h2>Costs used</h2><ul>{costs}</ul>
<h2>Arithmetic</h2><table><tr><th>step</th><th>formula</th><th>value</th><th>unit</th></tr>
{steps}</table>
</body></html>
"""
