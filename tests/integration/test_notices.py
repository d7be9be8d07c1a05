"""Notices reach only the gateways that hold a room (no key every gateway reads), a lost
notice only delays a frame, and a gateway that dies stops being told after its TTL.
Real redis-server, real gateways and workers (in-process systems, and a gateway process
SIGKILLed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import redis
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.store import Store, cluster
from danmaku.system import System
from tests.client import connect, label, printed_urls, start_system, token
from tests.conftest import SECRET


def client_for(url: str) -> Any:
    """A client that reaches any key (a cluster client routes by slot)."""
    if cluster.is_cluster_url(url):
        return cluster.connect(url)
    return redis.Redis.from_url(url)


def named_in(r: Any, feed: str) -> set[str]:
    """The rooms named in a gateway feed's notice stream so far."""
    rooms: set[str] = set()
    for _id, fields in r.xrange(f"dm:gw:{{{feed}}}:notices"):
        rooms.update(x for x in fields.get(b"r", b"").decode().split(",") if x)
    return rooms


async def only_holders_are_told(
    nursery: trio.Nursery, settings: Settings, rooms_a: list[str], rooms_b: list[str]
) -> None:
    """Two gateways with viewers of different rooms, a worker of its own: each room's
    frames arrive, each gateway's notice stream names only its own rooms, and neither
    gateway was told of a room it does not hold."""
    worker: System = await start_system(nursery, settings, ("worker",))
    ga: System = await start_system(nursery, settings, ("gateway",))
    gb: System = await start_system(nursery, settings, ("gateway",))
    assert ga.gateway and gb.gateway and ga.ws_port and gb.ws_port
    r = client_for(settings.redis_url)
    try:
        async with trio.open_nursery() as n:
            plan = [(ga.ws_port, room) for room in rooms_a] + [
                (gb.ws_port, room) for room in rooms_b
            ]
            viewers = {room: await connect(n, port, room) for port, room in plan}
            senders = {room: await connect(n, port, room, tok=token("s")) for port, room in plan}
            acked: dict[str, list[str]] = {room: [] for room in viewers}
            for k in range(5):
                for room, sender in senders.items():
                    reply = await sender.comment(f"{room} {label(k)}", nonce=f"{k}")
                    assert reply["type"] == "ack", reply
                    acked[room].append(reply["id"])
                await trio.sleep(0.05)
            for room, viewer in viewers.items():
                await viewer.wait_for(lambda c, r=room: set(acked[r]) <= set(c.item_ids()))
                assert viewer.item_ids() == acked[room]
            store = ga.store
            for gw, rooms in ((ga, rooms_a), (gb, rooms_b)):
                assert gw.gateway
                feed = gw.gateway.feed.id
                for room in rooms:
                    assert await store.notices.holders(room) == [feed]
                assert named_in(r, feed) <= set(rooms)
                assert named_in(r, feed) & set(rooms), "no notice reached the gateway"
                assert gw.metrics.notices_received.labels("held")._value.get() > 0
                assert gw.metrics.notices_received.labels("stale")._value.get() == 0
            assert ga.gateway.feed.id != gb.gateway.feed.id
            assert worker.metrics.notices_sent._value.get() > 0
            assert not r.exists("dm:ticks"), "the deployment-wide stream is gone"
            n.cancel_scope.cancel()
        # A gateway that stops unregisters at once (a dead one: test below).
        feed_b = gb.gateway.feed.id
        gb.cancel_scope.cancel()
        with trio.fail_after(5):
            while await ga.store.notices.holders(rooms_b[0]) or r.exists(
                f"dm:gw:{{{feed_b}}}:notices"
            ):
                await trio.sleep(0.05)
    finally:
        r.close()


async def test_a_gateway_is_told_only_of_the_rooms_it_holds(
    nursery: trio.Nursery, settings: Settings
) -> None:
    await only_holders_are_told(nursery, settings, ["alpha", "gamma"], ["beta"])


async def test_a_deleted_notice_stream_only_delays_frames(
    nursery: trio.Nursery, settings: Settings
) -> None:
    # Registrations refreshed every 5 s: the stream stays deleted while the frame is due.
    settings = settings.replace(feed_sweep_s=0.5, notice_holder_ttl_s=15.0)
    system: System = await start_system(nursery, settings)
    assert system.gateway and system.ws_port
    feed = system.gateway.feed
    stream = f"dm:gw:{{{feed.id}}}:notices"
    swept = system.metrics.feed_swept.labels("missed")
    r = redis.Redis.from_url(settings.redis_url)
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "lossy")
        sender = await connect(n, system.ws_port, "lossy", tok=token("s"))
        first = (await sender.comment("told", nonce="1"))["id"]
        await viewer.wait_for(lambda c: first in c.item_ids())
        with trio.fail_after(10):  # past the polls of a room new to the gateway
            while feed.schedule.fresh:
                await trio.sleep(0.05)
        r.delete(stream)  # every notice in it, and those sent until it is recreated
        lost = (await sender.comment("untold", nonce="2"))["id"]
        await viewer.wait_for(lambda c: lost in c.item_ids(), timeout=10)
        assert viewer.item_ids() == [first, lost]
        assert not r.exists(stream), "recreated too soon: the frame may have had its notice"
        assert swept._value.get() >= 1  # read without a notice, and it had news
        # The gateway recreates its stream at its next refresh; notices flow again.
        with trio.fail_after(15):
            while not r.exists(stream):
                await trio.sleep(0.05)
        assert r.pttl(stream) > 0
        told = system.metrics.notices_received.labels("held")._value.get()
        later = [(await sender.comment(f"again {k}", nonce=f"a{k}"))["id"] for k in range(3)]
        await viewer.wait_for(lambda c: set(later) <= set(c.item_ids()), timeout=10)
        assert system.metrics.notices_received.labels("held")._value.get() > told
        assert viewer.item_ids() == [first, lost, *later]
        n.cancel_scope.cancel()
    r.close()


async def test_a_gateway_that_dies_stops_being_a_holder_after_its_ttl(
    nursery: trio.Nursery, settings: Settings
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_")}
    env |= {"DANMAKU_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "danmaku", "gateway", "--redis-url", settings.redis_url]
    argv += ["--ws-port", "0", "--notice-holder-ttl-s", "1.5", "--log-level", "WARNING"]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, env=env)
    store = Store(settings.redis_url, Metrics(process=False), notice_holders_cache_ms=0)
    # a committer that read the holders before the death and keeps them (for long)
    early = Store(settings.redis_url, Metrics(process=False), notice_holders_cache_ms=10**9)
    r = redis.Redis.from_url(settings.redis_url)
    try:
        urls = await printed_urls(proc, "danmaku gateway")
        port = urlsplit(next(u for u in urls.values() if u.startswith("ws://"))).port
        assert port
        async with trio.open_nursery() as n:
            await connect(n, port, "doomed")
            with trio.fail_after(10):
                while not (holders := await store.notices.holders("doomed")):
                    await trio.sleep(0.05)
            (feed,) = holders
            stream = f"dm:gw:{{{feed}}}:notices"
            assert r.exists(stream)
            assert await trio.to_thread.run_sync(early.notices.notify_sync, ["doomed"]) == 1
            proc.send_signal(signal.SIGKILL)  # no unregistering
            await proc.wait()
            n.cancel_scope.cancel()
        with trio.fail_after(10):  # the TTL (1.5 s), then nobody tells it anything
            while await store.notices.holders("doomed") or r.exists(stream):
                await trio.sleep(0.1)
        # A committer with holders read before the death never recreates its stream.
        assert await trio.to_thread.run_sync(early.notices.notify_sync, ["doomed"]) == 1
        assert not r.exists(stream)
    finally:
        if proc.returncode is None:
            proc.kill()
        r.close()
        store.close()
        early.close()
