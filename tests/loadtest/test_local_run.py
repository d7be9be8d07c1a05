"""End to end: ``danmaku-loadtest local steady`` for 5 s against a real ``danmaku up``
(subprocess, embedded Redis), checked against the server's own counters."""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.cli import main


def test_steady_local_run_matches_server_counters(tmp_path: Path) -> None:
    out, page = tmp_path / "report.json", tmp_path / "report.html"
    code = main(
        [
            "local",
            "steady",
            "--viewers",
            "50",
            "--senders",
            "5",
            "--rate",
            "25",
            "--duration",
            "5",
            "--set",
            "idle_s=1",
            "--set",
            "settle_s=1",
            "--quiet",
            "--out",
            str(out),
            "--html",
            str(page),
        ]
    )
    report = json.loads(out.read_text())
    assert code == 0, report["totals"]["errors"] or report["failures"]
    t, run = report["totals"], report["server"]["run"]
    assert report["ok"] and t["errors"] == {} and report["failures"] == []
    # every connection (50 viewers + 5 senders) got every frame the server wrote
    assert abs(t["frames_received"] - run["frame_writes"]) <= 0.01 * run["frame_writes"]
    assert run["frame_writes"] > 0
    # display budget off: every accepted comment reaches every connection
    assert t["comments_acked"] == run["comments_accepted"] == t["comments_sent"]
    expected = run["comments_accepted"] * 55
    assert abs(t["deliveries"] - expected) <= 0.01 * expected
    assert t["seq_gaps"] == 0 and t["duplicate_frames"] == 0
    assert 100 <= t["comments_sent"] <= 140  # 25/s for 5 s
    lat = t["latency_ms"]
    assert lat["count"] > 0 and 0 < lat["p50"] <= lat["p99"] <= lat["max"] < 2000
    assert report["server"]["source"] == "proc" and report["server"]["phases"]["cpu_s"] > 0
    assert report["costs"]["cpu_us_per_frame_write_all"] > 0
    assert report["phases"][0]["name"] == "steady" and report["timeseries"]
    assert "<svg" in page.read_text()


def test_split_local_run_measures_the_gateway_process(tmp_path: Path) -> None:
    out = tmp_path / "split.json"
    args = ["local", "steady", "--split", "--viewers", "30", "--senders", "3", "--rate", "20"]
    args += ["--duration", "3", "--set", "idle_s=0.5", "--set", "settle_s=1", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    t, run = report["totals"], report["server"]["run"]
    assert report["target"]["mode"] == "local-split"
    # the measured server is the gateway: its own frame writes, none built there
    assert run["frame_writes"] > 0 and run["frames_built"] == 0
    assert abs(t["frames_received"] - run["frame_writes"]) <= 0.01 * run["frame_writes"]
    assert t["comments_acked"] == t["comments_sent"] > 0
    assert report["server"]["phases"]["cpu_s"] > 0
