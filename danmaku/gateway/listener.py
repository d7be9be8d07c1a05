"""``PacedListener``: accept connections no faster than a set rate.

A handshake storm (thousands of viewers reconnecting at once after a stream restart or
a gateway loss) arrives as a burst the kernel queues; accepted all at once, every new
connection's HTTP parsing and welcome run in the same trio scheduling rounds as the
broadcast loop, and frames to viewers already watching wait behind them. Paced, the
storm is spread over a few seconds (the listen backlog holds the rest, clients see a
slower connect, not an error) and the rounds stay short. Wraps any trio ``Listener``;
the streams it returns are the inner listener's own (the fan-out's raw writes need
``trio.SocketStream``).
"""

from __future__ import annotations

import socket
from typing import Generic, TypeVar

import trio

from danmaku.rules.ratelimit import TokenBucket

S = TypeVar("S", bound=trio.abc.AsyncResource)


class PacedListener(trio.abc.Listener[S], Generic[S]):
    """At most ``per_s`` accepts per second on average, ``burst`` at once; ``per_s <= 0``
    means no pacing. Closing it closes the inner listener."""

    def __init__(self, inner: trio.abc.Listener[S], per_s: float, burst: float) -> None:
        self.inner = inner
        self._bucket = TokenBucket(per_s, max(1.0, burst)) if per_s > 0 else None

    async def accept(self) -> S:
        bucket = self._bucket
        if bucket is not None:
            wait = bucket.take(trio.current_time())
            if wait > 0:
                # The bucket refills at a known rate: after ``wait`` a token is there.
                await trio.sleep(wait)
                bucket.take(trio.current_time())
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def open_reuseport_listeners(
    port: int, host: str, backlog: int | None = None
) -> list[trio.SocketListener]:
    """Like ``trio.open_tcp_listeners`` but every socket has ``SO_REUSEPORT``: several
    gateway processes of one user bind the same port and the kernel spreads new
    connections over them (``danmaku gateway --processes N``). ``port`` must be a fixed
    port here: with 0 each process would get its own (the parent picks one)."""
    backlog = min(socket.SOMAXCONN, 0xFFFF) if backlog is None else backlog
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, addr in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(addr)
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for lst in listeners:
            lst.socket.close()
        raise
    return listeners


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening, ``SO_REUSEPORT`` socket on ``host:port`` (port 0: a free
    one): the parent of ``--processes`` holds it so the port is known before the
    children start, and an address in use by someone else fails here, once. Not
    listening, it takes no connections of its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or "0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock
