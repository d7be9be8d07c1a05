"""What a WebSocket handshake asks for: the request target parsed by a whitelist.

Pure and total: ``parse_target`` takes any string a client put in its request line and
returns either a ``Handshake`` or a ``Refusal`` (HTTP status or WebSocket error code and
a message); it never raises. Every value is checked by a whitelist of characters before
it is converted (``"²".isdigit()`` is true but ``int("²")`` raises: digits here are
ASCII ``0-9`` only). Tested by property against arbitrary text (tests/unit/test_handshake.py).

Rules:

* the path is ``/ws`` exactly; anything else is 404; a target that is not an
  origin-form path (``http://host/ws``, ``*``, empty) or too long is 400;
* known parameters: ``room`` (required), ``token``, ``since``, ``epoch``, ``density``;
  each at most once (a repeated one is ambiguous: refused); unknown parameters are
  ignored (clients add cache busters), but at most ``MAX_PARAMS`` in all;
* values are percent-decoded (``+`` is a space) before they are checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from danmaku import protocol

MAX_TARGET = 8192  # bytes of request target (a token is ~300; h11 allows 16 KB of head)
MAX_PARAMS = 16
KNOWN = frozenset({"room", "token", "since", "epoch", "density"})
_TOKEN = re.compile(r"[A-Za-z0-9_.=-]{1,4096}")  # a JWT: base64url parts and dots
_SINCE = re.compile(r"[0-9]{1,18}")  # ASCII digits; 18 keeps it within int64
_EPOCH = re.compile(r"[A-Za-z0-9_-]{1,32}")
_DENSITY = re.compile(r"[0-9.eE+-]{1,16}")  # float() also takes other scripts' digits


@dataclass(frozen=True, slots=True)
class Handshake:
    room: str
    token: str = ""
    since: int | None = None
    epoch: str = ""
    density: float = 1.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake is refused. ``status``: answer with this HTTP status before the
    upgrade (0: accept, then send an ``error`` with ``code`` and close 1008, so a
    browser, which cannot read a refused upgrade's body, learns why)."""

    code: str
    message: str
    status: int = 0


def parse_target(target: str) -> Handshake | Refusal:
    """The handshake a request target asks for, or why it cannot be served."""
    if len(target) > MAX_TARGET:
        return Refusal("bad_request", "request target too long", 414)
    if not target.startswith("/"):
        return Refusal("bad_request", "request target must be a path: /ws?room=ROOM", 400)
    path, _, query = target.partition("?")
    query = query.partition("#")[0]
    if path != "/ws":
        return Refusal("not_found", "not found: connect to /ws?room=ROOM", 404)
    params: dict[str, str] = {}
    pairs = query.split("&") if query else []
    if len(pairs) > MAX_PARAMS:
        return Refusal("bad_request", f"at most {MAX_PARAMS} query parameters", 400)
    for pair in pairs:
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = unquote_plus(raw_name)
        if name not in KNOWN:
            continue
        if name in params:
            return Refusal("bad_request", f"{name} given more than once")
        params[name] = unquote_plus(raw_value)
    room = params.get("room", "")
    if not protocol.valid_room(room):
        return Refusal("bad_room", "room must be 1-64 of [A-Za-z0-9_-]")
    token = params.get("token", "")
    if token and not _TOKEN.fullmatch(token):
        return Refusal("unauthorized", "bad token: not a JWT")
    since = None
    raw_since = params.get("since", "")
    if raw_since:
        if not _SINCE.fullmatch(raw_since):
            return Refusal("bad_request", "since must be a frame seq (0-9, at most 18 digits)")
        since = int(raw_since)
    epoch = params.get("epoch", "")
    if epoch and not _EPOCH.fullmatch(epoch):
        return Refusal("bad_request", "epoch must be 1-32 of [A-Za-z0-9_-]")
    density = 1.0
    raw_density = params.get("density", "")
    if raw_density:
        ok = _DENSITY.fullmatch(raw_density)
        parsed = protocol.parse_density(raw_density) if ok else None
        if parsed is None:
            return Refusal("bad_request", "density must be a number in (0, 1]")
        density = parsed
    return Handshake(room, token, since, epoch, density)
