"""Fuzz: generated request lines, query strings, headers and byte soup against a real
``danmaku up`` process, each connection ended in one of the ways a client can end it
(clean close, FIN, RST, half a request, silence past the handshake timeout). After every
example: the process is alive, ``/healthz`` answers and a normal viewer gets ``welcome``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import open_websocket_url

from tests.conftest import SECRET

HANDSHAKE_TIMEOUT_S = 0.5


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    web: int
    ws: int
    silent: list[socket.socket]


@pytest.fixture(scope="module")
def up(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_")},
        "DANMAKU_SECRET": SECRET,
        "DANMAKU_CONNECT_TIMEOUT_S": str(HANDSHAKE_TIMEOUT_S),
        "DANMAKU_MAX_CONNS_PER_IP": "0",
        "DANMAKU_MAX_SESSIONS_PER_IP_PER_MIN": "0",
        "DANMAKU_GUEST_SESSIONS_PER_IP_PER_MIN": "0",
        "DANMAKU_DATA_DIR": str(tmp_path_factory.mktemp("fuzz")),
    }
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "danmaku", "up", "--redis-url", redis_server),
            *("--web-port", "0", "--ws-port", "0", "--log-level", "ERROR"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while "ready" not in urls and time.monotonic() < deadline:
        name, _, url = proc.stdout.readline().decode().strip().partition(": ")
        if not name:
            assert proc.poll() is None, "danmaku up exited at start"
            continue
        urls[name] = url
    ws = int(urls["websocket"].rsplit(":", 1)[1].split("/")[0])
    web = int(urls["player"].split(":")[2].split("/")[0])
    running = Up(proc, web, ws, [])
    yield running
    for sock in running.silent:
        sock.close()
    proc.terminate()
    proc.wait(10)


# ---- what a client may send ------------------------------------------------------------
NASTY = ["²", "%C2%B2", "%", "%zz", "%00", "١", "\x00", "\r", "\n", "\xff", "💥", "+", "-1"]
PARAMS = st.sampled_from(["room", "token", "since", "epoch", "density", "x", ""])
VALUE = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=30),
    st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True),
    st.integers(-(10**25), 10**25).map(str),
)


@st.composite
def targets(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(PARAMS, VALUE), max_size=20))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    path = draw(st.sampled_from(["/ws", "/ws", "/", "/ws/x", "*", "http://h/ws", "", "/%ff"]))
    return f"{path}?{query}" if query else path


HEADERS = {
    "host": "Host: 127.0.0.1",
    "upgrade": "Upgrade: websocket",
    "connection": "Connection: Upgrade",
    "key": "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "version": "Sec-WebSocket-Version: 13",
}


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "GET", "POST", "get", "GET /", ""]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/9", ""]))
    lines = [f"{method} {draw(targets())} {version}"]
    for name, line in HEADERS.items():
        choice = draw(st.sampled_from(["keep", "keep", "keep", "drop", "mangle", "twice"]))
        if choice == "keep":
            lines.append(line)
        elif choice == "mangle":
            lines.append(f"{line.split(':')[0]}: {draw(VALUE)}")
        elif choice == "twice":
            lines += [line, line]
        del name
    lines += draw(st.lists(st.text(max_size=60), max_size=4))  # stray header lines
    head = "\r\n".join(lines) + "\r\n\r\n"
    body = draw(st.binary(max_size=300))  # frames or garbage after the head
    return head.encode("utf-8", "surrogatepass") + body


ENDINGS = ("close", "fin", "rst", "half", "silent")


def _send_and_end(port: int, data: bytes, ending: str, silent: list[socket.socket]) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if ending == "half":
        data = data[: len(data) // 2]
    with contextlib.suppress(OSError):  # the server may close early (a refused request)
        sock.sendall(data)
    if ending == "silent":
        silent.append(sock)  # the server must close it at the handshake timeout
        return
    if ending == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif ending == "fin":
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)
        except OSError:
            pass
    sock.close()


def _alive(up: Up) -> None:
    assert up.proc.poll() is None, "the process died"
    conn = http.client.HTTPConnection("127.0.0.1", up.web, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()

    async def welcome() -> None:
        async with open_websocket_url(f"ws://127.0.0.1:{up.ws}/ws?room=fuzz") as ws:
            with trio.fail_after(5):
                assert '"welcome"' in await ws.get_message()

    trio.run(welcome)


@settings(
    max_examples=int(os.environ.get("DANMAKU_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.one_of(requests(), st.binary(max_size=600)),
    ending=st.sampled_from(ENDINGS),
)
def test_no_input_stops_the_process(up: Up, data: bytes, ending: str) -> None:
    _send_and_end(up.ws, data, ending, up.silent)
    _alive(up)


def test_silent_connections_were_closed_at_the_handshake_timeout(up: Up) -> None:
    """Runs after the fuzz test (file order): of the connections it left open in silence,
    every one that was not upgraded (a viewer may stay silent) was closed by the server."""
    assert up.silent, "the fuzz test left no silent connection to check"
    time.sleep(HANDSHAKE_TIMEOUT_S + 1.0)
    for sock in up.silent:
        sock.settimeout(3)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            assert got.startswith(b"HTTP/1.1 101"), f"still open, not upgraded: {got[:80]!r}"
    _alive(up)
