"""The same system on a Redis Cluster of real redis-server processes (3 masters on
loopback): pipelines and Lua across shards, gateways and workers spread over rooms on
every shard, a slot resharded under traffic (MOVED), a master failed over to its replica.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trio
from trio_websocket import HandshakeError

from danmaku.config import Settings
from danmaku.dev.embedded import free_port
from danmaku.dev.localcluster import LocalCluster
from danmaku.metrics import Metrics
from danmaku.store import Ingest, IngestLimits, Store, door_key
from danmaku.system import System
from tests.client import Client, connect, http, label, lost_acks, start_system, stored_ids, token
from tests.conftest import SECRET
from tests.integration.test_notices import only_holders_are_told

ROOMS = [f"c{i}" for i in range(12)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster.start(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture
def cluster_settings(cluster: LocalCluster, settings: Settings) -> Settings:
    for port in cluster.ports:
        with cluster.client(port) as node:
            node.flushall()
    return settings.replace(redis_url=cluster.url)


def shards(cluster: LocalCluster, rooms: list[str]) -> set[int]:
    return {cluster.master_port(f"dm:{{{room}}}:in") for room in rooms}


async def test_store_pipelines_and_scripts_across_shards(
    cluster: LocalCluster, cluster_settings: Settings
) -> None:
    assert len(shards(cluster, ROOMS)) == 3, "the rooms should land on every master"
    store = Store(cluster_settings.redis_url, Metrics(process=False))
    try:
        assert store.cluster and await store.ping()
        batch = {
            room: [
                Ingest(f"u{k}", f"n{k}", f"p-{room}-{k}".encode(), door_key(f"h{k}"))
                for k in range(3)
            ]
            for room in ROOMS
        }
        limits = IngestLimits(rate_per_s=100.0, burst=100.0, duplicate_window_s=0.0)
        out = await store.intake.append_comments(batch, limits)
        assert list(out) == ROOMS  # replies come back per room, in order
        assert all(o.id and o.code is None for room in ROOMS for o in out[room])
        again = await store.intake.append_comments(batch, limits)  # resends: same ids
        for room in ROOMS:
            assert [(o.id, o.resent) for o in again[room]] == [(o.id, True) for o in out[room]]
        assert set(await store.frames.hot_rooms(0)) == set(ROOMS)
        for room in ROOMS:
            with cluster.client(cluster.master_port(f"dm:{{{room}}}:in")) as node:
                assert len(stored_ids(node, room)) == 3
    finally:
        store.close()


async def test_pipeline_on_a_cluster_two_gateways_two_workers(
    nursery: trio.Nursery, cluster: LocalCluster, cluster_settings: Settings
) -> None:
    s = cluster_settings
    systems: list[System] = []
    for roles in (("gateway", "worker", "web"), ("gateway", "worker")):
        systems.append(await start_system(nursery, s, roles))
    a, b = (sys.ws_port for sys in systems)
    assert a and b
    async with trio.open_nursery() as n:
        viewers = {room: await connect(n, b, room) for room in ROOMS}
        sender = {room: await connect(n, a, room, tok=token(f"s{room}")) for room in ROOMS}
        acked: dict[str, list[str]] = {room: [] for room in ROOMS}
        for k in range(4):
            for room in ROOMS:
                reply = await sender[room].comment(f"{room} {label(k)}", nonce=f"{k}")
                assert reply["type"] == "ack", reply
                acked[room].append(reply["id"])
        for room in ROOMS:
            await viewers[room].wait_for(lambda c, r=room: set(acked[r]) <= set(c.item_ids()))
            assert viewers[room].item_ids() == acked[room], "order or exactly-once broken"
        # Both workers merge: rooms on every shard, leases spread over the two.
        holders = set()
        for room in ROOMS:
            with cluster.client(cluster.master_port(f"dm:{{{room}}}:lease")) as node:
                holders.add((node.get(f"dm:{{{room}}}:lease") or b"").split(b":")[0])
        assert len(holders) == 2, holders
        # Moderation across the cluster: a delete reaches the viewer as a retraction.
        web = next(sys for sys in systems if sys.web_port)
        room, victim = ROOMS[5], acked[ROOMS[5]][1]
        mod = token("boss", role="moderator")
        url = f"http://127.0.0.1:{web.web_port}/api/rooms/{room}/comments/{victim}"
        assert (await http(url, "DELETE", token=mod)).status == 204
        await viewers[room].wait_for(
            lambda c: any(victim in f.get("retract", []) for f in c.frames)
        )
        # A late viewer resumes from the frame history on the other gateway.
        late = await connect(n, a, ROOMS[7], since=0)
        await late.wait_for(lambda c: set(acked[ROOMS[7]]) <= set(c.item_ids()))
        n.cancel_scope.cancel()


async def test_notices_reach_only_the_gateways_that_hold_a_room_on_a_cluster(
    nursery: trio.Nursery, cluster: LocalCluster, cluster_settings: Settings
) -> None:
    # Rooms on every shard, split between two gateways; notice streams on their own slots.
    await only_holders_are_told(nursery, cluster_settings, ROOMS[:6], ROOMS[6:])


async def test_slot_resharded_under_traffic_follows_moved(
    nursery: trio.Nursery, cluster: LocalCluster, cluster_settings: Settings
) -> None:
    system: System = await start_system(nursery, cluster_settings)
    assert system.ws_port
    room = "moving"
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, room)
        sender = await connect(n, system.ws_port, room, tok=token("u"))
        ids = [(await sender.comment(f"a {label(k)}", nonce=f"a{k}"))["id"] for k in range(5)]
        await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()))
        src = cluster.master_port(f"dm:{{{room}}}:in")
        dst = next(p for p in cluster.ports if p != src)
        await trio.to_thread.run_sync(cluster.move_slot, f"dm:{{{room}}}:in", dst)
        assert cluster.master_port(f"dm:{{{room}}}:in") == dst
        more = [(await sender.comment(f"b {label(k)}", nonce=f"b{k}")) for k in range(5)]
        assert all(m["type"] == "ack" for m in more), more
        ids += [m["id"] for m in more]
        await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()))
        assert viewer.item_ids() == ids
        n.cancel_scope.cancel()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster.start(tmp_path / "replicated", replicas=1, node_timeout_ms=1000)
    yield c
    c.stop()


async def test_master_failover_processes_survive_and_resume(
    nursery: trio.Nursery, replicated: LocalCluster, settings: Settings
) -> None:
    s = settings.replace(redis_url=replicated.url)
    system: System = await start_system(nursery, s)
    assert system.ws_port
    ready = f"http://127.0.0.1:{system.web_port}/readyz"
    rooms = ROOMS[:6]
    async with trio.open_nursery() as n:
        viewers = {room: await connect(n, system.ws_port, room) for room in rooms}
        senders = {room: await connect(n, system.ws_port, room, tok=token("u")) for room in rooms}
        acked: dict[str, list[str]] = {room: [] for room in rooms}

        async def send(room: str, text: str, nonce: str) -> dict[str, object]:
            reply = await senders[room].comment(text, nonce=nonce)
            if reply["type"] == "ack":
                acked[room].append(str(reply["id"]))
            return reply

        for k in range(3):
            for room in rooms:
                assert (await send(room, f"before {label(k)}", f"a{k}"))["type"] == "ack"
        for room in rooms:
            await viewers[room].wait_for(lambda c, r=room: set(acked[r]) <= set(c.item_ids()))
        await trio.sleep(1.2)  # replication and the everysec fsync cover the acked ones
        victim = rooms[0]
        port = replicated.master_port(f"dm:{{{victim}}}:in")
        on_victim = [r for r in rooms if replicated.master_port(f"dm:{{{r}}}:in") == port]
        # A sender streams into the victim's room up to the kill: what can a failover lose?
        streamed: dict[str, float] = {}  # acked id -> when the ack came
        stop_streaming = trio.Event()
        streamer = await connect(n, system.ws_port, victim, tok=token("streamer"))

        async def stream() -> None:
            k = 0
            while not stop_streaming.is_set():
                reply = await streamer.comment(f"stream {label(k)}", nonce=f"s{k}")
                if reply["type"] == "ack":
                    streamed[str(reply["id"])] = time.monotonic()
                k += 1
                await trio.sleep(0.005)

        n.start_soon(stream)
        await trio.sleep(1.0)
        replicated.kill(port)
        killed = time.monotonic()
        stop_streaming.set()
        down = await http(ready, timeout=5)
        # Until a replica takes over, comments in that shard's rooms fail with an error
        # the sender can retry; nothing exits.
        with trio.fail_after(30):
            while True:
                reply = await send(victim, "during", f"d{time.monotonic()}")
                if reply["type"] == "ack":
                    break
                assert reply["code"] in ("unavailable", "overloaded"), reply
                await trio.sleep(0.2)
        resumed_after = time.monotonic() - killed
        with trio.fail_after(20):
            while (await http(ready, timeout=5)).status != 200:
                await trio.sleep(0.2)
        for k in range(3):
            for room in rooms:
                await send(room, f"after {label(k)}", f"b{k}")
        for room in rooms:
            viewer: Client = viewers[room]
            await viewer.wait_for(
                lambda c, r=room: set(acked[r][-3:]) <= set(c.item_ids()), timeout=15
            )
            assert len(viewer.item_ids()) == len(set(viewer.item_ids())), "a repeated item"
            assert viewer.closed is None
        print(
            f"\nmaster failover: {len(on_victim)} of {len(rooms)} rooms on the killed master; "
            f"readyz {down.status} while it was down; comments accepted again after "
            f"{resumed_after:.1f}s"
        )
        assert down.status == 503
        # Acked before the kill and replicated: still in the stream after the failover.
        for room in on_victim:
            client = redis.Redis(port=replicated.master_port(f"dm:{{{room}}}:in"))
            kept = set(stored_ids(client, room))
            client.close()
            assert set(acked[room][:3]) <= kept, f"{room}: acked comments lost in failover"
        client = redis.Redis(port=replicated.master_port(f"dm:{{{victim}}}:in"))
        kept = set(stored_ids(client, victim))
        client.close()
        before_kill = {i: t for i, t in streamed.items() if t <= killed}
        lost, oldest = lost_acks(before_kill, kept, killed)
        print(
            f"streamed into the failed shard: {len(before_kill)} acked before the kill, "
            f"{len(lost)} lost (acked within {oldest * 1000:.0f} ms of the kill)"
        )
        assert len(before_kill) > 20
        # Replication is asynchronous but continuous: only the last moments can be lost.
        assert oldest <= 1.0, f"lost a comment acked {oldest:.2f}s before the kill"
        n.cancel_scope.cancel()


async def test_cluster_demo_runs_two_gateways_two_workers_and_the_web_app(
    tmp_path: Path,
) -> None:
    web, gw1, gw2 = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_")}
    env |= {"DANMAKU_SECRET": SECRET, "PYTHONUNBUFFERED": "1", "DANMAKU_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "danmaku.dev.devcluster", "--dir", str(tmp_path / "demo")]
    cmd += ["--web-port", str(web), "--ws-ports", f"{gw1},{gw2}"]
    log = tmp_path / "demo.log"
    with log.open("wb") as out:  # the demo's processes print there, as to a terminal
        # its own process group: whatever happens, the test can stop the demo's children
        proc = await trio.lowlevel.open_process(cmd, env=env, stdout=out, start_new_session=True)
    try:
        with trio.fail_after(60):
            while b"Ctrl-C" not in log.read_bytes():
                assert proc.poll() is None, f"demo exited: {log.read_text()}"
                await trio.sleep(0.2)
        assert b"redis+cluster://" in log.read_bytes()
        with trio.fail_after(60):
            while True:
                try:
                    if (await http(f"http://127.0.0.1:{web}/readyz", timeout=5)).status == 200:
                        break
                except OSError:
                    pass  # not listening yet
                await trio.sleep(0.3)
        async with trio.open_nursery() as n:
            viewer = sender = None
            with trio.fail_after(60):  # the gateways start in their own time
                while viewer is None or sender is None:
                    try:
                        viewer = viewer or await connect(n, gw2, "demo")
                        sender = sender or await connect(n, gw1, "demo", tok=token("u"))
                    except HandshakeError:  # that gateway is not listening yet
                        await trio.sleep(0.3)
            reply = await sender.comment("hello cluster", nonce="n1")
            assert reply["type"] == "ack", reply
            await viewer.wait_for(lambda c: reply["id"] in c.item_ids(), timeout=20)
            n.cancel_scope.cancel()
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(40):
            assert await proc.wait() == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the demo, its nodes, its roles
        await proc.wait()
