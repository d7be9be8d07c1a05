"""``danmaku-loadtest fleet``: the plan's per-room model of a fleet (pure), and a very
small fleet run end to end (a redis-server, a worker, three gateways, the web app):
routed viewers of a small room sit on one gateway, and the gateways read fewer rooms'
frames than with random assignment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.cli import main
from loadtest.fleetmodel import (
    Fleet,
    RoomLoad,
    compare,
    predict,
    prediction_table,
)
from loadtest.generator import Target
from loadtest.plan import expected_distinct


def _fleet() -> Fleet:
    # one celebrity room of 250 connections and 9 rooms of 10, 2 comments/s each
    rooms = (RoomLoad(250, 2.0), *(RoomLoad(10, 2.0) for _ in range(9)))
    return Fleet(rooms, gateways=8, share=100, tick_ms=100)


def test_the_model_puts_small_rooms_on_one_gateway_when_routed() -> None:
    fleet = _fleet()
    rnd, aff = predict(fleet, "random"), predict(fleet, "room-affine")
    assert aff["small_room_gateways"] == 1.0
    assert aff["celebrity_gateways"] == 3.0  # ceil(250 / 100)
    # random: 10 connections land on 8 x (1 - (7/8)^10) = 5.9 of 8 gateways on average
    small = expected_distinct(10, 8)
    assert rnd["small_room_gateways"] == pytest.approx(small) and 5.8 < small < 6.0
    assert rnd["celebrity_gateways"] == pytest.approx(expected_distinct(250, 8))
    assert rnd["gateways_per_room_bound"] == 8.0  # min(8 gateways, n): the upper bound
    # the same frames are built either way; random reads each on more gateways
    assert rnd["frames_built"] == aff["frames_built"]
    frames_per_room = rnd["frames_built"] / 10
    assert abs(aff["frame_reads"] - frames_per_room * (3 + 9)) < 1e-6
    expected = frames_per_room * (9 * small + expected_distinct(250, 8))
    assert rnd["frame_reads"] == pytest.approx(expected)
    assert rnd["redis_cpu"] > aff["redis_cpu"]


def test_the_table_sets_each_figure_against_its_measurement() -> None:
    fleet = _fleet()
    pred = {lay: predict(fleet, lay) for lay in ("random", "room-affine")}
    measured: dict[str, dict[str, float | None]] = {
        "random": {"frame_reads_per_gateway": pred["random"]["frame_reads_per_gateway"] * 1.1},
        "room-affine": {},
    }
    rows = compare(pred, measured)
    row = next(r for r in rows if r.key == "frame_reads_per_gateway" and r.layout == "random")
    assert row.error is not None and abs(row.error - 0.1) < 1e-9
    unmeasured = next(r for r in rows if r.layout == "room-affine")
    assert unmeasured.measured is None and unmeasured.error is None
    text = "\n".join(prediction_table(rows))
    assert "frame reads/s per gateway" in text and "(+10%)" in text


@given(st.integers(1, 5000), st.integers(1, 2000))
def test_random_assignment_lands_on_at_most_min_g_n_gateways(n: int, g: int) -> None:
    got = expected_distinct(n, g)
    assert 1.0 - 1e-9 <= got <= min(g, n) + 1e-9


def test_a_small_fleet_routed_reads_fewer_rooms_than_random(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    args = ["fleet", "--gateways", "3", "--workers", "1", "--rooms", "6", "--viewers", "48"]
    args += ["--senders", "6", "--rate", "30", "--duration", "5", "--room-share", "40"]
    args += ["--connect-rate", "40", "--procs", "1", "--quiet", "--out", str(out)]
    code = main(args)
    doc = json.loads(out.read_text())
    rnd, aff = doc["measured"]["random"], doc["measured"]["room-affine"]
    assert code == 0, (rnd["errors"], aff["errors"])
    sizes = doc["room_connections"]
    assert len(sizes) == 6 and sum(sizes) == 48 + 6
    small = [k for k, n in enumerate(sizes) if n < 40]
    assert small, sizes
    # routed: every small room's connections are on one gateway; random: spread
    assert [aff["gateways_by_room"][k] for k in small] == [1] * len(small)
    assert all(n >= 1 for n in rnd["gateways_by_room"])
    assert sum(rnd["gateways_by_room"]) > sum(aff["gateways_by_room"])
    # so the gateways hold and read fewer rooms, while the rooms build the same frames
    assert sum(aff["rooms_by_gateway"]) < sum(rnd["rooms_by_gateway"])
    assert 0 < aff["frame_reads"] < rnd["frame_reads"]
    assert aff["frames_built"] > 0 and rnd["frames_built"] > 0
    # both layouts' figures, predicted and measured, and the latency of each
    for m in (rnd, aff):
        assert m["latency_samples"] > 0 and 0 < m["latency_p50_ms"] <= m["latency_p99_ms"]
        assert m["redis_cpu"] > 0
    assert set(doc["predicted"]) == {"random", "room-affine"}
    keys = {(r["key"], r["layout"]) for r in doc["rows"] if r["measured"] is not None}
    assert ("frame_reads_per_gateway", "random") in keys
    assert ("frame_reads_per_gateway", "room-affine") in keys
    assert set(doc["reports"]) == {"random", "room-affine"}


def test_random_assignment_spreads_connections_over_every_gateway_the_same_way() -> None:
    urls = tuple(f"ws://127.0.0.1:{9000 + i}/ws" for i in range(4))
    target = Target(urls[0], None, ws_urls=urls)
    drawn = [target.url_of(k, seed=1) for k in range(400)]
    assert set(drawn) == set(urls)
    assert all(60 <= drawn.count(u) <= 140 for u in urls)  # about 100 each
    assert drawn == [target.url_of(k, seed=1) for k in range(400)]  # every process agrees
    assert Target(urls[0], None).url_of(7, seed=1) == urls[0]  # no list: the one URL


@pytest.mark.parametrize(
    "bad", [["--gateways", "0"], ["--rooms", "0"], ["--layouts", "random,roundrobin"]]
)
def test_bad_fleet_arguments_are_one_line_and_exit_2(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fleet", *bad, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("danmaku-loadtest fleet: ") and err.count("\n") == 1
