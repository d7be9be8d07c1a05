"""The parent of `--processes`: its restart decisions and its children's settings (pure)."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from danmaku import config
from danmaku.config import Settings
from danmaku.procs import (
    PARENT_ENV,
    Restarts,
    child_env,
    child_metrics_port,
    orphaned,
    process_count,
)


def test_a_first_start_that_fails_is_a_startup_error() -> None:
    r = Restarts(2)
    r.started(0, now=0.0)
    assert r.exited(0, now=0.2) is None  # never ready: a misconfiguration, not a crash


def test_a_crashing_child_backs_off_and_recovers_after_running_stably() -> None:
    r = Restarts(1)
    r.started(0, now=0.0)
    r.ready(0)
    delays = []
    now = 1.0
    for _ in range(8):
        delay = r.exited(0, now)
        assert delay is not None
        delays.append(delay)
        now += delay
        r.started(0, now)
        now += 0.1  # dies again at once
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == 30.0
    now += 60.0  # ran a minute: healthy again
    assert r.exited(0, now) == 0.5
    assert r.restarts == [9]


@given(st.lists(st.tuples(st.integers(0, 2), st.floats(0.0, 100.0)), max_size=40))
def test_restart_delays_stay_within_the_backoff_bounds(events: list[tuple[int, float]]) -> None:
    r = Restarts(3)
    now = 0.0
    for slot in range(3):
        r.started(slot, now)
        r.ready(slot)
    for slot, dt in events:
        now += dt
        delay = r.exited(slot, now)
        assert delay is not None and 0.5 <= delay <= 30.0
        r.started(slot, now + delay)


def test_children_get_the_resolved_settings_one_process_each_on_the_shared_port() -> None:
    parent = Settings(secret="s" * 32, processes=4, ws_port=0, metrics_port=9100, tick_ms=70)
    env = child_env(parent, port=40123, index=2, base={"PATH": "/bin", "DANMAKU_TICK_MS": "5"})
    child = config.from_sources(None, env)
    assert child.processes == 1 and child.reuse_port == 1
    assert child.ws_port == 40123 and child.metrics_port == 9102
    assert child.tick_ms == 70  # the parent's resolved value, not a stale environment
    assert child.secret == parent.secret
    assert env["PATH"] == "/bin"
    assert env[PARENT_ENV] == str(os.getpid())  # the child watches this process
    assert child.instance_id == ""  # random per child


def test_children_of_a_named_parent_get_ids_of_their_own() -> None:
    """Regression: with DANMAKU_INSTANCE_ID set, every child announced itself under the
    one id, so their presence reports and registry entries overwrote each other."""
    parent = Settings(secret="s" * 32, processes=3, instance_id="gw-a")
    ids = [config.from_sources(None, child_env(parent, 40123, i, {})).instance_id for i in range(3)]
    assert ids == ["gw-a-0", "gw-a-1", "gw-a-2"]


def test_a_child_knows_when_its_parent_is_gone() -> None:
    assert not orphaned(os.getppid())
    assert orphaned(os.getppid() + 1)


def test_metrics_ports_per_child() -> None:
    assert [child_metrics_port(9100, i) for i in range(3)] == [9100, 9101, 9102]
    assert child_metrics_port(0, 5) == 0  # each picks a free port
    assert child_metrics_port(-1, 5) == -1  # off stays off


def test_zero_means_one_per_core() -> None:
    assert process_count(3) == 3
    assert process_count(0) >= 1
