"""The gateway's door: every accepted TCP connection inside its own error boundary.

``Door.serve`` is the handler ``trio.serve_listeners`` calls for each accepted stream.
In order, for one connection:

1. ``accept``: the peer's address (a peer that reset the connection before we looked
   is simply gone), then the per-IP and total caps (``IpAdmission``) *before any HTTP
   parsing*: a refused connection costs one small write and a close;
2. ``handshake``: trio-websocket reads the HTTP upgrade request (bounded by
   ``connect_timeout_s``; a client that stays silent is closed at the deadline);
3. ``session``: the gateway's handler (``Sessions.handle``, gateway/session.py) runs the connection.

Whatever a connection raises, in any stage (its handler, its wsproto reader task, the
gateway's message sink called from that task), ends *that connection only*: answered with
HTTP 400 before the upgrade or closed with 1011 after it, logged once at warning level
with its stage and peer (at most ``LOG_BURST`` lines at once, then one a second), and
counted in ``danmaku_connection_errors_total{stage}``. Nothing but cancellation leaves
``serve``, so the gateway's nursery never sees a client's fault.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest
from trio_websocket._impl import RECEIVE_BYTES
from wsproto import ConnectionType, WSConnection

from danmaku.config import DEFAULTS
from danmaku.gateway.fastpath import wrap_at_accept
from danmaku.metrics import Metrics
from danmaku.protocol import CLOSE_INTERNAL
from danmaku.rules.admission import IpAdmission
from danmaku.rules.clientip import IPNetwork, client_ip, is_trusted
from danmaku.rules.ratelimit import TokenBucket
from danmaku.supervise import first_error

log = logging.getLogger(__name__)

LOG_BURST = 20.0  # warnings logged at once before the door slows to one a second
REFUSE_WAIT_S = 0.5  # how long a refused connection may take to read its answer
# TCP keepalive on every accepted socket: a peer silent at the TCP level for
# KEEPALIVE_IDLE_S is probed every KEEPALIVE_INTERVAL_S; after KEEPALIVE_COUNT unanswered
# probes the kernel drops the connection (~2 min), also when WebSocket pings are off.
KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 6


class Conn:
    """One connection as the door sees it: where it is in its life, who it is, and what
    to close if it fails. The handler updates ``stage``, ``request`` and ``ws``."""

    __slots__ = ("counted", "peer", "proxied", "request", "stage", "ws")

    def __init__(self, peer: str, *, proxied: bool = False) -> None:
        self.peer = peer  # the client's address (behind a proxy: once the request is read)
        self.proxied = proxied  # the socket's peer is a trusted proxy
        self.counted = False  # admitted per IP after the request was read (proxied)
        self.stage = "accept"
        self.request: WebSocketRequest | None = None
        self.ws: WebSocketConnection | None = None


Handler = Callable[[WebSocketRequest, Conn], Awaitable[None]]


def _tcp_socket(stream: trio.abc.Stream) -> Any:
    """The trio socket under a TCP (or TLS over TCP) stream, or ``None``."""
    return getattr(getattr(stream, "transport_stream", stream), "socket", None)


def peer_ip(stream: trio.abc.Stream) -> str | None:
    """The peer's IP address of a TCP (or TLS over TCP) stream; ``None`` when the peer is
    already gone (``getpeername`` fails after a reset) or the stream has no socket."""
    sock = _tcp_socket(stream)
    if sock is None:
        return None
    try:
        address = sock.getpeername()
    except OSError:
        return None
    return str(address[0]) if isinstance(address, tuple) else str(address)


def keepalive(stream: trio.abc.Stream) -> bool:
    """Turn on TCP keepalive (``KEEPALIVE_*``) on a TCP (or TLS over TCP) stream's
    socket; options a platform lacks are skipped. Returns whether ``SO_KEEPALIVE`` is
    on; a socket already gone is no error."""
    sock = _tcp_socket(stream)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        return False
    return True


def http_refusal(status: int, reason: str, body: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    data = body.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(data)}\r\nconnection: close\r\n\r\n"
    ).encode() + data


_REFUSALS = {
    "too_many_connections": http_refusal(429, "Too Many Requests", "too_many_connections"),
    "too_many_sessions": http_refusal(429, "Too Many Requests", "too_many_sessions"),
    "server_full": http_refusal(503, "Service Unavailable", "server_full"),
}


class Door:
    """Serves accepted streams: admission, handshake, then ``handler(request, conn)``,
    all inside one boundary per connection (see the module docstring)."""

    def __init__(
        self,
        handler: Handler,
        admission: IpAdmission,
        metrics: Metrics,
        *,
        max_message_bytes: int,
        connect_timeout_s: float,
        message_queue_size: int = 8,
        disconnect_timeout_s: float = 2.0,
        trusted: Sequence[IPNetwork] = (),
        proxy_header: str = DEFAULTS.proxy_header,
    ) -> None:
        self.handler = handler
        self.admission = admission
        self.metrics = metrics
        self.max_message_bytes = max_message_bytes
        self.connect_timeout_s = connect_timeout_s
        self.message_queue_size = message_queue_size
        self.disconnect_timeout_s = disconnect_timeout_s
        # Behind a trusted proxy the per-IP caps wait for the forwarding header.
        self.trusted = tuple(trusted)
        self.proxy_header = proxy_header
        self._log_budget = TokenBucket(1.0, LOG_BURST)
        self._unlogged = 0

    async def serve(self, stream: trio.abc.Stream) -> None:
        """Run one connection to its end. Never raises but ``Cancelled``; the caller
        (``serve_listeners``) closes the stream afterwards."""
        try:
            await self._serve(stream)
        except Exception as exc:
            # Only a bug in the steps before the connection's own boundary (its address,
            # the caps, a refusal) lands here: still that connection's alone.
            await self._failed(Conn("?"), exc)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        ip = peer_ip(stream)
        if ip is None:
            self.metrics.handshakes_rejected.labels("gone").inc()
            return
        conn = Conn(ip, proxied=is_trusted(ip, self.trusted))
        counted_ip = None if conn.proxied else ip
        refused = self.admission.try_open(counted_ip, time.time())
        if refused is not None:
            self.metrics.handshakes_rejected.labels(refused).inc()
            await _refuse(stream, _REFUSALS[refused])
            return
        keepalive(stream)  # half-open peers are found by the kernel too (after refusals: cheap)
        try:
            await self._run(stream, conn)
        except Exception as exc:
            await self._failed(conn, exc)
        except BaseExceptionGroup as group:
            # Cancellation together with a failure (a shutdown racing an error): report
            # the failure, let the cancellation go on.
            failure, rest = group.split(Exception)
            if failure is not None:
                await self._failed(conn, failure)
            if rest is not None:
                raise rest from None
        finally:
            self.admission.close(counted_ip)
            if conn.counted:
                self.admission.close_ip(conn.peer)

    async def _run(self, stream: trio.abc.Stream, conn: Conn) -> None:
        # What trio-websocket's WebSocketServer does per connection, with a stage kept.
        async with trio.open_nursery() as nursery:
            connection = WebSocketConnection(
                wrap_at_accept(stream),  # so an idle reader can move to the ReadPoller
                WSConnection(ConnectionType.SERVER),
                message_queue_size=self.message_queue_size,
                max_message_size=self.max_message_bytes,
                receive_buffer_size=RECEIVE_BYTES,
            )
            waiting = trio.CancelScope()  # for the request; cancelled if the peer leaves

            async def read() -> None:
                try:
                    await connection._reader_task()
                except Exception:
                    if conn.stage != "ingest":  # (the gateway's sink, called from here)
                        conn.stage = "reader"
                    raise
                waiting.cancel()  # no request can come any more (a no-op once it came)

            nursery.start_soon(read)
            conn.stage = "handshake"
            with trio.move_on_after(self.connect_timeout_s) as deadline, waiting:
                request = await connection._get_request()
            if deadline.cancelled_caught or waiting.cancelled_caught:
                reason = "timeout" if deadline.cancelled_caught else "gone"
                self.metrics.handshakes_rejected.labels(reason).inc()
                nursery.cancel_scope.cancel()
                return
            conn.request = request
            try:
                if conn.proxied and not await self._admit_forwarded(request, conn):
                    return
                await self.handler(request, conn)
            except Exception as exc:
                # Here, not in ``serve``: the connection is still whole, so the client
                # can still be told (400 or 1011) before it is closed below.
                await self._failed(conn, exc)
            finally:
                with trio.move_on_after(self.disconnect_timeout_s):
                    await connection.aclose()
                # The reader task may still wait for bytes (after a refused upgrade the
                # peer may keep the socket open): the connection is over, stop it.
                nursery.cancel_scope.cancel()

    async def _admit_forwarded(self, request: WebSocketRequest, conn: Conn) -> bool:
        """Behind a trusted proxy: the client is who the forwarding header says; the
        per-IP caps apply to it now. ``False``: refused (answered with 429)."""
        conn.peer = client_ip(conn.peer, request.headers, self.trusted, header=self.proxy_header)
        refused = self.admission.try_open_ip(conn.peer, time.time())
        if refused is not None:
            self.metrics.handshakes_rejected.labels(refused).inc()
            await request.reject(429, body=refused.encode())
            return False
        conn.counted = True
        return True

    async def _failed(self, conn: Conn, exc: BaseException) -> None:
        """The boundary: count, log (rate-limited), and end the connection politely."""
        error = first_error(exc)
        self.metrics.connection_errors.labels(conn.stage).inc()
        if self._log_budget.take(time.monotonic()) <= 0:
            more = f" (+{self._unlogged} more not logged)" if self._unlogged else ""
            self._unlogged = 0
            log.warning(
                "connection from %s failed in %s: %r%s",
                conn.peer,
                conn.stage,
                error,
                more,
                exc_info=error if log.isEnabledFor(logging.DEBUG) else None,
            )
        else:
            self._unlogged += 1
        # The connection is ours to close, even on the way out; the peer may be gone, and
        # then there is nothing left to tell it.
        with trio.move_on_after(REFUSE_WAIT_S) as scope, contextlib.suppress(Exception):
            scope.shield = True
            if conn.ws is not None:
                await conn.ws.aclose(CLOSE_INTERNAL, "internal error")
            elif conn.request is not None:
                await conn.request.reject(400, body=b"bad request")


async def _refuse(stream: trio.abc.Stream, response: bytes) -> None:
    """Answer a connection refused at the door before reading its request, as cheaply as
    possible: refusals come in floods. On plain TCP the answer goes out with one
    non-blocking ``send()`` and the socket is closed at once, unless the peer's request
    already arrived: closing over unread bytes would reset the connection under the
    answer, so that peer gets a moment to read it (``REFUSE_WAIT_S``)."""
    # The stdlib socket under trio's (as fastpath does): its send/recv do not block.
    sock: Any = getattr(getattr(stream, "socket", None), "_sock", None)
    if isinstance(sock, socket.socket):
        try:
            sent = sock.send(response)
            if sent == len(response):
                sock.shutdown(socket.SHUT_WR)
                try:
                    pending = sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return  # nothing to read: close now (the caller does), a clean FIN
                if not pending:
                    return  # the peer closed already
                response = b""  # sent; drain below, then close
            else:
                response = response[sent:]
        except OSError:
            return
    with trio.move_on_after(REFUSE_WAIT_S):
        try:
            if response:
                await stream.send_all(response)
            send_eof = getattr(stream, "send_eof", None)
            if send_eof is not None and not isinstance(sock, socket.socket):
                await send_eof()
            while await stream.receive_some(4096):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
