"""The commands themselves, as a user runs them: `danmaku up` end to end, `danmaku token`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from danmaku import auth
from tests.client import connect, http, printed_urls


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_") and k != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _start_up(data_dir: Path) -> tuple[trio.Process, dict[str, str]]:
    proc = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "danmaku",
            "up",
            "--web-port",
            "0",
            "--ws-port",
            "0",
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        env=_env(),
    )
    return proc, await printed_urls(proc, "danmaku up")


async def _stop(proc: trio.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        return await proc.wait()


async def test_up_prints_urls_and_a_comment_goes_through(tmp_path: Path) -> None:
    data = tmp_path / "state"
    proc, urls = await _start_up(data)
    try:
        assert {"player", "console", "websocket", "metrics", "redis"} <= set(urls)
        web = urls["player"].split("/?")[0]
        reply = await http(f"{web}/api/session", "POST", json_body={"nick": "Ann"})
        assert reply.status == 200
        session = reply.json()
        token = str(session["token"])
        port = int(urls["websocket"].rsplit(":", 1)[1].split("/")[0])
        async with trio.open_nursery() as n:
            viewer = await connect(n, port, "lobby")
            sender = await connect(n, port, "lobby", tok=token)
            ack = await sender.comment("hello from up", nonce="n1")
            assert ack["type"] == "ack"
            await viewer.wait_for(lambda c: ack["id"] in c.item_ids(), timeout=15)
            n.cancel_scope.cancel()
    finally:
        code = await _stop(proc)
    assert code == 0
    assert (data / "secret").exists() and (data / "redis").is_dir()

    # A restart keeps the room's history (AOF): resume from 0 replays the frame.
    proc, urls = await _start_up(data)
    try:
        port = int(urls["websocket"].rsplit(":", 1)[1].split("/")[0])
        async with trio.open_nursery() as n:
            again = await connect(n, port, "lobby", since=0)
            await again.wait_for(lambda c: ack["id"] in c.item_ids(), timeout=15)
            n.cancel_scope.cancel()
    finally:
        assert await _stop(proc) == 0


def test_token_command_mints_a_verifiable_token(tmp_path: Path) -> None:
    env = _env() | {"DANMAKU_SECRET": "s3cret-for-test-0123456789abcdef0123"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "danmaku",
            "token",
            "--user",
            "mod1",
            "--nick",
            "Mo",
            "--role",
            "moderator",
            "--room",
            "r1",
            "--ttl",
            "60",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    user = auth.verify("s3cret-for-test-0123456789abcdef0123", out, room="r1")
    assert (user.uid, user.nick, user.role, user.room) == ("mod1", "Mo", "moderator", "r1")


def test_help_lists_settings_with_env_names_and_defaults() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "danmaku", "up", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    ).stdout
    for needle in (
        "DANMAKU_TICK_MS",
        "REDIS_URL",
        "DANMAKU_MAX_CONNS_PER_IP",
        "DANMAKU_MAX_SESSIONS_PER_IP_PER_MIN",
        "(default: 100)",
    ):
        assert needle in out


async def test_split_roles_serve_metrics_on_their_own_port(redis_url: str, tmp_path: Path) -> None:
    env = _env() | {"DANMAKU_SECRET": "split-secret-0123456789abcdef0123456789"}
    procs = []
    try:
        for role in ("worker", "gateway"):
            proc = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "danmaku",
                    role,
                    "--redis-url",
                    redis_url,
                    "--metrics-port",
                    "0",
                    "--ws-port",
                    "0",
                    "--log-level",
                    "INFO",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # logs too: the secret must appear in neither
                env=env,
            )
            procs.append(proc)
            url = (await printed_urls(proc, f"danmaku {role}"))["metrics"]
            reply = await http(url)
            assert reply.status == 200
            text = reply.body.decode()
            assert "danmaku_redis_seconds" in text and "process_cpu_seconds_total" in text
            wanted = "danmaku_worker_rooms" if role == "worker" else "danmaku_connections_open"
            assert wanted in text
            # start-up was frozen out of the collector's reach (DANMAKU_GC_FREEZE=1)
            frozen = next(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("danmaku_gc_frozen_objects ")
            )
            assert frozen > 10_000
            assert env["DANMAKU_SECRET"] not in text
    finally:
        for proc in procs:
            assert await _stop(proc) == 0
    for proc in procs:
        assert proc.stdout is not None
        rest = b""
        while chunk := await proc.stdout.receive_some(65536):
            rest += chunk
        assert env["DANMAKU_SECRET"].encode() not in rest, "the secret leaked into the output"
