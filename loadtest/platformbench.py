"""Benchmarks of the platform integration (issue 24).

``python -m loadtest.platformbench publish [--seconds 8] [--conns 16] [--batch 1]``:
a redis-server and one ``danmaku web`` process; ``--conns`` concurrent clients POST paid
messages with an API key (single messages to ``/api/rooms/{room}/messages`` over 10 rooms,
or ``--batch N`` messages a request to ``/api/messages``) for ``--seconds``. Reports
messages/s per web process and CPU per 1,000 messages of the web process and of Redis.
The client runs on the same machine: on a small one it competes for the cores.

``python -m loadtest.platformbench receiver --port P``: a webhook receiver (answers 200,
counts events) to pair runs with webhooks on and off, e.g.
``danmaku-loadtest local steady --set server.webhook_urls='"http://127.0.0.1:P/"'
--set server.webhook_secret='"whsec-bench"'`` against the same run without them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import trio

from danmaku.auth import new_secret
from loadtest import procstat

KEY = "bench-key-0123456789abcdef"


def _start_web(data: Path) -> tuple[list[subprocess.Popen[Any]], str, int]:
    from danmaku.dev.embedded import spawn_redis

    (data / "redis").mkdir()
    redis, port = spawn_redis(data / "redis", aof=False)
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "DANMAKU_SECRET": new_secret(),
        "DANMAKU_API_KEYS": KEY,
        "DANMAKU_PUBLISH_RATE_PER_S": "0",
    }
    cmd = [sys.executable, "-m", "danmaku", "web", "--web-port", "0", "--log-level", "WARNING"]
    web = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert web.stdout is not None
    url = ""
    for line in web.stdout:
        name, _, value = line.strip().partition(": ")
        if name == "player":
            url = value
        if name.startswith("ready"):
            break
    if not url:
        web.terminate()
        redis.terminate()
        raise RuntimeError("danmaku web did not print its URL")
    # Keep reading what it prints (its stop message), or it fails on a closed pipe.
    threading.Thread(target=web.stdout.read, daemon=True).start()
    base = url.split("/?")[0].rstrip("/")
    return [web, redis], base, redis.pid


async def _drive(base: str, seconds: float, conns: int, batch: int) -> tuple[int, int]:
    sent = [0, 0]  # messages, requests
    headers = {"Authorization": f"Bearer {KEY}"}
    deadline = trio.current_time() + seconds

    async def client(c: int) -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            k = 0
            while trio.current_time() < deadline:
                k += 1
                msg = {"kind": "paid", "uid": f"u{c}", "nick": "Fan", "amount": 5}
                msg |= {"currency": "USD", "text": "thanks"}
                if batch <= 1:
                    room = f"bench{(c + k) % 10}"
                    reply = await http.post(
                        f"/api/rooms/{room}/messages", json=msg | {"id": f"{c}-{k}"}
                    )
                else:
                    many = [
                        msg | {"room": f"bench{i % 10}", "id": f"{c}-{k}-{i}"} for i in range(batch)
                    ]
                    reply = await http.post("/api/messages", json={"messages": many})
                if reply.status_code >= 300:
                    raise RuntimeError(f"publish: HTTP {reply.status_code}: {reply.text[:200]}")
                sent[0] += max(1, batch)
                sent[1] += 1

    async with trio.open_nursery() as nursery:
        for c in range(conns):
            nursery.start_soon(client, c)
    return sent[0], sent[1]


def publish(seconds: float, conns: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="danmaku-platformbench-") as tmp:
        procs, base, redis_pid = _start_web(Path(tmp))
        try:
            web_pid = procs[0].pid
            trio.run(_drive, base, 1.0, 2, batch)  # warm up: connections, scripts loaded
            w0, r0, t0 = procstat.sample(web_pid), procstat.sample(redis_pid), time.monotonic()
            messages, requests = trio.run(_drive, base, seconds, conns, batch)
            w1, r1, t1 = procstat.sample(web_pid), procstat.sample(redis_pid), time.monotonic()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
    assert w0 and w1 and r0 and r1
    elapsed = t1 - t0
    return {
        "batch": batch,
        "conns": conns,
        "messages_per_s": round(messages / elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
        "web_cpu_ms_per_1000": round((w1.cpu_s - w0.cpu_s) * 1e6 / messages, 1),
        "redis_cpu_ms_per_1000": round((r1.cpu_s - r0.cpu_s) * 1e6 / messages, 1),
        "web_cpu_share": round((w1.cpu_s - w0.cpu_s) / elapsed, 2),
    }


def receiver(port: int) -> None:
    count = [0, 0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            count[0] += 1
            count[1] += len(json.loads(body).get("events", []))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"receiver on {url} (prints its totals)", flush=True)
    last = [0, 0]
    try:
        while True:  # the totals, each second they changed
            time.sleep(1)
            if count != last:
                last = list(count)
                print(json.dumps({"requests": count[0], "events": count[1]}), flush=True)
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.platformbench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    pub = sub.add_parser("publish", help="server API publish throughput")
    pub.add_argument("--seconds", type=float, default=8.0)
    pub.add_argument("--conns", type=int, default=16)
    pub.add_argument("--batch", type=int, default=1, help="messages per request (1: single)")
    rec = sub.add_parser("receiver", help="a webhook receiver that answers 200")
    rec.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "publish":
        print(json.dumps(publish(args.seconds, args.conns, args.batch)))
    else:
        receiver(args.port)


if __name__ == "__main__":
    main()
