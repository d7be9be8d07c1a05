"""The lean WebSocket client against trio-websocket's server (what danmaku runs), and the
frame codec (pure)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from loadtest import client
from loadtest.client import Counters, connection
from loadtest.wire import Closed, HandshakeFailed, WebSocket, encode_frame, parse_frames


def test_frames_roundtrip_in_pieces() -> None:
    payloads = [b"", b"hi", os.urandom(200), os.urandom(70_000)]
    wire = b"".join(
        encode_frame(1, p, os.urandom(4) if i % 2 else None) for i, p in enumerate(payloads)
    )
    buf, got = bytearray(), []
    for at in range(0, len(wire), 1000):  # partial frames stay in the buffer
        buf += wire[at : at + 1000]
        got += parse_frames(buf)
    assert [p for _, _, p in got] == payloads and all(fin and op == 1 for fin, op, _ in got)
    assert buf == bytearray()


async def _serve(
    nursery: trio.Nursery, handler: Callable[[WebSocketRequest], Awaitable[None]]
) -> int:
    server = await nursery.start(
        lambda task_status: serve_websocket(handler, "127.0.0.1", 0, None, task_status=task_status)
    )
    return int(server.port)


async def test_messages_and_the_servers_close_code() -> None:
    got: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        got.append(str(await ws.get_message()))
        for text in ("one", "x" * 100_000, "三"):
            await ws.send_message(text)
        await ws.aclose(4000, "too slow")

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, handler)
        ws = await WebSocket.connect(f"ws://127.0.0.1:{port}/ws?room=r")
        await ws.send_message('{"type":"comment"}')  # masked: the server must unmask it
        assert [await ws.get_message() for _ in range(3)] == ["one", "x" * 100_000, "三"]
        with pytest.raises(Closed) as info:
            await ws.get_message()
        assert (info.value.code, ws.closed) == (4000, 4000)
        assert got == ['{"type":"comment"}']
        nursery.cancel_scope.cancel()


async def test_client_close_handshake() -> None:
    codes: list[int | None] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            codes.append(exc.reason.code if exc.reason else None)

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, handler)
        ws = await WebSocket.connect(f"ws://127.0.0.1:{port}/ws")
        with trio.fail_after(5):
            await ws.aclose()
            while not codes:
                await trio.sleep(0.01)
        assert codes == [1000] and ws.closed == 1000
        nursery.cancel_scope.cancel()


async def test_rejected_handshake_reports_the_status() -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(429, body=b"busy")

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, handler)
        with pytest.raises(HandshakeFailed) as info:
            await WebSocket.connect(f"ws://127.0.0.1:{port}/ws")
        assert info.value.status == 429
        nursery.cancel_scope.cancel()


async def test_a_timed_out_connect_is_closed_not_left_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old client left a timed-out attempt's reader task in the run's nursery: the
    handshake completed later and the server kept writing frames to it."""
    seen: list[str] = []

    async def silent(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)  # the handshake request, never answered
        seen.append("eof" if await stream.receive_some(4096) == b"" else "data")

    monkeypatch.setattr(client, "CONNECT_TIMEOUT_S", 0.2)
    c = Counters(1)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, silent, 0)
        port = listeners[0].socket.getsockname()[1]
        async with connection(c, f"ws://127.0.0.1:{port}/ws") as ws:
            assert ws is None
        with trio.fail_after(2):
            while not seen:
                await trio.sleep(0.01)
        assert seen == ["eof"] and c.errors == {"connect_timeout": 1} and c.attempted == 1
        nursery.cancel_scope.cancel()
