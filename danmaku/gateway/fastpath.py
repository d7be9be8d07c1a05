"""Encode once, write many: WebSocket frames built once per gateway and written straight
to each viewer's socket.

trio-websocket runs wsproto per connection: ``send_message`` re-frames the same text for
every viewer and takes a lock and a task switch each time (~30 us of CPU per delivery,
measured). A server-to-client text frame without extensions (trio-websocket negotiates
none, so no permessage-deflate) is just a header and the payload, so the gateway builds
those bytes once per frame and ``RawWriter.try_send`` hands them to the kernel with one
non-blocking ``send()`` from the broadcast loop.

This module is the only place that touches trio-websocket internals (``_stream`` and
``_stream_lock`` of ``WebSocketConnection``, trio-websocket 0.12; the version is pinned in
pyproject.toml and ``RawWriter.for_connection`` returns ``None`` when they are not as
expected, which makes callers fall back to ``send_message``). Rules that keep the wire
valid:

* raw bytes are written only when nothing else is in flight on the connection (its
  stream lock is free, and the caller has nothing queued), so frames never interleave
  with wsproto's own writes (pongs, close frames, acks);
* a partial write leaves the rest of the frame to be written next, before anything else
  (callers queue the remainder at the head and never drop it).

It also carries one fix: trio-websocket 0.12 drops the TCP connection without a close
frame when wsproto finds a protocol error in what the peer sent (invalid UTF-8 in a text
message, a malformed frame); ``install_protocol_error_close`` makes the server first tell
the peer why, with the close code wsproto chose (1007, 1002), as RFC 6455 7.1.7 asks.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import trio
from trio_websocket import WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

_OP_TEXT_FIN = 0x81
_OP_CLOSE_FIN = 0x88
_PROTOCOL_ERRORS = frozenset({1002, 1007})


def close_frame(code: int, reason: str = "") -> bytes:
    """An unmasked close frame (server to client) with ``code`` and a short reason."""
    body = code.to_bytes(2, "big") + reason.encode()[:123]
    return bytes((_OP_CLOSE_FIN, len(body))) + body


def install_protocol_error_close() -> None:
    """Patch trio-websocket so a server answers a peer's protocol error with a close frame
    carrying the error's code before dropping TCP. Idempotent."""
    original = WebSocketConnection._handle_close_connection_event
    if getattr(original, "_danmaku_patched", False):
        return

    async def handle(self: Any, event: CloseConnection) -> None:
        if (
            self.is_server
            and self._wsproto.state == ConnectionState.OPEN
            and event.code in _PROTOCOL_ERRORS
        ):
            try:
                async with self._stream_lock:
                    await self._stream.send_all(close_frame(event.code, "protocol error"))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await original(self, event)

    handle._danmaku_patched = True  # type: ignore[attr-defined]
    WebSocketConnection._handle_close_connection_event = handle  # type: ignore[method-assign]


def text_frame(payload: bytes) -> bytes:
    """The wire bytes of one unmasked, final text frame carrying ``payload`` (RFC 6455
    5.2: servers never mask). ``payload`` must be UTF-8."""
    n = len(payload)
    if n < 126:
        return bytes((_OP_TEXT_FIN, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", _OP_TEXT_FIN, 126, n) + payload
    return struct.pack("!BBQ", _OP_TEXT_FIN, 127, n) + payload


class RawWriter:
    """Direct writes to one connection's socket. Owned by that connection's ``Viewer``."""

    __slots__ = ("_lock", "_sock", "_stream")

    def __init__(self, stream: trio.SocketStream, lock: trio.StrictFIFOLock) -> None:
        self._stream = stream
        self._lock = lock
        self._sock: socket.socket = stream.socket._sock  # type: ignore[attr-defined]

    @classmethod
    def for_connection(cls, ws: WebSocketConnection) -> RawWriter | None:
        """A writer for a plain-TCP trio-websocket connection, or ``None`` (TLS, or
        internals not as expected) so the caller uses ``send_message``."""
        stream: Any = getattr(ws, "_stream", None)
        lock: Any = getattr(ws, "_stream_lock", None)
        if not isinstance(stream, trio.SocketStream) or not isinstance(lock, trio.StrictFIFOLock):
            return None
        if not isinstance(getattr(stream.socket, "_sock", None), socket.socket):
            return None
        return cls(stream, lock)

    def idle(self) -> bool:
        """Nothing of trio-websocket's is being written right now."""
        return not self._lock.locked()

    def try_send(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes now, without blocking; return the bytes written.

        Only call when ``idle()`` and nothing of yours is queued. Raises ``OSError`` when
        the peer is gone (the caller closes the viewer).
        """
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of ``data``, waiting for the socket, serialised with trio-websocket's
        own writes. Cancel-safe only in the sense that the connection is then unusable:
        callers close the viewer when a send is cancelled."""
        async with self._lock:
            await self._stream.send_all(data)
