"""Redis commands of the frame feed with many gateways: who reads what.

``python loadtest/noticebench.py [--gateways 8] [--rooms 400] [--rate 20] [--seconds 10]``

Starts a private redis-server, one worker and ``--gateways`` gateways in this process,
one connection per room (each room's on one gateway, as room-affine routing places
them; the connection both watches and comments), and sends ``--rate`` comments/s spread
over the rooms. After a warm-up it reads Redis's command counters, runs ``--seconds``,
and prints the commands per second by name plus the gateways' frame reads. It counts
commands, not time, so a busy machine hardly moves the figures; run it on two checkouts
(``PYTHONPATH=<other checkout>``) for a before/after pair.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import redis
import trio
from trio_websocket import open_websocket_url

from danmaku import auth
from danmaku.config import Settings
from danmaku.dev.embedded import run_redis
from danmaku.metrics import Metrics
from danmaku.system import System, run_system

SECRET = "noticebench-secret-noticebench-secret"


async def bench(gateways: int, rooms: int, rate: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(run_redis, Path(tmp) / "redis")
            settings = Settings(
                redis_url=url,
                secret=SECRET,
                data_dir=str(Path(tmp) / "data"),
                web_port=0,
                ws_port=0,
                max_conns_per_ip=0,
                max_sessions_per_ip_per_min=0,
                rate_per_s=10_000.0,
                rate_burst=10_000.0,
                duplicate_window_s=0.0,
                display_budget=100_000.0,
                ingest_ceiling=0.0,
                max_msgs_per_s=0.0,
            )

            async def start(roles: tuple[str, ...]) -> System:
                system: System = await nursery.start(
                    partial(run_system, settings, roles, metrics=Metrics(process=False))
                )
                return system

            await start(("worker",))
            gws = [await start(("gateway",)) for _ in range(gateways)]
            conns = []
            for i in range(rooms):
                port = gws[i % gateways].ws_port
                tok = auth.mint(SECRET, uid=f"u{i}", nick=f"n{i}", role="viewer")
                ws = await nursery.start(
                    _connect, f"ws://127.0.0.1:{port}/ws?room=r{i}&token={tok}"
                )
                conns.append(ws)
            nursery.start_soon(_send, conns, rate)
            await trio.sleep(5)  # warm-up: every room registered, fresh polls over
            r = redis.Redis.from_url(url)
            before = r.info("commandstats")
            frames0 = [g.metrics.frames_received._value.get() for g in gws]
            feed0 = [_feed_calls(g.metrics) for g in gws]
            await trio.sleep(seconds)
            stats = r.info("commandstats")
            frames = [
                g.metrics.frames_received._value.get() - f
                for g, f in zip(gws, frames0, strict=True)
            ]
            feed = [_feed_calls(g.metrics) - c for g, c in zip(gws, feed0, strict=True)]
            r.close()
            nursery.cancel_scope.cancel()
    calls = {
        k.removeprefix("cmdstat_"): (v["calls"] - before.get(k, {}).get("calls", 0)) / seconds
        for k, v in stats.items()
    }
    return {
        "calls_per_s": calls,
        "frames_per_gateway_s": sum(frames) / gateways / seconds,
        "feed_calls_per_gateway_s": sum(feed) / gateways / seconds,
    }


# The frame feed's store calls (each one round trip): waits and reads, and registrations.
FEED_OPS = ("wait_ticks", "wait_notices", "read_events", "notices_hold")


def _feed_calls(metrics: Metrics) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        if family.name != "danmaku_redis_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("op") in FEED_OPS:
                total += sample.value
    return total


async def _connect(url: str, *, task_status: trio.TaskStatus[Any]) -> None:
    async with open_websocket_url(url) as ws:
        await ws.get_message()  # welcome
        task_status.started(ws)
        while True:
            await ws.get_message()


async def _send(conns: list[Any], rate: float) -> None:
    rng = random.Random(1)
    k = 0
    while True:
        k += 1
        ws = rng.choice(conns)
        await ws.send_message(
            orjson.dumps({"type": "comment", "text": f"c{k}", "nonce": str(k)}).decode()
        )
        await trio.sleep(1 / rate)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateways", type=int, default=8)
    p.add_argument("--rooms", type=int, default=400)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    out = trio.run(bench, a.gateways, a.rooms, a.rate, a.seconds)
    calls = out["calls_per_s"]
    total = sum(calls.values())
    print(f"{a.gateways} gateways, {a.rooms} rooms, {a.rate:g} comments/s, {a.seconds:g} s")
    print(f"redis commands/s: {total:.0f}")
    for name, n in sorted(calls.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {name:<18} {n:8.1f}")
    print(f"frames received per gateway per s: {out['frames_per_gateway_s']:.1f}")
    print(f"frame feed round trips per gateway per s: {out['feed_calls_per_gateway_s']:.1f}")


if __name__ == "__main__":
    main()
