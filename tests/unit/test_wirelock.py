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


class _Ws:
    """What WireLock reads of a trio-websocket connection: ``closed``."""

    closed: object = None


async def test_free_says_when_a_raw_write_may_go() -> None:
    ws = _Ws()
    lock = WireLock(ws)  # type: ignore[arg-type]
    assert lock.free
    seen: list[bool] = []
    go = trio.Event()

    async def writer() -> None:  # trio-websocket: async with lock around each write
        async with lock:
            seen.append(lock.free)
            await go.wait()  # the write takes a while (socket full)

    async with trio.open_nursery() as n:
        n.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [False] and not lock.free  # during its write
        go.set()
    assert lock.free  # after it
    lock.hold()
    assert not lock.free
    lock.release()
    assert lock.free
    # trio-websocket closed (its close frame is its last write): never free again.
    ws.closed = "1000"
    async with lock:
        pass
    assert not lock.free


async def test_free_is_never_true_while_a_writer_owns_the_wire() -> None:
    # A writer queued behind a held wire, then behind another writer: at every
    # scheduling point where it owns the lock, free is False.
    lock = WireLock()
    lock.hold()
    owned_and_free: list[bool] = []

    async def writer() -> None:
        async with lock:
            for _ in range(3):
                owned_and_free.append(lock.free)
                await trio.lowlevel.checkpoint()

    async def watcher() -> None:
        for _ in range(50):
            if lock._lock.locked():
                owned_and_free.append(lock.free)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as n:
        n.start_soon(writer)
        n.start_soon(writer)
        n.start_soon(watcher)
        await trio.testing.wait_all_tasks_blocked()
        assert not lock.free  # held, two writers waiting
        lock.release()
    assert owned_and_free and not any(owned_and_free)
    assert lock.free


async def test_a_writer_cancelled_while_waiting_leaves_the_wire_as_it_was() -> None:
    lock = WireLock()
    lock.hold()
    with trio.move_on_after(0.01):
        async with lock:
            raise AssertionError("entered a held wire")
    assert not lock.free  # still held by its holder
    lock.release()
    assert lock.free
    async with lock:  # and the lock itself was not left taken
        pass
    assert lock.free
