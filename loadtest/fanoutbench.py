"""The gateway's fan-out step alone, deflate off and on: CPU per frame write.

``python -m loadtest.fanoutbench [--viewers N] [--frames F] [--rounds R]``: one process
builds two rooms' ``Hub`` of ``N`` viewers each, exactly as the gateway does (a
trio-websocket connection over a real socket of a ``socketpair``, a ``Viewer`` with its
raw writer): in the "on" hub every viewer agreed to permessage-deflate, in the "off" hub
none did. Both hubs get the same frames (``Hub.deliver``: decode once, compress once
when on, one non-blocking ``send()`` per viewer). Only the deliveries are timed, on this
thread's CPU clock
(``time.thread_time``), so other processes on a shared machine change little; between
deliveries the peers' sockets are emptied (untimed). Rounds alternate off/on so drift
falls on both. Frames are what a busy room sends: 20 comments from distinct users, mixed
CJK and ASCII text.

Reports frame writes per CPU-second of the fan-out for each mode (median over rounds),
their ratio, and the wire bytes per frame each viewer got.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Sequence

import orjson
import trio
from trio_websocket import WebSocketConnection
from wsproto import ConnectionType, WSConnection

from danmaku.gateway.deflate import FrameDeflater
from danmaku.gateway.hub import Hub
from danmaku.gateway.viewer import Viewer
from danmaku.metrics import Metrics
from danmaku.store import CommittedFrame, RoomState
from loadtest.gwbench.procs import raise_nofile

ROOM = "bench"


def busy_frame(rng: random.Random, seq: int, items: int = 20) -> bytes:
    """A frame of ``items`` comments from distinct users (as tests/unit/test_deflate.py's
    realistic frame)."""
    cjk = "哈哈哈草前方高能弹幕好强加油这波可以啊绝了主播牛ｗ"
    words = ["666", "lol", "gg", "wow", "nice", "2333", "awsl", "yyds", "kksk", "?"]
    now = int(time.time() * 1000)
    out = []
    for i in range(items):
        text = " ".join(
            "".join(rng.choice(cjk) for _ in range(rng.randint(1, 8)))
            if rng.random() < 0.6
            else rng.choice(words)
            for _ in range(rng.randint(1, 4))
        )[:30]
        out.append(
            {
                "id": f"{now + i}-{rng.randrange(4)}",
                "uid": f"u{rng.randrange(10**7)}",
                "nick": f"viewer_{rng.randrange(10**5)}",
                "text": text,
                "color": rng.choice(["#ffffff", "#ffffff", "#fe0302", "#00cd00"]),
                "mode": rng.choice(["scroll", "scroll", "scroll", "top"]),
                "ts": now + i,
                "prio": 0,
            }
        )
    body = {"type": "frame", "room": ROOM, "seq": seq, "ts": now, "items": out}
    return orjson.dumps({**body, "dropped": 0, "online": 50_000})


def _spawn(_: object) -> None:
    raise RuntimeError("a viewer queued a write: the peers are emptied between frames")


async def _viewers(n: int, deflate: bool, metrics: Metrics) -> tuple[list[Viewer], list[int]]:
    """``n`` viewers over socketpairs; returns them and the peers' descriptors."""
    viewers, peers = [], []
    for _ in range(n):
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        ws = WebSocketConnection(stream, WSConnection(ConnectionType.SERVER))
        viewers.append(Viewer(ws, ROOM, None, metrics, spawn=_spawn, deflate=deflate))
        peers.append(theirs.detach())
    return viewers, peers


def _drain(peers: Sequence[int]) -> int:
    got = 0
    for fd in peers:
        try:
            while chunk := os.read(fd, 1 << 16):
                got += len(chunk)
        except BlockingIOError:
            pass
    return got


async def bench(viewers: int, frames: int, rounds: int) -> dict[str, object]:
    metrics = Metrics(process=False)
    state = RoomState(0, viewers, "0-0", None, (0.0, 0), [])
    deflater = FrameDeflater(128)
    hubs = {"off": Hub(ROOM, state, 0.0), "on": Hub(ROOM, state, 0.0, deflate=deflater)}
    peers: dict[str, list[int]] = {}
    for mode, hub in hubs.items():
        made, peers[mode] = await _viewers(viewers, mode == "on", metrics)
        hub.viewers.update(made)
    assert all(v.deflate for v in hubs["on"].viewers), "no raw writer: not the fast path"
    rng = random.Random(1)
    payloads = [busy_frame(rng, seq) for seq in range(1, frames + 1)]
    per_s: dict[str, list[float]] = {"off": [], "on": []}
    wire: dict[str, int] = {"off": 0, "on": 0}
    seq = 0
    for r in range(rounds):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            cpu = 0.0
            for payload in payloads:
                seq += 1
                frame = CommittedFrame(ROOM, seq, payload)
                t0 = time.thread_time()
                hubs[mode].deliver([frame], metrics)
                cpu += time.thread_time() - t0
                wire[mode] += _drain(peers[mode])
            per_s[mode].append(frames * viewers / cpu)
    writes = {m: frames * viewers * rounds for m in per_s}
    out: dict[str, object] = {
        "viewers": viewers,
        "frames_per_round": frames,
        "rounds": rounds,
        "payload_bytes_per_frame": round(statistics.mean(len(p) for p in payloads)),
    }
    for mode in ("off", "on"):
        out[f"{mode}_writes_per_cpu_s"] = round(statistics.median(per_s[mode]))
        out[f"{mode}_wire_bytes_per_write"] = round(wire[mode] / writes[mode], 1)
    out["ratio_on_off"] = round(statistics.median(per_s["on"]) / statistics.median(per_s["off"]), 3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.fanoutbench", description=__doc__)
    p.add_argument("--viewers", type=int, default=2000)
    p.add_argument("--frames", type=int, default=50, help="frames per round")
    p.add_argument("--rounds", type=int, default=10, help="rounds per mode (alternating)")
    args = p.parse_args(argv)
    raise_nofile()  # 4 descriptors per viewer pair
    result = trio.run(bench, args.viewers, args.frames, args.rounds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
