"""Scenario files, overrides and validation (pure)."""

from __future__ import annotations

import argparse

import pytest

from loadtest import scenario as sc
from loadtest.cli import resolve
from loadtest.scenario import Phase, Scenario, ScenarioError


def test_every_shipped_scenario_loads() -> None:
    names = sc.available()
    assert {"steady", "celebrity-spike", "reconnect-storm", "slow-viewers", "many-rooms"} <= set(
        names
    )
    for name in names:
        s = sc.load(name)
        assert s.phases and s.duration_s > 0


def test_spike_ramps_and_storms() -> None:
    s = sc.load("celebrity-spike")
    spike = next(p for p in s.phases if p.name == "spike")
    assert spike.rate_at(0) == spike.rate_from == 200
    assert spike.rate_at(spike.duration_s) == 2000
    assert spike.join > 0 and s.total_viewers == s.viewers + spike.join
    assert sc.load("many-rooms").rooms == 1000


def test_overrides_are_toml_values_and_reach_lists() -> None:
    raw = sc.read_raw("celebrity-spike")
    out = sc.apply_overrides(
        raw, ["phases.0.rate=5", "viewers=7", "server.display_budget=12.5", "name=x"]
    )
    s = Scenario.from_dict(out)
    assert (s.phases[0].rate, s.viewers, s.server["display_budget"], s.name) == (5, 7, 12.5, "x")
    assert raw["viewers"] != 7  # the raw dict is not modified
    every = Scenario.from_dict(sc.apply_overrides(raw, ["phases.*.duration_s=2"]))
    assert all(p.duration_s == 2 for p in every.phases)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["phases.9.rate=1"], "no element"),
        (["viewerz=1"], "unknown key"),
        (["viewers=abc"], "must be an integer"),
        (["rooms=0"], "rooms"),
        (["phases.0.duration_s=0"], "duration_s"),
        (["sample_fraction=2"], "sample_fraction"),
        (["novalue"], "KEY=VALUE"),
    ],
)
def test_bad_overrides_say_which_key(override: list[str], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        sc.load("steady", override)


def test_phase_lookup() -> None:
    s = Scenario(name="t", phases=(Phase("a", 2, 1), Phase("b", 3, 1)), senders=1)
    assert [s.phase_at(t) for t in (0, 1.9, 2, 4.9, 99)] == [0, 0, 1, 1, 1]
    assert s.phase_start(1) == 2 and s.duration_s == 5
    assert s.max_sender_rate() == 1


def test_cli_flags_override_after_set() -> None:
    args = argparse.Namespace(
        scenario="celebrity-spike",
        overrides=["viewers=3"],
        viewers=9,
        senders=4,
        rooms=None,
        tick_ms=50,
        procs=None,
        seed=None,
        rate=100.0,
        duration=5.0,
    )
    s = resolve(args)
    assert (s.viewers, s.senders, s.tick_ms) == (9, 4, 50)
    assert all(p.rate == 100 and p.rate_from is None for p in s.phases)
    assert s.duration_s == pytest.approx(5.0)
