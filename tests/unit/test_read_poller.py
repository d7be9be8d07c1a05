"""ReadPoller: one task reading fast connections, on real sockets. The reader task stays
parked while frames go straight to the sink; it is woken with exactly what wsproto must
parse, the end of the stream or an error, and never left waiting on a closed stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, Pong, TextMessage

from danmaku.gateway.fastpath import WaitFirstStream, wrap_at_accept
from danmaku.gateway.inbound import FastInbound
from danmaku.gateway.poller import ReadPoller
from tests.unit.test_inbound import client_bytes


class Conn:
    """A server-side stream with its FastInbound, read through the poller, and the peer."""

    def __init__(self, poller: ReadPoller, sink: Callable[[str | bytes], None] | None = None):
        a, b = trio.socket.socketpair()
        self.sunk: list[str | bytes] = []
        self.inbound = FastInbound(
            Connection(ConnectionType.SERVER), sink or self.sunk.append, 4096
        )
        self.stream = WaitFirstStream(trio.SocketStream(a), a._sock, poller, self.inbound)  # type: ignore[attr-defined]
        self.peer = trio.SocketStream(b)
        self.got: list[bytes | BaseException] = []

    async def read_once(self) -> None:
        """What trio-websocket's reader task does: one receive_some."""
        try:
            self.got.append(await self.stream.receive_some(4096))
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            self.got.append(exc)


@asynccontextmanager
async def running() -> AsyncIterator[tuple[ReadPoller, trio.Nursery]]:
    poller = ReadPoller()
    with trio.fail_after(10):  # a reader left parked would hang the test: fail it instead
        async with trio.open_nursery() as n:
            await n.start(poller.run)
            yield poller, n
            n.cancel_scope.cancel()


async def settle() -> None:
    await trio.sleep(0.05)


async def test_frames_reach_the_sink_while_the_reader_stays_parked() -> None:
    async with running() as (poller, n):
        c = Conn(poller)
        n.start_soon(c.read_once)
        await settle()
        for k in range(3):
            await c.peer.send_all(client_bytes(TextMessage(f"m{k}"), TextMessage("x" * 300)))
            await settle()
        assert c.sunk == ["m0", "x" * 300, "m1", "x" * 300, "m2", "x" * 300]
        assert c.got == [] and len(poller) == 1  # nobody woke the reader


async def test_the_reader_gets_what_wsproto_must_parse_from_its_first_byte() -> None:
    async with running() as (poller, n):
        c = Conn(poller)
        n.start_soon(c.read_once)
        await settle()
        ping = client_bytes(Ping(b"hi"))
        await c.peer.send_all(
            client_bytes(TextMessage("before")) + ping + client_bytes(TextMessage("after"))
        )
        await settle()
        assert c.sunk == ["before"]
        assert len(c.got) == 1 and isinstance(c.got[0], bytes) and c.got[0].startswith(ping)
        assert not c.inbound.fast and len(poller) == 0
        # What the reader does next: its receive_data passes the bytes on to wsproto.
        c.inbound.receive_data(c.got[0])
        assert [type(e).__name__ for e in c.inbound.events()] == ["Ping", "TextMessage"]
        n.start_soon(c.read_once)  # and from now on it reads for itself
        await settle()
        await c.peer.send_all(b"raw")
        await settle()
        assert c.got[1:] == [b"raw"]


async def test_the_end_of_the_stream_and_a_close_under_the_reader() -> None:
    async with running() as (poller, n):
        ended, closed = Conn(poller), Conn(poller)
        n.start_soon(ended.read_once)
        n.start_soon(closed.read_once)
        await settle()
        await ended.peer.aclose()
        await closed.stream.aclose()  # trio-websocket closing the stream while it waits
        await settle()
        assert ended.got == [b""]
        assert len(closed.got) == 1 and isinstance(closed.got[0], trio.ClosedResourceError)
        assert len(poller) == 0


async def test_a_cancelled_reader_leaves_and_its_socket_is_no_longer_watched() -> None:
    async with running() as (poller, n):
        c, other = Conn(poller), Conn(poller)
        with trio.CancelScope() as scope:
            n.start_soon(other.read_once)
            async with trio.open_nursery() as inner:
                inner.start_soon(c.read_once)
                await settle()
                assert len(poller) == 2
                scope.cancel()
        assert len(poller) == 1
        await c.peer.send_all(client_bytes(TextMessage("nobody reads this")))
        await other.peer.send_all(client_bytes(TextMessage("still served")))
        await settle()
        assert c.sunk == [] and other.sunk == ["still served"]


async def test_a_sink_that_raises_ends_only_its_own_connection() -> None:
    def boom(_: str | bytes) -> None:
        raise RuntimeError("bug")

    async with running() as (poller, n):
        bad, good = Conn(poller, boom), Conn(poller)
        n.start_soon(bad.read_once)
        n.start_soon(good.read_once)
        await settle()
        await bad.peer.send_all(client_bytes(TextMessage("x")))
        await settle()
        await good.peer.send_all(client_bytes(TextMessage("fine")))
        await settle()
        assert len(bad.got) == 1 and isinstance(bad.got[0], trio.BrokenResourceError)
        assert good.sunk == ["fine"] and len(poller) == 1


async def test_without_a_running_poller_readers_read_for_themselves() -> None:
    poller = ReadPoller()
    c = Conn(poller)
    with trio.fail_after(10):
        await _read_for_themselves(poller, c)


async def _read_for_themselves(poller: ReadPoller, c: Conn) -> None:
    async with trio.open_nursery() as n:
        n.start_soon(c.read_once)  # never started: reads for itself at once
        await settle()
        await c.peer.send_all(b"direct")
    assert c.got == [b"direct"] and c.sunk == []

    parked = Conn(poller)
    async with trio.open_nursery() as n:
        async with trio.open_nursery() as polling:
            await polling.start(poller.run)
            n.start_soon(parked.read_once)
            await settle()
            assert len(poller) == 1
            polling.cancel_scope.cancel()  # the poller stops: its reader goes back to reading
        await parked.peer.send_all(b"after")
    assert parked.got == [b"after"] and len(poller) == 0


async def test_a_poller_runs_once_at_a_time() -> None:
    async with running() as (poller, _):
        with pytest.raises(RuntimeError):
            await poller.run()


async def test_a_stream_wrapped_at_accept_moves_its_idle_reader_to_the_poller() -> None:
    """A reader already waiting for itself (an idle viewer, after its handshake) parks in
    the poller as soon as the stream is attached, not only after the peer's next bytes:
    then its first pong, like every later frame, reaches the inbound side without
    waking it. Without ``early`` the wait stays the reader's own."""
    async with running() as (poller, n):
        a, b = trio.socket.socketpair()
        stream = wrap_at_accept(trio.SocketStream(a))
        assert isinstance(stream, WaitFirstStream) and stream.early
        pongs: list[int] = []
        inbound = FastInbound(
            Connection(ConnectionType.SERVER), lambda t: None, 4096, lambda: pongs.append(1)
        )
        got: list[bytes] = []

        async def reader() -> None:
            got.append(await stream.receive_some(4096))

        n.start_soon(reader)
        await settle()
        assert len(poller) == 0  # waiting for itself
        stream.attach(poller, inbound)
        await settle()
        assert len(poller) == 1  # moved, with nothing read
        peer = trio.SocketStream(b)
        await peer.send_all(client_bytes(Pong(b"")))
        await settle()
        assert pongs == [1] and got == [] and inbound.fast

        late = WaitFirstStream(trio.SocketStream(b), b._sock)  # type: ignore[attr-defined]
        n.start_soon(lambda: late.receive_some(4096))
        await settle()
        late.attach(poller, FastInbound(Connection(ConnectionType.SERVER), print, 4096))
        await settle()
        assert len(poller) == 1  # not early: its reader waits for the peer's bytes
