"""Error boundaries of the gateway: one regression test per class of fault that once
stopped a whole process, plus the caps that now apply before any HTTP parsing.

Each test runs a real system (gateway, worker, web app) on a real Redis; a fault that
escaped a connection would cancel the test's nursery and fail it. After the attack every
test checks that a normal viewer still gets ``welcome``.
"""

from __future__ import annotations

import os
import socket
import struct
from functools import partial

import trio
from trio_websocket import WebSocketRequest, open_websocket_url

from danmaku.config import Settings
from danmaku.gateway.door import Conn, Door
from danmaku.metrics import Metrics
from danmaku.rules.admission import IpAdmission
from danmaku.system import System
from tests.client import connect, handshake_status, label, start_system, token
from tests.faultproxy import FaultProxy


def upgrade(target: str, extra: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a new TCP connection and read until the server closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    got = b""
    with trio.fail_after(timeout):
        if data:
            await stream.send_all(data)
        try:
            while chunk := await stream.receive_some(65536):
                got += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    return got


async def welcome_works(port: int, room: str = "alive") -> None:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?room={room}") as ws:
        with trio.fail_after(5):
            assert b'"welcome"' in (await ws.get_message()).encode()


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


async def test_a_non_ascii_digit_in_since_is_refused_not_fatal(system: System) -> None:
    assert system.ws_port
    for since in ("%C2%B2", "%D9%A1", "%EF%BC%99"):  # ², Arabic-Indic 1, fullwidth 9
        async with open_websocket_url(
            f"ws://127.0.0.1:{system.ws_port}/ws?room=lobby&since={since}"
        ) as ws:
            with trio.fail_after(5):
                assert '"bad_request"' in await ws.get_message()
    await welcome_works(system.ws_port)


async def test_a_reset_right_after_the_upgrade_request_is_not_fatal(system: System) -> None:
    """The peer is gone before the gateway looks at it (``getpeername`` raises)."""
    assert system.ws_port
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", system.ws_port))
        sock.sendall(upgrade("/ws?room=rst"))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    await welcome_works(system.ws_port)
    with trio.fail_after(5):  # every connection's slot is given back
        while system.gateway and system.gateway.admission.total:
            await trio.sleep(0.05)


async def test_malformed_targets_and_parameters_are_answered_with_400(system: System) -> None:
    assert system.ws_port
    port = system.ws_port
    assert (await exchange(port, upgrade("http://[::1/ws?room=a"))).startswith(b"HTTP/1.1 400")
    many = "&".join(f"p{k}=1" for k in range(17))  # parse_qs(max_num_fields) raised here
    assert (await exchange(port, upgrade(f"/ws?room=a&{many}"))).startswith(b"HTTP/1.1 400")
    assert (await exchange(port, b"GET /ws HTTP/1.1\r\nHost: \x00\xff\r\n\r\n")).startswith(
        b"HTTP/1.1 400"
    )
    tls_hello = await exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
    assert tls_hello == b"" or tls_hello.startswith(b"HTTP/1.1 400")
    # Unknown parameters are ignored; a repeated known one is refused with a reason.
    few = "&".join(f"p{k}=1" for k in range(14))
    await welcome_works(port, f"ok&{few}")
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?room=a&room=b") as ws:
        with trio.fail_after(5):
            assert '"bad_request"' in await ws.get_message()
    await welcome_works(port)


async def test_caps_apply_at_accept_before_any_request_is_read(
    nursery: trio.Nursery, settings: Settings
) -> None:
    per_ip = await start_system(nursery, settings.replace(max_conns_per_ip=2), ("gateway",))
    total = await start_system(nursery, settings.replace(max_connections=2), ("gateway",))
    for system, answer in ((per_ip, b"HTTP/1.1 429"), (total, b"HTTP/1.1 503")):
        assert system.ws_port
        held = [await trio.open_tcp_stream("127.0.0.1", system.ws_port) for _ in range(2)]
        # A third connection that sends nothing at all is answered at once.
        assert (await exchange(system.ws_port, b"")).startswith(answer)
        for stream in held:
            await stream.aclose()
        assert system.gateway
        with trio.fail_after(5):
            while system.gateway.admission.total:
                await trio.sleep(0.05)
        await welcome_works(system.ws_port)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked frames after a 101 response."""
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    frames = []
    while len(rest) >= 2:
        n, at = rest[1] & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(rest[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(rest[2:10], "big"), 10
        frames.append((rest[0] & 0x0F, rest[at : at + n]))
        rest = rest[at + n :]
    return frames


async def test_a_ping_flood_is_closed_like_a_message_flood(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await start_system(nursery, settings.replace(max_msgs_per_s=5.0, max_msgs_burst=10.0))
    assert system.ws_port
    pings = b"".join(_masked(0x9, str(k).encode()) for k in range(500))
    stream = await trio.open_tcp_stream("127.0.0.1", system.ws_port)
    await stream.send_all(upgrade("/ws?room=pings"))
    raw = b""
    with trio.fail_after(10):
        while b'"welcome"' not in raw:
            raw += await stream.receive_some(65536)
        try:
            await stream.send_all(pings)
            while chunk := await stream.receive_some(65536):
                raw += chunk
        except trio.BrokenResourceError:
            pass  # closed under our feet: that is the point
    frames = server_frames(raw)
    opcodes = [op for op, _ in frames]
    assert opcodes.count(0xA) <= 11  # pongs: the burst, not 500
    assert frames[-1][0] == 0x8 and int.from_bytes(frames[-1][1][:2], "big") == 1008
    assert any(op == 0x1 and b'"flood"' in body for op, body in frames)
    await welcome_works(system.ws_port)


async def test_storage_down_during_a_resume_gives_unavailable_and_1013(
    nursery: trio.Nursery, settings: Settings, redis_url: str
) -> None:
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = FaultProxy(redis_port)
    proxy_scope = trio.CancelScope()

    async def proxy_task(task_status: trio.TaskStatus[int]) -> None:
        with proxy_scope:
            await proxy.run(task_status=task_status)

    proxied = await nursery.start(proxy_task)
    system = await start_system(
        nursery, settings.replace(redis_url=f"redis://127.0.0.1:{proxied}/0")
    )
    assert system.ws_port
    async with trio.open_nursery() as n:
        sender = await connect(n, system.ws_port, "resume", tok=token("u1"))
        for k in range(5):
            await sender.comment(label(k), f"n{k}")
        await sender.wait_for(lambda cl: len(cl.item_ids()) >= 5)
        proxy_scope.cancel()  # Redis unreachable from now on
        proxy.cut()
        late = await connect(n, system.ws_port, "resume", since=0, wait_welcome=False)
        await late.wait_for(lambda cl: cl.closed is not None)
        assert late.closed is not None and late.closed[0] == 1013
        assert [e["code"] for e in late.of_type("error")] == ["unavailable"]
        # Still serving: a viewer of a room it has not loaded yet is told the same.
        other = await connect(n, system.ws_port, "another", wait_welcome=False)
        await other.wait_for(lambda cl: cl.closed is not None)
        assert other.closed is not None and other.closed[0] == 1013
        assert [e["code"] for e in other.of_type("error")] == ["unavailable"]
        n.cancel_scope.cancel()


async def test_the_door_ends_only_the_failing_connection(nursery: trio.Nursery) -> None:
    """Whatever a handler raises, before or after the upgrade: that connection gets 400
    or 1011, the error is counted by stage, and the door goes on serving."""
    metrics = Metrics(process=False)

    async def handler(request: WebSocketRequest, conn: Conn) -> None:
        room = request.path.partition("room=")[2]
        if room == "before":
            raise ValueError("failed before the upgrade")
        conn.ws = ws = await request.accept()
        conn.stage = "session"
        if room == "after":
            raise KeyError("failed after the upgrade")
        await ws.send_message("hello")
        await ws.aclose()

    door = Door(handler, IpAdmission(0, 0), metrics, max_message_bytes=4096, connect_timeout_s=2)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(partial(trio.serve_listeners, door.serve, listeners))
    assert (await exchange(port, upgrade("/ws?room=before"))).startswith(b"HTTP/1.1 400")
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?room=after") as ws:
        with trio.fail_after(5):
            while ws.closed is None:
                await trio.sleep(0.02)
        assert ws.closed.code == 1011
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?room=fine") as ws:
        assert await ws.get_message() == "hello"
    errors = metrics.connection_errors
    assert errors.labels("handshake")._value.get() == 1
    assert errors.labels("session")._value.get() == 1
    with trio.fail_after(5):  # every connection's slot is given back
        while door.admission.total:
            await trio.sleep(0.02)


async def _status_with_forwarded(port: int, forwarded_for: str | None) -> int:
    headers = [("X-Forwarded-For", forwarded_for)] if forwarded_for else []
    return await handshake_status(port, "proxied", headers)


async def test_per_ip_caps_count_the_forwarded_client_only_behind_a_trusted_proxy(
    nursery: trio.Nursery, settings: Settings
) -> None:
    capped = settings.replace(max_sessions_per_ip_per_min=2)
    behind = await start_system(nursery, capped.replace(trusted_proxies="127.0.0.1/32"))
    direct = await start_system(nursery, capped)
    assert behind.ws_port and direct.ws_port
    # Behind the proxy: each client its own budget, whatever the proxy's address.
    for client in ("203.0.113.7", "198.51.100.9"):
        assert await _status_with_forwarded(behind.ws_port, client) == 101
        assert await _status_with_forwarded(behind.ws_port, f"10.9.9.9, {client}") == 101
        assert await _status_with_forwarded(behind.ws_port, client) == 429  # its third
    # Not a trusted proxy: the header is the client's own word and changes nothing.
    assert await _status_with_forwarded(direct.ws_port, "203.0.113.7") == 101
    assert await _status_with_forwarded(direct.ws_port, "198.51.100.9") == 101
    assert await _status_with_forwarded(direct.ws_port, "192.0.2.1") == 429
