"""What the store hands back and takes in: plain records, and the decoding helpers for
Redis replies (RESP2, bytes). No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, NamedTuple

from danmaku.config import DEFAULTS, Settings
from danmaku.rules import room_settings

ONLINE_FRESH_MS = 5000  # a gateway's online count older than this is ignored (it died)


class StoreError(Exception):
    """Redis failed or is unreachable; the operation may or may not have happened."""


@dataclass(frozen=True, slots=True)
class StoredComment:
    """One comment as read back from a room stream: its stream id and JSON payload."""

    id: str
    payload: bytes


def split_entry(entry_id: str, data: bytes) -> list[tuple[str, bytes]]:
    """The comments of one entry of a room's comment stream, as ``(id, payload)``: the
    door packs kept comments ``"\n"``-joined, the entry id being the first one's id and
    the others following in sequence (``scripts.INGEST``). An entry of one comment is
    just that comment (the layout before packing, read the same way)."""
    if b"\n" not in data:
        return [(entry_id, data)]
    ms, _, seq = entry_id.partition("-")
    first = int(seq)
    return [(f"{ms}-{first + i}", payload) for i, payload in enumerate(data.split(b"\n"))]


def id_key(comment_id: str) -> tuple[int, int]:
    """A comment id (``ms-seq``) as numbers, for ordering; ``ValueError`` if malformed."""
    ms, _, seq = comment_id.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True, slots=True)
class Lease:
    """A held room lease and the room's committed position when it was taken."""

    room: str
    token: str
    seq: int
    cursor: str


@dataclass(frozen=True, slots=True)
class FrameCommit:
    """One frame to commit under a lease: payload, its seq, the cursor it advances to."""

    room: str
    token: str
    seq: int
    cursor: str
    payload: bytes
    retracted: int = 0  # retract ids this frame carries (taken off the room's list)
    broadcast: str = ""  # the broadcast on air the worker saw ("" = none)
    recorded: Sequence[tuple[str, bytes]] = ()  # (comment id, JSON) to keep for replay


@dataclass(frozen=True, slots=True)
class RoomsPage:
    """One step of a worker's discovery (``Store.active_rooms``)."""

    total: int  # active rooms (for the fair share)
    recent: list[str]  # the most recently active, newest first
    page: list[str]  # the next page of a scan over all active rooms
    cursor: int  # where the scan goes on (0: it wrapped around)


COMMIT_FAILED = -3  # ``CommitResult.code``: the room's own commands failed


@dataclass(frozen=True, slots=True)
class TickRead:
    """What ``read_comments`` found, per room (see there). ``failed``: rooms whose reads
    failed on their own (an error reply, a reply that does not parse), with the error:
    the other rooms' results are good."""

    comments: dict[str, list[StoredComment]] = field(default_factory=dict)
    retracts: dict[str, list[str]] = field(default_factory=dict)
    on_air: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    deleted: dict[str, set[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class CommitResult(NamedTuple):
    """Per frame: ``code`` 1 committed, -1 lease lost, -2 seq moved on, ``COMMIT_FAILED``
    (``error`` says why: this room's commands failed, the others' are unaffected)."""

    code: int
    error: str = ""


def door_key(text: str) -> bytes:
    """The 8 bytes the door keeps for a text or a nonce (a 64-bit BLAKE2b hash, the same
    in every gateway, unlike Python's salted ``hash``): its per-user lists are fixed-size
    slots (``scripts.INGEST``)."""
    return blake2b(text.encode(), digest_size=8).digest()


@dataclass(slots=True)  # not frozen: made per comment, and a frozen init costs 4.5x
class Ingest:
    """One comment to admit: who, the resend nonce, the payload, ``door_key`` of its
    normalised text (duplicate guard), and whether the sender is exempt from limits."""

    uid: str
    nonce: str
    payload: bytes
    text_hash: bytes
    exempt: bool = False
    highlight: bool = False
    suspect: bool = False  # the gateway's review check flagged the text (rules/review.py)


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """The door's limits (defaults: ``Settings``'): the per-user bucket, the duplicate
    window, and the staff bucket (``staff_rate_per_s`` 0 = staff unlimited)."""

    rate_per_s: float = DEFAULTS.rate_per_s
    burst: float = DEFAULTS.rate_burst
    duplicate_window_s: float = DEFAULTS.duplicate_window_s
    staff_rate_per_s: float = DEFAULTS.staff_rate_per_s
    staff_burst: float = DEFAULTS.staff_rate_burst
    # held for review (store/review.py): the room's default for first-time chatters
    # (minutes), the review queue's bound and item lifetime, how long first comments
    # are remembered
    first_chat_min: float = DEFAULTS.first_chat_minutes
    review_queue_max: int = DEFAULTS.review_queue_max
    review_ttl_s: int = DEFAULTS.review_ttl_s
    first_chat_keep_s: int = DEFAULTS.first_chat_keep_days * 86400

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        return cls(
            settings.rate_per_s,
            settings.rate_burst,
            settings.duplicate_window_s,
            settings.staff_rate_per_s,
            settings.staff_rate_burst,
            settings.first_chat_minutes,
            settings.review_queue_max,
            settings.review_ttl_s,
            settings.first_chat_keep_days * 86400,
        )


@dataclass(slots=True)  # not frozen: made per comment (see Ingest)
class Outcome:
    """What the door said about one comment: stored (``id``), resent (``id``, ``resent``),
    or refused (``code``, ``retry_after_ms``)."""

    id: str | None
    resent: bool = False
    code: str | None = None
    retry_after_ms: int = 0
    held: bool = False  # held for review: ``id`` is the held id (``h<n>``), not shown yet

    @classmethod
    def parse(cls, reply: str) -> Outcome:
        if reply.startswith("?"):
            return cls(reply[1:], held=True)
        if reply.startswith("=?"):
            return cls(reply[2:], resent=True, held=True)
        if reply.startswith("="):
            return cls(reply[1:], resent=True)
        if reply.startswith("!"):
            code, _, ms = reply[1:].partition(":")
            return cls(None, code=code, retry_after_ms=int(float(ms or 0)))
        return cls(reply)


@dataclass(frozen=True, slots=True)
class RoomLive:
    """Room-wide figures a gateway reads back each presence round."""

    offered: float  # comments/s offered over all gateways, before shedding
    settings: dict[str, float]
    global_words_version: int
    seq: int = 0  # the room's last committed frame
    epoch: str = ""  # the room's history epoch (``keys.meta``): a change means a reset


@dataclass(frozen=True, slots=True)
class RoomState:
    seq: int
    online: int
    control_id: str  # last entry of the room's control stream ("0-0": none)
    pin: dict[str, Any] | None
    words_version: tuple[float, int]  # (room words_v, global words version)
    words: list[str]  # blocked words: the room's and the global list
    staff_version: float = 0.0  # staff_v of the room's settings when ``staff`` was read
    staff: dict[str, str] = field(default_factory=dict)  # the staff list: uid -> entry role
    # identity (issue 19): the stored guests code (rules.guests), the room's IP bans
    # (network -> ban) and staff nicks (uid -> nick), each with the version it was read at
    guests: float | None = None
    ip_bans_version: float = 0.0
    ip_bans: dict[str, Any] = field(default_factory=dict)
    nicks_version: float = 0.0
    staff_nicks: dict[str, str] = field(default_factory=dict)
    ban_reasons: dict[str, tuple[float, str]] = field(default_factory=dict)  # uid -> why
    epoch: str = ""  # the history epoch ``seq`` belongs to (``keys.meta``)


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A moderation event for gateways (``kind``: ban, pin, notice, settings)."""

    room: str
    id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommittedFrame:
    room: str
    seq: int
    payload: bytes


def _s(value: Any) -> str:
    """A Redis reply (RESP2: bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _sum_fresh(fields: Mapping[bytes, bytes], now_ms: int) -> float:
    total = 0.0
    for value in fields.values():
        rate, _, stamp = _s(value).partition(":")
        if stamp.isdigit() and now_ms - int(stamp) <= ONLINE_FRESH_MS:
            try:
                total += float(rate)
            except ValueError:
                continue
    return total


# Room settings kept as text (the rest are numbers): read back as strings by room_info.
# Room settings kept as text in the settings hash (the others are numbers).
TEXT_SETTINGS = frozenset(s.name for s in room_settings.SCHEMA if s.kind == "text")


def _decode_room_settings(fields: Mapping[Any, Any]) -> dict[str, float | str]:
    """The numeric settings and the text ones (``TEXT_SETTINGS``), for ``room_info``."""
    out: dict[str, float | str] = dict(_decode_settings(fields))
    for name, value in fields.items():
        if _s(name) in TEXT_SETTINGS:
            out[_s(name)] = _s(value)
    return out


def _decode_settings(fields: Mapping[Any, Any]) -> dict[str, float]:
    out = {}
    for name, value in fields.items():
        try:
            out[_s(name)] = float(value)
        except ValueError:
            continue
    return out
