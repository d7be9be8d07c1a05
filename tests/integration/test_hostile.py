"""Hostile input: the gateway and the web app hold, each attack with its own test."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import trio
import trustme
from trio_websocket import open_websocket_url

from danmaku.config import Settings
from danmaku.system import System
from tests.client import connect, handshake_status, http, start_system, token


async def _status_with_origin(port: int, origin: str | None) -> int:
    return await handshake_status(port, "o", [("Origin", origin)] if origin else [])


async def test_origin_allowlist(nursery: trio.Nursery, settings: Settings) -> None:
    system = await start_system(nursery, settings)
    assert system.ws_port and system.web_port
    web = f"http://127.0.0.1:{system.web_port}"
    assert await _status_with_origin(system.ws_port, web) == 101
    assert await _status_with_origin(system.ws_port, None) == 101  # not a browser
    assert await _status_with_origin(system.ws_port, "https://evil.example") == 403
    assert await _status_with_origin(system.ws_port, "null") == 403
    other = await start_system(nursery, settings.replace(allowed_origins="https://ok.example, *"))
    assert other.ws_port
    assert await _status_with_origin(other.ws_port, "https://evil.example") == 101


async def test_slow_handshake_is_closed_within_the_connect_timeout(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await start_system(nursery, settings.replace(connect_timeout_s=1.0))
    assert system.ws_port
    stream = await trio.open_tcp_stream("127.0.0.1", system.ws_port)
    await stream.send_all(b"GET /ws?room=slow HTTP/1.1\r\nHost: x\r\n")  # ... and stall
    started = trio.current_time()
    with trio.fail_after(5):
        while await stream.receive_some(1024):
            pass
    assert trio.current_time() - started < 3


async def test_per_ip_caps(nursery: trio.Nursery, settings: Settings) -> None:
    system = await start_system(
        nursery, settings.replace(max_conns_per_ip=3, max_sessions_per_ip_per_min=5)
    )
    assert system.ws_port
    async with trio.open_nursery() as n:
        first = [await connect(n, system.ws_port, "caps") for _ in range(3)]
        assert await _status_with_origin(system.ws_port, None) == 429  # 4th at once
        await first[0].ws.aclose()
        await first[1].ws.aclose()
        with trio.fail_after(5):
            while system.metrics.connections_open._value.get() > 1:
                await trio.sleep(0.02)
        assert await _status_with_origin(system.ws_port, None) == 101  # 4th session
        assert await _status_with_origin(system.ws_port, None) == 101  # 5th
        assert await _status_with_origin(system.ws_port, None) == 429  # 6th this minute
        n.cancel_scope.cancel()


async def test_message_flood_closes_the_connection(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await start_system(nursery, settings.replace(max_msgs_per_s=5.0, max_msgs_burst=10.0))
    assert system.ws_port
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "flood")
        for k in range(40):
            try:
                await c.send(type="ping", nonce=str(k))
            except Exception:
                break
        await c.wait_for(lambda cl: cl.closed is not None)
        assert c.closed is not None and c.closed[0] == 1008
        assert c.of_type("error")[-1]["code"] == "flood"
        assert len(c.of_type("pong")) <= 11
        n.cancel_scope.cancel()


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + mask + body


async def test_invalid_utf8_closes_1007_and_binary_is_refused(system: System) -> None:
    assert system.ws_port
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "utf")
        await c.ws.send_message(b'{"type": "ping"}')  # binary
        await c.wait_for(lambda cl: bool(cl.of_type("error")))
        assert c.of_type("error")[0]["code"] == "bad_request"
        # Raw invalid UTF-8 in a text frame, under the WebSocket library's feet.
        stream = c.ws._stream
        await stream.send_all(_masked_text_frame(b'{"type": "\xff\xfe"}'))
        await c.wait_for(lambda cl: cl.closed is not None)
        assert c.closed is not None and c.closed[0] == 1007
        n.cancel_scope.cancel()


async def test_http_guards(system: System) -> None:
    base = f"http://127.0.0.1:{system.web_port}"
    page = await http(base + "/")
    assert page.status == 200
    headers = page.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert headers["x-content-type-options"] == "nosniff"
    big = b'{"nick": "' + b"x" * 100_000 + b'"}'
    reply = await http(
        base + "/api/session", "POST", data=big, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 413 and b"over" in reply.body
    # CORS closed: a preflight from another origin gets no allow header.
    preflight = await http(
        base + "/api/session",
        "OPTIONS",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    metrics = await http(base + "/metrics")
    assert system.settings.secret.encode() not in metrics.body


def test_split_roles_refuse_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_")}
    for role in ("gateway", "worker", "web"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "danmaku",
                role,
                "--redis-url",
                "redis://127.0.0.1:1/0",
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert out.returncode == 2 and "DANMAKU_SECRET is required" in out.stderr, role


async def test_wss_with_a_certificate(
    nursery: trio.Nursery, settings: Settings, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    system = await start_system(
        nursery, settings.replace(tls_cert=str(cert_path), tls_key=str(key_path))
    )
    assert system.urls["websocket"].startswith("wss://")
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    url = f"wss://127.0.0.1:{system.ws_port}/ws?room=tls&token={token('u')}"
    async with open_websocket_url(url, ssl_context=client_ctx) as ws:
        assert b'"welcome"' in (await ws.get_message()).encode()
        await ws.send_message('{"type": "comment", "text": "secure", "nonce": "n"}')
        kinds = []
        with trio.fail_after(10):
            while "frame" not in kinds:
                msg = await ws.get_message()
                kinds.append(msg.split('"type":"')[1].split('"')[0])
    # Plain ws:// to a TLS port fails.
    try:
        async with open_websocket_url(
            f"ws://127.0.0.1:{system.ws_port}/ws?room=tls", connect_timeout=3
        ):
            raise AssertionError("plain connection to a TLS port succeeded")
    except Exception as exc:
        assert not isinstance(exc, AssertionError)


async def _slow_handshake_flood(port: int, count: int) -> list[socket.socket]:
    attackers: list[socket.socket] = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        attackers.append(s)
    await trio.sleep(0.2)
    for s in attackers:
        with contextlib.suppress(OSError):
            s.send(b"GET /ws?room=x HTTP/1.1\r\n")  # never finish the request
    return attackers


async def _until_forgotten() -> None:
    """The gateway drops half-open handshakes after the connect timeout."""
    with trio.fail_after(10):
        while len(os.listdir("/proc/self/fd")) >= 500:
            await trio.sleep(0.2)


async def test_slow_handshake_flood_does_not_stop_real_viewers(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await start_system(nursery, settings.replace(connect_timeout_s=2.0))
    assert system.ws_port
    port = system.ws_port
    attackers = await _slow_handshake_flood(port, 5000)
    ok = 0
    async with trio.open_nursery() as n:

        async def viewer() -> None:
            nonlocal ok
            try:
                with trio.fail_after(10):
                    c = await connect(n, port, "real")
                    if c.of_type("welcome"):
                        ok += 1
            except Exception:
                pass

        async with trio.open_nursery() as vs:
            for _ in range(100):
                vs.start_soon(viewer)
        n.cancel_scope.cancel()
    for s in attackers:
        s.close()
    assert ok >= 99, f"only {ok} of 100 viewers connected during the flood"
    await _until_forgotten()
    # Memory: Python keeps freed memory for reuse rather than returning it to the OS, so
    # "back to baseline" means a second flood of the same size reuses it: no growth.
    after_first = _rss_kb()
    second = await _slow_handshake_flood(port, 5000)
    await trio.sleep(1.0)  # the gateway holds 5,000 half-open handshakes again
    for s in second:
        s.close()
    await _until_forgotten()
    grown_mb = (_rss_kb() - after_first) / 1024
    print(f"\nslow-handshake flood: {ok}/100 viewers connected; a second flood: +{grown_mb:.1f} MB")
    assert grown_mb < 15, "memory kept growing with each flood"


async def test_ping_flood_is_answered_without_growing_memory(system: System) -> None:
    """WebSocket pings are answered by the library; a client that floods pings and never
    reads the pongs only stalls itself (TCP backpressure), and others are unaffected."""
    assert system.ws_port
    async with trio.open_nursery() as n:
        flooder = await connect(n, system.ws_port, "pings")
        other = await connect(n, system.ws_port, "pings")
        sender = await connect(n, system.ws_port, "pings", tok=token("u"))
        stream = flooder.ws._stream
        ping = bytes((0x89, 0x80 | 4)) + b"\0\0\0\0" + b"ping"  # masked, zero mask
        rss_before = _rss_kb()
        with trio.move_on_after(3):
            for _ in range(20_000):
                await stream.send_all(ping * 50)
        reply = await sender.comment("still fine", nonce="x")
        await other.wait_for(lambda c: reply["id"] in c.item_ids())
        fds = len(os.listdir("/proc/self/fd"))
        assert fds < 200
        assert _rss_kb() - rss_before < 50_000, "memory grew under a ping flood"
        n.cancel_scope.cancel()


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_connection_storm_is_accepted_at_the_set_pace(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """DANMAKU_MAX_ACCEPTS_PER_S: a burst of viewers all get in, spread out at the set
    rate (the rest wait in the listen backlog), none refused."""
    system = await start_system(nursery, settings.replace(max_accepts_per_s=40.0))
    assert system.ws_port
    port = system.ws_port
    connected: list[float] = []
    start_at = trio.current_time()

    async def one(n: trio.Nursery) -> None:
        await connect(n, port, "storm")
        connected.append(trio.current_time() - start_at)

    async with trio.open_nursery() as n:
        with trio.fail_after(30):
            async with trio.open_nursery() as storm:
                for _ in range(44):
                    storm.start_soon(one, n)
        n.cancel_scope.cancel()
    assert len(connected) == 44
    # A burst of 4 at once, then 40 per second: the last of 44 waits at least ~1 s.
    assert max(connected) >= 0.9, sorted(connected)[-5:]
