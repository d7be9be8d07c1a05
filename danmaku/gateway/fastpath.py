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
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import trio
from trio_websocket import WebSocketConnection

_OP_TEXT_FIN = 0x81


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
