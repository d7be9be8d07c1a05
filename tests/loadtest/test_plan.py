"""The capacity plan's arithmetic (pure)."""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest import cli
from loadtest.plan import (
    LAYOUTS,
    Costs,
    Inputs,
    Plan,
    Source,
    compute,
    costs_from_report,
    expected_distinct,
    extrapolation_warnings,
    gateways_needed,
    layout_g_room,
)


def _value(plan: Plan, what: str) -> float:
    for s in plan.steps:
        if s.what == what:
            return float(s.value)
    raise KeyError(what)


def test_gateways_follow_frame_writes() -> None:
    costs = Costs(
        cpu_us_per_frame_write=10,
        idle_cpu_us_per_conn_s=0,
        ingest_cpu_us_per_comment=0,
        gateway_cpu_us_per_frame_read=0,
    )
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


# ---- the planner's interface: errors, help, warnings, small reports (issue 22) ----------

README_EVENT = ["--viewers", "5000000", "--rate", "50000", "--rooms", "2000"]


def _report(conns: int, idle_cores: float, per_write_us: float = 10.0) -> dict[str, Any]:
    """A loadtest report as `local` writes it (only the keys the planner reads): a
    server whose idle window burnt ``idle_cores`` with ``conns`` connected."""
    return {
        "schema": "danmaku-loadtest/1",
        "target": {"mode": "local"},
        "server": {"idle": {"cpu_s": idle_cores * 2.0, "wall_s": 2.0}},
        "costs": {
            "cpu_us_per_frame_write": per_write_us,
            # what dividing the idle CPU by the population gives (the old, absurd way)
            "idle_cpu_us_per_conn_s": idle_cores * 1e6 / conns,
            "rss_bytes_per_conn": 20_000.0,
            "bytes_per_frame_write": 1500.0,
            "connections": conns,
        },
    }


def _plan(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["plan", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        ("{", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"totals": {}}', 'no "costs"'),
        ('{"schema": "danmaku-loadtest-calibration/1", "costs": {}}', "malformed calibration"),
    ],
)
def test_a_bad_report_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, says: str
) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    code, out, err = _plan(tmp_path, capsys, *README_EVENT, "--from", str(path))
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--viewers", "0", "--rate", "1", "--rooms", "1"],
        [*README_EVENT, "--utilisation", "0"],
        [*README_EVENT, "--tick-ms", "0"],
        [*README_EVENT, "--cpu-us-per-frame-write", "-1"],
        [*README_EVENT, "--room-share", "0"],
    ],
)
def test_impossible_inputs_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = _plan(tmp_path, capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_every_option_says_its_unit_and_default() -> None:
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    plan = sub.choices["plan"]
    options = [a for a in plan._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 25
    for action in options:
        text = action.help or ""
        assert "default" in text or "required" in text, action.option_strings
        if action.dest not in ("json", "source"):
            assert "[" in text and "]" in text, f"{action.option_strings}: no unit"


def test_the_shipped_small_report_no_longer_plans_thousands_of_gateways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Regression (issue 22): `make loadtest`'s report (310 connections, the process's
    # background loops burning ~9% of a core idle) planned 5,513 gateways where the
    # defaults plan 844, and said nothing.
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report(310, idle_cores=0.09)))
    code, out, _ = _plan(tmp_path, capsys, *README_EVENT, "--from", str(path))
    assert code == 0
    default = compute(Inputs(viewers=5_000_000, rate=50_000, rooms=2000)).gateways
    gateways = int(re.search(r"gateways (\d+) processes", out).group(1))  # type: ignore[union-attr]
    assert default <= gateways < 1.25 * default
    assert "warning: extrapolating" in out
    assert "warning: costs from one run" in out


@given(
    conns=st.integers(10, 100_000),
    idle_cores=st.floats(0.0, 0.15),
    per_write_us=st.floats(1.0, 50.0),
)
def test_a_report_never_divides_fixed_costs_by_its_population(
    conns: int, idle_cores: float, per_write_us: float
) -> None:
    """Whatever its population, a report's idle CPU costs each gateway at most its own
    idle share: the plan needs at most u / (u - idle) times the gateways of the same
    per-write cost with no fixed cost."""
    costs, _ = costs_from_report(_report(conns, idle_cores, per_write_us))
    inp = Inputs(viewers=5_000_000, rate=50_000, rooms=2000, costs=costs)
    plain = compute(replace(inp, costs=replace(costs, gateway_fixed_cpu_cores=0.0))).gateways
    bound = math.ceil(plain * inp.utilisation / (inp.utilisation - idle_cores)) + 1
    assert compute(inp).gateways <= bound
    assert costs.idle_cpu_us_per_conn_s == Costs().idle_cpu_us_per_conn_s


def test_no_extrapolation_warning_near_the_measured_population() -> None:
    src = Source(Costs(), measured_conns=(5000.0, 20000.0))
    inp = Inputs(viewers=1_000_000, rate=1000, rooms=100)
    plan = compute(inp)
    per_gateway = inp.viewers / plan.gateways
    assert 5000 / 10 < per_gateway < 20000 * 10  # inside the range: no warning
    assert extrapolation_warnings(plan, inp, src) == []
    far = Source(Costs(), measured_conns=(50.0, 100.0))
    assert extrapolation_warnings(plan, inp, far)


def test_the_plan_prints_hosts_and_egress_per_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _plan(tmp_path, capsys, *README_EVENT, "--cores-per-host", "16")
    assert code == 0
    plan = compute(Inputs(viewers=5_000_000, rate=50_000, rooms=2000, cores_per_host=16))
    assert plan.gateway_hosts == math.ceil(plan.gateways / 16)
    assert f"on {plan.gateway_hosts} host(s) of 16 core(s)" in out
    assert "Gbit/s egress per host" in out


def test_a_comment_heavy_run_warns_that_its_write_cost_is_an_upper_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `make loadtest`: 100 comments/s to 310 connections, 1 comment per 30 writes; the
    # README event has 1 per 1000: comment work would be scaled with the viewers.
    report = _report(310, idle_cores=0.04, per_write_us=46.0)
    report["server"]["phases"] = {"frame_writes": 59_520, "comments_accepted": 2000}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    _, out, _ = _plan(tmp_path, capsys, *README_EVENT, "--from", str(path))
    assert "warning: the run sent 1 comment per 30 frame writes" in out
    balanced = ["--viewers", "5000000", "--rate", "5000000", "--rooms", "2000"]
    _, out, _ = _plan(tmp_path, capsys, *balanced, "--from", str(path))
    assert "comment per" not in out


def test_the_html_plan_draws_each_role_with_its_hosts_and_egress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "plan.html"
    argv = [*README_EVENT, "--cores-per-host", "8", "--html", str(page)]
    code, _, _ = _plan(tmp_path, capsys, *argv)
    assert code == 0
    text = page.read_text()
    plan = compute(Inputs(viewers=5_000_000, rate=50_000, rooms=2000, cores_per_host=8))
    assert "<svg" in text and "Deployment per role" in text
    assert f"{plan.gateways:,} processes, {plan.gateway_hosts:,} hosts" in text
    assert f"{plan.egress_gbit_per_host:.2f} Gbit/s" in text
    assert f"{plan.workers:,} processes" in text and f"{plan.redis_shards:,} processes" in text
    code, _, err = _plan(tmp_path, capsys, *README_EVENT, "--html", str(tmp_path / "no/x.html"))
    assert code == 2 and len(err.strip().splitlines()) == 1


# ---- layouts: random vs room-affine (issue 25) ---------------------------------------


def test_the_readme_event_needs_at_most_20_shards_when_rooms_are_routed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = compute(Inputs(viewers=5_000_000, rate=50_000, rooms=2000))
    affine, rand = plan.layout("room-affine"), plan.layout("random")
    assert plan.redis_shards == affine.shards <= 20
    assert rand.shards > 100  # every gateway reads nearly every room's frames
    assert affine.g_room == 2  # 2,500 viewers / share 2,000
    assert rand.g_room == pytest.approx(expected_distinct(2500, rand.gateways))
    assert rand.gateways > plan.gateways
    code, out, _ = _plan(tmp_path, capsys, *README_EVENT)
    assert code == 0
    table = out[out.index("layouts (same event):") :]
    assert re.search(r"random\s+room-affine", table)
    assert re.search(rf"Redis shards \(CPU and memory\)\s+{rand.shards}\s+{affine.shards}\b", table)
    assert f"Redis {affine.shards} shard(s) room-affine, {rand.shards} with random" in out
    code, out, _ = _plan(tmp_path, capsys, *README_EVENT, "--json")
    doc = json.loads(out)
    assert doc["layouts"]["room-affine"]["shards"] == doc["redis_shards"] == affine.shards
    assert doc["layouts"]["random"]["g_room"] == rand.g_room
    assert doc["layouts"]["room-affine"]["gateways"] == doc["gateways"] == plan.gateways


@given(
    st.integers(min_value=1, max_value=20_000_000),
    st.integers(min_value=1, max_value=50_000),
    st.integers(min_value=1, max_value=100_000),
    st.floats(min_value=0, max_value=1e6),
)
def test_g_room_follows_the_routing_and_a_room_that_fits_never_costs_more_routed(
    viewers: int, rooms: int, share: int, rate: float
) -> None:
    plan = compute(Inputs(viewers=viewers, rate=rate, rooms=rooms, room_share=share))
    affine, rand = plan.layout("room-affine"), plan.layout("random")
    per_room = viewers / rooms
    frames = _value(plan, "frames built")
    assert affine.gateways == plan.gateways
    assert affine.g_room == min(plan.gateways, max(1, math.ceil(per_room / share)))
    # random: the expected distinct gateways of its viewers, at most one per viewer
    assert rand.g_room == pytest.approx(max(1.0, expected_distinct(per_room, rand.gateways)))
    assert 1 <= rand.g_room <= max(1.0, min(rand.gateways, per_room)) + 1e-6
    for lay in (affine, rand):
        assert lay.frame_reads == pytest.approx(frames * lay.g_room)
        assert lay.notices == pytest.approx(lay.frame_reads)
    if per_room <= share:  # routed, the room sits on one gateway: never dearer than random
        assert affine.g_room == 1
        assert affine.frame_reads <= rand.frame_reads + 1e-6
        assert affine.redis_cpu <= rand.redis_cpu + 1e-9 and affine.shards <= rand.shards
        assert affine.gateways <= rand.gateways
        assert affine.gateway_read_cpu <= rand.gateway_read_cpu + 1e-9


def test_a_small_room_is_read_by_one_gateway_and_a_celebrity_room_by_its_share() -> None:
    small = compute(Inputs(viewers=100_000, rate=1000, rooms=1000, room_share=2000))
    assert small.layout("room-affine").g_room == 1
    big = compute(Inputs(viewers=2_000_000, rate=1000, rooms=1, room_share=2000))
    assert big.layout("room-affine").g_room == min(big.gateways, 1000)


def test_the_notice_cost_is_a_term_of_its_own() -> None:
    base = Inputs(viewers=5_000_000, rate=50_000, rooms=2000)
    cheap = compute(replace(base, costs=replace(base.costs, redis_cpu_us_per_notice=0.0)))
    dear = compute(replace(base, costs=replace(base.costs, redis_cpu_us_per_notice=2.0)))
    for name in ("random", "room-affine"):
        extra = dear.layout(name).redis_cpu - cheap.layout(name).redis_cpu
        notices = cheap.layout(name).notices
        assert notices == pytest.approx(_value(cheap, "frames built") * cheap.layout(name).g_room)
        assert extra == pytest.approx(notices * 2.0 / 1e6)


def test_the_html_plan_shows_both_layouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "plan.html"
    code, _, _ = _plan(tmp_path, capsys, *README_EVENT, "--html", str(page))
    assert code == 0
    text = page.read_text()
    plan = compute(Inputs(viewers=5_000_000, rate=50_000, rooms=2000))
    section = text[text.index("Layouts: random vs room-affine") :]
    row = re.search(
        r"Redis shards \(CPU and memory\)</td><td>([\d,]+)</td><td>([\d,]+)</td>", section
    )
    assert row is not None
    assert row.groups() == (f"{plan.layout('random').shards:,}", f"{plan.redis_shards:,}")


# ---- the gateways' own frame reads ---------------------------------------------------


@given(
    st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e4)),  # cores
    st.floats(min_value=0.01, max_value=1.0),
    st.integers(min_value=1, max_value=1000),
    st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=50.0)),
    st.floats(min_value=0.5, max_value=100_000),
    st.sampled_from(LAYOUTS),
)
def test_the_gateway_count_is_the_smallest_that_covers_its_frame_reads(
    base: float, avail: float, floor: int, read_all: float, viewers: float, layout: str
) -> None:
    def g_room(n: int) -> float:
        return layout_g_room(layout, viewers, n, 2000)

    g = gateways_needed(base, avail, floor, read_all, g_room)

    def covered(n: int) -> bool:
        need = base + read_all * g_room(n)
        return n * avail >= need - 1e-9 * max(1.0, need)  # float rounding aside

    assert g >= floor and covered(g)
    # no smaller count covers its CPU (the spare per gateway grows with the count)
    for smaller in {floor, g - 1, g // 2, (floor + g) // 2}:
        if floor <= smaller < g:
            assert not covered(smaller)


def test_reading_every_rooms_frames_costs_the_random_layout_gateways() -> None:
    base = Inputs(viewers=5_000_000, rate=50_000, rooms=2000)
    free = compute(replace(base, costs=replace(base.costs, gateway_cpu_us_per_frame_read=0.0)))
    dear = compute(replace(base, costs=replace(base.costs, gateway_cpu_us_per_frame_read=40.0)))
    frames = _value(free, "frames built")
    # Routed, a room is read by 2 gateways: 2 x 18,358 frames/s x 40 µs = 1.5 cores in all.
    affine = dear.layout("room-affine")
    assert affine.gateway_read_cpu == pytest.approx(frames * 2 * 40e-6)
    assert affine.gateways - free.gateways <= math.ceil(affine.gateway_read_cpu / 0.6)
    # At random a gateway holds nearly every room: 18,358 x 40 µs = 0.73 cores of reads
    # each, more than 844 gateways can spare; the count grows until the rooms spread thin
    # enough: G x 0.6 >= viewers' CPU + G_room(G) x 0.73, the smallest such G.
    rand = dear.layout("random")
    need = _value(dear, "gateway CPU")

    def reads(g: int) -> float:
        return expected_distinct(2500, g) * frames * 40e-6

    assert rand.gateways * 0.6 >= need + reads(rand.gateways) - 1e-6
    assert (rand.gateways - 1) * 0.6 < need + reads(rand.gateways - 1)
    assert rand.gateways > 3 * dear.gateways
    assert rand.gateway_read_cpu == pytest.approx(reads(rand.gateways))
    assert any("random: viewers spread at random need" in w for w in dear.warnings)
    assert free.layout("random").gateways == free.gateways  # no read cost: same count


def test_expected_distinct_is_exact_where_the_naive_power_rounds_away() -> None:
    # (1 - 1/G)^n with G = 10^12 rounds to 1 - n/G in floats only approximately
    assert expected_distinct(2500, 10**12) == pytest.approx(2500, rel=1e-6)
    assert expected_distinct(3, 2) == pytest.approx(2 * (1 - 0.5**3))
    assert expected_distinct(5, 1) == 1.0
