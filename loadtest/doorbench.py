"""Redis cost of the room's door (``scripts.INGEST``): ``python -m loadtest.doorbench``.

Starts a private redis-server, admits ``--comments`` comments from ``--users`` users in
batches of 100 through ``store.intake.append_comments`` (rate limit 1/s burst 3, duplicate
window 30 s: the production defaults; ``--open``: limits out of the way and users at
random, so active users' state fills up), then prints what Redis spent: the script's own
time per comment (``INFO commandstats``), the server's CPU per comment, its keys and
memory. Figures in docs/benchmarks.md.

``--floor`` measures instead what cheaper doors cost in the same Redis: plain pipelined
``XADD``s, ``XADD``s from a Lua loop, and that loop plus the least per-user state
(``HMGET`` + ``HSET`` + ``PEXPIRE`` of one hash per comment): the floor under any door
that keeps per-user state in Redis; and the floor of another layout (``PACKED_ROOM``).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from functools import partial
from pathlib import Path

import redis
import trio

from danmaku.dev.embedded import spawn_redis
from danmaku.metrics import Metrics
from danmaku.store import Ingest, IngestLimits, Store, door_key


async def admit(url: str, comments: int, users: int, *, open_limits: bool = False) -> None:
    store = Store(url, Metrics(process=False))
    limits = IngestLimits(rate_per_s=1.0, burst=3.0, duplicate_window_s=30.0)
    if open_limits:  # every comment kept: users' nonce and text rings fill up
        limits = IngestLimits(rate_per_s=1e6, burst=1e6, duplicate_window_s=30.0)
    rng = random.Random(1)
    try:
        for b in range(0, comments, 100):
            batch = [
                Ingest(
                    f"u{rng.randrange(users) if open_limits else (b + i) % users}",
                    f"n{b + i}",
                    PAYLOAD,
                    door_key(f"h{b + i}"),
                )
                for i in range(min(100, comments - b))
            ]
            await store.intake.append_comments({"room": batch}, limits)
    finally:
        store.close()


PAYLOAD = (
    b'{"uid":"u123","nick":"viewer 123","text":"hello world this is danmaku 12345",'
    b'"color":"#ffffff","mode":"scroll","ts":1764622800000,"prio":1}'
)
LOOP = """for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100000, '*', 'd', ARGV[i])
end"""
LOOP_USER = """for i = 1, #ARGV do
  local uk = KEYS[1] .. ':u:' .. i .. ':' .. math.random(1, 1000000000)
  redis.call('HMGET', uk, 't', 's', 'l', 'n', 'd')
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100000, '*', 'd', ARGV[i])
  redis.call('HSET', uk, 'n', 'x', 'd', 'y', 't', '1', 's', '2', 'l', '3')
  redis.call('PEXPIRE', uk, 60000)
end"""
# Another layout's floor: one hash per room, a field per user (one HMGET and one HSET
# per batch), and the batch packed into one stream entry (one XADD per batch).
PACKED_ROOM = r"""local uids = {}
for i = 1, #ARGV do uids[i] = 'u' .. math.random(1, 10000) end
redis.call('HMGET', KEYS[2], unpack(uids))
local f = {}
for i = 1, #ARGV do
  f[2 * i - 1] = uids[i]
  f[2 * i] = 'x|y|1|2|3'
end
redis.call('HSET', KEYS[2], unpack(f))
redis.call('PEXPIRE', KEYS[2], 60000)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100000, '*', 'd', table.concat(ARGV, '\n'))"""


def floor(r: redis.Redis, comments: int) -> dict[str, float]:
    """Redis CPU per comment of the cheaper doors (see the module docstring)."""

    def cpu() -> float:
        c = r.info("cpu")
        return float(c["used_cpu_user"] + c["used_cpu_sys"])

    out = {}
    loop, loop_user = r.script_load(LOOP), r.script_load(LOOP_USER)
    packed = r.script_load(PACKED_ROOM)
    names = ("xadd_pipelined", "xadd_lua_loop", "xadd_lua_loop_user_hash", "packed_room_hash")
    for name in names:
        before = cpu()
        for _ in range(0, comments, 100):
            if name == "xadd_pipelined":
                pipe = r.pipeline(transaction=False)
                for _ in range(100):
                    pipe.xadd(name, {"d": PAYLOAD}, maxlen=100_000, approximate=True)
                pipe.execute()
            elif name == "packed_room_hash":
                r.evalsha(packed, 2, name, name + ":users", *([PAYLOAD] * 100))
            else:
                sha = loop if name == "xadd_lua_loop" else loop_user
                r.evalsha(sha, 1, name, *([PAYLOAD] * 100))
        out[name + "_us_per_comment"] = round(1e6 * (cpu() - before) / comments, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.doorbench")
    parser.add_argument("--comments", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--floor", action="store_true", help="cheaper doors, for comparison")
    parser.add_argument(
        "--open",
        action="store_true",
        help="limits out of the way, users picked at random: every comment kept, so a user's "
        "nonce and text rings fill (what active users look like; try --users 200)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        proc, port = spawn_redis(Path(data), aof=False)
        try:
            r = redis.Redis(port=port)
            if args.floor:
                print(json.dumps({"comments": args.comments, **floor(r, args.comments)}))
                return
            r.config_resetstat()
            cpu0 = r.info("cpu")
            url = f"redis://127.0.0.1:{port}/0"
            trio.run(partial(admit, url, args.comments, args.users, open_limits=args.open))
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
