"""A lean WebSocket client (RFC 6455) for the load generator.

trio-websocket runs a background reader task, wsproto and a memory channel per
connection: about 40-100 µs of CPU per message received. A load generator holding
thousands of viewers that each get 10 frames a second spends whole cores on that and
then measures its own backlog instead of the server. ``WebSocket`` reads the socket in
the caller's task, cuts every complete frame out of one ``receive_some`` at once and
hands out text messages; there is no task per connection and no extra queue, so a
viewer that stops reading leaves the data in the kernel (TCP back-pressure, as a slow
browser would).

What it speaks: the client handshake (``Sec-WebSocket-Accept`` checked), unmasked
server frames (text, continuation, binary, ping -> pong, close -> close reply), masked
client frames. One extension, on request: ``permessage-deflate`` (``connect(...,
deflate=True)`` offers it as Chromium does; compressed server messages are inflated, with
no context taken over, as the gateway agrees; what the client sends stays uncompressed,
which RFC 7692 allows). No subprotocols, no TLS (``ws://`` only; the harness is for
loopback and plain test gateways).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import zlib
from collections import deque
from urllib.parse import urlsplit

import trio

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RECEIVE_BYTES = 65536
MAX_HEADER_BYTES = 16384
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
ABNORMAL = 1006  # no close frame: the TCP connection ended
RSV1 = 0x40  # in ``parse_frames``' opcode: the frame's RSV1 bit (deflate: compressed)
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"  # what Chromium offers


class Closed(Exception):
    """The connection is closed; ``code`` is the close code (1006: no close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class HandshakeFailed(Exception):
    """The server did not upgrade the connection; ``status`` is the HTTP status (0 when
    the response was not HTTP or the accept key was wrong)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (via one big-int XOR: fast)."""
    n = len(payload)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final frame; masked with ``key`` (client frames) or not (``None``)."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    bit = 0x80 if key is not None else 0
    if n < 126:
        head.append(bit | n)
    elif n < 65536:
        head.append(bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(bit | 127)
        head += n.to_bytes(8, "big")
    if key is None:
        return bytes(head) + payload
    return bytes(head) + key + mask(payload, key)


def parse_frames(buf: bytearray) -> list[tuple[bool, int, bytes]]:
    """Cut every complete frame off the front of ``buf`` (in place); returns
    ``(fin, opcode, payload)`` for each (masked frames are unmasked; ``RSV1`` is or-ed
    into the opcode of a frame that has it)."""
    out: list[tuple[bool, int, bytes]] = []
    pos, n = 0, len(buf)
    while n - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        length, head = b1 & 0x7F, 2
        if length == 126:
            if n - pos < 4:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if n - pos < 10:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        key = None
        if b1 & 0x80:
            if n - pos < head + 4:
                break
            key = bytes(buf[pos + head : pos + head + 4])
            head += 4
        end = pos + head + length
        if end > n:
            break
        payload = bytes(buf[pos + head : end])
        out.append((bool(b0 & 0x80), b0 & 0x4F, mask(payload, key) if key else payload))
        pos = end
    if pos:
        del buf[:pos]
    return out


class WebSocket:
    """One client connection. ``get_message`` returns the next text message or raises
    ``Closed``; ``send_message`` sends a text message; ``aclose`` runs the closing
    handshake. Only one task may read at a time (``aclose`` reads when nobody does)."""

    def __init__(self, stream: trio.SocketStream, rest: bytes = b"") -> None:
        self.stream = stream
        self.fd = stream.socket.fileno()
        self.buf = bytearray(rest)
        self.pending: deque[str] = deque()
        self.closed: int | None = None  # the close code once closed
        self.close_reason = ""
        self._fragments: list[bytes] = []
        self.deflate = False  # the server agreed to permessage-deflate
        self.bytes_in = 0  # bytes read from the socket after the handshake (egress figures)
        self._compressed = False  # the message being received is compressed
        self._sent_close = False
        self._reading = False
        self._done = trio.Event()
        self._send_lock = trio.Lock()

    @classmethod
    async def connect(cls, url: str, *, deflate: bool = False) -> WebSocket:
        """Open ``ws://host:port/path?query`` (the caller bounds the time: on
        cancellation or failure the socket is closed); with ``deflate``, offer
        permessage-deflate (``self.deflate`` says whether the server agreed)."""
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"not a ws:// URL: {url!r}")
        port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        stream = await trio.open_tcp_stream(parts.hostname, port)
        try:
            key = base64.b64encode(os.urandom(16))
            host = parts.hostname if port == 80 else f"{parts.hostname}:{port}"
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                + (f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if deflate else "")
                + "\r\n"
            ).encode()
            await stream.send_all(request)
            data = bytearray()
            while b"\r\n\r\n" not in data:
                if len(data) > MAX_HEADER_BYTES:
                    raise HandshakeFailed(0, "handshake response too long")
                chunk = await stream.receive_some(RECEIVE_BYTES)
                if not chunk:
                    raise HandshakeFailed(0, "connection closed during the handshake")
                data += chunk
            head, _, rest = bytes(data).partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status_parts = lines[0].split(" ", 2)
            status = (
                int(status_parts[1]) if len(status_parts) > 1 and status_parts[1].isdigit() else 0
            )
            if status != 101:
                raise HandshakeFailed(status, lines[0])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("sec-websocket-accept", "").encode() != accept_key(key):
                raise HandshakeFailed(0, "bad Sec-WebSocket-Accept")
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise
        ws = cls(stream, rest)
        agreed = headers.get("sec-websocket-extensions", "")
        ws.deflate = deflate and agreed.split(";")[0].strip().lower() == "permessage-deflate"
        return ws

    # ---- receiving ---------------------------------------------------------------------

    async def get_message(self) -> str:
        """The next text message (binary ones are decoded as UTF-8 too)."""
        while not self.pending:
            if self.closed is not None:
                raise Closed(self.closed, self.close_reason)
            if self._reading:  # ``aclose`` is reading the close reply
                await self._done.wait()
                continue
            await self._receive()
        return self.pending.popleft()

    async def _receive(self) -> None:
        """One ``receive_some``: every complete frame in it is handled before any await
        (a cancellation loses no message); control replies are sent afterwards."""
        self._reading = True
        try:
            # Frames that came with the handshake response (a server's first message
            # often does) are already in ``buf``: handle them before reading again.
            frames = parse_frames(self.buf) if self.buf else []
            if not frames:
                data = await self._read()
                if not data:
                    await self._finish(ABNORMAL if self.closed is None else self.closed)
                    return
                self.buf += data
                frames = parse_frames(self.buf)
            replies: list[tuple[int, bytes]] = []
            close: int | None = None
            for fin, op, payload in frames:
                if op & RSV1:
                    self._compressed = self.deflate  # (only a message's first frame has it)
                op &= 0x0F
                if op in (OP_TEXT, OP_BINARY, OP_CONT):
                    self._fragments.append(payload)
                    if fin:
                        data = b"".join(self._fragments)
                        if self._compressed:
                            data = zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")
                            self._compressed = False
                        self.pending.append(data.decode("utf-8", "replace"))
                        self._fragments = []
                elif op == OP_PING:
                    replies.append((OP_PONG, payload))
                elif op == OP_CLOSE:
                    close = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                    break
            for op, payload in replies:
                await self._send_frame(op, payload)
            if close is not None:
                if not self._sent_close:
                    await self._send_close(close if close not in (1005, 1006) else 1000)
                await self._finish(close)
        finally:
            self._reading = False

    async def _read(self) -> bytes:
        """Wait until the socket is readable, then read what is there (b"" at EOF).

        ``SocketStream.receive_some`` tries a read first, which fails (a syscall and an
        exception) whenever the viewer is keeping up: one frame per wakeup is the common
        case, so waiting first halves the syscalls per message."""
        while True:
            try:
                await trio.lowlevel.wait_readable(self.fd)
                data = os.read(self.fd, RECEIVE_BYTES)
                self.bytes_in += len(data)
                return data
            except BlockingIOError:
                continue
            except (OSError, trio.ClosedResourceError):
                return b""

    async def abort(self) -> None:
        """Close the socket without a closing handshake (no-op once closed)."""
        if self.closed is None:
            await self._finish(ABNORMAL)

    async def _finish(self, code: int) -> None:
        if self.closed is None:
            self.closed = code
        self._done.set()
        with trio.CancelScope(shield=True):
            await self.stream.aclose()

    # ---- sending -----------------------------------------------------------------------

    async def send_message(self, text: str) -> None:
        if self.closed is not None or self._sent_close:
            raise Closed(self.closed or ABNORMAL, self.close_reason)
        await self._send_frame(OP_TEXT, text.encode())

    async def _send_frame(self, op: int, payload: bytes) -> None:
        frame = encode_frame(op, payload, os.urandom(4))
        try:
            async with self._send_lock:
                await self.stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._finish(ABNORMAL)
            raise Closed(ABNORMAL) from None

    async def _send_close(self, code: int) -> None:
        self._sent_close = True
        with contextlib.suppress(Closed):
            await self._send_frame(OP_CLOSE, code.to_bytes(2, "big"))

    async def aclose(self, code: int = 1000) -> None:
        """Send a close frame and wait for the server's (reading it here when no other
        task is reading), then close the socket. Idempotent; bound it with a timeout."""
        if self.closed is not None:
            return
        try:
            if not self._sent_close:
                await self._send_close(code)
            while self.closed is None:
                if self._reading:
                    await self._done.wait()
                else:
                    await self._receive()
                    self.pending.clear()
        finally:
            if self.closed is None:
                await self._finish(code)
