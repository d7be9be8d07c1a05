"""Liveness against a real gateway and Redis: silent connections are pinged, a peer that
stops answering is closed (1001) within the bound and leaves the online count, a peer
that answers stays; every accepted socket has TCP keepalive."""

from __future__ import annotations

import socket
from typing import Any, Self

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from danmaku.config import Settings
from danmaku.gateway import door
from danmaku.gateway.liveness import Liveness
from danmaku.system import System
from tests.client import connect, http, label, start_system, token
from tests.integration.test_fastpath import RawViewer

MIN_S, MAX_S = 0.3, 0.6
# The longest a dead peer may stay after it was last heard (liveness.py): two waits of
# at most the maximum and one of the minimum, each up to two pinger ticks late.
TICK_S = Liveness(MIN_S, MAX_S, min(0.25, MIN_S / 2)).tick_s
BOUND_S = 2 * MAX_S + MIN_S + 6 * TICK_S


def value(counter: Any) -> float:
    return float(counter._value.get())


class Mute:
    """A client that completes the handshake, reads everything, and never answers a
    ping (a phone gone out of coverage, as the server sees it)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []

    @classmethod
    async def open(cls, port: int, room: str) -> Self:
        self = cls(await trio.open_tcp_stream("127.0.0.1", port))
        request = Request(host="127.0.0.1", target=f"/ws?room={room}")
        await self.stream.send_all(self.ws.send(request))
        await self.until(lambda e: isinstance(e, TextMessage))  # the welcome
        assert any(isinstance(e, AcceptConnection) for e in self.events)
        return self

    async def until(self, cond: Any) -> Event:
        while True:
            for event in self.events:
                if cond(event):
                    return event
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.events += list(self.ws.events())
            if not data:
                for event in self.events:
                    if cond(event):
                        return event
                raise AssertionError(f"stream ended; events {self.events}")

    @property
    def pings(self) -> int:
        return sum(isinstance(e, Ping) for e in self.events)


class Answerer(Mute):
    """An independent client (wsproto, not the gateway's own code) that reads in the
    background and answers each ping with a pong while ``answering``, as browsers do."""

    answering = True
    answered = 0
    last_answer = 0.0

    async def run(self) -> None:
        try:
            while data := await self.stream.receive_some(65536):
                self.ws.receive_data(data)
                for event in self.ws.events():
                    self.events.append(event)
                    if isinstance(event, Ping) and self.answering:
                        await self.stream.send_all(self.ws.send(event.response()))
                        self.answered += 1
                        self.last_answer = trio.current_time()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the test closed the stream, or the server dropped it

    async def wait(self, cond: Any, timeout: float = 30) -> None:
        with trio.fail_after(timeout):
            while not cond():
                await trio.sleep(0.05)

    @property
    def close(self) -> CloseConnection | None:
        closes = [e for e in self.events if isinstance(e, CloseConnection)]
        return closes[0] if closes else None


@pytest.fixture
def live_settings(settings: Settings) -> Settings:
    return settings.replace(ping_min_s=MIN_S, ping_max_s=MAX_S)


async def online(system: System, room: str) -> int:
    reply = await http(f"http://127.0.0.1:{system.web_port}/api/rooms/{room}")
    assert reply.status == 200
    return int(reply.json()["online"])


async def wait_online(system: System, room: str, count: int) -> None:
    with trio.fail_after(15):
        while await online(system, room) != count:
            await trio.sleep(0.1)


async def test_a_peer_that_stops_answering_is_closed_and_leaves_the_online_count(
    nursery: trio.Nursery, live_settings: Settings
) -> None:
    system = await start_system(nursery, live_settings)
    assert system.ws_port and system.gateway
    dead_closed = system.metrics.connections_closed.labels("dead")
    async with trio.open_nursery() as n:
        alive = await connect(n, system.ws_port, "live")  # answers pings (trio-websocket)
        mute = await Mute.open(system.ws_port, "live")
        await wait_online(system, "live", 2)
        start = trio.current_time()
        with trio.fail_after(BOUND_S + 2):
            close = await mute.until(lambda e: isinstance(e, CloseConnection))
        assert isinstance(close, CloseConnection) and close.code == 1001
        assert trio.current_time() - start <= BOUND_S + 1  # the bound, with a margin
        assert mute.pings == 2  # closed at the second unanswered ping, not before
        await mute.stream.aclose()
        await wait_online(system, "live", 1)  # the dead one left the count
        assert value(dead_closed) == 1
        assert alive.closed is None
        n.cancel_scope.cancel()


@pytest.mark.parametrize("fast_path", [1, 0])
async def test_a_peer_that_answers_stays_open_across_many_intervals(
    nursery: trio.Nursery, live_settings: Settings, fast_path: int
) -> None:
    system = await start_system(nursery, live_settings.replace(fast_path=fast_path))
    assert system.ws_port and system.gateway
    pings = system.metrics.pings_sent
    async with trio.open_nursery() as n:
        client = await connect(n, system.ws_port, "stay")
        with trio.fail_after(30):
            while value(pings) < 6:  # pinged (and answered) again and again
                await trio.sleep(0.1)
        assert client.closed is None
        assert value(system.metrics.connections_closed.labels("dead")) == 0
        (viewer,) = system.gateway._viewers
        # The interval grew to the maximum while the pongs came back.
        assert system.gateway.liveness is not None
        (inbox,) = [i for b in system.gateway.liveness._buckets.values() for i in b]
        assert inbox.interval == MAX_S and inbox.missed == 0
        if fast_path:
            # Answering pings does not cost the connection its fast inbound path.
            assert viewer.ws._wsproto.fast  # type: ignore[attr-defined]
        # and the connection still serves messages as before
        await client.send(type="ping", nonce="p1")
        await client.wait_for(lambda c: any(m.get("type") == "pong" for m in c.messages))
        n.cancel_scope.cancel()


async def test_a_peer_that_speaks_is_not_pinged(
    nursery: trio.Nursery, live_settings: Settings
) -> None:
    system = await start_system(nursery, live_settings, ("gateway",))
    assert system.ws_port
    async with trio.open_nursery() as n:
        client = await connect(n, system.ws_port, "chatty")
        pings_before = value(system.metrics.pings_sent)
        for k in range(30):  # a message every MIN_S / 3 for ~10 intervals
            await client.send(type="ping", nonce=f"n{k}")
            await trio.sleep(MIN_S / 3)
        assert value(system.metrics.pings_sent) == pings_before
        assert client.closed is None
        n.cancel_scope.cancel()


async def test_pings_off_with_zero(nursery: trio.Nursery, settings: Settings) -> None:
    system = await start_system(nursery, settings.replace(ping_min_s=0.0), ("gateway",))
    assert system.ws_port and system.gateway
    assert system.gateway.liveness is None
    async with trio.open_nursery() as n:
        mute = await Mute.open(system.ws_port, "off")
        await trio.sleep(3 * MIN_S)
        assert mute.pings == 0 and len(system.gateway._viewers) == 1
        await mute.stream.aclose()
        n.cancel_scope.cancel()


async def test_accepted_sockets_have_tcp_keepalive(system: System) -> None:
    assert system.ws_port and system.gateway
    async with trio.open_nursery() as n:
        await connect(n, system.ws_port, "ka")
        (viewer,) = system.gateway._viewers
        sock = viewer._raw.sock  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == door.KEEPALIVE_IDLE_S
            assert (
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
                == door.KEEPALIVE_INTERVAL_S
            )
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == door.KEEPALIVE_COUNT
        n.cancel_scope.cancel()


async def test_server_pings_never_land_inside_a_partly_written_frame(system: System) -> None:
    """The fast path's wire rule holds for pings: while a viewer's frames are stuck half
    written (it stopped reading), the gateway's pings wait their turn; when it reads, the
    stream parses cleanly and the pings are there, between frames."""
    assert system.ws_port and system.gateway
    slow = await RawViewer.open(system.ws_port, "pingwire")
    await slow.read(until=1)  # welcome
    port = slow.stream.socket.getsockname()[1]
    (viewer,) = [
        v
        for v in system.gateway._viewers
        if v._raw is not None and v._raw.sock.getpeername()[1] == port
    ]
    async with trio.open_nursery() as n:
        sender = await connect(n, system.ws_port, "pingwire", tok=token("u"))
        normal = await connect(n, system.ws_port, "pingwire")
        last = None
        for k in range(150):
            last = await sender.comment(f"{'p' * 80} {label(k)}", nonce=f"{k}")
            if k % 5 == 0:
                viewer.push_ping()  # what the pinger does for a silent connection
        assert last is not None
        await normal.wait_for(lambda c: last["id"] in c.item_ids())
        frames_sent = normal.frames[-1]["seq"]
        await slow.read_through(frames_sent, timeout=5)
        assert slow.messages[-1].get("seq") == frames_sent
        assert slow.pings == 30  # every one arrived, whole
        assert system.metrics.frame_writes_partial._value.get() > 0, "no partial write tested"
        n.cancel_scope.cancel()
    await slow.stream.aclose()


async def test_pongs_over_the_fast_path_keep_a_viewer_and_answers_spend_no_budget(
    nursery: trio.Nursery, live_settings: Settings
) -> None:
    """Pings answered by an independent client (wsproto) are read by the fast path (the
    connection stays fast), count as signs of life (open across many intervals), and
    the answers to the gateway's own pings spend none of the message budget: many more
    answers than the burst, and the connection stays. Pongs nobody asked for still
    spend it: a burst of them closes the connection 1008."""
    system = await start_system(
        nursery, live_settings.replace(max_msgs_per_s=0.01, max_msgs_burst=3.0), ("gateway",)
    )
    assert system.ws_port and system.gateway
    async with trio.open_nursery() as n:
        peer = await Answerer.open(system.ws_port, "answers")
        n.start_soon(peer.run)
        await peer.wait(lambda: peer.answered >= 8)  # more than the burst of 3
        assert peer.close is None
        (viewer,) = system.gateway._viewers
        assert viewer.ws._wsproto.fast  # type: ignore[attr-defined]
        assert system.gateway.poller._parked  # read by the ReadPoller, not by wsproto
        assert value(system.metrics.connections_closed.labels("dead")) == 0
        # Unasked pongs: at most one of them can be taken for an answer.
        await peer.stream.send_all(b"".join(peer.ws.send(Pong(b"u")) for _ in range(6)))
        await peer.wait(lambda: peer.close is not None, timeout=10)
        assert peer.close is not None and peer.close.code == 1008
        n.cancel_scope.cancel()


async def test_a_fast_path_peer_that_stops_answering_is_closed_within_the_bound(
    nursery: trio.Nursery, live_settings: Settings
) -> None:
    system = await start_system(nursery, live_settings, ("gateway",))
    assert system.ws_port and system.gateway
    async with trio.open_nursery() as n:
        peer = await Answerer.open(system.ws_port, "stops")
        n.start_soon(peer.run)
        await peer.wait(lambda: peer.answered >= 3)
        (viewer,) = system.gateway._viewers
        assert viewer.ws._wsproto.fast  # type: ignore[attr-defined]
        peer.answering = False
        pings = peer.pings
        await peer.wait(lambda: peer.close is not None, timeout=BOUND_S + 2)
        assert peer.close is not None and peer.close.code == 1001
        assert trio.current_time() - peer.last_answer <= BOUND_S + 1  # the bound, a margin
        assert peer.pings - pings == 2  # two unanswered pings, then the close
        await peer.stream.aclose()
        with trio.fail_after(10):
            while value(system.metrics.connections_closed.labels("dead")) != 1:
                await trio.sleep(0.05)
        n.cancel_scope.cancel()
