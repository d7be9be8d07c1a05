"""Replay exports of large broadcasts through the real web app and a real Redis: streamed
in bounded memory without stalling the event loop, byte-identical to the whole document,
limited per client address and in total (429), and revalidated with ETags (304)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import orjson
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules import replay_export
from danmaku.store import Store
from danmaku.system import System
from loadtest.exportbench import make_broadcast, write_recording
from tests.client import http, start_system

MB = 1 << 20
DOWNLOAD = """
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1]) as resp, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(resp, out, 1 << 16)
"""


async def expected(url: str, room: str, bid: str, fmt: str) -> bytes:
    """The export built the simple way: every comment in memory, then the whole file."""
    store = Store(url, Metrics(process=False))
    try:
        head = await store.replay.export_head(room, bid)
        assert head is not None
        comments = await store.replay.recorded(room, bid)
        return replay_export.whole(replay_export.encoder(fmt, room, head.meta), comments)
    finally:
        store.close()


async def test_three_concurrent_exports_of_a_large_broadcast_stream_in_bounded_memory(
    nursery: trio.Nursery, settings: Settings, tmp_path: Path
) -> None:
    s = settings.replace(max_exports=3, max_exports_per_ip=3)
    system: System = await start_system(nursery, s, ("web",))
    n = 60_000
    bid = await make_broadcast(s.redis_url, "big", n, title="Finals\n[Events]")
    base = f"http://127.0.0.1:{system.web_port}/api/rooms/big/broadcasts/{bid}/danmaku?format="
    lags: list[float] = []
    done = trio.Event()

    async def watch_loop() -> None:
        # How late the event loop wakes a sleeper: what every viewer's ping waits for.
        while not done.is_set():
            start = trio.current_time()
            await trio.sleep(0.005)
            lags.append(trio.current_time() - start - 0.005)

    rss_before = rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    async with trio.open_nursery() as n_:
        n_.start_soon(watch_loop)
        async with trio.open_nursery() as clients:
            for fmt in replay_export.FORMATS:
                # a client in another process: its buffers are not this process's memory
                cmd = [sys.executable, "-c", DOWNLOAD, base + fmt, str(tmp_path / fmt)]
                clients.start_soon(trio.run_process, cmd)
        done.set()
    peak = (rss_kb("VmHWM") - rss_before) * 1024
    sizes = {fmt: (tmp_path / fmt).stat().st_size for fmt in replay_export.FORMATS}
    assert sizes["json"] > 15 * MB and sizes["xml"] > 5 * MB and sizes["ass"] > 5 * MB
    # Built whole, each export held ~100 MB here (its comments as dicts, then the file).
    assert peak < 3 * 4 * MB, f"the process grew by {peak / MB:.1f} MB"
    # Built on the event loop, the same exports stalled it for seconds; the bound leaves
    # room for a busy machine's scheduling (~0.1 s measured).
    assert lags and max(lags) < 1.0, f"event loop stalled {max(lags):.3f} s"
    for fmt in replay_export.FORMATS:
        assert (tmp_path / fmt).read_bytes() == await expected(s.redis_url, "big", bid, fmt)
    doc = orjson.loads((tmp_path / "json").read_bytes())
    assert doc["count"] == len(doc["comments"]) == n
    assert (tmp_path / "ass").read_text().split("\n").count("[Events]") == 1


def rss_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith(field + ":")).split()[1])


def start_export(port: int, path: str, source: str) -> tuple[bytes, socket.socket]:
    """Start an export from ``source`` and read only its status line: a 200 export stays
    in progress (the server blocks on a full socket) until the socket is closed."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock.recv(12), sock


async def active_exports(system: System) -> float:
    text = (await http(f"http://127.0.0.1:{system.web_port}/metrics")).body.decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("danmaku_exports_active "))
    return float(line.split()[1])


async def test_exports_are_limited_per_address_and_in_total(
    nursery: trio.Nursery, settings: Settings
) -> None:
    s = settings.replace(max_exports=3, max_exports_per_ip=2)
    system: System = await start_system(nursery, s, ("web",))
    assert system.web_port
    bid = await make_broadcast(s.redis_url, "busy", 40_000)  # ~10 MB of JSON each
    path = f"/api/rooms/busy/broadcasts/{bid}/danmaku"
    url = f"http://127.0.0.1:{system.web_port}{path}"

    async def start(source: str) -> tuple[bytes, socket.socket]:
        return await trio.to_thread.run_sync(start_export, system.web_port, path, source)

    socks = []
    try:
        for source in ("127.0.0.1", "127.0.0.1"):
            status, sock = await start(source)
            socks.append(sock)
            assert status == b"HTTP/1.1 200"
        third = await http(url)  # from 127.0.0.1 too
        assert third.status == 429 and int(third.headers["retry-after"]) > 0
        assert "from your address (limit 2)" in third.json()["detail"]
        status, sock = await start("127.0.0.2")
        socks.append(sock)
        assert status == b"HTTP/1.1 200"
        status, sock = await start("127.0.0.3")
        socks.append(sock)
        assert status == b"HTTP/1.1 429", "a fourth export was let through"
        refused = await http(url + "?format=ass")
        assert refused.status == 429 and "on this server (limit 3)" in refused.json()["detail"]
        assert await active_exports(system) == 3
    finally:
        for sock in socks:
            sock.close()
    # Clients gone: their slots come back.
    with trio.fail_after(10):
        while await active_exports(system):
            await trio.sleep(0.05)
    reply = await http(url + "?format=xml")
    assert reply.status == 200 and reply.body.endswith(b"</i>")


async def test_etag_and_if_none_match(nursery: trio.Nursery, settings: Settings) -> None:
    system: System = await start_system(nursery, settings, ("web",))
    store = Store(settings.redis_url, Metrics(process=False))
    meta = await store.replay.start_broadcast("tag", "on air", by="mod")
    write_recording(settings.redis_url, "tag", meta["id"], meta["start"], 50)
    url = f"http://127.0.0.1:{system.web_port}/api/rooms/tag/broadcasts/{meta['id']}/danmaku"
    first = await http(url)
    tag = first.headers["etag"]
    assert first.status == 200 and first.json()["count"] == 50
    assert first.headers["cache-control"] == "no-cache"  # on air
    again = await http(url, headers={"If-None-Match": tag})
    assert again.status == 304 and again.body == b"" and again.headers["etag"] == tag
    xml = await http(url + "?format=xml", headers={"If-None-Match": tag})
    assert xml.status == 200 and xml.headers["etag"] != tag  # one tag per format
    # Whatever changes the file changes its tag: a delete, a ban, the end.
    victim = first.json()["comments"][0]
    await store.replay.unrecord("tag", victim["id"])
    after_delete = await http(url, headers={"If-None-Match": tag})
    assert after_delete.status == 200 and after_delete.json()["count"] == 49
    tag = after_delete.headers["etag"]
    await store.moderation.ban("tag", victim["uid"], 0, close=False, by="mod")
    after_ban = await http(url, headers={"If-None-Match": tag})
    assert after_ban.status == 200 and victim["uid"] not in json.dumps(after_ban.json())
    await store.replay.end_broadcast("tag", meta["id"], by="mod")
    assert (await http(url, headers={"If-None-Match": after_ban.headers["etag"]})).status == 200
    missing = await http(url.replace(meta["id"], "abc"))
    assert missing.status == 404
    store.close()
