"""Histograms, counters, Prometheus parsing, the client's cheap frame parsing (pure)."""

from __future__ import annotations

import orjson

from danmaku.protocol import encode_frame
from loadtest.client import Conn, ConnSpec, Counters, comment_text, frame_seq, send_ms_of
from loadtest.generator import spread, viewer_slots
from loadtest.scenario import load
from loadtest.stats import Latency, apportion, metric_delta, parse_prometheus, zipf_weights


def test_latency_percentiles_and_merge_through_encoding() -> None:
    a, b = Latency(), Latency()
    for v in range(1, 101):
        a.record(v)
    b.record(1000)
    merged = Latency.decode(a.encode())
    merged.merge(Latency.decode(b.encode()))
    s = merged.summary()
    assert s["count"] == 101
    assert s["p50"] == 51 and s["p99"] == 100 and s["max"] == 1000
    assert set(s) == {"count", "mean", "p50", "p90", "p99", "p99_9", "max"}
    assert Latency().summary()["p99"] == 0


def test_prometheus_parse_and_delta() -> None:
    before = parse_prometheus(
        "# HELP x\n# TYPE x counter\ndanmaku_frame_writes_total 10.0\n"
        'danmaku_items_dropped_total{tier="0"} 1\ndanmaku_items_dropped_total{tier="1"} 2\n'
    )
    after = parse_prometheus(
        'danmaku_frame_writes_total 25\ndanmaku_items_dropped_total{tier="0"} 4\n'
        'danmaku_items_dropped_total{tier="1"} 2\ngarbage line here\n'
    )
    d = metric_delta(before, after, ["danmaku_frame_writes_total", "danmaku_items_dropped_total"])
    assert d == {"danmaku_frame_writes_total": 15.0, "danmaku_items_dropped_total": 3.0}


def test_apportion_and_zipf() -> None:
    w = zipf_weights(1000, 1.1)
    assert abs(sum(w) - 1) < 1e-9 and w[0] > w[1] > w[999]
    shares = apportion(3000, w)
    assert sum(shares) == 3000 and shares[0] > shares[500]
    assert apportion(10, zipf_weights(4, 0)) == [3, 3, 2, 2]
    rooms = spread(100, 3, 0.0, seed=1)
    assert sorted(rooms) == sorted([0] * 34 + [1] * 33 + [2] * 33)


def test_viewer_layout_is_split_over_processes() -> None:
    s = load("celebrity-spike", ["viewers=10", "phases.1.join=6", "max_sampled=2"])
    parts = [viewer_slots(s, "r", "ws://x/ws", p, 3) for p in range(3)]
    indexes = sorted(v.index for part in parts for v in part)
    assert indexes == list(range(16))
    assert all(sum(v.spec.sampled for v in part) <= 2 for part in parts)
    joiners = [v for part in parts for v in part if v.index >= 10]
    assert all(v.connect_at == s.phase_start(1) for v in joiners)  # join_rate 0: a storm
    assert all(v.connect_at < 0 for part in parts for v in part if v.index < 10)


def test_comment_text_carries_send_time_and_is_unique() -> None:
    a, b = comment_text("u1", 1, 1234, 24), comment_text("u1", 1, 1234, 24)
    assert a != b and len(a) == 24 and send_ms_of(a) == 1234 and send_ms_of("hello") is None


def test_lean_and_sampled_viewers_count_the_same_frame_alike() -> None:
    items = [
        {"id": f"1-{i}", "uid": "u", "text": comment_text("u", i, 1000, 30), "ts": 1000}
        for i in range(3)
    ]
    items.append({"id": "1-9", "uid": "u", "text": 'tricky "id": text', "ts": 1000})
    msg = encode_frame("r", 42, 1000, items, dropped=5, online=2).decode()
    assert frame_seq(msg) == 42
    lean, sampled = Counters(3), Counters(3)
    Conn(ConnSpec("u", "r"), lean, True).on_message(msg)
    Conn(ConnSpec("u", "r", sampled=True), sampled, True).on_message(msg)
    assert lean.stages[0].items == sampled.stages[0].items == 4
    assert sampled.stages[0].latency.count == 3 and sampled.frame_dropped == {"r:42": 5}


def test_viewer_counts_gaps_and_duplicates() -> None:
    c = Counters(1)
    conn = Conn(ConnSpec("u", "r"), c, True)
    conn.on_message(orjson.dumps({"type": "welcome", "seq": 3}).decode())
    for seq in (4, 5, 8, 8):
        conn.on_message(encode_frame("r", seq, 0, [], 0, 1).decode())
    assert (c.stages[0].frames, c.stages[0].seq_gaps, c.stages[0].duplicates) == (4, 2, 1)


def test_counters_roundtrip_and_merge() -> None:
    a = Counters(2)
    a.stages[1].sent = 3
    a.stages[1].latency.record(5)
    a.errors.add("error_rate_limited")
    b = Counters.decode(a.encode())
    b.merge(a)
    assert b.total().sent == 6 and b.total().latency.count == 2
    assert b.errors == {"error_rate_limited": 2}


def test_percentiles_never_exceed_the_max() -> None:
    # Regression: 91.9 ms was counted as 92, so p99 (92.0) came out above max (91.9).
    lat = Latency()
    for v in (10.0, 50.2, 91.9):
        lat.record(v)
    s = lat.summary()
    assert s["p50"] <= s["p99"] <= s["p99_9"] <= s["max"] == 91.9
