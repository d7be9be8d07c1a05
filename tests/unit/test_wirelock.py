"""``WireLock`` and the raw writer's hold across a partial write (no server: a socket
pair whose reader stops reading)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from danmaku.gateway.fastpath import RawWriter, WireLock


async def test_a_held_wire_makes_lock_users_wait_until_released() -> None:
    lock = WireLock()
    lock.hold()
    assert lock.locked() and lock.held
    with pytest.raises(RuntimeError):
        lock.hold()
    entered: list[str] = []

    async def writer() -> None:
        async with lock:
            entered.append("pong")

    async with trio.open_nursery() as n:
        n.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert entered == []  # waiting for the holder
        lock.release()
        lock.release()  # idempotent
    assert entered == ["pong"] and not lock.locked()


async def test_partial_write_holds_the_wire_until_the_rest_is_out() -> None:
    a, b = trio.socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stream, peer = trio.SocketStream(a), trio.SocketStream(b)
    lock = WireLock()
    raw = RawWriter(stream, a._sock, lock)  # type: ignore[attr-defined]
    data = b"x" * 1_000_000
    sent = raw.try_send(data)
    assert 0 < sent < len(data)
    assert raw.held and not raw.idle()
    got = bytearray()

    async def read_all() -> None:
        while len(got) < len(data) + 4:
            got.extend(await peer.receive_some(65536))

    async def other_write() -> None:  # what trio-websocket's pong would do
        async with lock:
            await stream.send_all(b"PONG")

    async with trio.open_nursery() as n:
        n.start_soon(other_write)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(read_all)
        await raw.send_held(memoryview(data)[sent:])
    assert not raw.held
    assert bytes(got) == data + b"PONG", "the other write landed inside the held bytes"
    stream.socket.close()
    peer.socket.close()
