"""Online counts that mean people, against two real gateways, a worker and Redis: one
user with three connections (on two gateways) counts 1, anonymous viewers count per
connection, connections are counted apart; when half the clients die abruptly (a TCP
reset with no close frame, or a link that goes silent), the count falls to the living
within the liveness bound."""

from __future__ import annotations

import socket
import struct
import time

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Event, Ping, Request, TextMessage

from danmaku.config import Settings
from danmaku.gateway.presence import PRESENCE_EVERY_S
from danmaku.rules.headcount import HLL_BUCKET_MS
from danmaku.store import keys
from danmaku.system import System
from tests.client import connect, http, start_system, token
from tests.faultproxy import FaultProxy
from tests.integration.test_liveness import BOUND_S, MAX_S, MIN_S


class Peer:
    """A viewer on a raw socket that answers pings (as a browser does) until it is
    killed: its socket reset (``kill``) or left unanswered behind a paused proxy."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []
        self.welcomed = trio.Event()

    @classmethod
    async def open(
        cls, nursery: trio.Nursery, port: int, room: str, tok: str | None = None
    ) -> Peer:
        self = cls(await trio.open_tcp_stream("127.0.0.1", port))
        target = f"/ws?room={room}" + (f"&token={tok}" if tok else "")
        await self.stream.send_all(self.ws.send(Request(host="127.0.0.1", target=target)))
        nursery.start_soon(self._read)
        with trio.fail_after(10):
            await self.welcomed.wait()
        return self

    async def _read(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    self.events.append(event)
                    if isinstance(event, TextMessage):
                        self.welcomed.set()
                    elif isinstance(event, Ping):
                        await self.stream.send_all(self.ws.send(event.response()))
                if not data:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return

    def kill(self) -> None:
        """Reset the TCP connection: no close frame, no FIN (SO_LINGER 0)."""
        sock = self.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@pytest.fixture
def live_settings(settings: Settings) -> Settings:
    return settings.replace(ping_min_s=MIN_S, ping_max_s=MAX_S)


async def figures(system: System, room: str) -> tuple[int, int]:
    reply = await http(f"http://127.0.0.1:{system.web_port}/api/rooms/{room}")
    assert reply.status == 200
    body = reply.json()
    return int(body["online"]), int(body["connections"])


async def wait_figures(system: System, room: str, want: tuple[int, int], within: float) -> None:
    with trio.fail_after(within):
        while await figures(system, room) != want:
            await trio.sleep(0.05)


async def test_one_user_with_three_connections_counts_once(
    nursery: trio.Nursery, live_settings: Settings
) -> None:
    a = await start_system(nursery, live_settings)
    b = await start_system(nursery, live_settings, ("gateway",))
    assert a.ws_port and b.ws_port and a.gateway
    same = token("same")
    async with trio.open_nursery() as n:
        await connect(n, a.ws_port, "people", tok=same)
        await connect(n, a.ws_port, "people", tok=same)
        await connect(n, b.ws_port, "people", tok=same)
        await connect(n, b.ws_port, "people", tok=token("other"))
        await connect(n, a.ws_port, "people")
        anonymous = await connect(n, a.ws_port, "people")
        # 2 users + 2 anonymous connections; 6 connections in all.
        await wait_figures(a, "people", (4, 6), within=10)
        assert a.metrics.viewers_local.labels("users")._value.get() == 1
        assert a.metrics.viewers_local.labels("anonymous")._value.get() == 2
        assert a.metrics.connections_open._value.get() == 4
        # An anonymous viewer logs in (a first token in an auth message) as a user
        # already counted: one person fewer, the same connections.
        await anonymous.send(type="auth", token=same)
        await anonymous.wait_for(lambda c: any(m["event"] == "auth" for m in c.of_type("notice")))
        await wait_figures(a, "people", (3, 6), within=10)
        # Frames tell the room the same (the same user once more changes nothing).
        late = await connect(n, b.ws_port, "people", tok=same)
        sender = await connect(n, a.ws_port, "people", tok=token("other"))
        with trio.fail_after(10):  # the worker counts a room once it has comments
            for k in range(100):
                ack = await sender.comment(f"hello {k}", nonce=f"n{k}")
                await late.wait_for(lambda c, i=ack["id"]: i in c.item_ids())
                if late.frames[-1]["online"] == 3:
                    break
                await trio.sleep(0.2)
        assert late.frames[-1]["online"] == 3
        n.cancel_scope.cancel()


async def test_killing_half_the_clients_drops_the_count_within_the_liveness_bound(
    nursery: trio.Nursery, live_settings: Settings
) -> None:
    a = await start_system(nursery, live_settings)
    b = await start_system(nursery, live_settings, ("gateway",))
    assert a.ws_port and b.ws_port
    proxy = FaultProxy(b.ws_port)
    proxy_port = await nursery.start(proxy.run)
    async with trio.open_nursery() as n:
        stay = [
            await Peer.open(n, (a.ws_port, b.ws_port)[i % 2], "half", token(f"s{i}"))
            for i in range(4)
        ]
        reset = [await Peer.open(n, a.ws_port, "half", token(f"r{i}")) for i in range(2)]
        silent = [await Peer.open(n, proxy_port, "half", token(f"q{i}")) for i in range(2)]
        await wait_figures(a, "half", (8, 8), within=10)
        # Alive and answering pings for several intervals: nobody is dropped.
        await trio.sleep(3 * MAX_S)
        assert await figures(a, "half") == (8, 8)
        for peer in reset:
            peer.kill()
        proxy.pause()  # the link goes silent both ways, the sockets stay open
        # Dead connections are closed within the liveness bound, and leave the count at
        # the next presence report.
        await wait_figures(a, "half", (4, 4), within=BOUND_S + 2 * PRESENCE_EVERY_S + 1)
        # The silent ones were found by the pings (closed as dead, 1001), the living
        # were never closed.
        assert b.metrics.connections_closed.labels("dead")._value.get() == len(silent)
        assert not any(isinstance(e, CloseConnection) for p in stay for e in p.events)
        n.cancel_scope.cancel()
        proxy.resume()


async def test_big_rooms_count_by_hyperloglog_merged_with_the_exact_lists(
    nursery: trio.Nursery, live_settings: Settings
) -> None:
    """With ``DANMAKU_ONLINE_EXACT_MAX`` = 1, a gateway with three users in the room
    counts them by HyperLogLog while another lists its one user exactly: a user on both
    counts once; a user who leaves the big gateway stops counting within two buckets;
    a report in the format of an older gateway (``count:stamp``) counts as anonymous."""
    settings = live_settings.replace(online_exact_max=1)
    a = await start_system(nursery, settings)
    b = await start_system(nursery, settings, ("gateway",))
    assert a.ws_port and b.ws_port
    async with trio.open_nursery() as n:
        for uid in ("x", "y"):
            await connect(n, a.ws_port, "big", tok=token(uid))
        leaver = await Peer.open(n, a.ws_port, "big", token("z"))
        await connect(n, b.ws_port, "big", tok=token("x"))  # x again, on the listing gateway
        await connect(n, b.ws_port, "big")
        await wait_figures(a, "big", (4, 5), within=10)  # x, y, z + 1 anonymous
        leaver.kill()
        await wait_figures(a, "big", (3, 4), within=2 * HLL_BUCKET_MS / 1000 + 2)
        # An older gateway's report (connections only) during a rolling upgrade.
        stamp = int(time.time() * 1000) + 60_000  # fresh for the rest of the test
        await trio.to_thread.run_sync(
            lambda: a.store.core.r.hset(keys.online("big"), "g-old", f"2:{stamp}")
        )
        assert await figures(a, "big") == (5, 6)
        n.cancel_scope.cancel()
