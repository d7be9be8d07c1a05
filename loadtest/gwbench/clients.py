"""The client processes (``hold``: viewers, ``send``: senders), driven by the cases over
stdin/stdout in JSON lines."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

import orjson
import trio

from danmaku import auth
from loadtest.gwbench.procs import ROOM, SECRET
from loadtest.wire import ABNORMAL, Closed, HandshakeFailed, WebSocket

DRAIN_EVERY_S = 0.05  # how often a --drain holder empties its viewers' sockets


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
    url: str,
    n: int,
    concurrency: int,
    latency: bool,
    room: str = ROOM,
    drain: bool = False,
    deflate: bool = False,
) -> None:
    """Open ``n`` viewers (each until its welcome), report, keep reading until ``quit``.
    With ``latency``, record comment -> receipt latency of every frame item (from the send
    time the ``send`` process writes into the text). With ``drain``, no task per viewer:
    one loop empties every socket each ``DRAIN_EVERY_S`` without parsing (see
    ``case_reference``); it counts the bytes received (and frames, when not compressed).
    With ``deflate``, every viewer offers permessage-deflate (``agreed`` in the report:
    how many got it)."""
    limiter = trio.CapacityLimiter(concurrency)
    lat: list[float] = []  # from the comment's send
    lat_gw: list[float] = []  # from its receipt at the gateway (the item's ``ts``)
    state: dict[str, Any] = {"ok": 0, "failed": 0, "closed": 0, "slowest_s": 0.0, "agreed": 0}
    counts = {"frames": 0, "bytes": 0}
    drained: list[WebSocket] = []
    parsed: list[WebSocket] = []  # the viewers that read and parse (their bytes counted)
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
                    ws = await WebSocket.connect(url + f"?room={room}", deflate=deflate)
                    await ws.get_message()  # welcome
                    state["agreed"] += ws.deflate
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
                parsed.append(ws)
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
            # ``wire_bytes``: what the parsing viewers read since the last mark (frames,
            # headers, pings), against ``items``, the comments they got in that time.
            wire = sum(ws.bytes_in for ws in parsed)
            for ws in parsed:
                ws.bytes_in = 0
            out: dict[str, Any] = {
                "lat": [round(x, 1) for x in lat],
                "items": len(lat),
                "wire_bytes": wire,
            }
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
