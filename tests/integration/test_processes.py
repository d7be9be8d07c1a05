"""`danmaku gateway --processes N`: children on one port, restarted, stopped together.

Real processes, a real redis-server, real WebSocket clients and real /metrics scrapes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.system import run_system
from tests.client import Client, connect, http, printed_urls, token
from tests.conftest import SECRET


def _env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_") and k != "REDIS_URL"}
    env.update(
        PYTHONUNBUFFERED="1",
        REDIS_URL=redis_url,
        DANMAKU_SECRET=SECRET,
        DANMAKU_MAX_CONNS_PER_IP="0",
        DANMAKU_MAX_SESSIONS_PER_IP_PER_MIN="0",
        DANMAKU_DRAIN_S="1",
    )
    return env


async def _start(
    redis_url: str, tmp_path: Path, processes: int = 2
) -> tuple[trio.Process, dict[str, str]]:
    proc = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "danmaku",
            "gateway",
            "--processes",
            str(processes),
            "--ws-port",
            "0",
            "--metrics-port",
            "0",
            "--log-level",
            "WARNING",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        env=_env(redis_url),
    )
    return proc, await printed_urls(proc, "danmaku gateway --processes")


def _port(urls: dict[str, str]) -> int:
    return int(urls["websocket"].rsplit(":", 1)[1].split("/")[0])


def _pids(urls: dict[str, str]) -> list[int]:
    return [int(p) for p in re.findall(r"\d+", urls["processes"].split("pids", 1)[1])]


async def _open_connections(url: str) -> float:
    reply = await http(url)
    assert reply.status == 200
    match = re.search(rb"^danmaku_connections_open (\S+)$", reply.body, re.M)
    assert match, "no danmaku_connections_open in the child's /metrics"
    return float(match.group(1))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def _stop(proc: trio.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        return await proc.wait()


async def test_children_share_the_port_and_both_serve(
    redis_url: str, settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    # A broadcast worker builds the frames the children deliver.
    await nursery.start(partial(run_system, settings, ("worker",), metrics=Metrics(process=False)))
    proc, urls = await _start(redis_url, tmp_path)
    try:
        assert {"metrics-0", "metrics-1"} <= set(urls)
        assert len(set(_pids(urls))) == 2
        port = _port(urls)
        async with trio.open_nursery() as n:
            # The kernel spreads connections by a hash of their addresses: with 40
            # connections, all on one child has probability 2^-39.
            clients = [await connect(n, port, "shared") for _ in range(40)]
            assert all(c.of_type("welcome") for c in clients)
            counts = [await _open_connections(urls[f"metrics-{i}"]) for i in (0, 1)]
            assert sum(counts) == 40
            assert min(counts) > 0, f"one child got every connection: {counts}"
            # Both children serve the same room: a comment sent through one reaches
            # viewers on the other (Redis is the shared state).
            sender = await connect(n, port, "shared", tok=token("u1"))
            ack = await sender.comment("across children", nonce="n1")
            assert ack["type"] == "ack"
            for c in clients:
                await c.wait_for(lambda c: ack["id"] in c.item_ids(), timeout=15)
            n.cancel_scope.cancel()
    finally:
        code = await _stop(proc)
    assert code == 0


async def test_a_killed_child_is_restarted(redis_url: str, tmp_path: Path) -> None:
    proc, urls = await _start(redis_url, tmp_path)
    try:
        pids = _pids(urls)
        os.kill(pids[0], signal.SIGKILL)
        assert proc.stdout is not None
        buf = b""
        with trio.fail_after(30):
            while b"gateway 0: restarted" not in buf or not buf.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, f"the parent exited: {buf!r}"
                buf += chunk
        line = next(x for x in buf.decode().splitlines() if x.startswith("gateway 0: restarted"))
        new_pid = int(re.search(r"pid (\d+)", line).group(1))  # type: ignore[union-attr]
        assert new_pid not in pids and _alive(new_pid) and _alive(pids[1])
        metrics = re.search(r"metrics (\S+)\)", line).group(1)  # type: ignore[union-attr]
        async with trio.open_nursery() as n:
            # The port keeps working, and the new child takes its share again.
            clients = [await connect(n, _port(urls), "again") for _ in range(40)]
            assert all(c.of_type("welcome") for c in clients)
            assert await _open_connections(metrics) > 0
            n.cancel_scope.cancel()
    finally:
        code = await _stop(proc)
    assert code == 0


async def test_sigterm_to_the_parent_drains_and_ends_every_child(
    redis_url: str, tmp_path: Path
) -> None:
    proc, urls = await _start(redis_url, tmp_path)
    pids = _pids(urls)
    closed: list[Client] = []
    async with trio.open_nursery() as n:
        clients = [await connect(n, _port(urls), "bye") for _ in range(10)]
        code = await _stop(proc)
        for c in clients:
            await c.wait_for(lambda c: c.closed is not None, timeout=15)
            closed.append(c)
        n.cancel_scope.cancel()
    assert code == 0
    assert {c.closed[0] for c in closed if c.closed} == {1013}  # draining, reconnect
    assert not any(_alive(pid) for pid in pids)


async def test_children_outlive_neither_a_killed_parent_nor_ten_seconds_of_quiet(
    redis_url: str, tmp_path: Path
) -> None:
    proc, urls = await _start(redis_url, tmp_path)
    pids = _pids(urls)
    # Regression: PR_SET_PDEATHSIG fired when trio's spawning thread went idle (~10 s)
    # and stopped every child. They must still serve after that.
    await trio.sleep(12)
    assert all(_alive(pid) for pid in pids)
    async with trio.open_nursery() as n:
        client = await connect(n, _port(urls), "quiet")
        assert client.of_type("welcome")
        n.cancel_scope.cancel()
    proc.kill()  # no chance to forward anything
    await proc.wait()
    with trio.fail_after(30):
        while any(_alive(pid) for pid in pids):
            await trio.sleep(0.2)


async def test_a_port_in_use_is_one_line_and_exit_2(redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "danmaku",
                "gateway",
                "--processes",
                "2",
                "--ws-port",
                str(port),
                "--data-dir",
                str(tmp_path / "data"),
            ],
            env=_env(redis_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "address already in use" in result.stderr and str(port) in result.stderr


async def test_processes_is_refused_for_the_worker(redis_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "danmaku", "worker", "--processes", "2"],
        env=_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--processes" in result.stderr


async def test_up_runs_its_gateway_role_as_children(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_") and k != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    proc = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "danmaku",
            "up",
            "--processes",
            "2",
            "--web-port",
            "0",
            "--ws-port",
            "0",
            "--data-dir",
            str(tmp_path / "state"),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        urls = await printed_urls(proc, "danmaku up --processes 2")
        assert len(_pids(urls)) == 2 and {"player", "websocket", "metrics"} <= set(urls)
        web = urls["player"].split("/?")[0]
        # The web app (in the parent) tells players the children's shared port.
        config = (await http(f"{web}/api/config")).json()
        assert str(_port(urls)) in json.dumps(config)
        session = (await http(f"{web}/api/session", "POST", json_body={"nick": "Ann"})).json()
        async with trio.open_nursery() as n:
            viewer = await connect(n, _port(urls), "lobby")
            sender = await connect(n, _port(urls), "lobby", tok=str(session["token"]))
            ack = await sender.comment("hello from a child", nonce="n1")
            assert ack["type"] == "ack"
            await viewer.wait_for(lambda c: ack["id"] in c.item_ids(), timeout=15)
            n.cancel_scope.cancel()
    finally:
        code = await _stop(proc)
    assert code == 0
