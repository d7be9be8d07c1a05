"""The capacity plan's arithmetic (pure)."""

from __future__ import annotations

import math

import pytest

from loadtest.plan import Costs, Inputs, Plan, compute, costs_from_report


def _value(plan: Plan, what: str) -> float:
    for s in plan.steps:
        if s.what == what:
            return float(s.value)
    raise KeyError(what)


def test_gateways_follow_frame_writes() -> None:
    costs = Costs(cpu_us_per_frame_write=10, idle_cpu_us_per_conn_s=0, ingest_cpu_us_per_comment=0)
    plan = compute(Inputs(viewers=1_000_000, rate=1000, rooms=100, utilisation=0.5, costs=costs))
    # 1e6 viewers x 10 frames/s x 10 µs = 100 cores; at 50% -> 200 gateways
    assert _value(plan, "frame writes") == 10_000_000
    assert _value(plan, "gateway CPU") == pytest.approx(100.0)
    assert plan.gateways == 200


def test_memory_can_bind_gateways() -> None:
    costs = Costs(cpu_us_per_frame_write=0.001, rss_bytes_per_conn=100_000)
    plan = compute(
        Inputs(
            viewers=100_000, rate=10, rooms=1, gateway_mem_bytes=1e9, utilisation=0.5, costs=costs
        )
    )
    assert plan.gateways == math.ceil(100_000 * 100_000 / (1e9 * 0.5)) == 20


def test_ingest_ceiling_caps_admitted_and_warns() -> None:
    plan = compute(Inputs(viewers=1000, rate=10_000, rooms=1, ingest_ceiling=2000))
    assert _value(plan, "comments admitted") == 2000
    assert any("ingest ceiling" in w for w in plan.warnings)


def test_frames_built_use_busy_probability() -> None:
    plan = compute(Inputs(viewers=10, rate=10, rooms=100, tick_ms=100))
    # 0.1 comments/s per room: P(busy tick) = 1 - e^-0.01
    assert _value(plan, "frames built") == pytest.approx(100 * 10 * (1 - math.exp(-0.01)))
    assert plan.workers >= 2 and plan.redis_shards >= 1


def test_report_costs_replace_defaults() -> None:
    report = {"costs": {"cpu_us_per_frame_write": 7.5, "rss_bytes_per_conn": None, "x": 1}}
    costs, used = costs_from_report(report)
    assert costs.cpu_us_per_frame_write == 7.5
    assert costs.rss_bytes_per_conn == Costs().rss_bytes_per_conn
    assert len(used) == 1
