"""``permessage-deflate`` (RFC 7692) for the gateway: agreed per connection, frames
compressed once per gateway.

Three pure pieces, no I/O (tested by passing bytes and header strings):

* ``negotiate``: the first ``permessage-deflate`` offer of a client's
  ``Sec-WebSocket-Extensions`` the gateway can accept, and its answer. The answer always
  carries ``server_no_context_takeover`` (RFC 7692 7.1.1.1: a server may add it to any
  offer): every server message is compressed on its own, which is what lets one
  compressed frame go to every viewer of a room, whatever each viewer received before.
  It also carries ``client_no_context_takeover`` (7.1.1.2: the client must then compress
  each message on its own), so no connection keeps an inflate window (~40 KB of zlib
  state) between messages. An offer asking for ``server_max_window_bits`` below 15 is
  declined (the shared frames are compressed with a 32 KiB window; browsers never ask),
  as is one with an unknown, repeated or malformed parameter (7.1: "MUST decline").
* ``deflated_text_frame``: the wire bytes of one server text frame with RSV1 set and the
  payload compressed (7.2.1: compress, sync-flush, drop the trailing ``00 00 ff ff``).
  ``FrameDeflater`` applies it above a minimum size; smaller frames stay plain (an
  uncompressed frame is valid on a connection that agreed to deflate: RSV1 unset).
* ``ServerDeflate``: wsproto's ``PerMessageDeflate`` for one accepted connection, which
  wsproto uses for what the client sends (and for the rare messages trio-websocket frames
  itself). Its one change is bounded inflation: wsproto inflates a frame's payload with
  no output limit, so a 4 KiB compressed bomb becomes ~4 MB in memory before
  trio-websocket's message-size check runs; here no message inflates past
  ``max_message_bytes`` (+1 byte to see it), and one that would ends with 1009.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

NAME = "permessage-deflate"
WINDOW_BITS = 15  # the shared frames' LZ77 window (the largest, what browsers accept)
LEVEL = 6  # zlib's default: ~58 us for a 3.4 KB frame, once per gateway; level 9 gains ~0.1%
TAIL = b"\x00\x00\xff\xff"  # what a sync flush ends with; RFC 7692 7.2.1 drops it
_TEXT_RSV1_FIN = 0xC1  # FIN, RSV1 (compressed), opcode 1 (text)
_PARAMS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)
RESPONSE_PARAMS = "server_no_context_takeover; client_no_context_takeover"


@dataclass(frozen=True, slots=True)
class Agreement:
    """An accepted offer: ``offer`` as the client wrote it (one comma-separated element,
    stripped, as wsproto splits it) and ``params``, the answer's parameters."""

    offer: str
    params: str

    @property
    def response(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value the server answers with."""
        return f"{NAME}; {self.params}"


def offers(header_values: list[str]) -> list[str]:
    """The extension offers of a request's ``Sec-WebSocket-Extensions`` headers, in
    order: comma-separated elements, stripped (as wsproto's ``split_comma_header``)."""
    return [piece.strip() for value in header_values for piece in value.split(",")]


def _window_bits(value: str | None, *, optional: bool) -> int | None:
    """A ``*_max_window_bits`` value (8-15, maybe quoted); ``None`` when absent and
    allowed to be; raises ``ValueError`` when malformed."""
    if value is None:
        if optional:
            return None
        raise ValueError("a value is required")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value.isdigit() or len(value) > 2 or not 8 <= int(value) <= 15:
        raise ValueError("8-15 expected")
    return int(value)


def accept_offer(offer: str) -> Agreement | None:
    """The answer to one offer, or ``None`` when it is not ``permessage-deflate`` or
    cannot be accepted (see the module docstring)."""
    name, *raw_params = [part.strip() for part in offer.split(";")]
    if name.lower() != NAME:
        return None
    params = ["server_no_context_takeover", "client_no_context_takeover"]
    seen: set[str] = set()
    for raw in raw_params:
        key, eq, value = raw.partition("=")
        key = key.strip().lower()
        if key not in _PARAMS or key in seen:
            return None
        seen.add(key)
        try:
            if key.endswith("_no_context_takeover"):
                if eq:
                    return None
            elif key == "server_max_window_bits":
                if _window_bits(value if eq else None, optional=False) != WINDOW_BITS:
                    return None  # a smaller window than the shared frames use
                # 7.1.2.1: accepting the parameter means answering with it (<= offered).
                params.append(f"server_max_window_bits={WINDOW_BITS}")
            else:  # client_max_window_bits: the client may use up to what it says
                _window_bits(value if eq else None, optional=True)
        except ValueError:
            return None
    return Agreement(offer.strip(), "; ".join(params))


def negotiate(header_values: list[str]) -> Agreement | None:
    """The first acceptable ``permessage-deflate`` offer among a request's
    ``Sec-WebSocket-Extensions`` header values (``None``: no compression)."""
    for offer in offers(header_values):
        agreement = accept_offer(offer)
        if agreement is not None:
            return agreement
    return None


def deflate_message(payload: bytes, level: int = LEVEL) -> bytes:
    """A message's compressed payload on its own (no context taken over): deflate,
    sync-flush, the trailing ``00 00 ff ff`` dropped (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -WINDOW_BITS)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(TAIL) else data


def deflated_text_frame(payload: bytes, level: int = LEVEL) -> bytes:
    """The wire bytes of one unmasked, final text frame (server to client) with RSV1 set,
    carrying ``payload`` (UTF-8) compressed on its own."""
    body = deflate_message(payload, level)
    n = len(body)
    if n < 126:
        return bytes((_TEXT_RSV1_FIN, n)) + body
    if n < 65536:
        return struct.pack("!BBH", _TEXT_RSV1_FIN, 126, n) + body
    return struct.pack("!BBQ", _TEXT_RSV1_FIN, 127, n) + body


class FrameDeflater:
    """Builds the compressed wire form of a frame's payload, or ``None`` when it is below
    ``min_bytes`` (that frame goes plain to every viewer: compressing a short message
    saves a few bytes at the cost of a compression on each side). ``on_encode`` (if
    given) is called after each compression with the payload's and the wire's sizes."""

    __slots__ = ("level", "min_bytes", "on_encode")

    def __init__(
        self,
        min_bytes: int = 0,
        level: int = LEVEL,
        on_encode: Callable[[int, int], object] | None = None,
    ) -> None:
        self.min_bytes = min_bytes
        self.level = level
        self.on_encode = on_encode

    def __call__(self, payload: bytes) -> bytes | None:
        if len(payload) < self.min_bytes:
            return None
        wire = deflated_text_frame(payload, self.level)
        if self.on_encode is not None:
            self.on_encode(len(payload), len(wire))
        return wire


class ServerDeflate(PerMessageDeflate):
    """wsproto's ``PerMessageDeflate`` for one server connection whose offer
    ``negotiate`` accepted, with inflation bounded by ``max_message_bytes``.

    wsproto's handshake calls ``accept`` for every ``permessage-deflate`` offer of the
    request; this one answers only the agreed offer (with the agreed parameters) and
    declines the others, so what was negotiated is exactly ``agreement``.
    """

    def __init__(self, agreement: Agreement, max_message_bytes: int) -> None:
        super().__init__(client_no_context_takeover=True, server_no_context_takeover=True)
        self.agreement = agreement
        self._max = max_message_bytes
        self._inflated = 0  # bytes inflated so far of the message being received

    def accept(self, offer: str) -> str | None:
        if offer.strip() != self.agreement.offer:
            return None
        self._enabled = True
        return self.agreement.params

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor: Any = self._decompressor
        assert decompressor is not None
        room = self._max - self._inflated  # >= 0: an overflow already ended the message
        try:
            # max_length room + 1: one byte past the limit tells "too big" (a 0 would
            # mean "no limit" to zlib, and room + 1 is never 0).
            out: bytes = decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._max:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if not fin:
            return None
        if not self._inbound_is_compressible or not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        out = self._inflate(TAIL)
        # Each client message is compressed on its own (client_no_context_takeover is
        # always agreed): no window is kept between messages.
        self._decompressor = None
        self._inbound_compressed = None
        self._inflated = 0
        return out
