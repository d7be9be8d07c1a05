"""Webhooks, the rules: which store records become which events, how a request is
signed, how long to wait before a retry, and a URL's bounded outbox. No I/O.

Events come from what the store already records -- a room's comment stream (each
accepted comment, paid and gift items included) and its audit stream (deletes, bans,
broadcasts, reports) -- so delivering them costs the hot path nothing. An event's ``id``
is derived from the record (``ROOM:in:COMMENT_ID`` or ``ROOM:audit:ENTRY_ID``): a
redelivery after a crash carries the same id, and receivers de-duplicate on it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

SIGNATURE_HEADER = "X-Danmaku-Signature"
TIMESTAMP_HEADER = "X-Danmaku-Timestamp"
EVENT_TYPES = (
    "comment.accepted",
    "comment.deleted",
    "user.banned",
    "user.timed_out",
    "user.unbanned",
    "broadcast.started",
    "broadcast.ended",
    "report.filed",
)
# The comment fields an event carries (what the frame item carries, minus layout).
_COMMENT_FIELDS = ("uid", "nick", "text", "prio", "ts", "role", "kind", "amount", "currency")
_PAID_FIELDS = ("gift", "tier")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Danmaku-Signature`` of a request: ``sha256=`` + hex HMAC-SHA256 over
    ``"<timestamp>." + body`` (the timestamp bound in, so a captured request cannot be
    replayed later under a new one)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver checks (constant time)."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def backoff_s(attempt: int, base: float = 0.5, cap: float = 60.0) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): base x 2^(n-1), at
    most ``cap``."""
    return float(min(cap, base * 2 ** max(0, min(attempt - 1, 30))))


def comment_events(room: str, comments: Iterable[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """``comment.accepted`` events of stored comments ``(id, payload)`` (payloads that
    are no JSON object are skipped)."""
    out = []
    for cid, payload in comments:
        try:
            raw = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(raw, dict):
            continue
        data = {"id": cid}
        data |= {k: raw[k] for k in (*_COMMENT_FIELDS, *_PAID_FIELDS) if k in raw}
        ts = raw["ts"] if isinstance(raw.get("ts"), int) else _ms(cid)
        out.append(_event(f"{room}:in:{cid}", "comment.accepted", room, ts, data))
    return out


def audit_event(room: str, entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The event of one audit entry, or ``None`` for actions no webhook reports
    (settings, words, pins, ...)."""
    action = fields.get(b"action", b"").decode(errors="replace")
    target = fields.get(b"target", b"").decode(errors="replace")
    by = fields.get(b"by", b"").decode(errors="replace")
    try:
        detail = orjson.loads(fields.get(b"detail", b"{}"))
    except orjson.JSONDecodeError:
        detail = {}
    if not isinstance(detail, dict):
        detail = {}
    ts_raw = fields.get(b"ts", b"")
    ts = int(ts_raw) if ts_raw.isdigit() else _ms(entry_id)
    eid = f"{room}:audit:{entry_id}"
    if action == "ban":
        until = detail.get("until") or 0
        kind = "user.timed_out" if until else "user.banned"
        data = {"uid": target, "until": until or None, "reason": detail.get("reason", "")}
        return _event(eid, kind, room, ts, data | {"by": by})
    if action == "unban":
        return _event(eid, "user.unbanned", room, ts, {"uid": target, "by": by})
    if action == "delete":
        data = {"id": target, "uid": detail.get("uid"), "text": detail.get("text"), "by": by}
        return _event(eid, "comment.deleted", room, ts, data)
    if action == "broadcast_start":
        data = {"id": target, "title": detail.get("title", ""), "by": by}
        return _event(eid, "broadcast.started", room, ts, data)
    if action == "broadcast_end":
        return _event(eid, "broadcast.ended", room, ts, {"id": target, "by": by})
    if action == "report":  # reports, where the review queue audits them
        return _event(eid, "report.filed", room, ts, {"target": target, "by": by, **detail})
    return None


def _event(eid: str, kind: str, room: str, ts: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": eid, "type": kind, "room": room, "ts": ts, "data": data}


def _ms(entry_id: str) -> int:
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else 0


@dataclass(slots=True)
class Outbox:
    """One URL's queue of events, numbered by the reader (``n`` increasing). Bounded:
    pushing beyond ``cap`` drops the oldest (``push`` says how many). ``done`` is the
    highest ``n`` this URL is finished with (delivered, given up on, or dropped): the
    reader may forget everything up to the least ``done`` over all URLs."""

    cap: int
    queue: deque[tuple[int, dict[str, Any]]]
    last: int = 0  # the highest n pushed

    @classmethod
    def new(cls, cap: int) -> Outbox:
        return cls(max(1, cap), deque())

    def push(self, n: int, event: dict[str, Any]) -> int:
        """Queue event ``n``; return how many old events were dropped to make room."""
        self.queue.append((n, event))
        self.last = n
        dropped = 0
        while len(self.queue) > self.cap:
            self.queue.popleft()
            dropped += 1
        return dropped

    def pass_over(self, n: int) -> None:
        """Event ``n`` is not for this URL (its event types, or older than the URL): the
        URL is done with it as soon as it is done with everything before."""
        self.last = n

    def batch(self, size: int) -> list[tuple[int, dict[str, Any]]]:
        """The oldest ``size`` events (they stay queued until ``finish``)."""
        return [self.queue[i] for i in range(min(size, len(self.queue)))]

    def finish(self, upto: int) -> None:
        """Done with every event numbered ``upto`` or lower (delivered or given up)."""
        while self.queue and self.queue[0][0] <= upto:
            self.queue.popleft()

    @property
    def done(self) -> int:
        return self.queue[0][0] - 1 if self.queue else self.last


# ---- registered endpoints (the webhook admin API) ------------------------------------------
MAX_URL_CHARS = 2048


def url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL, or ``None``: an absolute http(s) URL with a host,
    no credentials in it, no spaces or control characters, at most 2048 characters."""
    if len(url) > MAX_URL_CHARS:
        return f"a webhook URL has at most {MAX_URL_CHARS} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "a webhook URL has no spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "a webhook URL is http:// or https://"
    if not parts.hostname:
        return "a webhook URL needs a host"
    if parts.username is not None or parts.password is not None:
        return "no credentials in a webhook URL: the signature authenticates the requests"
    return None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One receiver: from ``DANMAKU_WEBHOOK_URLS`` (id ``env-N``, every event, since the
    start) or registered through the API (its own secret and event types; only events
    recorded from its creation on)."""

    id: str
    url: str
    secret: str
    events: frozenset[str] = frozenset()  # empty: every type
    created_ms: int = 0

    def wants(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` goes to this endpoint."""
        if self.events and event.get("type") not in self.events:
            return False
        return self.created_ms == 0 or record_ms(event) >= self.created_ms


def record_ms(event: dict[str, Any]) -> int:
    """When the record behind ``event`` was stored (its stream entry id's ms part)."""
    return _ms(str(event.get("id", "")).rpartition(":")[2])
