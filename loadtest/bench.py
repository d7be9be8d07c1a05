"""``danmaku-loadtest bench``: the benchmark suite behind docs/benchmarks.md.

Runs each case as a local loadtest (a fresh ``danmaku up`` subprocess per case, so every
case starts cold and the server's CPU is read from /proc), keeps each JSON report, and
prints one markdown table per question with the ratios the docs quote. Machines here are
shared and noisy: compare rows of one run, and repeat (``--repeat N``) for medians.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.scenario import Scenario, apply_overrides, read_raw


@dataclass(frozen=True)
class Case:
    name: str
    scenario: str
    overrides: list[str] = field(default_factory=list)


FANOUT = [
    Case(
        "fast path",
        "steady",
        ["viewers=2000", "senders=10", "procs=2", "phases.0.rate=200", "phases.0.duration_s=15"],
    ),
    Case(
        "queued path (ablation)",
        "steady",
        [
            "viewers=2000",
            "senders=10",
            "procs=2",
            "phases.0.rate=200",
            "phases.0.duration_s=15",
            "server.fast_path=0",
        ],
    ),
]
SPIKE = [
    Case(
        "100x spike",
        "celebrity-spike",
        ["viewers=500", "phases.1.join=1500", "procs=2", "senders=400"],
    ),
]


def scenario_for(case: Case) -> Scenario:
    return Scenario.from_dict(apply_overrides(read_raw(case.scenario), case.overrides))


def _median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def fanout_rows(reports: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = [
        "| case | frame writes / server CPU-s | server CPU us / frame write | "
        "deliveries/s | p50 ms | p99 ms | RSS / connection |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in reports.items():
        phase = [r["phases"][0] for r in runs]
        rows.append(
            "| "
            + " | ".join(
                [
                    name,
                    _fmt(_median([p["server"]["frame_writes_per_cpu_s"] for p in phase])),
                    _fmt(_median([r["costs"]["cpu_us_per_frame_write"] for r in runs]), 1),
                    _fmt(_median([p["deliveries_per_s"] for p in phase])),
                    _fmt(_median([p["latency_ms"]["p50"] for p in phase])),
                    _fmt(_median([p["latency_ms"]["p99"] for p in phase])),
                    _fmt(_median([r["costs"]["rss_bytes_per_conn"] / 1024 for r in runs]), 1)
                    + " KB",
                ]
            )
            + " |"
        )
    names = list(reports)
    if len(names) == 2:
        a = _median([r["phases"][0]["server"]["frame_writes_per_cpu_s"] for r in reports[names[0]]])
        b = _median([r["phases"][0]["server"]["frame_writes_per_cpu_s"] for r in reports[names[1]]])
        if a and b:
            rows.append(f"\nratio {names[0]} / {names[1]}: **{a / b:.1f}x** frame writes per CPU-s")
    return rows


def spike_rows(reports: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = [
        "| phase | comments/s sent (of target) | items/s per viewer | bytes/s per viewer | "
        "p50 ms | p99 ms | shed | dropped by sampling | server CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for runs in reports.values():
        r = runs[0]
        for p in r["phases"]:
            viewer_s = max(p["viewer_seconds"], 1e-9)
            rows.append(
                "| "
                + " | ".join(
                    [
                        p["name"],
                        _fmt(p["comments_per_s"]) + f" of {_fmt(p['comments_per_s_target'])}",
                        _fmt(p["items_per_viewer_per_s"], 1),
                        _fmt(p["viewer_bytes_received"] / viewer_s),
                        _fmt(p["latency_ms"]["p50"]),
                        _fmt(p["latency_ms"]["p99"]),
                        _fmt(p["server"]["comments_shed"]),
                        _fmt(p["server"]["items_dropped"]),
                        _fmt(p["server"]["cpu_pct"], 1),
                    ]
                )
                + " |"
            )
        rss = r["server"]["rss_bytes"]
        rows.append(
            f"\nRSS: {rss['ready'] / 2**20:.1f} MB connected before, "
            f"{rss['end'] / 2**20:.1f} MB at the end; errors: "
            f"{r['totals'].get('errors', {})}"
        )
    return rows


def run_suite(
    run_case: Callable[[Scenario], dict[str, Any]], out_dir: Path, repeat: int, only: str | None
) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    if only in (None, "words"):
        lines += ["### Blocked words", "", *words_rows(), ""]
    for title, cases, table in (("Fan-out", FANOUT, fanout_rows), ("Spike", SPIKE, spike_rows)):
        if only and only != title.lower().replace("-", ""):
            continue
        reports: dict[str, list[dict[str, Any]]] = {}
        for case in cases:
            for k in range(repeat if title == "Fan-out" else 1):
                report = run_case(scenario_for(case))
                slug = case.name.split(" (")[0].replace(" ", "-")
                (out_dir / f"{slug}-{k}.json").write_text(json.dumps(report, indent=1))
                reports.setdefault(case.name, []).append(report)
        lines += [f"### {title}", "", *table(reports), ""]
    return lines


def words_rows(n_words: int = 5000, n_texts: int = 20_000) -> list[str]:
    """Blocked-word matching cost: the Aho-Corasick ``WordFilter`` against the obvious
    alternative, one compiled regex alternation, on the same normalised texts."""
    import random
    import re
    import time

    from danmaku.rules.normalize import normalize
    from danmaku.rules.wordfilter import WordFilter

    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz弹幕直播主播广告"
    words = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(5, 9))) for _ in range(n_words)
    ]
    texts = [
        "".join(rng.choice(alphabet + " ") for _ in range(rng.randint(5, 60)))
        for _ in range(n_texts)
    ]
    rows = [
        "| matcher | words | build ms | us per 100-char-or-less comment | matches |",
        "| --- | --- | --- | --- | --- |",
    ]
    t0 = time.perf_counter()
    wf = WordFilter(words)
    build = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    hits = sum(1 for t in texts if wf.match(t) is not None)
    per = (time.perf_counter() - t0) / n_texts * 1e6
    rows.append(f"| WordFilter (pyahocorasick) | {n_words} | {build:.1f} | {per:.1f} | {hits} |")
    t0 = time.perf_counter()
    rx = re.compile("|".join(re.escape(normalize(w)) for w in words))
    build = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    hits_rx = sum(1 for t in texts if rx.search(normalize(t)) is not None)
    per_rx = (time.perf_counter() - t0) / n_texts * 1e6
    rows.append(f"| one compiled regex | {n_words} | {build:.1f} | {per_rx:.1f} | {hits_rx} |")
    rows.append(f"\nratio regex / Aho-Corasick: **{per_rx / per:.1f}x** per comment")
    return rows
