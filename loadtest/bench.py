"""``danmaku-loadtest bench``: the benchmark suite behind docs/benchmarks.md.

Runs each case as a local loadtest (a fresh ``danmaku up`` subprocess per case, so every
case starts cold and the server's CPU is read from /proc), keeps each JSON report, and
prints one markdown table per question with the ratios the docs quote. Machines here are
shared and noisy: compare rows of one run, and repeat (``--repeat N``, fan-out and spike
cases) for medians. Issue 3's goals are ratios within one run (p99 spike / before, RSS
growth over the spike), so the spike tables give each run's figures and their median.
"""

from __future__ import annotations

import json
import re
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
    split: bool = False  # gateway, worker and Redis as processes; the gateway measured


_FANOUT_2000 = ["viewers=2000", "senders=10", "procs=2", "phases.0.rate=200"]
_FANOUT_2000 += ["phases.0.duration_s=15"]
_FANOUT_200 = ["viewers=200", "senders=10", "procs=2", "phases.0.rate=200"]
_FANOUT_200 += ["phases.0.duration_s=10"]
FANOUT = [
    # The push layer alone (a gateway process): fast path against its ablation.
    Case("fast path, 2,000 viewers", "steady", _FANOUT_2000, split=True),
    Case(
        "queued path (ablation), 2,000 viewers",
        "steady",
        [*_FANOUT_2000, "server.fast_path=0"],
        split=True,
    ),
    # Batching off: a 10 ms tick (the shortest a scenario takes) puts ~2.3 comments in a
    # frame, against the 100 ms tick's ~20; few viewers so the generator keeps up.
    Case("batched (100 ms tick), 200 viewers", "steady", _FANOUT_200, split=True),
    Case(
        "batching off (ablation: 10 ms tick), 200 viewers",
        "steady",
        [*_FANOUT_200, "tick_ms=10"],
        split=True,
    ),
    # Issue 6's reference scenario: 1 room, 5,000 viewers, 200 comments/s, 100 ms tick.
    Case(
        "reference: 5,000 viewers",
        "steady",
        [
            "viewers=5000",
            "senders=10",
            "procs=2",
            "connect_rate=2000",
            "phases.0.rate=200",
            "phases.0.duration_s=20",
        ],
        split=True,
    ),
]
SPIKE = [
    # Issue 3 as stated: 2,000 viewers watching throughout, 20 -> 2,000 comments/s.
    Case("100x spike", "spike-100x"),
    # The harder variant: a 200 -> 2,000/s ramp while 1,500 of the 2,000 viewers join.
    Case(
        "100x spike + join storm",
        "celebrity-spike",
        ["viewers=500", "phases.1.join=1500", "procs=2", "senders=400"],
    ),
]
P99_GOAL = 2.0  # issue 3: p99 during the spike <= 2x p99 before, in one run
RSS_GOAL = 0.10  # issue 3: RSS grows by at most 10% over the spike


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
        "deliveries/s | deliveries / server CPU-s | p50 ms | p99 ms | RSS / connection |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
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
                    _fmt(_median([p["server"]["deliveries_per_cpu_s"] for p in phase])),
                    _fmt(_median([p["latency_ms"]["p50"] for p in phase])),
                    _fmt(_median([p["latency_ms"]["p99"] for p in phase])),
                    _fmt(_median([r["costs"]["rss_bytes_per_conn"] / 1024 for r in runs]), 1)
                    + " KB",
                ]
            )
            + " |"
        )

    def median_of(name: str, key: str) -> float | None:
        return _median([r["phases"][0]["server"][key] for r in reports.get(name, [])])

    # Each ablation against the case it switches one thing off in (same viewers).
    for base, ablation, key, what in (
        (0, 1, "frame_writes_per_cpu_s", "frame writes per CPU-s"),
        (2, 3, "deliveries_per_cpu_s", "deliveries per CPU-s"),
    ):
        names = list(reports)
        if len(names) > max(base, ablation):
            a, b = median_of(names[base], key), median_of(names[ablation], key)
            if a and b:
                rows.append(f"\nratio {names[base]} / {names[ablation]}: **{a / b:.1f}x** {what}")
    return rows


def spike_goals(report: dict[str, Any]) -> dict[str, Any]:
    """One run's figures for issue 3's goals: the p99 ratio spike / before, RSS at the
    spike's start and at the run's end, per connection, and the growth that is not the
    joining viewers' own memory."""
    by_name = {p["name"]: p for p in report["phases"]}
    before, spike = by_name.get("before"), by_name.get("spike")
    out: dict[str, Any] = {"p99_ratio": None, "rss_growth": None, "rss_growth_excl_joins": None}
    if before and spike and before["latency_ms"]["p99"]:
        out["p99_ratio"] = spike["latency_ms"]["p99"] / before["latency_ms"]["p99"]
    start = (spike or {}).get("server", {}) or {}
    rss_start, rss_end = start.get("rss_bytes_start"), report["server"]["rss_bytes"]["end"]
    per_conn = report["costs"]["rss_bytes_per_conn"]
    joins = sum(int(p.get("join", 0)) for p in report["scenario"]["phases"])
    out.update(rss_start=rss_start, rss_end=rss_end, rss_per_conn=per_conn, joins=joins)
    if rss_start and rss_end:
        grown = rss_end - rss_start
        out["rss_growth"] = grown / rss_start
        if per_conn is not None:
            out["rss_growth_excl_joins"] = (grown - joins * per_conn) / rss_start
    out["errors"] = sum(report["totals"].get("errors", {}).values()) + len(report["failures"])
    return out


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f} MB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def spike_rows(reports: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per case: each phase's median over the runs, then every run's goal figures.
    "other load" is CPU the machine spent outside the run (server, Redis, load
    generator) during the phase, in % of one core: other people's work on a shared
    machine, competing for the same cores."""
    lines: list[str] = []
    for name, runs in reports.items():
        lines += [
            f"**{name}** (medians of {len(runs)} run{'s' if len(runs) > 1 else ''})",
            "",
            "| phase | comments/s sent (of target) | items/s per viewer | bytes/s per viewer | "
            "p50 ms | p99 ms | shed | dropped by sampling | server CPU % | other load CPU % |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for i, first in enumerate(runs[0]["phases"]):
            ph = [r["phases"][i] for r in runs]
            srv = [p["server"] or {} for p in ph]
            lines.append(
                "| "
                + " | ".join(
                    [
                        first["name"],
                        _fmt(_median([p["comments_per_s"] for p in ph]))
                        + f" of {_fmt(first['comments_per_s_target'])}",
                        _fmt(_median([p["items_per_viewer_per_s"] for p in ph]), 1),
                        _fmt(
                            _median(
                                [
                                    p["viewer_bytes_received"] / max(p["viewer_seconds"], 1e-9)
                                    for p in ph
                                ]
                            )
                        ),
                        _fmt(_median([p["latency_ms"]["p50"] for p in ph])),
                        _fmt(_median([p["latency_ms"]["p99"] for p in ph])),
                        _fmt(_median([s.get("comments_shed") for s in srv])),
                        _fmt(_median([s.get("items_dropped") for s in srv])),
                        _fmt(_median([s.get("cpu_pct") for s in srv]), 1),
                        _fmt(_median([s.get("other_cpu_pct") for s in srv])),
                    ]
                )
                + " |"
            )
        goals = [spike_goals(r) for r in runs]
        ratios = [g["p99_ratio"] for g in goals]
        lines += [
            "",
            "| run | p99 spike / before | RSS at spike start | RSS at end | growth | "
            "RSS / connection | growth without joiners' share | errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for k, g in enumerate(goals):
            per = g["rss_per_conn"]
            lines.append(
                f"| {k + 1} | {_fmt(g['p99_ratio'], 2)}x | {_mb(g['rss_start'])} | "
                f"{_mb(g['rss_end'])} | {_pct(g['rss_growth'])} | "
                f"{'-' if per is None else f'{per / 1024:.1f} KB'} | "
                f"{_pct(g['rss_growth_excl_joins']) if g['joins'] else 'no joiners'} | "
                f"{g['errors']} |"
            )
        med = _median(ratios)
        growth = _median([g["rss_growth"] for g in goals])
        lines += [
            "",
            f"median p99 ratio **{_fmt(med, 2)}x** (goal <= {P99_GOAL:g}x: "
            f"{'met' if med is not None and med <= P99_GOAL else 'not met'}); "
            f"median RSS growth **{_pct(growth)}** (goal <= +{100 * RSS_GOAL:.0f}%: "
            f"{'met' if growth is not None and growth <= RSS_GOAL else 'not met'}); "
            f"errors {sum(g['errors'] for g in goals)}",
            "",
        ]
    return lines


def run_suite(
    run_case: Callable[[Scenario, bool], dict[str, Any]],
    out_dir: Path,
    repeat: int,
    only: str | None,
) -> list[str]:
    """Run the cases (``run_case(scenario, split)``), keep each JSON report, return the
    markdown tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    if only in (None, "words"):
        lines += ["### Blocked words", "", *words_rows(), ""]
    for title, cases, table in (("Fan-out", FANOUT, fanout_rows), ("Spike", SPIKE, spike_rows)):
        if only and only != title.lower().replace("-", ""):
            continue
        reports: dict[str, list[dict[str, Any]]] = {}
        for case in cases:
            for k in range(repeat):
                report = run_case(scenario_for(case), case.split)
                slug = re.sub(r"[^a-z0-9]+", "-", case.name.split(" (")[0].lower()).strip("-")
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
