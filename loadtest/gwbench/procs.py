"""What every case runs on: its own redis-server, gateway (and worker) processes, the
client processes it speaks to in JSON lines, and small helpers."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from danmaku.dev.embedded import free_port, spawn_redis
from loadtest import procstat

ROOM = "bench"
# Every comment shown (as in the loadtest's steady scenario): what is measured is the
# gateway's delivery, not the display budget's sampling (which carries a comment over to
# the next frame when a tick has more than its share, adding a tick to its latency).
WATCH_ENV = {
    "DANMAKU_RATE_PER_S": "100",
    "DANMAKU_RATE_BURST": "100",
    "DANMAKU_DISPLAY_BUDGET": "100000",
}
SECRET = "gwbench-secret-0123456789abcdef0123456789abcdef"


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Procs:
    """redis-server, the gateway (and optionally a worker) in a temporary directory."""

    def __init__(self, env: dict[str, str], *, worker: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = {
            **os.environ,
            "DANMAKU_SECRET": SECRET,
            "DANMAKU_MAX_CONNS_PER_IP": "0",
            "DANMAKU_MAX_SESSIONS_PER_IP_PER_MIN": "0",
            "DANMAKU_GUEST_SESSIONS_PER_IP_PER_MIN": "0",
            "DANMAKU_METRICS_PORT": "0",
            **env,
        }
        self.want_worker = worker
        self.redis: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[str] | None = None
        self.worker: subprocess.Popen[str] | None = None
        self.extra: list[subprocess.Popen[str]] = []  # more gateways (``add_gateway``)
        self.ws_url = ""
        self.metrics_url = ""  # the gateway's /metrics (DANMAKU_METRICS_PORT=0 below)

    def start(self) -> None:
        self.redis, _ = spawn_redis(
            self.tmp, port=self.redis_port, aof=False, extra=("--maxclients", "1000")
        )
        self.gateway = self._role("gateway")
        assert self.gateway.stdout is not None
        for line in self.gateway.stdout:
            if "websocket:" in line:
                self.ws_url = line.split("websocket:", 1)[1].strip()
            if "metrics:" in line:
                self.metrics_url = line.split("metrics:", 1)[1].strip()
            if "ready:" in line:
                break
        else:
            raise RuntimeError("gateway exited before it was ready")
        if self.want_worker:
            self.worker = self._role("worker")
            assert self.worker.stdout is not None
            for line in self.worker.stdout:
                if "ready:" in line:
                    break

    def _role(self, role: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "danmaku", role, "--redis-url", self.redis_url]
        if role == "gateway":
            cmd += ["--ws-port", "0"]
        cmd += ["--log-level", "WARNING"]
        env = self.env
        if role != "gateway":
            # DANMAKU_PROCESSES (several gateways on one port) is the gateway's alone.
            env = {k: v for k, v in env.items() if k != "DANMAKU_PROCESSES"}
        with open(self.tmp / f"{role}.log", "w") as log:
            return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, text=True)

    def add_gateway(self) -> str:
        """Start one more gateway on the same Redis; return its WebSocket URL."""
        proc = self._role("gateway")
        self.extra.append(proc)
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if "websocket:" in line:
                url = line.split("websocket:", 1)[1].strip()
            if "ready:" in line:
                return url
        raise RuntimeError("the extra gateway exited before it was ready")

    def stop(self) -> None:
        for proc in (*self.extra, self.worker, self.gateway, self.redis):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def gateway_counter(self, name: str, labels: str = "") -> float:
        """A counter's value on the (first) gateway's /metrics: the sample named
        ``name`` (with ``{labels}`` exactly as rendered, if given); 0 when absent."""
        if not self.metrics_url:
            return 0.0
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:
            text = reply.read().decode()
        prefix = f"{name}{{{labels}}} " if labels else f"{name} "
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def sample(self, which: str) -> procstat.ProcSample:
        proc = {"gateway": self.gateway, "redis": self.redis, "worker": self.worker}[which]
        assert proc is not None
        got = procstat.sample(proc.pid)
        if got is None:
            raise RuntimeError(f"{which} is gone")
        if which == "gateway":
            # `--env DANMAKU_PROCESSES=N`: the gateway is a parent of N children on one
            # port; its cost is theirs and its own, summed.
            for pid in procstat.children(proc.pid):
                child = procstat.sample(pid)
                if child is not None:
                    got = procstat.ProcSample(
                        got.cpu_s + child.cpu_s, got.rss_bytes + child.rss_bytes
                    )
        return got


@contextmanager
def running(env: dict[str, str], *, worker: bool = False) -> Iterator[Procs]:
    procs = Procs(env, worker=worker)
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


class Child:
    """A client process of this module (``hold`` / ``send``) spoken to in JSON lines."""

    def __init__(self, args: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.gwbench", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client {self.proc.args!r} exited")
        out: dict[str, Any] = json.loads(line)
        return out

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def settle(procs: Procs, seconds: float = 3.0) -> procstat.ProcSample:
    """Wait until the gateway's RSS stops growing (at most ``seconds``), return it."""
    last = procs.sample("gateway")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = procs.sample("gateway")
        if now.rss_bytes == last.rss_bytes:
            return now
        last = now
    return last


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def py_spy(procs: Procs, args: argparse.Namespace) -> subprocess.Popen[bytes] | None:
    """``--py-spy FILE``: sample the gateway during the measured seconds (raw stacks)."""
    if not args.py_spy or procs.gateway is None:
        return None
    cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(procs.gateway.pid)]
    cmd += ["-d", str(int(args.seconds)), "-r", "200", "-f", "raw", "--gil", "-o", args.py_spy]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def env_of(args: argparse.Namespace) -> dict[str, str]:
    """The case's ``--env K=V`` settings, for the gateway's environment."""
    out = {}
    for item in args.env or ():
        key, _, value = item.partition("=")
        out[key] = value
    return out
