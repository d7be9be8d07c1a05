"""The soak scenario, shrunk to seconds, end to end through ``loadtest.soak``."""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.cli import main
from loadtest.soak import markdown, slope, summarise


def test_slope_is_least_squares() -> None:
    assert slope([0, 1, 2, 3], [10, 12, 14, 16]) == 2
    assert slope([0, 1, 2], [5, 5, 5]) == 0
    assert slope([1], [1]) is None


def test_shrunk_soak_run_summarises_every_minute(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    shrink = ["viewers=40", "senders=4", "rooms=4", "idle_s=0.5", "settle_s=1"]
    for i in range(10):
        shrink += [f"phases.{i}.duration_s=1", f"phases.{i}.rate=40"]
        shrink += [f"phases.{i}.reconnect_fraction=0.1", f"phases.{i}.reconnect_spread_s=1"]
    args = ["local", "soak", "--quiet", "--out", str(out)]
    for item in shrink:
        args += ["--set", item]
    assert main(args) == 0
    report = json.loads(out.read_text())
    s = summarise(report)
    assert [r["name"] for r in s["rows"]] == [f"minute-{i}" for i in range(1, 11)]
    assert all(r["rss_mb"] and r["rss_mb"] > 10 for r in s["rows"])
    assert s["growth_mb_per_hour"] is not None
    assert s["errors"] == {} and s["seq_gaps"] == 0
    assert s["acked"] == s["sent"] > 0
    text = markdown(s)
    assert text.count("| minute-") == 10 and "MB/hour" in text
