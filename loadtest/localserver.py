"""``LocalServer``: a ``danmaku up`` subprocess on free ports with an embedded Redis in a
temporary directory, for ``danmaku-loadtest local``; with ``split``, a redis-server, a
``danmaku gateway`` and a ``danmaku worker`` as three processes instead, and the
gateway is the server measured (the push layer's own cost, issue 6).

The server runs as its own process so its CPU can be read from ``/proc`` apart from the
load generator's; Redis is measured separately.
``start`` waits for the printed URLs (``ready:`` line) and raises ``RuntimeError`` with
the output if the server exits or takes longer than ``timeout_s``. ``stop`` sends
SIGTERM and waits (a graceful drain), then kills after a bound.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from danmaku.auth import new_secret
from loadtest import procstat
from loadtest.client import MAX_LAG_S
from loadtest.scenario import Scenario


def server_env(scenario: Scenario, secret: str) -> dict[str, str]:
    """The ``DANMAKU_*`` environment a scenario needs: loopback caps off, per-user rate
    limits and the per-connection message limit above the per-sender rate, the tick, and
    the scenario's ``[server]`` table.

    A sender sends at most ``max_sender_rate()`` per second on average and, catching up
    after a stall, at most ``MAX_LAG_S`` worth of comments at once. A bucket refilled at
    twice the peak rate and holding at least that much stays ahead of it."""
    per_sender = scenario.max_sender_rate()
    rate = max(1.0, math.ceil(per_sender * 2))
    burst = max(3.0, rate, math.ceil(per_sender * MAX_LAG_S) + 1)
    env = {
        "DANMAKU_SECRET": secret,
        "DANMAKU_MAX_CONNS_PER_IP": "0",
        "DANMAKU_MAX_SESSIONS_PER_IP_PER_MIN": "0",
        "DANMAKU_GUEST_SESSIONS_PER_IP_PER_MIN": "0",
        "DANMAKU_TICK_MS": str(scenario.tick_ms),
        "DANMAKU_RATE_PER_S": str(rate),
        "DANMAKU_RATE_BURST": str(burst),
        # the flood guard counts every client message (the server's defaults: 20/s, 60)
        "DANMAKU_MAX_MSGS_PER_S": str(max(20.0, rate)),
        "DANMAKU_MAX_MSGS_BURST": str(max(60.0, 3 * rate)),
    }
    for key, value in scenario.server.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        env["DANMAKU_" + key.upper()] = text
    return env


class LocalServer:
    """One ``danmaku up`` process tree; the URLs it printed are in ``urls``."""

    def __init__(
        self, scenario: Scenario, *, secret: str | None = None, split: bool = False
    ) -> None:
        self.scenario = scenario
        self.split = split
        self._others: list[subprocess.Popen[bytes]] = []  # redis-server, worker (split)
        self.secret = secret or new_secret()
        self.urls: dict[str, str] = {}
        self.proc: subprocess.Popen[str] | None = None
        self.redis_pid: int | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[str] | None = None
        self.log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = 30.0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="danmaku-loadtest-")
        data = Path(self._tmp.name)
        env = {**os.environ, **server_env(self.scenario, self.secret)}
        env.pop("REDIS_URL", None)
        self.log_path = data / "server.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "danmaku", "up", "--web-port", "0", "--ws-port", "0"]
        if self.split:
            env["REDIS_URL"] = self._start_redis(data)
            worker = [sys.executable, "-m", "danmaku", "worker", "--log-level", "WARNING"]
            self._others.append(
                subprocess.Popen(worker, stdout=subprocess.DEVNULL, stderr=self._log, env=env)
            )
            cmd = [sys.executable, "-m", "danmaku", "gateway", "--ws-port", "0"]
            cmd += ["--metrics-port", "0"]
        cmd += ["--data-dir", str(data / "data"), "--log-level", "WARNING"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, bufsize=1
        )
        ready = threading.Event()
        seen: list[str] = []
        threading.Thread(target=self._read_stdout, args=(seen, ready), daemon=True).start()
        ready.wait(timeout_s)
        if "websocket" not in self.urls or not any(x.startswith("ready") for x in seen):
            message = "danmaku up did not start:\n" + "\n".join(seen) + self.log_tail()
            self.stop()
            raise RuntimeError(message)
        if not self.split:
            self.redis_pid = self._find_redis()

    def _start_redis(self, data: Path) -> str:
        from danmaku.dev.embedded import spawn_redis

        (data / "redis").mkdir()
        redis, port = spawn_redis(data / "redis", aof=False)
        self._others.append(redis)
        self.redis_pid = redis.pid
        return f"redis://127.0.0.1:{port}/0"

    def _read_stdout(self, seen: list[str], ready: threading.Event) -> None:
        """Collect the printed URLs, set ``ready`` at the ready line (or EOF), then keep
        draining so the server never blocks on a full pipe."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            text = line.strip()
            seen.append(text)
            key, sep, value = text.partition(":")
            if sep and key in ("websocket", "player", "metrics", "redis", "console", "api"):
                self.urls[key] = value.strip()
            if key == "ready":
                ready.set()
        ready.set()

    def _find_redis(self) -> int | None:
        if not self.proc:
            return None
        for child in procstat.children(self.proc.pid):
            if "redis" in procstat.command_name(child):
                return child
        return None

    @property
    def ws_url(self) -> str:
        return self.urls["websocket"]

    @property
    def web_url(self) -> str:
        player = self.urls.get("player", "")
        return player.split("/?", 1)[0] if player else self.urls["metrics"].rsplit("/", 1)[0]

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- server log ---\n" + "\n".join(text) if text else ""

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait, kill if needed; remove the temp dir. Returns the exit code."""
        code: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(5)
        for other in reversed(self._others):  # the worker, then redis-server
            if other.poll() is None:
                other.terminate()
            try:
                other.wait(timeout_s)
            except subprocess.TimeoutExpired:
                other.kill()
        self._others.clear()
        if self._log:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
