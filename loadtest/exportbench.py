"""Replay exports under load: ``python -m loadtest.exportbench``.

Against a running system (``danmaku up --redis-url URL``, web and gateway in one
process): writes a broadcast of ``--comments`` recorded comments straight into Redis
(``write_recording``: what the worker records, with offsets up to 3 s out of id order,
as gateways' clocks make them), then starts ``--concurrent`` exports at once (JSON, XML,
ASS in turn; each client reads and discards) while a viewer on the gateway sends a
WebSocket ping every 50 ms, and prints one JSON line: the server's RSS before and at its
peak (``--pid``, sampled every 20 ms from /proc), the ping RTT percentiles and maximum
during the exports, each export's status, size and time. Figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import redis
import trio
import trio_websocket

from danmaku.metrics import Metrics
from danmaku.store import Store, keys

MODES = ("scroll", "scroll", "scroll", "top", "bottom")


def write_recording(
    url: str, room: str, broadcast_id: str, start_ms: int, n: int, *, seed: int = 1
) -> None:
    """``n`` recorded comments of a broadcast that started at ``start_ms``, 12 ms
    apart (an hour for 300,000), pipelined 5,000 at a time; each comment's offset lags
    its id by 0-3 s (gateway clock vs Redis clock), so the stream is not in offset
    order."""
    rng = random.Random(seed)
    r = redis.Redis.from_url(url)
    rec = keys.recording(room, broadcast_id)
    try:
        for base in range(0, n, 5000):
            pipe = r.pipeline(transaction=False)
            for k in range(base, min(n, base + 5000)):
                id_ms = start_ms + 3000 + 12 * k
                ts = id_ms - rng.randint(0, 3000)
                uid = f"u{rng.randrange(5000)}"
                item = {
                    "uid": uid,
                    "nick": f"viewer {uid}",
                    "text": f"comment {k} 666 这波 <ok> & {{fine}}",
                    "color": "#ffffff" if k % 10 else "#ff8800",
                    "mode": MODES[k % len(MODES)],
                    "prio": 0,
                    "ts": ts,
                    "offset_ms": ts - start_ms,
                }
                pipe.xadd(rec, {"d": orjson.dumps(item)}, id=f"{id_ms}-0")
            pipe.execute()
    finally:
        r.close()


async def make_broadcast(url: str, room: str, n: int, title: str = "bench") -> str:
    """A finished broadcast of ``n`` comments in ``room``; returns its id."""
    store = Store(url, Metrics(process=False))
    try:
        meta = await store.replay.start_broadcast(room, title, by="bench")
        await trio.to_thread.run_sync(write_recording, url, room, meta["id"], meta["start"], n)
        await store.replay.end_broadcast(room, meta["id"], by="bench")
        return str(meta["id"])
    finally:
        store.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def download(url: str) -> dict[str, Any]:
    """GET ``url``, reading and discarding the body; status, bytes, seconds."""
    start = time.perf_counter()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=600) as resp:
            status = resp.status
            while chunk := resp.read(1 << 16):
                size += len(chunk)
    except urllib.error.HTTPError as exc:
        status = exc.code
    return {"status": status, "bytes": size, "s": round(time.perf_counter() - start, 2)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    room = args.room
    bid = args.broadcast or await make_broadcast(args.redis_url, room, args.comments)
    base = f"{args.web.rstrip('/')}/api/rooms/{room}/broadcasts/{bid}/danmaku?format="
    formats = [("json", "xml", "ass")[i % 3] for i in range(args.concurrent)]
    rtts: list[float] = []
    rss: list[int] = []
    results: list[dict[str, Any]] = []
    rss_before = rss_kb(args.pid) if args.pid else 0
    async with trio_websocket.open_websocket_url(f"{args.ws.rstrip('/')}/ws?room={room}") as ws:
        await ws.get_message()  # welcome
        done = trio.Event()

        async def pinger() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await ws.ping()
                rtts.append((time.perf_counter() - start) * 1000)
                await trio.sleep(0.05)

        async def sampler() -> None:
            while not done.is_set():
                if args.pid:
                    rss.append(rss_kb(args.pid))
                await trio.sleep(0.02)

        async def one(fmt: str) -> None:
            results.append({"format": fmt} | await trio.to_thread.run_sync(download, base + fmt))

        async with trio.open_nursery() as n:
            n.start_soon(pinger)
            n.start_soon(sampler)
            await trio.sleep(0.5)  # a baseline of pings
            baseline = list(rtts)
            async with trio.open_nursery() as downloads:
                for fmt in formats:
                    downloads.start_soon(one, fmt)
            done.set()
    during = sorted(rtts[len(baseline) :]) or [0.0]
    return {
        "broadcast": bid,
        "comments": args.comments,
        "concurrent": args.concurrent,
        "exports": results,
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_peak_mb": round(max(rss, default=0) / 1024, 1),
        "ping_rtt_ms_idle_max": round(max(baseline, default=0.0), 1),
        "ping_rtt_ms_p50": round(during[len(during) // 2], 1),
        "ping_rtt_ms_p99": round(during[int(len(during) * 0.99)], 1),
        "ping_rtt_ms_max": round(during[-1], 1),
        "pings": len(during),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--redis-url", required=True, help="the system's Redis")
    p.add_argument("--web", default="http://127.0.0.1:8080", help="the web app's URL")
    p.add_argument("--ws", default="ws://127.0.0.1:8081", help="the gateway's URL")
    p.add_argument("--pid", type=int, default=0, help="the server's pid, for its RSS")
    p.add_argument("--room", default="exportbench")
    p.add_argument("--comments", type=int, default=300_000)
    p.add_argument("--concurrent", type=int, default=3)
    p.add_argument("--broadcast", default="", help="reuse this broadcast instead of writing one")
    print(json.dumps(trio.run(bench, p.parse_args())), flush=True)


if __name__ == "__main__":
    main()
