"""Redis cost of the room's door (``scripts.INGEST``): ``python -m loadtest.doorbench``.

Starts a private redis-server, admits ``--comments`` comments from ``--users`` users in
batches of 100 through ``Store.append_comments`` (rate limit 1/s burst 3, duplicate
window 30 s: the production defaults), then prints what Redis spent: the script's own
time per comment (``INFO commandstats``), the server's CPU per comment, its keys and
memory. Figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import redis
import trio

from danmaku.embedded import spawn_redis
from danmaku.metrics import Metrics
from danmaku.store import Ingest, IngestLimits, Store


async def admit(url: str, comments: int, users: int) -> None:
    store = Store(url, Metrics(process=False))
    limits = IngestLimits(rate_per_s=1.0, burst=3.0, duplicate_window_s=30.0)
    try:
        for b in range(0, comments, 100):
            batch = [
                Ingest(f"u{(b + i) % users}", f"n{b + i}", b'{"t":"x"}', f"h{b + i}")
                for i in range(min(100, comments - b))
            ]
            await store.append_comments({"room": batch}, limits)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.doorbench")
    parser.add_argument("--comments", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        proc, port = spawn_redis(Path(data), aof=False)
        try:
            r = redis.Redis(port=port)
            r.config_resetstat()
            cpu0 = r.info("cpu")
            trio.run(admit, f"redis://127.0.0.1:{port}/0", args.comments, args.users)
            cpu1 = r.info("cpu")
            stats = r.info("commandstats")
            script_us = stats.get("cmdstat_evalsha", {}).get("usec", 0)
            cpu = sum(cpu1[k] - cpu0[k] for k in ("used_cpu_user", "used_cpu_sys"))
            print(
                json.dumps(
                    {
                        "comments": args.comments,
                        "users": args.users,
                        "script_us_per_comment": round(script_us / args.comments, 2),
                        "redis_cpu_us_per_comment": round(1e6 * cpu / args.comments, 2),
                        "calls_per_comment": {
                            k.removeprefix("cmdstat_"): round(v["calls"] / args.comments, 2)
                            for k, v in stats.items()
                            if v["calls"] >= args.comments // 2 and k != "cmdstat_evalsha"
                        },
                        "keys": r.dbsize(),
                        "used_memory_mb": round(r.info("memory")["used_memory"] / 2**20, 1),
                    }
                )
            )
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
