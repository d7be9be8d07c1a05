"""Room-affine routing end to end (issue 25): real gateways register themselves in a real
Redis, the web app answers where a room's viewers should connect, a small room stays on
one gateway, a big one spreads, and a gateway that drains or leaves moves only its rooms.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from danmaku.config import Settings
from danmaku.dev.embedded import free_port
from danmaku.dev.localcluster import LocalCluster
from danmaku.gateway import Gateway
from danmaku.gateway.announce import Announcer
from danmaku.metrics import Metrics
from danmaku.store import Store
from danmaku.store.gateways import Announcement
from danmaku.supervise import LoopHealth, supervise
from danmaku.system import System
from danmaku.web.routing import GatewayHints
from tests.client import connect, http, start_system


@dataclass
class RunningGateway:
    gateway: Gateway
    scope: trio.CancelScope
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


async def start_gateway(
    nursery: trio.Nursery, store: Store, settings: Settings, name: str
) -> RunningGateway:
    gateway = Gateway(store, settings, Metrics(process=False), gateway_id=name)
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[int]) -> None:
        with scope:
            await gateway.run(task_status=task_status)

    port: int = await nursery.start(run)
    return RunningGateway(gateway, scope, port)


async def fleet(
    nursery: trio.Nursery, settings: Settings, n: int
) -> tuple[System, list[RunningGateway]]:
    """The web app and a worker, and ``n`` gateways in this test process."""
    system = await start_system(nursery, settings, roles=("web", "worker"))
    gateways = [await start_gateway(nursery, system.store, settings, f"gw{i}") for i in range(n)]
    return system, gateways


async def gateway_of(system: System, room: str) -> dict[str, Any]:
    reply = await http(f"http://127.0.0.1:{system.web_port}/api/rooms/{room}/gateway")
    assert reply.status == 200, reply.body
    answer: dict[str, Any] = reply.json()
    return answer


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll an async check until it returns true (the registry refreshes every few
    seconds, the web app reads it at most once a second)."""
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.1)


ROOMS = [f"room-{i}" for i in range(24)]


async def test_gateways_register_with_their_state_and_a_silent_entry_expires(
    nursery: trio.Nursery, settings: Settings
) -> None:
    settings = settings.replace(gateway_registry_ttl_s=3.0)
    system, gateways = await fleet(nursery, settings, 2)
    store = system.store

    async def listed() -> dict[str, Any]:
        return {e.gateway_id: e for e in await store.gateways.entries(trio.current_time())}

    async def both_registered() -> bool:
        return set(await listed()) == {"gw0", "gw1"}

    await eventually(both_registered)
    entries = await listed()
    assert entries["gw0"].url == gateways[0].url and entries["gw1"].url == gateways[1].url
    assert not entries["gw0"].draining and entries["gw0"].healthy
    assert 0 < entries["gw0"].expires_at - trio.current_time() <= 3.0

    # A viewer on gw0 shows in its connections at the next refresh.
    await connect(nursery, gateways[0].port, "lobby")

    async def counted() -> bool:
        return (await listed())["gw0"].connections == 1

    await eventually(counted)

    # An entry nobody refreshes (a killed gateway) expires on its own.
    await store.gateways.announce(
        Announcement("ghost", "ws://10.9.9.9:1/ws", 0, 0, False, True), ttl_s=1.0
    )
    assert "ghost" in await listed()

    async def ghost_gone() -> bool:
        return "ghost" not in await listed()

    await eventually(ghost_gone, timeout=5)

    # A gateway that leaves in order takes its entry with it.
    gateways[1].scope.cancel()

    async def gw1_gone() -> bool:
        return set(await listed()) == {"gw0"}

    await eventually(gw1_gone, timeout=5)


async def test_a_small_room_is_routed_to_one_gateway_and_a_big_one_spreads(
    nursery: trio.Nursery, settings: Settings
) -> None:
    settings = settings.replace(room_share=2, gateway_load_factor=0.0)
    system, gateways = await fleet(nursery, settings, 3)
    urls = {g.url for g in gateways}
    port_of = {g.url: g.port for g in gateways}

    async def all_three() -> bool:
        return len((await gateway_of(system, "small"))["urls"]) == 3

    await eventually(all_three)
    answers = [await gateway_of(system, "small") for _ in range(10)]
    assert {a["url"] for a in answers} == {answers[0]["url"]}
    first = answers[0]
    assert first["room"] == "small" and first["url"] in urls and set(first["urls"]) == urls
    assert first["urls"][0] == first["url"] and first["ttl_s"] == round(
        settings.gateway_registry_ttl_s
    )

    # A guest session for the room carries the same answer; one without a room, none.
    web = f"http://127.0.0.1:{system.web_port}"
    session = await http(f"{web}/api/session", "POST", json_body={"nick": "ann", "room": "small"})
    assert session.status == 200 and session.json()["gateway"]["url"] == first["url"]
    plain = await http(f"{web}/api/session", "POST", json_body={"nick": "bob"})
    assert plain.status == 200 and "gateway" not in plain.json()

    # The big room: five viewers follow the hint one after the other (as players do);
    # with a share of 2 the room needs ceil(6/2) = 3 gateways for the next viewer.
    for _ in range(5):
        hint = await gateway_of(system, "big")
        await connect(nursery, port_of[hint["url"]], "big")
        await trio.sleep(0.6)  # one presence round: the next answer sees this viewer

    async def spread() -> bool:
        seen = {(await gateway_of(system, "big"))["url"] for _ in range(40)}
        return seen == urls

    await eventually(spread)
    # The small room still sits on its one gateway.
    assert (await gateway_of(system, "small"))["url"] == first["url"]
    # What the web app counted: three gateways serving, every answer routed.
    text = (await http(f"{web}/metrics")).body.decode()
    assert 'danmaku_gateways_registered{state="serving"} 3.0' in text
    assert 'danmaku_gateway_routes_total{outcome="no_gateways"} 0.0' in text
    routed = re.search(r'danmaku_gateway_routes_total\{outcome="routed"\} ([\d.e+]+)', text)
    assert routed is not None and float(routed.group(1)) >= 10


async def test_a_draining_or_departed_gateway_moves_only_its_rooms(
    nursery: trio.Nursery, settings: Settings
) -> None:
    settings = settings.replace(gateway_registry_ttl_s=3.0)
    system, gateways = await fleet(nursery, settings, 3)

    async def all_three() -> bool:
        return len((await gateway_of(system, ROOMS[0]))["urls"]) == 3

    await eventually(all_three)
    before = {room: (await gateway_of(system, room))["url"] for room in ROOMS}
    victim = next(g for g in gateways if g.url == before[ROOMS[0]])
    held = {room for room, url in before.items() if url == victim.url}
    assert len(held) < len(ROOMS)  # 24 rooms over 3 gateways: the others hold some

    # A viewer of one of its rooms is closed by the drain with 1013 and asks again.
    room = sorted(held)[0]
    viewer = await connect(nursery, victim.port, room)
    draining = trio.Event()

    async def drain() -> None:
        await victim.gateway.drain()
        draining.set()

    nursery.start_soon(drain)

    async def moved() -> bool:
        return (await gateway_of(system, room))["url"] != victim.url

    await eventually(moved)
    await viewer.wait_for(lambda c: c.closed is not None)
    assert viewer.closed is not None and viewer.closed[0] == 1013

    after = {room: await gateway_of(system, room) for room in ROOMS}
    for name, answer in after.items():
        assert victim.url not in answer["urls"]
        if name in held:
            # Its rooms go to the next gateway of their order: the old fallback.
            assert answer["url"] != victim.url
        else:
            assert answer["url"] == before[name]  # every other room stays put

    # The viewer reconnects where it is told, and is served there.
    again = await connect(nursery, _port(gateways, after[room]["url"]), room)
    assert again.of_type("welcome")

    # Gone altogether (its task ended): still only its rooms moved.
    await draining.wait()
    victim.scope.cancel()
    await trio.sleep(1.2)  # past the web app's cache
    final = {room: (await gateway_of(system, room))["url"] for room in ROOMS}
    assert final == {room: answer["url"] for room, answer in after.items()}


def _port(gateways: list[RunningGateway], url: str) -> int:
    return next(g.port for g in gateways if g.url == url)


async def test_without_registered_gateways_the_configured_urls_are_the_answer(
    nursery: trio.Nursery, settings: Settings
) -> None:
    settings = settings.replace(public_ws_url="ws://a.example/ws, ws://b.example/ws")
    system = await start_system(nursery, settings, roles=("web",))
    answer = await gateway_of(system, "lobby")
    assert answer == {
        "room": "lobby",
        "url": "ws://a.example/ws",
        "urls": ["ws://a.example/ws", "ws://b.example/ws"],
        "ttl_s": 10,
    }
    bad = await http(f"http://127.0.0.1:{system.web_port}/api/rooms/no%20such!/gateway")
    assert bad.status == 422


async def test_an_unreachable_registry_answers_with_the_configured_urls(
    settings: Settings,
) -> None:
    """Redis down (nothing listens where the store points): clients are still told
    where to connect, the configured URLs, and the answer is counted as unavailable."""
    metrics = Metrics(process=False)
    store = Store(f"redis://127.0.0.1:{free_port()}/0", metrics)
    try:
        hints = GatewayHints(settings, store, metrics, lambda: "ws://lb.example/ws")
        answer = await hints.hint("lobby")
        assert (answer.url, answer.urls) == ("ws://lb.example/ws", ["ws://lb.example/ws"])
        assert metrics.gateway_routes.labels("unavailable")._value.get() == 1
    finally:
        store.close()


async def test_a_redis_outage_is_not_a_failing_announce_loop(settings: Settings) -> None:
    """Regression: the announcer let the store's error end its loop, so the supervisor
    marked it failing with a growing backoff and /readyz stayed 503 for seconds after
    Redis came back. It now retries at its own pace; the entry appears once Redis
    answers, and the loop was never marked failing."""
    metrics = Metrics(process=False)
    health = LoopHealth(metrics)
    port = free_port()
    down = Store(f"redis://127.0.0.1:{port}/0", metrics)
    up = Store(settings.redis_url, metrics)
    entry = Announcement("gw-x", "ws://gw-x.example/ws", 0, 100, False, True)
    try:
        async with trio.open_nursery() as n:
            for store in (down, up):
                announcer = Announcer(store.gateways, 10.0, lambda: entry)
                n.start_soon(supervise, f"announce-{len(n.child_tasks)}", announcer.run, health)
            with trio.fail_after(10):
                while not await up.gateways.entries(time.time()):
                    await trio.sleep(0.1)
            await trio.sleep(1.5)  # several polls of the one whose Redis is down
            assert health.failing() == {}
            assert metrics.loop_restarts.labels("announce-0")._value.get() == 0
            n.cancel_scope.cancel()
    finally:
        down.close()
        up.close()


async def test_the_whole_system_routes_to_its_own_gateway(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await start_system(nursery, settings)

    async def routed() -> bool:
        return (await gateway_of(system, "lobby"))["url"] == system.urls["websocket"]

    await eventually(routed)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster.start(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


async def test_routing_on_a_redis_cluster_sends_each_room_to_its_gateway(
    nursery: trio.Nursery, cluster: LocalCluster, settings: Settings
) -> None:
    """The registry (one slot) and the rooms' presence (every shard) on 3 masters: each
    room's viewers, following the answer, are counted on the gateway it names."""
    for port in cluster.ports:
        with cluster.client(port) as node:
            node.flushall()
    s = settings.replace(redis_url=cluster.url)
    web = await start_system(nursery, s, ("gateway", "worker", "web"))
    other = await start_system(nursery, s, ("gateway",))
    port_of = {web.urls["websocket"]: web.ws_port, other.urls["websocket"]: other.ws_port}
    rooms = [f"c{i}" for i in range(24)]
    assert len({cluster.master_port(f"dm:{{{room}}}:in") for room in rooms}) == 3

    async def both() -> bool:
        return set((await gateway_of(web, rooms[0]))["urls"]) == set(port_of)

    await eventually(both)
    entries = {e.gateway_id: e.url for e in await web.store.gateways.entries(trio.current_time())}
    chosen = {room: (await gateway_of(web, room))["url"] for room in rooms}
    assert set(chosen.values()) == set(port_of)  # 24 rooms: both gateways get some
    for room in rooms:
        await connect(nursery, port_of[chosen[room]], room)

    async def counted_where_routed() -> bool:
        for room in rooms:
            viewers = await web.store.gateways.room_viewers(room)
            if {entries[g] for g, n in viewers.items() if n} != {chosen[room]}:
                return False
        return True

    await eventually(counted_where_routed)
