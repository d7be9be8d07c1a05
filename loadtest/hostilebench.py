"""Hostile-client benchmarks (issue 18): what an attack costs a ``danmaku up`` process.

``python -m loadtest.hostilebench bare --conns 20000 --seconds 10``
    A child process opens ``--conns`` bare TCP connections to the gateway and keeps that
    many open (re-opening what the server closes), sending nothing. Meanwhile this
    process asks the web app's ``/healthz`` every 50 ms: latency percentiles, failures,
    and the process's CPU. ``--env K=V`` sets the system's environment (e.g.
    ``DANMAKU_MAX_CONNS_PER_IP=0`` to hold every connection until the handshake timeout).

``python -m loadtest.hostilebench pings --seconds 5``
    One attacker sends WebSocket pings as fast as it can on one connection, re-connecting
    whenever it is closed: the process's CPU share, pongs received, connections used.

Both start their own redis-server and a ``danmaku up --redis-url`` (web app, gateway,
worker in one process, as a small deployment runs) and print one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from danmaku.dev.embedded import spawn_redis
from loadtest import procstat
from loadtest.gwbench.procs import SECRET, pct, raise_nofile

UPGRADE = (
    b"GET /ws?room=pings HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PING = bytes((0x89, 0x80)) + b"\x00\x00\x00\x00"  # a masked, empty ping (mask of zeros)


def start_up(
    env: dict[str, str],
) -> tuple[subprocess.Popen[str], subprocess.Popen[bytes], int, int]:
    """redis-server and ``danmaku up`` on it; returns both processes and the web and
    WebSocket ports."""
    tmp = Path(tempfile.mkdtemp(prefix="hostilebench-"))
    redis, port = spawn_redis(tmp, aof=False)
    full_env = {**os.environ, "DANMAKU_SECRET": SECRET, "DANMAKU_DATA_DIR": str(tmp), **env}
    cmd = [sys.executable, "-m", "danmaku", "up", "--redis-url", f"redis://127.0.0.1:{port}/0"]
    cmd += ["--web-port", "0", "--ws-port", "0", "--log-level", "ERROR"]
    up = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, text=True)
    assert up.stdout is not None
    urls = {}
    for line in up.stdout:
        name, _, url = line.strip().partition(": ")
        urls[name] = url
        if name == "ready":
            break
    web = int(urls["player"].split(":")[2].split("/")[0])
    ws = int(urls["websocket"].rsplit(":", 1)[1].split("/")[0])
    return up, redis, web, ws


def stop(*procs: subprocess.Popen[Any]) -> None:
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def healthz_ms(port: int) -> float | None:
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
    except OSError:
        return None
    return (time.perf_counter() - started) * 1000 if ok else None


def server_refusals(port: int) -> dict[str, float]:
    """The web app's ``danmaku_handshakes_rejected_total`` by reason (non-zero ones)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("danmaku_handshakes_rejected_total{"):
            reason = line.split('"')[1]
            value = float(line.rsplit(" ", 1)[1])
            if value:
                out[reason] = value
    return out


def bare(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    up, redis, web, ws = start_up(dict(kv.split("=", 1) for kv in args.env or ()))
    try:
        baseline = [healthz_ms(web) for _ in range(20)]
        attacker = subprocess.Popen(
            [
                *(sys.executable, "-m", "loadtest.hostilebench", "attack-bare"),
                *("--port", str(ws), "--conns", str(args.conns), "--seconds", str(args.seconds)),
                *("--rate", str(args.rate)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        before = procstat.sample(up.pid)
        lat: list[float] = []
        failed = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            got = healthz_ms(web)
            if got is None:
                failed += 1
            else:
                lat.append(got)
            time.sleep(0.05)
        after = procstat.sample(up.pid)
        refused = server_refusals(web)
        assert attacker.stdout is not None
        attack = json.loads(attacker.stdout.readline() or "{}")
        attacker.wait(30)
        alive = up.poll() is None
    finally:
        stop(up, redis)
    assert before is not None and after is not None
    quiet = [b for b in baseline if b is not None]
    return {
        "case": "bare",
        "conns": args.conns,
        "env": args.env or [],
        "process_alive": alive,
        "healthz_quiet_p50_ms": round(pct(quiet, 0.5), 2),
        "healthz_p50_ms": round(pct(lat, 0.5), 2),
        "healthz_p99_ms": round(pct(lat, 0.99), 2),
        "healthz_max_ms": round(max(lat, default=float("nan")), 2),
        "healthz_failed": failed,
        "healthz_answered": len(lat),
        "cpu_share": round((after.cpu_s - before.cpu_s) / args.seconds, 3),
        "server_refused": refused,
        **attack,
    }


async def _attack_bare(port: int, conns: int, seconds: float, rate: float) -> dict[str, Any]:
    opened = refused_fast = held_peak = 0
    held = 0

    async def one() -> None:
        nonlocal opened, refused_fast, held, held_peak
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            opened += 1
            held += 1
            held_peak = max(held_peak, held)
            t0 = trio.current_time()
            try:
                while await stream.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass
            held -= 1
            if trio.current_time() - t0 < 1.0:
                refused_fast += 1
            await stream.aclose()

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            # At a steady pace (the kernel's listen backlog holds 4,096 by default: a
            # faster attacker only measures its own SYN retries).
            for _ in range(conns):
                nursery.start_soon(one)
                await trio.sleep(1 / rate)
    return {
        "attack_opened": opened,
        "attack_closed_within_1s": refused_fast,
        "held_peak": held_peak,
    }


def pings(args: argparse.Namespace) -> dict[str, Any]:
    up, redis, _web, ws = start_up(dict(kv.split("=", 1) for kv in args.env or ()))
    try:
        before = procstat.sample(up.pid)
        result = trio.run(_attack_pings, ws, args.seconds)
        after = procstat.sample(up.pid)
        alive = up.poll() is None
    finally:
        stop(up, redis)
    assert before is not None and after is not None
    return {
        "case": "pings",
        "process_alive": alive,
        "cpu_share": round((after.cpu_s - before.cpu_s) / args.seconds, 3),
        **result,
    }


async def _attack_pings(port: int, seconds: float) -> dict[str, Any]:
    burst = PING * 256
    sent = connections = received = 0
    with trio.move_on_after(seconds):
        while True:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            connections += 1
            await stream.send_all(UPGRADE)
            got = b""
            while b"\r\n\r\n" not in got:
                got += await stream.receive_some(65536)

            async def drain(stream: trio.SocketStream = stream) -> None:
                nonlocal received
                try:
                    while data := await stream.receive_some(65536):
                        received += data.count(b"\x8a\x00")  # empty pongs
                except trio.BrokenResourceError:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                try:
                    while True:
                        await stream.send_all(burst)
                        sent += 256
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()
            await stream.aclose()
    return {"pings_sent": sent, "pongs_received": received, "connections": connections}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.hostilebench")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bare", help="bare TCP connections; /healthz latency meanwhile")
    b.add_argument("--conns", type=int, default=20_000)
    b.add_argument("--seconds", type=float, default=20.0)
    b.add_argument("--rate", type=float, default=2000.0, help="new connections per second")
    b.add_argument("--env", action="append", help="K=V for the system (repeatable)")
    p = sub.add_parser("pings", help="one connection's ping flood: CPU")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--env", action="append", help="K=V for the system (repeatable)")
    a = sub.add_parser("attack-bare", help="(internal) the bare-connection attacker")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--conns", type=int, required=True)
    a.add_argument("--seconds", type=float, required=True)
    a.add_argument("--rate", type=float, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "attack-bare":
        raise_nofile()
        out = trio.run(_attack_bare, args.port, args.conns, args.seconds, args.rate)
    else:
        out = bare(args) if args.cmd == "bare" else pings(args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
