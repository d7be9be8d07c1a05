"""Per-phase report figures from merged counters: targets, shortfalls, shed acks,
per-viewer rates and load processes that fall behind (pure)."""

from __future__ import annotations

import html
import os

import orjson
import pytest

from loadtest.client import Conn, ConnSpec, Counters, ProcStats
from loadtest.report import build, summary_lines
from loadtest.runner import RunResult
from loadtest.scenario import load

SPIKE = ["viewers=500", "phases.1.join=1500", "procs=2", "senders=400"]


def test_acks_of_shed_comments_are_counted_apart() -> None:
    c = Counters(1)
    sender = Conn(ConnSpec("u", "r", token="t"), c, is_viewer=False)
    sender.inflight = {"a": 0.0, "b": 0.0}
    sender.on_message(orjson.dumps({"type": "ack", "nonce": "a", "id": "1700-0"}).decode())
    sender.on_message(orjson.dumps({"type": "ack", "nonce": "b", "id": "shed-0a1b"}).decode())
    assert (c.stages[0].acked, c.stages[0].shed) == (2, 1)
    # a sender watching its room counts deliveries, but not as a viewer's
    sender.on_message('{"type":"frame","room":"r","seq":1,"items":[{"id":"1"}]}')
    viewer = Conn(ConnSpec("u", "r"), c, is_viewer=True)
    viewer.on_message('{"type":"frame","room":"r","seq":1,"items":[{"id":"1"},{"id":"2"}]}')
    assert (c.stages[0].items, c.stages[0].viewer_items) == (3, 2)


def _result() -> RunResult:
    sc = load("celebrity-spike", SPIKE)
    c = Counters(len(sc.phases) + 2)
    before, spike, after = c.stages[1], c.stages[2], c.stages[3]
    before.sent, spike.sent, after.sent = 200, 2, 100  # the bug: the spike got 2 comments
    spike.acked, spike.shed = 2, 1
    spike.viewer_items, spike.viewer_seconds = 600_000, 15_000.0
    for proc, role, viewers, senders in ((0, "viewers", 1000, 0), (2, "senders", 0, 400)):
        ps = ProcStats.new(proc, role, viewers, senders, len(c.stages))
        ps.cpu_s[2], ps.wall_s[2] = 9.0, 10.0
        for _ in range(100):
            ps.lag[2].record(250.0 if role == "viewers" else 2.0)
        c.procs[proc] = ps
    res = RunResult(sc, "r", {"ws_url": "ws://x"}, 0.0)
    res.counters = c
    return res


def test_phase_figures_and_warnings() -> None:
    report = build(_result())
    before, spike, after = report["phases"]
    assert (before["comments_target"], spike["comments_target"], after["comments_target"]) == (
        200,
        11_000,
        100,
    )
    assert before["comments_per_s_target"] == 20 and spike["comments_per_s_target"] == 1100
    assert before["sent_vs_target"] == 1 and spike["sent_vs_target"] < 0.01
    assert spike["comments_shed"] == 1 and report["checks"]["comments_shed"] == 1
    assert spike["items_per_viewer_per_s"] == 40  # per second a viewer was connected
    assert spike["generator"]["viewers"]["cpu_pct_max"] == 90
    assert spike["generator"]["senders"]["loop_lag_p99_ms_max"] == 2
    warnings = report["warnings"]
    assert any(w.startswith("phase spike: senders sent 2 of the 11000") for w in warnings)
    assert any(
        w.startswith("phase spike: a viewers load process fell behind") and "its own work" in w
        for w in warnings
    )
    assert not any(w.startswith("phase before") for w in warnings)
    assert [g["role"] for g in report["generators"]] == ["viewers", "senders"]
    text = "\n".join(summary_lines(report))
    assert "1 sender procs" in text and "WARNING: phase spike: senders sent 2" in text
    assert "0.2/s sent of 1100.0/s target (2/11000)" in text


def test_rss_per_connection_host_load_and_spike_goals() -> None:
    """RSS per connection counts the connections of the ready sample (not the joiners);
    each phase carries its RSS and the machine's CPU split into server, Redis, load
    generator and other work; the bench derives issue 3's goal figures from that."""
    from loadtest.bench import spike_goals, spike_rows
    from loadtest.probe import ServerSample
    from loadtest.procstat import parse_host_stat

    res = _result()
    mb = 2**20
    res.base = ServerSample(at=0.0, cpu_s=1.0, rss_bytes=80 * mb, host_busy_s=100.0)
    res.ready = ServerSample(at=5.0, cpu_s=2.0, rss_bytes=105 * mb, host_busy_s=105.0)
    marks = [(10.0, 3.0, 106, 112.0), (20.0, 4.0, 108, 122.0), (30.0, 12.0, 150, 150.0)]
    marks.append((35.0, 13.0, 151, 152.0))
    res.boundaries = [
        ServerSample(at=at, cpu_s=cpu, rss_bytes=rss * mb, redis_cpu_s=0.0, host_busy_s=host)
        for at, cpu, rss, host in marks
    ]
    res.final = ServerSample(at=37.0, cpu_s=13.5, rss_bytes=152 * mb, host_busy_s=155.0)
    # 900 connections at the ready sample (500 viewers + 400 senders), not the 2,400 peak
    res.counters.connected_peak = 2400  # type: ignore[union-attr]
    report = build(res)
    assert report["costs"]["rss_bytes_per_conn"] == pytest.approx(25 * mb / 900, rel=1e-3)
    spike = report["phases"][1]["server"]
    assert (spike["rss_bytes_start"], spike["rss_bytes_end"]) == (108 * mb, 150 * mb)
    # 28 busy CPU-s in 10 s: server 8, load generator 9 + 9 (stage 2), other 2
    assert spike["host_cpu_pct"] == 280 and spike["generator_cpu_pct"] == 180
    assert spike["other_cpu_pct"] == 20
    goals = spike_goals(report)
    assert goals["rss_growth"] == pytest.approx((152 - 108) / 108)
    joiners = 1500 * report["costs"]["rss_bytes_per_conn"]
    assert goals["rss_growth_excl_joins"] == pytest.approx((44 * mb - joiners) / (108 * mb))
    assert goals["p99_ratio"] is None  # no latency recorded in this synthetic run
    text = "\n".join(spike_rows({"case": [report]}))
    assert "| spike |" in text and "not met" in text
    stat = "cpu  100 5 50 1000 20 3 2 4 0 0\ncpu0 50 2 25 500 10 1 1 2 0 0\n"
    assert parse_host_stat(stat) == (100 + 5 + 50 + 3 + 2 + 4) / os.sysconf("SC_CLK_TCK")


def test_the_html_report_shows_the_runs_warnings() -> None:
    from loadtest.htmlreport import render

    report = build(_result())
    assert report["warnings"]
    page = render(report)
    section = page.split("<h2>Warnings</h2>", 1)[1].split("<h2>", 1)[0]
    for warning in report["warnings"]:
        assert html.escape(warning) in section
    report["warnings"] = []
    assert "No warnings." in render(report)
