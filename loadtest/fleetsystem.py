"""``FleetSystem``: a whole deployment on loopback for ``danmaku-loadtest fleet``: one
redis-server, ``workers`` ``danmaku worker`` processes, ``gateways`` ``danmaku gateway``
processes on ports of their own (each announcing its own
``DANMAKU_GATEWAY_PUBLIC_URL`` in the gateway registry) and one ``danmaku web``.

Every process is its own, so its CPU is read from ``/proc`` apart from the others'
(``procstat``) and each gateway and worker serves its own ``/metrics``. ``start``
returns once every process printed ``ready`` and the web app routes to every gateway;
it raises ``RuntimeError`` with the failing process's output otherwise (after stopping
what it started). ``stop`` sends SIGTERM to all, waits, then kills what is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from danmaku.dev.embedded import free_port, spawn_redis

START_TIMEOUT_S = 60.0  # a loaded 2-core machine imports a dozen Pythons slowly


@dataclass
class Role:
    """One danmaku process and the URLs it printed (``metrics``, ``websocket``, ...)."""

    name: str  # gw0, worker1, web
    kind: str  # gateway, worker, web
    proc: subprocess.Popen[str]
    urls: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    public_url: str = ""  # a gateway's announced URL

    def read(self) -> None:
        """Collect ``name: value`` lines until ``ready`` (then keep draining the pipe)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            text = line.strip()
            self.lines.append(text)
            key, sep, value = text.partition(":")
            if sep and key.strip() and " " not in key.strip():
                self.urls.setdefault(key.strip(), value.strip())
            if key.strip() == "ready":
                self.ready.set()
        self.ready.set()


class FleetSystem:
    """The fleet's processes; ``env`` is the ``DANMAKU_*`` environment of every role."""

    def __init__(self, gateways: int, workers: int, env: dict[str, str]) -> None:
        self.n_gateways = gateways
        self.n_workers = workers
        self.env = env
        self.roles: list[Role] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[str] | None = None

    @property
    def gateways(self) -> list[Role]:
        return [r for r in self.roles if r.kind == "gateway"]

    @property
    def workers(self) -> list[Role]:
        return [r for r in self.roles if r.kind == "worker"]

    @property
    def web(self) -> Role:
        return next(r for r in self.roles if r.kind == "web")

    @property
    def web_url(self) -> str:
        return self.web.urls["metrics"].rsplit("/", 1)[0]

    @property
    def gateway_urls(self) -> tuple[str, ...]:
        return tuple(r.public_url for r in self.gateways)

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="danmaku-fleet-")
        data = Path(self._tmp.name)
        (data / "redis").mkdir()
        self._log = open(data / "fleet.log", "w")  # noqa: SIM115 - closed in stop()
        try:
            self.redis, port = spawn_redis(data / "redis", aof=False)
            self.redis_url = f"redis://127.0.0.1:{port}/0"
            exe = [sys.executable, "-m", "danmaku"]
            common = ["--log-level", "WARNING"]
            urls = []
            for i in range(self.n_gateways):
                ws_port = free_port()
                url = f"ws://127.0.0.1:{ws_port}/ws"
                urls.append(url)
                cmd = [*exe, "gateway", "--ws-host", "127.0.0.1", "--ws-port", str(ws_port)]
                cmd += ["--metrics-port", "0", "--instance-id", f"gw{i}", *common]
                role = self._spawn(f"gw{i}", "gateway", cmd, {"DANMAKU_GATEWAY_PUBLIC_URL": url})
                role.public_url = url
            for i in range(self.n_workers):
                cmd = [*exe, "worker", "--metrics-port", "0", "--instance-id", f"worker{i}"]
                self._spawn(f"worker{i}", "worker", [*cmd, *common], {})
            # The web app's fallback (no gateway registered): any gateway serves any room.
            web = [*exe, "web", "--web-host", "127.0.0.1", "--web-port", "0", *common]
            self._spawn("web", "web", web, {"DANMAKU_PUBLIC_WS_URL": ",".join(urls)})
            deadline = time.monotonic() + START_TIMEOUT_S
            for role in self.roles:
                role.ready.wait(max(0.1, deadline - time.monotonic()))
                if role.proc.poll() is not None or not any(
                    x.startswith("ready") for x in role.lines
                ):
                    raise RuntimeError(
                        f"fleet: {role.name} did not start:\n"
                        + "\n".join(role.lines)
                        + "\n--- log ---\n"
                        + self.log_tail()
                    )
            self._wait_routed(deadline)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, kind: str, cmd: list[str], extra: dict[str, str]) -> Role:
        env = {**os.environ, **self.env, **extra, "REDIS_URL": self.redis_url}
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, bufsize=1
        )
        role = Role(name, kind, proc)
        threading.Thread(target=role.read, daemon=True).start()
        self.roles.append(role)
        return role

    def _wait_routed(self, deadline: float) -> None:
        """Until the web app's answer for a room lists every gateway (all announced)."""
        want = set(self.gateway_urls)
        seen: set[str] = set()
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"{self.web_url}/api/rooms/fleet/gateway", timeout=5
                ) as r:
                    seen = set(json.loads(r.read())["urls"])
            except (OSError, ValueError, KeyError):
                seen = set()
            if want <= seen:
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"fleet: the web app routes to {len(seen & want)} of {len(want)} gateways"
        )

    def pids(self, kind: str) -> list[int]:
        return [r.proc.pid for r in self.roles if r.kind == kind]

    def log_tail(self, lines: int = 20) -> str:
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "fleet.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return "\n".join(text)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM everything (gateways drain), wait, kill what is left; idempotent."""
        procs: list[Any] = [r.proc for r in self.roles]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout_s
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.roles.clear()
        if self.redis is not None:
            if self.redis.poll() is None:
                self.redis.terminate()
            try:
                self.redis.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.redis.kill()
            self.redis = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FleetSystem:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
