"""Calibration: the fit on synthetic runs, the plan's use of it, validate's verdict (pure)."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest import cli
from loadtest.calibrate import (
    CalibrationError,
    calibrate,
    predict,
    reads_per_s,
    run_reports,
    source_from_calibration,
)
from loadtest.fit import FitError, fit
from loadtest.plan import Costs, Inputs, compute, extrapolation_warnings
from loadtest.validate import Figure, compare, cost_of_measured_work
from loadtest.validate import predict as predict_run

TICKS = 10.0  # frames per second a connection receives (100 ms tick, a busy room)
RATE = 100.0  # comments/s of every synthetic run


def _report(
    conns: int,
    fixed: float,
    per_conn_us: float,
    per_write_us: float,
    per_comment_us: float,
    noise: float = 0.0,
    rng: random.Random | None = None,
    per_read_us: float = 0.0,
    rooms: int = 1,
) -> dict[str, Any]:
    """A loadtest report (the keys calibration reads) of a server that costs exactly
    ``fixed + per_conn x conns + per_write x writes/s + per_comment x comments/s
    + per_read x frames read/s`` cores, times (1 + a uniform error of at most ``noise``).
    One room reads ``TICKS`` frames/s, each viewer gets all of them; ``RATE`` comments/s
    over ``rooms`` rooms (fewer than ``TICKS`` each) read one frame per comment and give
    each viewer its room's."""
    rng = rng or random.Random(0)

    def cpu(wall: float, writes: float, comments: float, reads: float) -> float:
        cores = (
            fixed
            + (
                per_conn_us * conns
                + per_write_us * writes
                + per_comment_us * comments
                + per_read_us * reads
            )
            / 1e6
        )
        return cores * wall * (1 + rng.uniform(-noise, noise))

    idle_wall, wall = 4.0, 20.0
    reads_per_s = TICKS if rooms == 1 else RATE
    writes = conns * (TICKS if rooms == 1 else RATE / rooms) * wall
    comments = RATE * wall
    return {
        "target": {"mode": "local-split"},
        "scenario": {"rooms": rooms},
        "run_id": f"run-{conns}",
        "server": {
            "idle": {"wall_s": idle_wall, "cpu_s": cpu(idle_wall, 0, 0, 0)},
            "phases": {
                "wall_s": wall,
                "cpu_s": cpu(wall, writes / wall, comments / wall, reads_per_s),
                "frame_writes": writes,
                "comments_accepted": comments,
                "frames_read": reads_per_s * wall,
                "bytes_out": writes * 1200.0,
            },
            "rss_bytes": {"base": 50_000_000, "ready": 50_000_000 + 15_000 * conns},
        },
        "costs": {"connections": conns},
    }


@given(
    fixed=st.floats(0.0, 0.3),
    per_conn=st.floats(0.0, 20.0),
    per_write=st.floats(1.0, 50.0),
    per_comment=st.floats(0.0, 2000.0),
    sizes=st.lists(st.integers(20, 5000), min_size=2, max_size=3, unique=True),
)
def test_the_fit_recovers_the_costs_of_exact_runs(
    fixed: float,
    per_conn: float,
    per_write: float,
    per_comment: float,
    sizes: list[int],
) -> None:
    doc = calibrate([_report(n, fixed, per_conn, per_write, per_comment) for n in sizes])
    c = doc["costs"]
    assert c["fixed_cores"] == pytest.approx(fixed, abs=1e-6)
    assert c["cpu_us_per_conn_s"] == pytest.approx(per_conn, abs=1e-4)
    assert c["cpu_us_per_frame_write"] == pytest.approx(per_write, rel=1e-6)
    assert c["cpu_us_per_comment"] == pytest.approx(per_comment, abs=1e-3)
    assert doc["measured"]["connections"] == [min(sizes), max(sizes)]
    assert doc["bytes_per_frame_write"] == pytest.approx(1200.0)
    assert doc["rss_bytes_per_conn"] == pytest.approx(15_000.0)


def test_noisy_runs_give_costs_within_their_stated_error() -> None:
    # 5% noise on every window's CPU: the fit lands near the truth and says how near.
    rng = random.Random(7)
    reports = [_report(n, 0.05, 4.0, 12.0, 300.0, noise=0.05, rng=rng) for n in (100, 200, 300)]
    doc = calibrate(reports)
    write, err = doc["costs"]["cpu_us_per_frame_write"], doc["stderr"]["cpu_us_per_frame_write"]
    assert err is not None and err > 0
    assert abs(write - 12.0) < max(4 * err, 1.2)
    # What it predicts for a run 5x larger is within 20% of that run's true cost.
    truth = 0.05 + (4.0 * 1500 + 12.0 * 15_000 + 300.0 * RATE) / 1e6
    assert predict(doc, 1500, 15_000, RATE) == pytest.approx(truth, rel=0.2)


def test_one_population_cannot_be_calibrated() -> None:
    with pytest.raises(CalibrationError, match="two or more populations"):
        calibrate([_report(300, 0.1, 1, 10, 100), _report(300, 0.1, 1, 10, 100)])


def test_a_singular_fit_is_refused() -> None:
    rows = [([1.0, 2.0], 3.0, 1.0), ([2.0, 4.0], 6.0, 1.0), ([3.0, 6.0], 9.0, 1.0)]
    with pytest.raises(FitError):
        fit(rows, ("a", "b"))


def test_plan_from_a_calibration_warns_beyond_10x_and_prints_its_uncertainty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    rng = random.Random(3)
    for n in (100, 200, 300):
        path = tmp_path / f"r{n}.json"
        path.write_text(json.dumps(_report(n, 0.05, 4.0, 12.0, 300.0, noise=0.03, rng=rng)))
        paths.append(str(path))
    cal = tmp_path / "cal.json"
    assert cli.main(["calibrate", "steady", "--reports", *paths, "--out", str(cal)]) == 0
    capsys.readouterr()
    event = ["--viewers", "5000000", "--rate", "50000", "--rooms", "2000"]
    assert cli.main(["plan", *event, "--from", str(cal)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"cpu_us_per_frame_write = [\d.]+ ± [\d.]+ \(calibrated\)", out)
    assert "uncertainty:" in out
    assert "warning: extrapolating" in out  # thousands per gateway, measured at 100-300
    assert "costs from one run" not in out
    # A plan whose gateways hold what was measured: no extrapolation warning.
    near = ["--viewers", "3000", "--rate", "100", "--rooms", "1", "--max-conns-per-gateway", "300"]
    assert cli.main(["plan", *near, "--from", str(cal)]) == 0
    assert "extrapolating" not in capsys.readouterr().out


def test_calibrate_with_one_report_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_report(300, 0.1, 1, 10, 100)))
    assert cli.main(["calibrate", "steady", "--reports", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "two or more" in err


def test_validate_predicts_with_the_plans_frame_model_and_judges_by_tolerance() -> None:
    doc = calibrate([_report(n, 0.05, 4.0, 12.0, 300.0) for n in (100, 200)])
    assert doc["frame_writes_per_conn_s"] == pytest.approx(TICKS)
    cpu, writes, egress = predict_run(doc, conns=1000, rate=RATE, rooms=1, tick_ms=100)
    assert writes.predicted == pytest.approx(1000 * TICKS)  # what each connection got
    # Without the calibrated figure: the plan's Poisson model (100/s: nearly every tick).
    bare = {**doc, "frame_writes_per_conn_s": None, "runs": []}
    assert predict_run(bare, 1000, RATE, 1, 100)[1].predicted == pytest.approx(
        1000 * TICKS, rel=1e-3
    )
    assert predict_run(bare, 1000, 5.0, 1, 100)[1].predicted == pytest.approx(
        1000 * TICKS * (1 - math.exp(-0.5))
    )
    assert egress.predicted == pytest.approx(writes.predicted * 1200.0)
    assert cpu.predicted == pytest.approx(
        0.05 + (4.0 * 1000 + 12.0 * writes.predicted + 300.0 * RATE) / 1e6
    )
    figures = [
        Figure("a", "", 1.0, 1.1),
        Figure("b", "", 2.0, 1.5),
        Figure("c", "", 3.0, None),
    ]
    failed = compare(figures, 0.2)
    assert [line.split(":")[0] for line in failed] == ["b", "c"]
    assert compare(figures[:1], 0.2) == []


def test_validate_runs_the_target_and_its_exit_code_follows_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end with a tiny population (behaviour, not timing): a given calibration,
    one real local run (`--split`: redis-server, worker and gateway processes), the
    table of the three figures, and an exit code that agrees with it."""
    cal = tmp_path / "cal.json"
    doc = calibrate([_report(n, 0.05, 4.0, 12.0, 300.0) for n in (10, 20)])
    cal.write_text(json.dumps(doc))
    out = tmp_path / "validate.json"
    argv = ["validate", "steady", "--calibration", str(cal), "--sizes", "10,20"]
    argv += ["--target", "12", "--senders", "2", "--rate", "10", "--duration", "2"]
    argv += ["--set", "idle_s=0.5", "--set", "settle_s=0.5", "--quiet", "--out", str(out)]
    code = cli.main(argv)
    text = capsys.readouterr().out
    saved = json.loads(out.read_text())
    figures = {f["name"]: f for f in saved["figures"]}
    assert set(figures) == {"gateway CPU", "frame writes", "egress"}
    for name, f in figures.items():
        assert f["measured"] is not None and f["measured"] > 0, name
        assert f"| {name} |" in text
    assert saved["connections"] == 14  # 12 viewers + 2 senders watching their room
    off = [f for f in figures.values() if abs(f["error"]) > 0.2]
    assert code == (1 if off else 0)
    assert ("FAIL" in text) == bool(off)


def test_the_cost_of_the_work_done_is_checked_apart_from_throughput() -> None:
    # A starved run does a tenth of the writes predicted; each still costs what the
    # calibration says, and that check passes while the throughput one fails.
    doc = calibrate([_report(n, 0.05, 4.0, 12.0, 300.0) for n in (100, 200)])
    starved = _report(1000, 0.05, 4.0, 12.0, 300.0)
    ph = starved["server"]["phases"]
    ph["frame_writes"] /= 10
    ph["cpu_s"] = (0.05 + (4.0 * 1000 + 12.0 * ph["frame_writes"] / 20 + 300.0 * RATE) / 1e6) * 20
    work = cost_of_measured_work(doc, 1000, starved)
    assert work is not None and work.error == pytest.approx(0.0, abs=1e-6)
    writes = predict_run(doc, 1000, RATE, 1, 100)[1]
    writes.measured = ph["frame_writes"] / 20
    assert compare([writes], 0.2)


# ---- the gateway's frame reads, fitted apart -------------------------------------------


def test_one_room_runs_leave_the_read_cost_in_the_comment_cost_and_say_so() -> None:
    # 10 frames read per second whatever the population: the per-comment cost takes them.
    doc = calibrate([_report(n, 0.05, 4.0, 12.0, 300.0, per_read_us=900.0) for n in (100, 300)])
    assert doc["costs"]["cpu_us_per_frame_read"] is None
    assert doc["costs"]["cpu_us_per_comment"] == pytest.approx(300.0 + 900.0 * TICKS / RATE)
    assert any("--spread-rooms" in w for w in doc["warnings"])
    src = source_from_calibration(doc)
    assert src.costs.gateway_cpu_us_per_frame_read == Costs().gateway_cpu_us_per_frame_read
    assert any("--spread-rooms" in w for w in src.warnings)


@given(
    per_comment=st.floats(0.0, 2000.0),
    per_read=st.floats(0.0, 2000.0),
    spread=st.integers(20, 100),
)
def test_spread_runs_fit_the_read_cost_apart(
    per_comment: float, per_read: float, spread: int
) -> None:
    reports = [
        _report(n, 0.05, 4.0, 12.0, per_comment, per_read_us=per_read, rooms=rooms)
        for n in (100, 300)
        for rooms in (1, spread)
    ]
    doc = calibrate(reports)
    c = doc["costs"]
    assert c["cpu_us_per_frame_read"] == pytest.approx(per_read, abs=1e-3)
    assert c["cpu_us_per_comment"] == pytest.approx(per_comment, abs=1e-3)
    assert c["cpu_us_per_frame_write"] == pytest.approx(12.0, rel=1e-6)
    assert reads_per_s(doc, 1) == pytest.approx(TICKS)
    assert reads_per_s(doc, spread) == pytest.approx(RATE)
    assert reads_per_s(doc, 7) is None
    src = source_from_calibration(doc)
    assert src.costs.gateway_cpu_us_per_frame_read == pytest.approx(per_read, abs=1e-3)
    # validate counts the reads of the target's room count (the calibration's own)
    cpu = predict_run(doc, conns=1000, rate=RATE, rooms=1, tick_ms=100)[0]
    assert cpu.predicted == pytest.approx(
        0.05 + (4.0 * 1000 + 12.0 * 1000 * TICKS + per_comment * RATE + per_read * TICKS) / 1e6
    )


def test_spread_rooms_runs_each_size_twice(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, bool, int | None]] = []

    def run_local(viewers: int, split: bool, rooms: int | None) -> dict[str, Any]:
        calls.append((viewers, split, rooms))
        return _report(viewers, 0.05, 4.0, 12.0, 300.0, rooms=rooms or 1)

    reports = run_reports([100, 200], True, run_local, spread_rooms=50)
    assert calls == [(100, True, None), (100, True, 50), (200, True, None), (200, True, 50)]
    assert len(reports) == 4 and "200 viewers, 50 rooms" in capsys.readouterr().out
    calls.clear()
    run_reports([100, 200], True, run_local)
    assert calls == [(100, True, None), (200, True, None)]


def test_a_plan_far_from_the_calibrated_comment_and_read_rates_says_so() -> None:
    # Comments cost less each at higher rates (shared round trips and wake-ups): a plan
    # whose gateways take 10x more (or fewer) than the calibration runs did is warned.
    one_room = calibrate([_report(n, 0.05, 4.0, 12.0, 300.0) for n in (100, 300)])
    assert one_room["measured"]["comments_per_s"] == pytest.approx([RATE, RATE])
    src = source_from_calibration(one_room)
    assert set(src.measured_rates) == {"comments"}  # reads were not fitted apart
    spread = calibrate(
        [
            _report(n, 0.05, 4.0, 12.0, 300.0, per_read_us=40.0, rooms=rooms)
            for n in (100, 300)
            for rooms in (1, 50)
        ]
    )
    assert spread["measured"]["frames_read_per_s"] == pytest.approx([TICKS, RATE])
    assert set(source_from_calibration(spread).measured_rates) == {"comments", "frames read"}

    def warned(viewers: int, rate: float, rooms: int) -> list[str]:
        inp = Inputs(viewers=viewers, rate=rate, rooms=rooms, costs=src.costs)
        return [w for w in extrapolation_warnings(compute(inp), inp, src) if "/s, the" in w]

    near = Inputs(viewers=30_000, rate=1000, rooms=10)
    per_gateway = near.rate / compute(replace(near, costs=src.costs)).gateways
    assert 0.1 * RATE <= per_gateway <= 10 * RATE
    assert warned(30_000, 1000, 10) == []
    far = warned(30_000, 1_000_000, 10)  # thousands of comments/s per gateway
    assert len(far) == 1 and "comments/s" in far[0] and "calibrate nearer" in far[0]
