"""Shared fixtures: a real redis-server on a free port, settings, a running system."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
import trio
from hypothesis import settings as hypothesis_settings

from danmaku.config import Settings
from danmaku.dev.embedded import find_redis_server, spawn_redis
from danmaku.metrics import Metrics
from danmaku.system import System, run_system

SECRET = "test-secret-0123456789abcdef0123456789"

# Property tests check behaviour, never wall time: hypothesis' per-example deadline
# (200 ms) failed a property test once on a loaded CI machine. No deadline anywhere.
hypothesis_settings.register_profile("danmaku", deadline=None)
hypothesis_settings.load_profile("danmaku")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole run (flushed before each test that uses it)."""
    binary = os.environ.get("DANMAKU_TEST_REDIS_SERVER") or find_redis_server()
    proc, port = spawn_redis(tmp_path_factory.mktemp("redis"), aof=False, binary=binary)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        secret=SECRET,
        data_dir=str(tmp_path / "data"),
        web_port=0,
        ws_port=0,
        tick_ms=50,
        max_conns_per_ip=0,
        max_sessions_per_ip_per_min=0,
        guest_sessions_per_ip_per_min=0,  # (its own test sets a limit)
        lease_ms=1500,
        drain_s=1.0,
        # The pipeline tests check delivery of every comment: spike control off unless
        # a test turns it on (tests/integration/test_spike.py does).
        rate_per_s=10_000.0,
        rate_burst=10_000.0,
        duplicate_window_s=0.0,
        display_budget=100_000.0,
        ingest_ceiling=0.0,
        max_msgs_per_s=0.0,  # the flood guard has its own test
    )


@pytest.fixture
async def system(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[System]:
    sys: System = await nursery.start(partial(run_system, settings, metrics=Metrics(process=False)))
    yield sys
    sys.cancel_scope.cancel()
