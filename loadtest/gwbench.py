"""Gateway-only measurements for issue 6 (fan-out): idle memory and CPU per connection,
ingest throughput of one gateway process, the reference scenario's latency and frame
writes per CPU-second, a handshake storm, and a gateway catching up after a stall.

Each case starts its own redis-server (temporary directory, free port) and a
``danmaku gateway`` process (plus a ``danmaku worker`` when frames are needed), so the
gateway's CPU and RSS are read from ``/proc`` apart from everything else. Clients run in
child processes of this command (``hold``/``send`` below, the lean client of
``loadtest/wire.py``), never in the gateway's process::

    python -m loadtest.gwbench idle --conns 10000      # RSS and idle CPU per connection
    python -m loadtest.gwbench ingest --senders 400    # comments/s accepted, Redis us/comment
    python -m loadtest.gwbench store --comments 200000 # the same path without WebSockets
    python -m loadtest.gwbench reference               # 5,000 viewers, 200 comments/s
    python -m loadtest.gwbench storm --viewers 1000 --storm 10000
    python -m loadtest.gwbench catchup --stall-s 2   # a 2 s backlog for 5,000 viewers

Senders with ``--rate`` send Poisson arrivals (evenly spaced sends would sit at one phase
of the worker's tick); viewers that only need to be there (``hold --drain``) are emptied
by one loop per process instead of parsing every frame.

Every case prints one JSON object with its figures. ``--env K=V`` passes extra
``DANMAKU_*`` settings to the gateway (e.g. ``--env DANMAKU_FAST_PATH=0``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import trio

from danmaku import auth
from danmaku.embedded import free_port, spawn_redis
from loadtest import procstat
from loadtest.wire import ABNORMAL, Closed, HandshakeFailed, WebSocket

ROOM = "bench"
# Every comment shown (as in the loadtest's steady scenario): what is measured is the
# gateway's delivery, not the display budget's sampling (which carries a comment over to
# the next frame when a tick has more than its share, adding a tick to its latency).
WATCH_ENV = {
    "DANMAKU_RATE_PER_S": "100",
    "DANMAKU_RATE_BURST": "100",
    "DANMAKU_DISPLAY_BUDGET": "100000",
}
DRAIN_EVERY_S = 0.05  # how often a --drain holder empties its viewers' sockets
SECRET = "gwbench-secret-0123456789abcdef0123456789abcdef"


# ---- processes -----------------------------------------------------------------------------
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
            **env,
        }
        self.want_worker = worker
        self.redis: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[str] | None = None
        self.worker: subprocess.Popen[str] | None = None
        self.extra: list[subprocess.Popen[str]] = []  # more gateways (``add_gateway``)
        self.ws_url = ""

    def start(self) -> None:
        self.redis, _ = spawn_redis(
            self.tmp, port=self.redis_port, aof=False, extra=("--maxclients", "1000")
        )
        self.gateway = self._role("gateway")
        assert self.gateway.stdout is not None
        for line in self.gateway.stdout:
            if "websocket:" in line:
                self.ws_url = line.split("websocket:", 1)[1].strip()
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
        with open(self.tmp / f"{role}.log", "w") as log:
            return subprocess.Popen(
                cmd, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True
            )

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

    def sample(self, which: str) -> procstat.ProcSample:
        proc = {"gateway": self.gateway, "redis": self.redis, "worker": self.worker}[which]
        assert proc is not None
        got = procstat.sample(proc.pid)
        if got is None:
            raise RuntimeError(f"{which} is gone")
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


# ---- cases ------------------------------------------------------------------------------
def case_idle(args: argparse.Namespace) -> dict[str, Any]:
    """RSS per idle connection and idle CPU: open ``--conns`` viewers (welcome received),
    read the gateway's RSS, then its CPU over ``--idle-s`` seconds of silence."""
    raise_nofile()
    with running(_env(args)) as procs:
        # one connection first: the room's hub, the store's pools and imports exist
        warm = Child(["hold", procs.ws_url, "1"])
        warm.read()
        base = settle(procs)
        holders, per = [], -(-args.conns // args.holders)
        left = args.conns
        t0 = time.monotonic()
        for _ in range(args.holders):
            n = min(per, left)
            left -= n
            holders.append(Child(["hold", procs.ws_url, str(n), "--concurrency", "256"]))
        ready = [h.read() for h in holders]
        connect_s = time.monotonic() - t0
        loaded = settle(procs, 5.0)
        ok = sum(r["ok"] for r in ready)
        cpu0, t1 = procs.sample("gateway").cpu_s, time.monotonic()
        r0 = procs.sample("redis").cpu_s
        time.sleep(args.idle_s)
        cpu1, t2 = procs.sample("gateway").cpu_s, time.monotonic()
        r1 = procs.sample("redis").cpu_s
        after = procs.sample("gateway")
        for h in [*holders, warm]:
            h.stop()
    return {
        "case": "idle",
        "connections": ok,
        "failed": sum(r["failed"] for r in ready),
        "errors": {k: v for r in ready for k, v in r.items() if k.startswith("error_")},
        "connect_s": round(connect_s, 2),
        "rss_base_mb": round(base.rss_bytes / 2**20, 1),
        "rss_loaded_mb": round(loaded.rss_bytes / 2**20, 1),
        "rss_after_idle_mb": round(after.rss_bytes / 2**20, 1),
        "rss_per_conn_kb": round((loaded.rss_bytes - base.rss_bytes) / max(ok, 1) / 1024, 2),
        "idle_cpu_pct_of_core": round(100 * (cpu1 - cpu0) / (t2 - t1), 3),
        "idle_cpu_pct_per_10k": round(100 * (cpu1 - cpu0) / (t2 - t1) * 10_000 / max(ok, 1), 3),
        "redis_idle_cpu_pct": round(100 * (r1 - r0) / (t2 - t1), 3),
    }


def case_ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Comments/s one gateway accepts into Redis: ``--senders`` connections, each keeping
    ``--window`` comments in flight (pipelined), every user limit set out of the way."""
    raise_nofile()
    env = {
        "DANMAKU_RATE_PER_S": "1000000",
        "DANMAKU_RATE_BURST": "1000000",
        "DANMAKU_MAX_MSGS_PER_S": "1000000",
        "DANMAKU_MAX_MSGS_BURST": "1000000",
        "DANMAKU_INGEST_CEILING": "0",
        "DANMAKU_INGEST_QUEUE": "100000",
        **_env(args),
    }
    with running(env) as procs:
        per = -(-args.senders // args.procs)
        senders = [
            Child(
                [
                    "send",
                    procs.ws_url,
                    str(per),
                    "--window",
                    str(args.window),
                    "--rate",
                    str(args.rate / args.procs),
                    "--rooms",
                    str(args.rooms),
                    "--offset",
                    str(i * per),
                ]
            )
            for i in range(args.procs)
        ]
        for s in senders:
            s.read()
        for s in senders:
            s.ask("go")
        time.sleep(args.warmup_s)
        for s in senders:
            s.ask("mark")
        spy = _py_spy(procs, args)
        g0, r0, t0 = procs.sample("gateway").cpu_s, procs.sample("redis").cpu_s, time.monotonic()
        time.sleep(args.seconds)
        stats = [s.ask("mark") for s in senders]
        g1, r1, t1 = procs.sample("gateway").cpu_s, procs.sample("redis").cpu_s, time.monotonic()
        for s in senders:
            s.stop()
        if spy is not None:
            spy.wait()
    acked = sum(st["acked"] for st in stats)
    errors: dict[str, int] = {}
    for st in stats:
        for k, v in st["errors"].items():
            errors[k] = errors.get(k, 0) + v
    elapsed = t1 - t0
    return {
        "case": "ingest",
        "senders": args.senders,
        "window": args.window,
        "rate": args.rate,
        "rooms": args.rooms,
        "seconds": round(elapsed, 2),
        "accepted_per_s": round(acked / elapsed),
        "errors": errors,
        "gateway_cpu_pct": round(100 * (g1 - g0) / elapsed, 1),
        "gateway_cpu_us_per_comment": round(1e6 * (g1 - g0) / max(acked, 1), 1),
        "redis_cpu_pct": round(100 * (r1 - r0) / elapsed, 1),
        "redis_cpu_us_per_comment": round(1e6 * (r1 - r0) / max(acked, 1), 2),
        "ack_p50_ms": round(pct([x for st in stats for x in st["rtt"]], 0.5), 1),
        "ack_p99_ms": round(pct([x for st in stats for x in st["rtt"]], 0.99), 1),
    }


def case_store(args: argparse.Namespace) -> dict[str, Any]:
    """The gateway's ingest path without WebSockets: ``IngestBatcher`` submissions straight
    into a real Redis (pipelined Lua), as fast as batches complete. Shows what the Redis
    side costs per comment and the ceiling of one process's batcher."""
    with running({}) as procs:
        result = trio.run(_store_bench, procs, args.comments, args.users, args.rooms)
    return result


async def _store_bench(procs: Procs, comments: int, users: int, rooms: int) -> dict[str, Any]:
    from danmaku.gateway.ingest import IngestBatcher, Submission
    from danmaku.gateway.viewer import Viewer
    from danmaku.metrics import Metrics
    from danmaku.store import Ingest, IngestLimits, Store

    metrics = Metrics()
    store = Store(procs.redis_url, metrics)
    limits = IngestLimits(1e6, 1e6, 30.0)
    batcher = IngestBatcher(store, metrics, limits, capacity=comments + 1)

    class Sink(Viewer):
        """Counts acks instead of writing them."""

        def __init__(self) -> None:  # no socket
            self.inflight = 0
            self.acks = 0
            self.all_acked = trio.Event()

        def push_controls(self, texts: Sequence[str]) -> None:  # what the batcher calls
            self.acks += len(texts)
            if self.acks == comments:
                self.all_acked.set()

    sink = Sink()
    subs = []
    for i in range(comments):
        room = f"{ROOM}{i % rooms}"
        uid = f"u{i % users}"
        payload = orjson.dumps({"uid": uid, "nick": uid, "text": f"comment {i}", "ts": 0})
        ing = Ingest(uid, f"n{i}", payload, f"{i:016x}")
        subs.append(Submission(sink, room, f"n{i}", ing, time.monotonic()))
    r0 = procs.sample("redis").cpu_s
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        t0 = time.perf_counter()
        for sub in subs:
            batcher.submit(sub)
        await sink.all_acked.wait()
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    r1 = procs.sample("redis").cpu_s
    store.close()
    return {
        "case": "store",
        "comments": comments,
        "users": users,
        "rooms": rooms,
        "accepted_per_s": round(comments / elapsed),
        "redis_cpu_us_per_comment": round(1e6 * (r1 - r0) / comments, 2),
        "redis_cpu_pct": round(100 * (r1 - r0) / elapsed, 1),
    }


def case_storm(args: argparse.Namespace) -> dict[str, Any]:
    """``--viewers`` connected viewers watch a room that gets ``--rate`` comments/s; then
    ``--storm`` new connections arrive at once. Reports the time until every storm
    handshake completed (welcome received) and the connected viewers' latency (gateway
    receipt of a comment -> viewer receipt of its frame) before and during the storm."""
    raise_nofile()
    env = {**WATCH_ENV, **_env(args)}
    with running(env, worker=True) as procs:
        # --measure of the viewers parse and time every frame; the rest are drained (see
        # case_reference): their sockets get the same writes without 10,000 parses/s in
        # Python competing for the 2 cores with the gateway and the storm.
        rest = args.viewers - args.measure
        per = -(-rest // args.holders) if rest > 0 else 0
        watchers = [Child(["hold", procs.ws_url, str(args.measure), "--latency"])]
        watchers += [
            Child(["hold", procs.ws_url, str(min(per, rest - i * per)), "--drain"])
            for i in range(args.holders)
            if rest - i * per > 0
        ]
        for w in watchers:
            w.read()
        sender = Child(["send", procs.ws_url, "10", "--rate", str(args.rate)])
        sender.read()
        sender.ask("go")
        time.sleep(3)
        for w in watchers:
            w.ask("mark")
        time.sleep(args.quiet_s)
        quiet = [x for w in watchers for x in w.ask("mark")["lat"]]
        g0 = procs.sample("gateway")
        t0 = time.monotonic()
        per = -(-args.storm // args.storm_procs)
        stormers = [
            Child(
                [
                    *("hold", procs.ws_url, str(per), "--concurrency", str(args.concurrency)),
                    *("--room", args.storm_room, "--drain"),
                ]
            )
            for _ in range(args.storm_procs)
        ]
        done = [c.read() for c in stormers]
        storm_s = time.monotonic() - t0
        during = [x for w in watchers for x in w.ask("mark")["lat"]]
        g1 = procs.sample("gateway")
        closed = sum(w.ask("status")["closed"] for w in watchers)
        for c in [*stormers, sender, *watchers]:
            c.stop()
    return {
        "case": "storm",
        "viewers": args.viewers,
        "storm": args.storm,
        "rate": args.rate,
        "storm_room": args.storm_room,
        "storm_s": round(storm_s, 2),
        "storm_ok": sum(d["ok"] for d in done),
        "storm_failed": sum(d["failed"] for d in done),
        "storm_slowest_connect_s": round(max(d["slowest_s"] for d in done), 2),
        "quiet_p50_ms": round(pct(quiet, 0.5), 1),
        "quiet_p99_ms": round(pct(quiet, 0.99), 1),
        "storm_p50_ms": round(pct(during, 0.5), 1),
        "storm_p99_ms": round(pct(during, 0.99), 1),
        "storm_samples": len(during),
        "viewers_closed": closed,
        "gateway_cpu_pct_during_storm": round(100 * (g1.cpu_s - g0.cpu_s) / storm_s, 1),
        "rss_per_storm_conn_kb": round((g1.rss_bytes - g0.rss_bytes) / max(1, args.storm) / 1024),
    }


def case_reference(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 6's reference scenario on one gateway process: ``--viewers`` in one room,
    ``--rate`` comments/s, the worker's 100 ms tick. ``--measure`` of the viewers parse
    every frame and time each comment from its send (the sender writes the time into
    the text); the others are drained by one loop per holder process that reads and
    drops what their sockets received every 50 ms, so 50,000 deliveries/s do not need
    50,000 parses/s in Python on the same 2 cores as the gateway (the generator falling
    behind is what kept ``danmaku-loadtest bench`` from showing this latency). The
    gateway's work per delivery is the same either way: one ``send()`` into the socket."""
    raise_nofile()
    env = {**WATCH_ENV, **_env(args)}
    with running(env, worker=True) as procs:
        rest = args.viewers - args.measure
        per = -(-rest // args.holders)
        holders = [
            Child(["hold", procs.ws_url, str(min(per, rest - i * per)), "--drain"])
            for i in range(args.holders)
        ]
        measured = Child(["hold", procs.ws_url, str(args.measure), "--latency"])
        for h in [*holders, measured]:
            h.read()
        sender = Child(["send", procs.ws_url, str(args.senders), "--rate", str(args.rate)])
        sender.read()
        sender.ask("go")
        time.sleep(args.warmup_s)
        for h in [*holders, measured]:
            h.ask("mark")
        g0, t0 = procs.sample("gateway"), time.monotonic()
        time.sleep(args.seconds)
        got = measured.ask("mark")
        drained = [h.ask("mark") for h in holders]
        g1, t1 = procs.sample("gateway"), time.monotonic()
        closed = sum(h.ask("status")["closed"] for h in [*holders, measured])
        for c in [sender, measured, *holders]:
            c.stop()
    elapsed = t1 - t0
    frames_per_viewer_s = got["frames"] / max(1, args.measure) / elapsed
    writes_per_s = frames_per_viewer_s * args.viewers
    cpu = (g1.cpu_s - g0.cpu_s) / elapsed
    lat = got["lat"]
    return {
        "case": "reference",
        "viewers": args.viewers,
        "measured_viewers": args.measure,
        "rate": args.rate,
        "seconds": round(elapsed, 2),
        "frames_per_viewer_s": round(frames_per_viewer_s, 2),
        "frame_writes_per_s": round(writes_per_s),
        "drained_frames_per_s": round(sum(d["frames"] for d in drained) / elapsed),
        "gateway_cpu_pct": round(100 * cpu, 1),
        "frame_writes_per_cpu_s": round(writes_per_s / cpu) if cpu > 0 else None,
        "p50_ms": round(pct(lat, 0.5), 1),
        "p99_ms": round(pct(lat, 0.99), 1),
        "from_gateway_p50_ms": round(pct(got["lat_gw"], 0.5), 1),
        "from_gateway_p99_ms": round(pct(got["lat_gw"], 0.99), 1),
        "latency_samples": len(lat),
        "viewers_closed": closed,
    }


def case_catchup(args: argparse.Namespace) -> dict[str, Any]:
    """A gateway that fell behind: ``--viewers`` watch a room on one gateway while the
    senders (``--rate`` comments/s) use a second one; the viewers' gateway is stopped
    (SIGSTOP) for ``--stall-s`` while the worker keeps committing frames, then resumed.
    Reports that gateway's CPU over ``--seconds`` in steady state and right after the
    stall (the backlog: ~10 frames per second of stall for every viewer), and the timed
    viewers' latency over both."""
    raise_nofile()
    env = {**WATCH_ENV, **_env(args)}
    with running(env, worker=True) as procs:
        senders_url = procs.add_gateway()
        rest = args.viewers - args.measure
        holders = [Child(["hold", procs.ws_url, str(rest), "--drain"])]
        measured = Child(["hold", procs.ws_url, str(args.measure), "--latency"])
        for h in [*holders, measured]:
            h.read()
        sender = Child(["send", senders_url, str(args.senders), "--rate", str(args.rate)])
        sender.read()
        sender.ask("go")
        time.sleep(args.warmup_s)
        for h in [*holders, measured]:
            h.ask("mark")
        assert procs.gateway is not None
        c0 = procs.sample("gateway").cpu_s
        time.sleep(args.seconds)
        c1 = procs.sample("gateway").cpu_s
        os.kill(procs.gateway.pid, signal.SIGSTOP)
        time.sleep(args.stall_s)
        os.kill(procs.gateway.pid, signal.SIGCONT)
        c2 = procs.sample("gateway").cpu_s
        time.sleep(args.seconds)
        c3 = procs.sample("gateway").cpu_s
        lat = measured.ask("mark")["lat"]
        closed = sum(h.ask("status")["closed"] for h in [*holders, measured])
        for c in [sender, measured, *holders]:
            c.stop()
    return {
        "case": "catchup",
        "viewers": args.viewers,
        "rate": args.rate,
        "stall_s": args.stall_s,
        "gateway_cpu_s_steady": round(c1 - c0, 3),
        "gateway_cpu_s_after_stall": round(c3 - c2, 3),
        "catchup_extra_cpu_s": round((c3 - c2) - (c1 - c0), 3),
        "p99_ms": round(pct(lat, 0.99), 1),
        "max_ms": round(max(lat), 1) if lat else None,
        "viewers_closed": closed,
    }


def _py_spy(procs: Procs, args: argparse.Namespace) -> subprocess.Popen[bytes] | None:
    """``--py-spy FILE``: sample the gateway during the measured seconds (raw stacks)."""
    if not args.py_spy or procs.gateway is None:
        return None
    cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(procs.gateway.pid)]
    cmd += ["-d", str(int(args.seconds)), "-r", "200", "-f", "raw", "--gil", "-o", args.py_spy]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _env(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for item in args.env or ():
        key, _, value = item.partition("=")
        out[key] = value
    return out


# ---- client processes ------------------------------------------------------------------
async def _commands(handler: Any) -> None:
    """Read commands from stdin, answer each with one JSON line; ``quit`` ends."""
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buf = b""
    while True:
        chunk = await stdin.receive_some(4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd = line.decode().strip()
            if cmd == "quit":
                return
            emit(handler(cmd))


def _sent_ms(item: dict[str, Any]) -> float:
    """When the comment was sent: the ``send`` process ends its texts with
    ``time.time_ns()``; else the gateway's receipt time."""
    tail = str(item.get("text", "")).rpartition(" ")[2]
    return int(tail) / 1e6 if tail.isdigit() and len(tail) >= 18 else float(item["ts"])


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def hold(
    url: str, n: int, concurrency: int, latency: bool, room: str = ROOM, drain: bool = False
) -> None:
    """Open ``n`` viewers (each until its welcome), report, keep reading until ``quit``.
    With ``latency``, record comment -> receipt latency of every frame item (from the send
    time the ``send`` process writes into the text). With ``drain``, no task per viewer:
    one loop empties every socket each ``DRAIN_EVERY_S`` without parsing (see
    ``case_reference``)."""
    limiter = trio.CapacityLimiter(concurrency)
    lat: list[float] = []  # from the comment's send
    lat_gw: list[float] = []  # from its receipt at the gateway (the item's ``ts``)
    state: dict[str, Any] = {"ok": 0, "failed": 0, "closed": 0, "slowest_s": 0.0}
    counts = {"frames": 0, "bytes": 0}
    drained: list[WebSocket] = []
    all_done = trio.Event()
    t0 = time.monotonic()

    async def reader(ws: WebSocket) -> None:
        try:
            while True:
                msg = await ws.get_message()
                if latency and msg.startswith('{"type":"frame"'):
                    counts["frames"] += 1
                    now_ms = time.time() * 1000
                    for item in orjson.loads(msg).get("items") or ():
                        lat.append(now_ms - _sent_ms(item))
                        lat_gw.append(now_ms - item["ts"])
        except Closed:
            state["closed"] += 1

    async def one(nursery: trio.Nursery) -> None:
        start = time.monotonic()
        async with limiter:
            try:
                with trio.fail_after(60):
                    ws = await WebSocket.connect(url + f"?room={room}")
                    await ws.get_message()  # welcome
            except (OSError, HandshakeFailed, Closed, trio.TooSlowError) as exc:
                state["failed"] += 1
                kind = f"error_{type(exc).__name__}"
                state[kind] = state.get(kind, 0) + 1
                ws = None
        if ws is not None:
            state["ok"] += 1
            state["slowest_s"] = max(state["slowest_s"], time.monotonic() - start)
            if drain:
                drained.append(ws)
            else:
                nursery.start_soon(reader, ws)
        if state["ok"] + state["failed"] == n:
            all_done.set()

    async def sweep() -> None:
        # What a viewer's kernel receives is read and dropped; the server cannot tell this
        # from a viewer that parses (its writes go into the same socket buffers).
        while True:
            await trio.sleep(DRAIN_EVERY_S)
            for ws in drained:
                if ws.closed is not None:
                    continue
                try:
                    while True:
                        data = os.read(ws.fd, 1 << 18)
                        if not data:
                            ws.closed = ABNORMAL
                            state["closed"] += 1
                            break
                        counts["bytes"] += len(data)
                        counts["frames"] += data.count(b'{"type":"frame"')
                        if len(data) < 1 << 18:
                            break
                except BlockingIOError:
                    pass
                except OSError:
                    ws.closed = ABNORMAL
                    state["closed"] += 1

    def handle(cmd: str) -> dict[str, Any]:
        if cmd == "mark":
            out: dict[str, Any] = {"lat": [round(x, 1) for x in lat]}
            out.update(lat_gw=[round(x, 1) for x in lat_gw], **counts)
            lat.clear()
            lat_gw.clear()
            counts.update(frames=0, bytes=0)
            return out
        return dict(state)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one, nursery)
        await all_done.wait()
        if drain:
            nursery.start_soon(sweep)
        emit({**state, "elapsed_s": time.monotonic() - t0})
        await _commands(handle)
        nursery.cancel_scope.cancel()


async def send(url: str, n: int, window: int, rate: float, rooms: int, offset: int) -> None:
    """``n`` senders (own tokens). After ``go``: with ``rate`` > 0 send that many comments
    per second in all; else keep ``window`` comments in flight per sender (pipelined).
    ``mark`` reports acks, errors and ack round trips since the last mark."""
    stats: dict[str, Any] = {"acked": 0, "errors": {}, "rtt": []}
    rng = random.Random(offset)
    go = trio.Event()
    sockets: list[tuple[WebSocket, int]] = []
    for i in range(n):
        uid = f"s{offset + i}"
        room = f"{ROOM}{(offset + i) % rooms}" if rooms > 1 else ROOM
        token = auth.mint(SECRET, uid=uid, nick=uid, room=room)
        ws = await WebSocket.connect(f"{url}?room={room}&token={token}")
        await ws.get_message()
        sockets.append((ws, offset + i))

    async def sender(ws: WebSocket, idx: int, interval: float) -> None:
        pending: dict[str, float] = {}
        credit = trio.Semaphore(window)
        seq = 0

        async def read_acks() -> None:
            while True:
                msg = orjson.loads(await ws.get_message())
                kind = msg.get("type")
                if kind == "ack":
                    stats["acked"] += 1
                    sent = pending.pop(msg.get("nonce"), None)
                    if sent is not None:
                        stats["rtt"].append(round((time.monotonic() - sent) * 1000, 2))
                    credit.release()
                elif kind == "error":
                    code = msg.get("code", "?")
                    stats["errors"][code] = stats["errors"].get(code, 0) + 1
                    if msg.get("nonce") in pending:
                        pending.pop(msg["nonce"])
                        credit.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_acks)
            await go.wait()
            next_at = trio.current_time()
            while True:
                if interval > 0:
                    # Poisson arrivals: evenly spaced sends would keep a fixed phase to
                    # the worker's tick and every comment would wait the same time for it.
                    next_at += rng.expovariate(1 / interval)
                    await trio.sleep_until(next_at)
                await credit.acquire()
                seq += 1
                nonce = f"{idx}-{seq}"
                pending[nonce] = time.monotonic()
                text = f"c{idx} {seq} {time.time_ns()}"
                body = orjson.dumps({"type": "comment", "text": text, "nonce": nonce})
                await ws.send_message(body.decode())

    def handle(cmd: str) -> dict[str, Any]:
        if cmd == "go":
            go.set()
            return {"go": True}
        out = {"acked": stats["acked"], "errors": stats["errors"], "rtt": stats["rtt"][-20000:]}
        stats.update(acked=0, errors={}, rtt=[])
        return out

    interval = n / rate if rate > 0 else 0.0
    if interval > 0:
        window = 10**6
    try:
        async with trio.open_nursery() as nursery:
            for ws, idx in sockets:
                nursery.start_soon(sender, ws, idx, interval)
            emit({"ready": len(sockets)})
            await _commands(handle)
            nursery.cancel_scope.cancel()
    except* Closed as group:
        emit({"error": f"sender closed: {group.exceptions[0]}"})


# ---- command line -------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.gwbench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    idle = sub.add_parser("idle", help="RSS and idle CPU per connection")
    idle.add_argument("--conns", type=int, default=10_000)
    idle.add_argument("--holders", type=int, default=2, help="client processes")
    idle.add_argument("--idle-s", type=float, default=30.0)
    ing = sub.add_parser("ingest", help="comments/s one gateway accepts into Redis")
    ing.add_argument("--senders", type=int, default=400)
    ing.add_argument("--procs", type=int, default=1, help="sender processes")
    ing.add_argument("--window", type=int, default=32, help="comments in flight per sender")
    ing.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="comments/s in all, spread evenly over the senders (each comment its own"
        " read and its own ack write, as from real viewers); 0: as fast as --window allows",
    )
    ing.add_argument("--rooms", type=int, default=1)
    ing.add_argument("--seconds", type=float, default=10.0)
    ing.add_argument("--warmup-s", type=float, default=3.0)
    ing.add_argument("--py-spy", metavar="FILE", help="profile the gateway (raw stacks)")
    st = sub.add_parser("store", help="the ingest path without WebSockets")
    st.add_argument("--comments", type=int, default=200_000)
    st.add_argument("--users", type=int, default=10_000)
    st.add_argument("--rooms", type=int, default=1)
    ref = sub.add_parser("reference", help="issue 6's reference scenario: latency, writes/CPU-s")
    ref.add_argument("--viewers", type=int, default=5000)
    ref.add_argument("--measure", type=int, default=100, help="viewers that parse and time")
    ref.add_argument("--holders", type=int, default=1, help="processes draining the rest")
    ref.add_argument("--rate", type=float, default=200.0, help="comments/s")
    ref.add_argument("--senders", type=int, default=20, help="10 comments/s each at 200/s")
    ref.add_argument("--seconds", type=float, default=20.0)
    ref.add_argument("--warmup-s", type=float, default=5.0)
    storm = sub.add_parser("storm", help="a handshake storm while viewers watch")
    storm.add_argument("--viewers", type=int, default=1000)
    storm.add_argument("--holders", type=int, default=1, help="processes draining viewers")
    storm.add_argument("--measure", type=int, default=100, help="viewers that parse and time")
    storm.add_argument("--rate", type=float, default=50.0, help="comments/s during the run")
    storm.add_argument("--storm", type=int, default=10_000)
    storm.add_argument("--storm-procs", type=int, default=1)
    storm.add_argument("--concurrency", type=int, default=1000, help="connects at once")
    storm.add_argument("--quiet-s", type=float, default=10.0)
    storm.add_argument(
        "--storm-room",
        default=ROOM,
        help="room the storm joins (default: the watched one, whose fan-out then grows)",
    )
    cu = sub.add_parser("catchup", help="a gateway stalled, then catching up")
    cu.add_argument("--viewers", type=int, default=5000)
    cu.add_argument("--measure", type=int, default=100, help="viewers that parse and time")
    cu.add_argument("--rate", type=float, default=200.0, help="comments/s")
    cu.add_argument("--senders", type=int, default=20)
    cu.add_argument("--stall-s", type=float, default=2.0)
    cu.add_argument("--seconds", type=float, default=3.0, help="CPU window before, after")
    cu.add_argument("--warmup-s", type=float, default=5.0)
    for q in (idle, ing, st, ref, storm, cu):
        q.add_argument("--env", action="append", help="K=V for the gateway (repeatable)")
        q.add_argument("--repeat", type=int, default=1)
    h = sub.add_parser("hold", help="(internal) a process of viewers")
    h.add_argument("url")
    h.add_argument("n", type=int)
    h.add_argument("--concurrency", type=int, default=256)
    h.add_argument("--latency", action="store_true")
    h.add_argument("--room", default=ROOM)
    h.add_argument("--drain", action="store_true", help="one sweep loop, no parsing")
    s = sub.add_parser("send", help="(internal) a process of senders")
    s.add_argument("url")
    s.add_argument("n", type=int)
    s.add_argument("--window", type=int, default=32)
    s.add_argument("--rate", type=float, default=0.0)
    s.add_argument("--rooms", type=int, default=1)
    s.add_argument("--offset", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "hold":
        raise_nofile()
        trio.run(hold, args.url, args.n, args.concurrency, args.latency, args.room, args.drain)
        return 0
    if args.cmd == "send":
        raise_nofile()
        trio.run(send, args.url, args.n, args.window, args.rate, args.rooms, args.offset)
        return 0
    case = {
        "idle": case_idle,
        "ingest": case_ingest,
        "store": case_store,
        "reference": case_reference,
        "storm": case_storm,
        "catchup": case_catchup,
    }
    for _ in range(args.repeat):
        result = case[args.cmd](args)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
