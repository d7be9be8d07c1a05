"""Calibration: the fit on synthetic runs, the plan's use of it, validate's verdict (pure)."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest import cli
from loadtest.calibrate import CalibrationError, calibrate, predict
from loadtest.fit import FitError, fit
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
) -> dict[str, Any]:
    """A loadtest report (the keys calibration reads) of a server that costs exactly
    ``fixed + per_conn x conns + per_write x writes/s + per_comment x comments/s`` cores,
    times (1 + a uniform error of at most ``noise``)."""
    rng = rng or random.Random(0)

    def cpu(wall: float, writes: float, comments: float) -> float:
        cores = (
            fixed + (per_conn_us * conns + per_write_us * writes + per_comment_us * comments) / 1e6
        )
        return cores * wall * (1 + rng.uniform(-noise, noise))

    idle_wall, wall = 4.0, 20.0
    writes = conns * TICKS * wall
    comments = RATE * wall
    return {
        "target": {"mode": "local-split"},
        "run_id": f"run-{conns}",
        "server": {
            "idle": {"wall_s": idle_wall, "cpu_s": cpu(idle_wall, 0, 0)},
            "phases": {
                "wall_s": wall,
                "cpu_s": cpu(wall, writes / wall, comments / wall),
                "frame_writes": writes,
                "comments_accepted": comments,
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
    bare = {**doc, "frame_writes_per_conn_s": None}
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
