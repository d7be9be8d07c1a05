"""``FastInbound``: client text messages handed over as they are parsed, without wsproto's
per-message events, trio-websocket's message channel and a task switch per message.

trio-websocket's reader task feeds what it reads to wsproto and then ``await``s a
channel send for every message, which the connection's own task receives: ~7.6 us of
wsproto parsing plus two scheduler hops per message, most of a gateway's cost per comment
(measured; ``docs/benchmarks.md``). What senders send is almost always the same thing: a
small, final, masked text frame. This object stands in for the connection's wsproto
``Connection`` (same ``state``, ``client``, ``send``, ``receive_data``, ``events``) and
parses exactly those frames itself, calling ``sink(text)`` for each, synchronously and in
order, from the reader task. Nothing here does I/O; it is tested by passing bytes.

Everything else goes to wsproto, which stays the judge of the protocol: the first frame
that is not a complete-able final masked text frame with a valid UTF-8 payload within the
size limit (a ping, a close, a fragment, a binary frame, an unmasked or oversized frame,
reserved bits, invalid UTF-8) switches the connection to wsproto for good, starting
exactly at that frame's first byte. (With ``on_pong``, a masked pong frame of at most 125
bytes, the answer to the server's liveness ping, is taken here too. With ``inflate``, for
a connection that agreed to permessage-deflate with client_no_context_takeover, a final
masked text frame with RSV1 is taken too: inflated on its own, at most to
``max_message_bytes``; one that inflates further or not at all goes to wsproto, whose
``deflate.ServerDeflate`` closes with 1009 or 1007. Browsers compress every message they
send once deflate is agreed.) From then on wsproto
produces the events and errors (1002, 1007, 1009 handling) it always did; the sink is not
called again. Frames before
the switch were complete and valid, so the two never disagree about where a frame starts.

Memory: at most one unfinished frame is buffered, and only one whose declared length is
within ``max_message_bytes`` (a longer one switches to wsproto at once).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

from wsproto.connection import Connection, ConnectionState
from wsproto.events import Event

_TEXT_FIN = 0x81  # FIN, no reserved bits, opcode 1 (text)
_PONG = 0x8A  # FIN, no reserved bits, opcode 10 (pong)
_TEXT_DEFLATED_FIN = 0xC1  # FIN, RSV1 (permessage-deflate: compressed), opcode 1
_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 7.2.2: appended before inflating


class FastInbound:
    """A server connection's receiving side, fast for small text frames. Owned by the
    trio-websocket connection it is installed in; ``sink`` must not raise."""

    __slots__ = (
        "_buf",
        "_conn",
        "_fast",
        "_handed",
        "_inflate",
        "_max",
        "_on_pong",
        "_sink",
        "fast_messages",
    )

    def __init__(
        self,
        conn: Connection,
        sink: Callable[[str], None],
        max_message_bytes: int,
        on_pong: Callable[[], None] | None = None,
        inflate: bool = False,
    ):
        self._conn = conn
        # permessage-deflate agreed (each client message compressed on its own): take
        # compressed text frames too.
        self._inflate = inflate
        self._sink = sink
        # With ``on_pong``, a masked pong frame (the answer to the server's liveness
        # pings) is taken here too and reported, payload ignored: answering a ping must
        # not cost a viewer its fast path. Without it, pongs go to wsproto.
        self._on_pong = on_pong
        self._max = max_message_bytes
        self._buf = b""  # the start of an unfinished frame
        self._fast = True
        self._handed: list[bytes] | None = None  # set during take(): what wsproto must get
        self.fast_messages = 0  # messages handed to the sink (tests, metrics)

    # ---- what trio-websocket uses of a wsproto connection --------------------------------
    @property
    def state(self) -> ConnectionState:
        return self._conn.state

    @property
    def client(self) -> bool:
        return self._conn.client

    def send(self, event: Event) -> bytes:
        return self._conn.send(event)

    def events(self) -> Iterator[Event]:
        return self._conn.events()

    @property
    def fast(self) -> bool:
        """Still parsing itself (``False`` once wsproto has taken over)."""
        return self._fast

    def receive_data(self, data: bytes | None) -> None:
        """Take bytes from the peer (``None``: the peer closed). Complete fast frames go
        to the sink now; the rest waits for more bytes or goes to wsproto."""
        if not self._fast or data is None or self._conn.state is not ConnectionState.OPEN:
            self._hand_over(data)
            return
        buf = self._buf + data if self._buf else data
        end = len(buf)
        pos = 0
        sink = self._sink
        while end - pos >= 6:  # the smallest masked frame: 2 header + 4 mask bytes
            compressed = buf[pos] == _TEXT_DEFLATED_FIN and self._inflate
            if (buf[pos] != _TEXT_FIN and not compressed) or not buf[pos + 1] & 0x80:
                if buf[pos] != _PONG or not buf[pos + 1] & 0x80 or self._on_pong is None:
                    break
                n = buf[pos + 1] & 0x7F
                if n > 125:  # a control frame's payload is at most 125 bytes: wsproto's call
                    break
                stop = pos + 6 + n
                if stop > end:
                    self._buf = buf[pos:]
                    return
                pos = stop
                self._on_pong()
                if self._conn.state is not ConnectionState.OPEN:
                    break
                continue
            n = buf[pos + 1] & 0x7F
            start = pos + 6
            if n == 126:
                if end - pos < 8:
                    self._buf = buf[pos:]
                    return
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                if n < 126:  # not the minimal encoding: wsproto's call
                    break
                start = pos + 8
            elif n == 127:  # 64 KiB or more: never within the limit here
                break
            if n > self._max:
                break
            stop = start + n
            if stop > end:
                self._buf = buf[pos:]
                return
            key = (buf[start - 4 : start] * ((n >> 2) + 1))[:n]  # the mask, repeated
            raw = (int.from_bytes(buf[start:stop]) ^ int.from_bytes(key)).to_bytes(n)
            if compressed:
                inflater = zlib.decompressobj(-15)
                try:
                    # One byte past the limit is enough to know (wsproto then says 1009).
                    raw = inflater.decompress(raw + _TAIL, self._max + 1)
                except zlib.error:
                    break
                if len(raw) > self._max:
                    break
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                break
            pos = stop
            self.fast_messages += 1
            sink(text)
            if self._conn.state is not ConnectionState.OPEN:
                break  # the sink closed the connection: wsproto handles what follows
        else:
            # Fewer bytes than the smallest header: wait for the rest (at most 5 bytes).
            self._buf = buf[pos:]
            return
        self._buf = b""
        if pos < end:
            # A frame this parser does not take: from its first byte on, wsproto parses.
            self._hand_over(buf[pos:])

    def take(self, data: bytes) -> bytes | None:
        """``receive_data`` for a caller other than the reader task (``ReadPoller``):
        fast frames go to the sink as usual, but what wsproto must parse is returned
        instead of given to it (``None``: nothing), since wsproto's events are for the
        reader task to act on. From such a return on the connection is no longer fast,
        and the caller gives the bytes to the reader task, whose ``receive_data`` passes
        them to wsproto: the same bytes in the same order, one step later."""
        if (
            len(data) >= 6
            and data[0] == _PONG
            and len(data) == (data[1] & 0x7F) + 6
            and data[1] & 0x80
            and len(data) <= 131
            and self._on_pong is not None
            and self._fast
            and not self._buf
            and self._conn.state is ConnectionState.OPEN
        ):
            # One whole masked pong and nothing else: an idle viewer's answer to the
            # gateway's liveness ping, the most common read of an idle gateway. What
            # ``receive_data`` would do with it, without its loop.
            self._on_pong()
            return None
        handed: list[bytes] = []
        self._handed = handed
        try:
            self.receive_data(data)
        finally:
            self._handed = None
        return b"".join(handed) or None

    def _hand_over(self, data: bytes | None) -> None:
        if self._fast:
            self._fast = False
            if self._buf:  # the start of an unfinished frame goes first
                buffered, self._buf = self._buf, b""
                self._deliver(buffered)
        self._deliver(data)

    def _deliver(self, data: bytes | None) -> None:
        if self._handed is None:
            self._conn.receive_data(data)
        elif data:
            self._handed.append(data)
