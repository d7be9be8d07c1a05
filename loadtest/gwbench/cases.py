"""The measurements: one function per case, each returning its figures as a dict."""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import orjson
import trio

from loadtest.gwbench.procs import (
    ROOM,
    WATCH_ENV,
    Child,
    Procs,
    env_of,
    pct,
    py_spy,
    raise_nofile,
    running,
    settle,
)


def case_idle(args: argparse.Namespace) -> dict[str, Any]:
    """RSS per idle connection and idle CPU: open ``--conns`` viewers (welcome received),
    read the gateway's RSS, then its CPU over ``--idle-s`` seconds of silence."""
    raise_nofile()
    with running(env_of(args)) as procs:
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
        **env_of(args),
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
        spy = py_spy(procs, args)
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
    from danmaku.store import Ingest, IngestLimits, Store, door_key

    metrics = Metrics()
    store = Store(procs.redis_url, metrics)
    limits = IngestLimits(1e6, 1e6, 30.0)
    batcher = IngestBatcher(store.intake, metrics, limits, capacity=comments + 1)

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
        ing = Ingest(uid, f"n{i}", payload, door_key(f"{i}"))
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
    env = {**WATCH_ENV, **env_of(args)}
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
    gateway's work per delivery is the same either way: one ``send()`` into the socket.

    With ``--deflate`` every viewer offers permessage-deflate (what the gateway agrees to
    is its ``DANMAKU_DEFLATE``). ``egress_bytes_per_comment``: the bytes the timed viewers
    read from their sockets (frame headers and pings included) per comment they got, both
    counted by the same process over the same seconds, so a generator that falls behind
    on a busy machine shifts both alike. ``gateway_frame_writes_per_cpu_s``: frame writes
    from the gateway's own counter (``danmaku_frame_writes_total``) per CPU-second of it,
    where ``frame_writes_per_cpu_s`` (kept as before) infers the writes from the frames
    the timed viewers got, which a lagging generator undercounts."""
    raise_nofile()
    env = {**WATCH_ENV, **env_of(args)}
    offer = ["--deflate"] if getattr(args, "deflate", False) else []
    with running(env, worker=True) as procs:
        rest = args.viewers - args.measure
        per = -(-rest // args.holders)
        holders = [
            Child(["hold", procs.ws_url, str(min(per, rest - i * per)), "--drain", *offer])
            for i in range(args.holders)
        ]
        measured = Child(["hold", procs.ws_url, str(args.measure), "--latency", *offer])
        agreed = sum(h.read()["agreed"] for h in [*holders, measured])
        sender = Child(["send", procs.ws_url, str(args.senders), "--rate", str(args.rate)])
        sender.read()
        sender.ask("go")
        time.sleep(args.warmup_s)
        for h in [*holders, measured]:
            h.ask("mark")
        g0, t0 = procs.sample("gateway"), time.monotonic()
        w0 = procs.gateway_counter("danmaku_frame_writes_total")
        time.sleep(args.seconds)
        got = measured.ask("mark")
        drained = [h.ask("mark") for h in holders]
        g1, t1 = procs.sample("gateway"), time.monotonic()
        w1 = procs.gateway_counter("danmaku_frame_writes_total")
        closed = sum(h.ask("status")["closed"] for h in [*holders, measured])
        for c in [sender, measured, *holders]:
            c.stop()
    elapsed = t1 - t0
    frames_per_viewer_s = got["frames"] / max(1, args.measure) / elapsed
    writes_per_s = frames_per_viewer_s * args.viewers
    cpu = (g1.cpu_s - g0.cpu_s) / elapsed
    lat = got["lat"]
    items_per_viewer = got["items"] / max(1, args.measure)
    gateway_writes = (w1 - w0) / elapsed
    return {
        "case": "reference",
        "deflate_agreed": agreed,
        "egress_bytes_per_comment": round(got["wire_bytes"] / got["items"], 1)
        if got["items"]
        else None,
        "comments_per_viewer_s": round(items_per_viewer / elapsed, 1),
        "gateway_frame_writes_per_s": round(gateway_writes),
        "gateway_frame_writes_per_cpu_s": round(gateway_writes / cpu) if cpu > 0 else None,
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


def case_egress(args: argparse.Namespace) -> dict[str, Any]:
    """Paired ``reference`` runs with every viewer offering permessage-deflate and the
    gateway refusing it (``DANMAKU_DEFLATE=0``: today's plain frames) or agreeing
    (``=1``), alternating (off/on, then on/off, ...) so drift on a shared machine falls on
    both. Prints each run as a JSON line; returns the medians and the on/off ratios of
    egress bytes per delivered comment and frame writes per gateway CPU-second."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for pair in range(args.pairs):
        for mode in ("off", "on") if pair % 2 == 0 else ("on", "off"):
            one = argparse.Namespace(**vars(args))
            one.deflate = True
            one.env = [*(args.env or ()), f"DANMAKU_DEFLATE={int(mode == 'on')}"]
            result = {"mode": mode, **case_reference(one)}
            print(orjson.dumps(result).decode(), flush=True)
            runs[mode].append(result)

    def median(mode: str, key: str) -> float:
        values = sorted(float(r[key]) for r in runs[mode] if r[key] is not None)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    keys = (
        "egress_bytes_per_comment",
        "frame_writes_per_cpu_s",
        "gateway_frame_writes_per_cpu_s",
        "gateway_frame_writes_per_s",
        "gateway_cpu_pct",
        "p50_ms",
        "p99_ms",
        "comments_per_viewer_s",
        "viewers_closed",
    )
    out: dict[str, Any] = {"case": "egress", "pairs": args.pairs, "viewers": args.viewers}
    for mode in ("off", "on"):
        out[mode] = {key: median(mode, key) for key in keys}
    out["ratio_egress_on_off"] = round(
        out["on"]["egress_bytes_per_comment"] / out["off"]["egress_bytes_per_comment"], 3
    )
    out["ratio_writes_per_cpu_s_on_off"] = round(
        out["on"]["gateway_frame_writes_per_cpu_s"] / out["off"]["gateway_frame_writes_per_cpu_s"],
        3,
    )
    return out


def case_catchup(args: argparse.Namespace) -> dict[str, Any]:
    """A gateway that fell behind: ``--viewers`` watch a room on one gateway while the
    senders (``--rate`` comments/s) use a second one; the viewers' gateway is stopped
    (SIGSTOP) for ``--stall-s`` while the worker keeps committing frames, then resumed.
    Reports that gateway's CPU over ``--seconds`` in steady state and right after the
    stall (the backlog: ~10 frames per second of stall for every viewer), and the timed
    viewers' latency over both."""
    raise_nofile()
    env = {**WATCH_ENV, **env_of(args)}
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
