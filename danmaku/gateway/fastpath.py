"""Encode once, write many: WebSocket frames built once per gateway and written straight
to each viewer's socket.

trio-websocket runs wsproto per connection: ``send_message`` re-frames the same text for
every viewer and takes a lock and a task switch each time (~30 us of CPU per delivery,
measured). A server-to-client text frame is just a header and the payload (with
permessage-deflate agreed: RSV1 and the payload compressed on its own, ``deflate.py``),
so the gateway builds those bytes once per frame and ``RawWriter.try_send`` hands them
to the kernel with one non-blocking ``send()`` from the broadcast loop.

This module is the only place that touches trio-websocket internals (``_stream``,
``_stream_lock``, ``_wsproto``, ``_recv_channel`` and ``_message_parts`` of
``WebSocketConnection`` and its ``_accept`` steps (``accept``, to hand wsproto the
permessage-deflate extension), trio-websocket 0.12, and wsproto 1.x's frame decoder
state; both versions are pinned in pyproject.toml). ``RawWriter.for_connection`` and
``install_inbound`` return ``None`` when internals are not as expected, which makes
callers fall back to ``send_message`` and ``get_message``. Rules that keep the wire
valid:

* raw bytes are written only when nothing else is in flight on the connection (its
  stream lock is free, and the caller has nothing queued), so frames never interleave
  with wsproto's own writes (pongs, close frames, acks);
* a partial write leaves the rest of the frame to be written next, before anything else
  (callers queue the remainder at the head and never drop it), and keeps the wire: the
  connection's stream lock is replaced by a ``WireLock`` that the partial write
  *holds* until the rest is out, so a pong or close frame of trio-websocket's own can
  never land inside the unfinished frame.

The receiving side has its counterpart: ``install_inbound`` puts a ``FastInbound``
(``inbound.py``) in place of the connection's wsproto ``Connection`` so plain text
messages reach the gateway straight from trio-websocket's reader task, installed only
when wsproto sits exactly between two frames.

It also carries one fix: trio-websocket 0.12 drops the TCP connection without a close
frame when wsproto finds a protocol error in what the peer sent (invalid UTF-8 in a text
message, a malformed frame); ``install_protocol_error_close`` makes the server first tell
the peer why, with the close code wsproto chose (1007, 1002), as RFC 6455 7.1.7 asks.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest
from wsproto import WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import AcceptConnection, CloseConnection
from wsproto.extensions import Extension

from danmaku.gateway.inbound import FastInbound


class Parker(Protocol):
    """What a ``WaitFirstStream`` needs of the task that reads for it (``ReadPoller`` in
    poller.py, which imports this module: the protocol keeps the import one way)."""

    async def wait(self, stream: WaitFirstStream) -> bytes | None: ...

    def forget(self, stream: WaitFirstStream, exc: BaseException) -> None: ...


_OP_TEXT_FIN = 0x81
_OP_CLOSE_FIN = 0x88
PING_FRAME = b"\x89\x00"  # an unmasked ping with no payload (server to client)
# wsproto's protocol errors, and 1009 from an extension (``deflate.ServerDeflate``: a
# compressed message inflating past the limit)
_PROTOCOL_ERRORS = frozenset({1002, 1007, 1009})


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


def offered_extensions(request: WebSocketRequest) -> list[str]:
    """The extension offers of an upgrade request (its ``Sec-WebSocket-Extensions``,
    split at commas): wsproto keeps them out of the headers trio-websocket shows."""
    offers: Any = getattr(getattr(request, "_event", None), "extensions", None)
    return [str(o) for o in offers] if isinstance(offers, list) else []


async def accept(
    request: WebSocketRequest, extensions: Sequence[Extension] | None = None
) -> WebSocketConnection:
    """``request.accept()``, with ``extensions`` (wsproto ``Extension`` objects) offered
    to wsproto's handshake, which trio-websocket 0.12's ``accept`` cannot pass: the same
    steps as its ``WebSocketConnection._accept``, with ``AcceptConnection.extensions``.
    The extensions' ``accept`` decides what is answered (``deflate.ServerDeflate``)."""
    if not extensions:
        return await request.accept()
    conn: Any = request._connection
    event: Any = request._event
    conn._subprotocol = None
    conn._path = event.target
    await conn._send(AcceptConnection(subprotocol=None, extensions=list(extensions)))
    conn._open_handshake.set()
    return conn  # type: ignore[no-any-return]


def install_frame_budget() -> None:
    """Patch trio-websocket so pings, pongs and message fragments spend a connection's
    message budget. A connection opts in by carrying ``_danmaku_charge``, a callable
    taking the wsproto event and returning ``False`` when the budget is spent (the
    gateway then closes it with 1008); such a ping gets no pong. Without the patch, a
    client could make the server answer 24,000 pings a second on one connection.
    Whole messages are not charged here: the gateway charges them as it handles them.
    Idempotent."""
    cls: Any = WebSocketConnection
    if getattr(cls._handle_ping_event, "_danmaku_patched", False):
        return

    def charged(original: Any, whole_messages_free: bool) -> Any:
        async def handle(self: Any, event: Any) -> None:
            charge = getattr(self, "_danmaku_charge", None)
            if (
                charge is not None
                and not (whole_messages_free and getattr(event, "message_finished", True))
                and not charge(event)
            ):
                # Over budget: the gateway is closing the connection. Read no more (the
                # peer's further frames would only cost parsing); the kernel's buffers
                # push back on the flood until the close times out.
                self._reader_running = False
                return
            await original(self, event)

        handle._danmaku_patched = True  # type: ignore[attr-defined]
        return handle

    cls._handle_ping_event = charged(cls._handle_ping_event, False)
    cls._handle_pong_event = charged(cls._handle_pong_event, False)
    cls._handle_message_event = charged(cls._handle_message_event, True)


def slim_connection(ws: WebSocketConnection, request: WebSocketRequest | None = None) -> bool:
    """Drop what only the opening handshake needed from an accepted connection.

    wsproto's ``WSConnection`` keeps its ``H11Handshake`` (an h11 connection, its buffer,
    the request event) for the life of the connection and then only forwards to the
    ``Connection`` the handshake created; both have the same ``state``, ``send``,
    ``receive_data``, ``events`` and ``client``, which is all trio-websocket uses. With
    the connection in place of the wrapper an idle viewer costs ~2.5 KB less. Only done
    when the handshake has nothing left to say; returns whether it was done.

    ``request`` (kept by trio-websocket's connection task for the connection's life)
    also loses its header list: nothing reads a request's headers after ``accept``.
    """
    event: Any = getattr(request, "_event", None)
    headers = getattr(event, "extra_headers", None)
    if isinstance(headers, list):
        headers.clear()
    proto: Any = getattr(ws, "_wsproto", None)
    if not isinstance(proto, WSConnection):
        return False
    conn = proto.connection
    pending = getattr(proto.handshake, "_events", None)
    if not isinstance(conn, Connection) or conn.state != ConnectionState.OPEN or pending:
        return False
    ws._wsproto = conn  # type: ignore[assignment]
    return True


def install_inbound(
    ws: WebSocketConnection,
    sink: Callable[[str | bytes], None],
    max_message_bytes: int,
    on_pong: Callable[[], None] | None = None,
    inflate: bool = False,
) -> FastInbound | None:
    """Put a ``FastInbound`` in place of an open connection's wsproto ``Connection`` (see
    ``slim_connection``), so plain text messages reach ``sink`` straight from the reader
    task. Messages already waiting in trio-websocket's channel go to ``sink`` first, in
    order, in the same step. ``inflate``: the connection agreed to permessage-deflate
    (compressed text frames are taken too). Returns ``None`` (nothing changed; messages
    keep arriving via ``get_message``) unless the connection sits exactly between two
    frames: wsproto holds no unparsed bytes, no half-received message and no pending
    event."""
    conn: Any = getattr(ws, "_wsproto", None)
    if not isinstance(conn, Connection) or conn.state is not ConnectionState.OPEN:
        return None
    proto: Any = getattr(conn, "_proto", None)
    decoder: Any = getattr(proto, "_frame_decoder", None)
    messages: Any = getattr(proto, "_message_decoder", None)
    channel: Any = getattr(ws, "_recv_channel", None)
    if (
        decoder is None
        or messages is None
        or len(decoder.buffer) != 0
        or decoder.header is not None
        or messages.opcode is not None
        or getattr(conn, "_events", True)
        or getattr(ws, "_message_parts", True)
        or not isinstance(channel, trio.MemoryReceiveChannel)
    ):
        return None
    while True:
        try:
            sink(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    inbound = FastInbound(conn, sink, max_message_bytes, on_pong, inflate)
    ws._wsproto = inbound  # type: ignore[assignment]
    return inbound


class WaitFirstStream:
    """A plain-TCP connection's stream whose ``receive_some`` waits for data, then reads.

    trio's ``SocketStream.receive_some`` tries ``recv()`` first and waits only when that
    fails; a reader that keeps up (every sender, between two comments) fails every time:
    a system call and an ``OSError`` raised and caught per read. Waiting first skips them
    (measured: 70 -> 59 us of gateway CPU per comment when each comment is its own read,
    26 -> 23 us pipelined; docs/benchmarks.md). Errors are translated as trio does
    (``ClosedResourceError`` for a closed socket, ``BrokenResourceError`` otherwise).

    With a ``ReadPoller`` and the connection's ``FastInbound``, the reading is the
    poller's while the connection is fast: ``receive_some`` parks until the poller has
    something for the reader task (``poller.py``), and ``aclose`` wakes it first.
    Everything else is the wrapped ``SocketStream``'s; eight slots, so an idle viewer pays
    ~100 bytes for it.

    Wrapped at accept (``early``, ``wrap_at_accept``), before trio-websocket's reader
    task first reads, the stream can hand an idle reader to the poller: until ``attach``
    gives it the poller and the inbound side, its own waits can be interrupted, and
    ``attach`` interrupts the one under way, so the reader parks in the poller at once.
    (Wrapped later, the reader is already waiting in the ``SocketStream``, and would stay
    there until the peer's first bytes: for an idle viewer, the answer to its first
    ping, at the cost of a task wake and a registration per connection.)
    """

    __slots__ = ("_wait", "early", "inbound", "parked_fd", "poller", "reader", "sock", "stream")

    def __init__(
        self,
        stream: trio.SocketStream,
        sock: socket.socket,
        poller: Parker | None = None,
        inbound: FastInbound | None = None,
        *,
        early: bool = False,
    ) -> None:
        self.stream = stream
        self.sock = sock
        self.poller = poller
        self.inbound = inbound
        self.reader: trio.lowlevel.Task | None = None  # parked in the poller
        self.parked_fd = -1
        self.early = early  # ``attach`` may still come
        self._wait: trio.CancelScope | None = None  # an own wait ``attach`` interrupts

    def fileno(self) -> int:
        return self.sock.fileno()

    def attach(self, poller: Parker | None, inbound: FastInbound | None) -> None:
        """Read by ``poller`` while ``inbound`` is fast (both given) from now on: a reader
        waiting for itself meanwhile moves there now."""
        self.poller, self.inbound, self.early = poller, inbound, False
        if self._wait is not None:
            self._wait.cancel()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        sock = self.sock
        while True:
            poller, inbound = self.poller, self.inbound
            if poller is not None and inbound is not None and inbound.fast:
                data = await poller.wait(self)
                if data is not None:
                    return data
                self.poller = None  # the poller stopped or is done with us: read for ourselves
            if sock.fileno() < 0:
                raise trio.ClosedResourceError("this socket was already closed")
            if self.early:
                with trio.CancelScope() as waiting:
                    self._wait = waiting
                    await trio.lowlevel.wait_readable(sock)
                self._wait = None
                if waiting.cancelled_caught:
                    continue  # attached meanwhile: to the poller
            else:
                await trio.lowlevel.wait_readable(sock)  # ClosedResourceError if closed
            try:
                return sock.recv(max_bytes or 65536)
            except (BlockingIOError, InterruptedError):
                continue  # woken without data after all: wait again
            except OSError as exc:
                raise stream_error(exc) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        if self.poller is not None:
            self.poller.forget(self, trio.ClosedResourceError("the stream was closed"))
        await self.stream.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """What trio's streams raise for a failed ``recv()``: ``ClosedResourceError`` for a
    closed socket, ``BrokenResourceError`` otherwise."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def install_wait_first_receive(
    ws: WebSocketConnection,
    poller: Parker | None = None,
    inbound: FastInbound | None = None,
) -> bool:
    """Put a ``WaitFirstStream`` in place of a plain-TCP connection's stream (after its
    ``RawWriter`` took the ``SocketStream`` itself), read by ``poller`` while ``inbound``
    is fast when both are given. Returns whether it was installed."""
    current: Any = getattr(ws, "_stream", None)
    if isinstance(current, WaitFirstStream):  # wrapped at accept (``wrap_at_accept``)
        current.attach(poller, inbound)
        return True
    plain = _plain_socket(ws)
    if plain is None:
        return False
    ws._stream = WaitFirstStream(*plain, poller, inbound)  # type: ignore[assignment]
    return True


def wrap_at_accept(stream: trio.abc.Stream) -> Any:
    """An accepted plain-TCP stream as a ``WaitFirstStream`` that ``attach`` can move to
    the poller later (give it to the ``WebSocketConnection``, before its reader task
    runs); any other stream (TLS) as it is."""
    if isinstance(stream, trio.SocketStream):
        sock = getattr(stream.socket, "_sock", None)
        if isinstance(sock, socket.socket):
            return WaitFirstStream(stream, sock, early=True)
    return stream


def _plain_socket(ws: WebSocketConnection) -> tuple[trio.SocketStream, socket.socket] | None:
    """A connection's ``SocketStream`` and the stdlib socket under it; ``None`` over TLS,
    or when trio's internals are not as expected."""
    stream: Any = getattr(ws, "_stream", None)
    if isinstance(stream, WaitFirstStream):
        return stream.stream, stream.sock
    if not isinstance(stream, trio.SocketStream):
        return None
    sock = getattr(stream.socket, "_sock", None)
    return (stream, sock) if isinstance(sock, socket.socket) else None


def text_frame(payload: bytes) -> bytes:
    """The wire bytes of one unmasked, final text frame carrying ``payload`` (RFC 6455
    5.2: servers never mask). ``payload`` must be UTF-8."""
    n = len(payload)
    if n < 126:
        return bytes((_OP_TEXT_FIN, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", _OP_TEXT_FIN, 126, n) + payload
    return struct.pack("!BBQ", _OP_TEXT_FIN, 127, n) + payload


class WireLock:
    """Stands in for a connection's stream lock (trio-websocket's one use of it: ``async
    with lock:`` around each of its writes) and can also be *held* across tasks.

    ``hold()`` (sync, any task, only when not ``locked()``) reserves the wire until
    ``release()`` (any task, idempotent); while held, trio-websocket's writes wait. The
    holder writes without taking the lock (it owns the wire).

    ``free`` is the one flag the broadcast loop reads per viewer: nothing holds the wire,
    no trio-websocket write is waiting or under way, and (with ``ws``) no close frame can
    have gone out. Kept up to date at every change of those, so a raw write needs no
    calls into this object, trio's lock or trio-websocket to know it may go (measured:
    those checks were ~15% of a frame write's CPU).
    """

    __slots__ = ("_held", "_lock", "_ws", "free")

    def __init__(self, ws: WebSocketConnection | None = None) -> None:
        self._lock = trio.StrictFIFOLock()
        self._held: trio.Event | None = None
        self._ws = ws  # its ``closed`` is checked whenever the wire comes free
        self.free = ws is None or ws.closed is None

    def _refresh(self) -> None:
        # Once trio-websocket has closed (a close frame is its last write), never again.
        self.free = (
            self._held is None
            and not self._lock.locked()
            and (self._ws is None or self._ws.closed is None)
        )

    def locked(self) -> bool:
        return self._held is not None or self._lock.locked()

    @property
    def held(self) -> bool:
        return self._held is not None

    def hold(self) -> None:
        if self.locked():
            raise RuntimeError("the wire is in use")
        self._held = trio.Event()
        self.free = False

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.set()
            self._refresh()

    async def __aenter__(self) -> None:
        self.free = False  # a write is coming: raw writes wait from now on
        try:
            while True:
                if self._held is not None:
                    await self._held.wait()
                    self.free = False  # release() refreshed it; we still want the wire
                    continue
                try:
                    # Taken in this step, so ``free`` is never seen True while we own it
                    # (trio's acquire() yields after taking an uncontended lock).
                    self._lock.acquire_nowait()
                except trio.WouldBlock:
                    await self._lock.acquire()  # ownership is handed over on release
                self.free = False
                if self._held is None:
                    return
                self._lock.release()  # held while we queued for the lock: wait for it
        except BaseException:
            self._refresh()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._refresh()


class RawWriter:
    """Direct writes to one connection's socket. Owned by that connection's ``Viewer``,
    whose per-frame loop reads ``wire.free`` and writes to ``sock`` itself (``try_send``
    inlined: it runs once per viewer per frame); everything else goes through here."""

    __slots__ = ("_stream", "sock", "wire")

    def __init__(self, stream: trio.SocketStream, sock: socket.socket, lock: WireLock) -> None:
        self._stream = stream
        self.sock = sock
        self.wire = lock

    @classmethod
    def for_connection(cls, ws: WebSocketConnection) -> RawWriter | None:
        """A writer for a plain-TCP trio-websocket connection, or ``None`` (TLS, or
        internals not as expected) so the caller uses ``send_message``."""
        plain = _plain_socket(ws)
        lock: Any = getattr(ws, "_stream_lock", None)
        if plain is None:
            return None
        if isinstance(lock, trio.StrictFIFOLock) and not lock.locked():
            lock = ws._stream_lock = WireLock(ws)  # type: ignore[assignment]
        if not isinstance(lock, WireLock):
            return None
        return cls(*plain, lock)

    def idle(self) -> bool:
        """Nothing of trio-websocket's is being written or waiting to be, nothing holds
        the wire, and trio-websocket has not closed."""
        return self.wire.free

    def try_send(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes now, without blocking; return the bytes written.

        Only call when ``idle()`` and nothing of yours is queued. When not all of
        ``data`` went out, the wire is held (see ``WireLock``) until ``send_held``
        writes the rest or ``release`` gives up. Raises ``OSError`` when the peer is gone
        (the caller closes the viewer).
        """
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            self.wire.hold()
        return sent

    @property
    def held(self) -> bool:
        """A partly written frame holds the wire."""
        return self.wire.held

    async def send_held(self, data: bytes | memoryview) -> None:
        """Write the rest of a partly written frame (and what follows it) on the held
        wire, then let trio-websocket write again. Releases even when cancelled."""
        try:
            await self._stream.send_all(data)
        finally:
            self.wire.release()

    def release(self) -> None:
        """Give the wire back without finishing (the viewer is being closed). Idempotent."""
        self.wire.release()

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of ``data``, waiting for the socket, serialised with trio-websocket's
        own writes. Cancel-safe only in the sense that the connection is then unusable:
        callers close the viewer when a send is cancelled."""
        async with self.wire:
            await self._stream.send_all(data)
