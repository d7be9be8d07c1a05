"""WaitFirstStream: the gateway's receive side of a plain-TCP connection, on real
sockets: data, end of stream and errors as trio's SocketStream reports them."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from danmaku.gateway.fastpath import WaitFirstStream


async def _pair() -> tuple[WaitFirstStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    ours = trio.SocketStream(a)
    return WaitFirstStream(ours, a._sock), trio.SocketStream(b)  # type: ignore[attr-defined]


async def test_reads_what_arrives_and_then_the_end() -> None:
    stream, peer = await _pair()
    async with trio.open_nursery() as n:
        n.start_soon(peer.send_all, b"hello")
        assert await stream.receive_some(100) == b"hello"
    await stream.send_all(b"back")
    assert await peer.receive_some(100) == b"back"
    await peer.aclose()
    assert await stream.receive_some() == b""
    await stream.aclose()


async def test_a_closed_stream_raises_closed_resource_error() -> None:
    stream, peer = await _pair()
    async with trio.open_nursery() as n:

        async def read() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive_some()

        n.start_soon(read)
        await trio.sleep(0.05)
        await stream.aclose()  # while the read waits
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()
    await peer.aclose()


async def test_a_reset_connection_raises_broken_resource_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    server, _ = await listener.accept()
    stream = WaitFirstStream(trio.SocketStream(server), server._sock)  # type: ignore[attr-defined]
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST
    with pytest.raises(trio.BrokenResourceError):
        await stream.receive_some()
    await stream.aclose()
    listener.close()
