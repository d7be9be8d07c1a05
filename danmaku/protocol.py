"""The WebSocket protocol: parsing client messages and building server messages.

Pure functions, no I/O. Parsing never raises: it returns a ``Comment``-like request or a
``ProtocolError`` carrying the error code the client gets. Sizes are checked before
parsing (the gateway's ``max_message_size`` closes oversized messages with 1009) and the
schema after. See docs/protocol.md for every message, field, error and close code.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from danmaku.rules.items import Frame, Item

# Use with ``fullmatch``: ``match`` lets a trailing newline through (``$`` matches before
# one). The patterns keep ^...$ so the web app's validators (Rust regex) can share them.
ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
NONCE_MAX = 64  # characters, each printable ASCII other than space (0x21-0x7e)
MODES = ("scroll", "top", "bottom")
DEFAULT_COLOR = "#ffffff"

# Priority tiers of a frame item (higher passes first).
PRIO_ORDINARY = 0
PRIO_HIGHLIGHT = 1
PRIO_STAFF = 2
PRIO_PAID = 3  # paid messages and gifts from the platform (server API): never sampled away

# Close codes.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_TOO_SLOW = 4000

# Error codes a client may receive, with what they mean (docs/protocol.md lists them).
ERROR_CODES: dict[str, str] = {
    "bad_request": "the message is not valid JSON, not an object, or a field is wrong",
    "unknown_type": "the message type is not one the server knows",
    "too_long": "the comment text is over the length limit (characters or UTF-8 bytes)",
    "empty": "the comment text is empty after trimming",
    "unauthorized": "sending needs a token (anonymous viewers can only watch)",
    "bad_room": "the room name is not 1-64 of [A-Za-z0-9_-]",
    "rate_limited": "too many comments; retry_after_ms says when to try again",
    "slow_mode": "the room is in slow mode; retry_after_ms says when to try again",
    "duplicate": "the same text was just sent by the same user",
    "banned": "the user is banned or timed out in this room",
    "muted": "the room is muted for ordinary viewers",
    "blocked": "the text contains a blocked word",
    "overloaded": "the gateway cannot take comments right now; retry later",
    "unavailable": "storage is unreachable (a comment was not stored: resend it; at the "
    "handshake or on resume: the connection closes with 1013, reconnect with since=)",
    "internal": "the server failed on this connection (closed with 1011); reconnect",
    "resume_failed": "frames asked for with since= have left history; live from here",
    "flood": "too many messages of any kind on one connection; the connection is closed",
    # held for review (issue 19)
    "review_full": "the room's review queue is full: the comment was not taken; retry later",
    # identity (issue 19)
    "login_required": "guests cannot comment in this room (its guests setting is watch), or "
    "cannot enter it (off: closed with 1008); log in",
    "nick_taken": "the nickname looks like (has the confusable skeleton of) a staff "
    "member's in this room; choose another (at the handshake: closed with 1008)",
    # platform (issue 24): the webhook admin API
    "too_many_webhooks": "POST /api/webhooks: DANMAKU_WEBHOOK_ENDPOINTS_MAX endpoints are "
    "registered already (HTTP 409); delete one first",
}


@dataclass(frozen=True, slots=True)
class ProtocolError:
    code: str
    message: str
    nonce: str | None = None
    retry_after_ms: int | None = None
    comment: bool = False  # the refused message was a comment (for the received count)
    extra: dict[str, Any] | None = None  # more fields of the error (banned: until, reason)


@dataclass(slots=True)  # not frozen: made per comment, and a frozen init costs 4.5x
class CommentRequest:
    text: str
    nonce: str
    color: str
    mode: str


@dataclass(frozen=True, slots=True)
class PingRequest:
    nonce: str | None


@dataclass(frozen=True, slots=True)
class DensityRequest:
    value: float  # share of ordinary items the viewer wants, in (0, 1]


@dataclass(frozen=True, slots=True)
class AuthRequest:
    token: str  # a fresh token for the same user (or a first one for an anonymous viewer)


ClientMessage = CommentRequest | PingRequest | DensityRequest | AuthRequest


def parse_density(value: object) -> float | None:
    """A density share in (0, 1], from a number or a query-string text; else ``None``."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0.0 < value <= 1.0 else None


@dataclass(frozen=True, slots=True)
class TextLimits:
    max_chars: int = 100
    max_bytes: int = 300


def parse_client_message(raw: str | bytes, limits: TextLimits) -> ClientMessage | ProtocolError:
    """Decode and validate one client message. Never raises."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ProtocolError("bad_request", "message is not valid JSON")
    if not isinstance(msg, dict):
        return ProtocolError("bad_request", "message must be a JSON object")
    nonce = msg.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or not valid_nonce(nonce)):
        return ProtocolError("bad_request", "nonce must be 1-64 printable ASCII characters")
    kind = msg.get("type")
    if kind == "comment":
        parsed = _parse_comment(msg, nonce, limits)
        if isinstance(parsed, ProtocolError):
            return replace(parsed, comment=True)
        return parsed
    if kind == "ping":
        return PingRequest(nonce)
    if kind == "density":
        density = parse_density(msg.get("value"))
        if density is None:
            return ProtocolError("bad_request", "'value' must be a number in (0, 1]", nonce)
        return DensityRequest(density)
    if kind == "auth":
        token = msg.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= 4096:
            return ProtocolError("bad_request", "'token' must be a token string", nonce)
        return AuthRequest(token)
    if not isinstance(kind, str):
        return ProtocolError("bad_request", "missing string field 'type'", nonce)
    return ProtocolError("unknown_type", f"unknown message type {kind[:32]!r}", nonce)


def _parse_comment(
    msg: dict[str, Any], nonce: str | None, limits: TextLimits
) -> CommentRequest | ProtocolError:
    if nonce is None:
        return ProtocolError("bad_request", "a comment needs a 'nonce' (1-64 ASCII)")
    text = msg.get("text")
    if not isinstance(text, str):
        return ProtocolError("bad_request", "'text' must be a string", nonce)
    text = tidy_text(text)
    if not text:
        return ProtocolError("empty", "comment text is empty", nonce)
    if len(text) > limits.max_chars or (
        # UTF-8 takes at most 4 bytes a character: encode only when that could be too many
        len(text) * 4 > limits.max_bytes and len(text.encode("utf-8", "replace")) > limits.max_bytes
    ):
        return ProtocolError(
            "too_long",
            f"comment is over {limits.max_chars} characters or {limits.max_bytes} bytes",
            nonce,
        )
    color = msg.get("color", DEFAULT_COLOR)
    if color is not DEFAULT_COLOR:  # (absent, the usual case: nothing to check)
        if not isinstance(color, str) or not COLOR_RE.fullmatch(color):
            return ProtocolError("bad_request", "'color' must be #rrggbb", nonce)
        color = color.lower()
    mode = msg.get("mode", "scroll")
    if mode not in MODES:
        return ProtocolError("bad_request", "'mode' must be scroll, top or bottom", nonce)
    return CommentRequest(text, nonce, color, mode)


_KEEP_FORMAT = frozenset("\u200d")  # zero-width joiner: emoji sequences need it


def tidy_text(text: str) -> str:
    """``clean_text``, then every run of whitespace one space, trimmed: no newlines or
    tabs on a video. Printable text has no whitespace but the ASCII space
    (``str.isprintable`` excludes categories C* and Z* but for it), so the usual comment
    is returned as it is after three string checks."""
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return " ".join(clean_text(text).split())


def clean_text(text: str) -> str:
    """Plain text only: drop control characters (C0, C1: whitespace becomes a space) and
    invisible format characters (bidi overrides and isolates, zero-width spaces, BOM),
    which could reorder or hide what other viewers see. Keeps the emoji joiner."""
    if text.isprintable():
        return text  # no character of categories C* (isprintable's definition): nothing to do
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cc":
            if ch.isspace():
                out.append(" ")
        elif (cat == "Cf" and ch not in _KEEP_FORMAT) or cat in ("Cs", "Co", "Cn"):
            continue  # invisible formatting; lone surrogates, private use, unassigned
        else:
            out.append(ch)
    return "".join(out)


def valid_room(room: str) -> bool:
    return bool(ROOM_RE.fullmatch(room))


def valid_nonce(nonce: str) -> bool:
    """1-64 printable ASCII characters, no space (string methods: a regex costs 3x as
    much, and this runs for every message)."""
    return (
        0 < len(nonce) <= NONCE_MAX
        and nonce.isascii()
        and nonce.isprintable()
        and (" " not in nonce)
    )


# ---- server messages (str, ready for a text frame) -----------------------------------------
def _dump(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def welcome(
    room: str,
    seq: int,
    tick_ms: int,
    user: dict[str, Any] | None,
    online: int,
    limits: dict[str, Any],
    densities: tuple[float, ...] = (),
    epoch: str = "",
) -> str:
    """``densities``: the levels the gateway serves (``hub.DENSITY``), so players offer
    those and no copy of them lives in JavaScript."""
    return _dump(
        {
            "type": "welcome",
            "room": room,
            "seq": seq,
            "tick_ms": tick_ms,
            "user": user,
            "online": online,
            "limits": limits,
            "densities": list(densities),
            "epoch": epoch,
        }
    )


def ack(nonce: str, comment_id: str, code: str | None = None) -> str:
    """``code`` ``"held"``: stored for review, not shown to the room yet (``id`` is the
    held id)."""
    if code is None:
        return _dump({"type": "ack", "nonce": nonce, "id": comment_id})
    return _dump({"type": "ack", "nonce": nonce, "id": comment_id, "code": code})


def error(err: ProtocolError) -> str:
    out: dict[str, Any] = {"type": "error", "code": err.code, "message": err.message}
    if err.nonce is not None:
        out["nonce"] = err.nonce
    if err.retry_after_ms is not None:
        out["retry_after_ms"] = err.retry_after_ms
    if err.extra:
        out.update(err.extra)
    return _dump(out)


def notice(event: str, **fields: Any) -> str:
    return _dump({"type": "notice", "event": event, **fields})


def broadcast_notice(room: str, event: Mapping[str, Any]) -> str:
    """``notice`` ``broadcast``: a broadcast of ``room`` started or ended (``state``), with
    its ``id``, ``title`` and ``replay``, the replay page's path (for one that ended)."""
    bid, state = str(event.get("id", "")), str(event.get("state", ""))
    replay = f"/?room={room}&broadcast={bid}" if state == "ended" else None
    return notice(
        "broadcast", state=state, id=bid, title=str(event.get("title", "")), replay=replay
    )


def pong(nonce: str | None) -> str:
    return _dump({"type": "pong", "nonce": nonce})


def encode_frame(
    room: str,
    seq: int,
    ts_ms: int,
    items: list[Item],
    dropped: int,
    online: int,
    retract: list[str] | None = None,
) -> bytes:
    """The frame message as UTF-8 JSON bytes (built once by the worker, sent as is)."""
    frame: Frame = {
        "type": "frame",
        "room": room,
        "seq": seq,
        "ts": ts_ms,
        "items": items,
        "dropped": dropped,
        "online": online,
    }
    if retract:
        frame["retract"] = retract
    return orjson.dumps(frame)
