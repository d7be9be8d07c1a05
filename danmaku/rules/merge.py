"""``RoomMerger``: turns one room's stream of comments into consecutive frames.

Pure: no I/O, the time is passed in. The merger keeps what it has read but not yet seen
committed, so a failed commit loses nothing: the next ``build`` offers the same comments
again under the same ``seq``. Only ``committed(draft)`` moves it forward, which is what
makes "every stored comment in exactly one frame" hold across retries and takeovers.

Selection is delegated to a ``Selector`` (``select(items, budget) -> Selection``); the
default passes everything, the spike-control sampler limits it to the room's budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Draft:
    """A frame ready to commit: ``seq`` follows the last committed one."""

    seq: int
    ts_ms: int
    items: list[Item]
    dropped: int
    cursor: str
    consumed: int  # how many pending comments this frame accounts for
    carry: list[Item] = field(default_factory=list)
    dropped_by_tier: dict[int, int] = field(default_factory=dict)
    folded: int = 0
    retract: list[str] = field(default_factory=list)  # ids deleted by moderators


@dataclass(frozen=True, slots=True)
class Pick:
    items: list[Item]
    dropped: int = 0
    carry: list[Item] = field(default_factory=list)
    dropped_by_tier: dict[int, int] = field(default_factory=dict)
    folded: int = 0


Selector = Callable[[list[Item], int], Pick]


# The fields of a frame item (besides ``id``), their types, and the default of each that
# a stored comment may leave out (``uid`` and ``text`` it may not; ``ts`` defaults to
# the comment id's time). The gateway writes them all; unknown fields are left out (a
# frame carries only what the protocol names).
_FIELDS: dict[str, tuple[tuple[type, ...], Any]] = {
    "uid": ((str,), None),
    "nick": ((str,), ""),
    "text": ((str,), None),
    "color": ((str, type(None)), "#ffffff"),
    "mode": ((str,), "scroll"),
    "ts": ((int,), None),
    "prio": ((int,), 0),
}
_REQUIRED = ("uid", "text")
STAFF_ROLES = frozenset({"moderator", "streamer", "admin"})
MAX_PRIO = 2
MAX_TS = 2**53  # ms; arithmetic on it (latency, replay offsets) stays within 64 bits


def parse_item(payload: bytes, default_ts: int = 0) -> Item | None:
    """A stored comment payload as a frame item (without ``id``; every field of the
    protocol's item, ``ts`` = ``default_ts`` if absent), or ``None`` when it is not a
    comment: not JSON, not an object, ``uid`` or ``text`` missing, a field of the wrong
    type (``bool`` is no ``int``), a ``prio`` outside 0..2, a ``ts`` outside 0..2^53.
    Never raises."""
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict) or any(name not in raw for name in _REQUIRED):
        return None
    item: Item = {}
    for name, (types, default) in _FIELDS.items():
        value = raw.get(name, default_ts if name == "ts" else default)
        if type(value) not in types:  # exact: a bool is not a ts or a prio
            return None
        item[name] = value
    if not 0 <= item["prio"] <= MAX_PRIO or not 0 <= item["ts"] <= MAX_TS:
        return None
    role = raw.get("role")
    if role in STAFF_ROLES:  # only staff comments carry their author's role
        item["role"] = role
    return item


def take_all(items: list[Item], budget: int) -> Pick:
    """The selector without spike control: every comment of the tick is shown."""
    return Pick(items=list(items))


def stream_id_ms(stream_id: str) -> int:
    """Milliseconds part of a Redis stream id (``"1700000000000-3"`` -> 1700000000000)."""
    head, _, _ = stream_id.partition("-")
    return int(head) if head.isdigit() else 0


class RoomMerger:
    """Frame builder for one room held by one worker.

    ``add`` takes comments in stream order; ``build`` proposes the next frame (or ``None``
    when there is nothing new); ``committed`` accepts the proposal. Not thread-safe;
    owned by one worker task.
    """

    def __init__(self, room: str, seq: int, cursor: str, selector: Selector = take_all) -> None:
        self.room = room
        self.seq = seq  # last committed frame
        self.cursor = cursor  # last comment id covered by a committed frame
        self.read_cursor = cursor  # last comment id read (may be ahead of cursor)
        self.pending: list[Item] = []  # read, not yet in a committed frame
        self.carry: list[Item] = []  # priority items the last frame could not fit
        self.invalid = 0  # payloads that are no comment (``parse_item``): counted, skipped
        self.highlighted: set[str] = set()  # uids granted the highlighted tier
        self.retracts: list[str] = []  # ids the next frame must retract (moderator deletes)
        self._select = selector

    def add(self, comments: Iterable[tuple[str, bytes]]) -> None:
        """Take ``(stream id, payload)`` pairs read after ``read_cursor``, in order. A
        payload that is no comment (``parse_item``) is skipped and counted in ``invalid``;
        the cursor moves past it all the same, so it never holds the room up."""
        for stream_id, payload in comments:
            self.read_cursor = stream_id
            item = parse_item(payload, stream_id_ms(stream_id))
            if item is None:
                self.invalid += 1
                continue
            item["id"] = stream_id
            if item.get("prio") == 0 and item.get("uid") in self.highlighted:
                item["prio"] = 1
            self.pending.append(item)

    def retract(self, ids: list[str]) -> None:
        """Set the ids the next frame retracts (the room's whole waiting list, re-read each
        tick); deleted comments not yet shown are dropped from what is waiting."""
        self.retracts = list(ids)
        if ids:
            self.drop(set(ids))

    def drop(self, ids: set[str]) -> None:
        """Forget waiting comments with these ids (deleted before any frame showed them:
        nothing to retract). Idempotent; ids not waiting are ignored."""
        self.pending = [i for i in self.pending if i["id"] not in ids]
        self.carry = [i for i in self.carry if i["id"] not in ids]

    def has_work(self) -> bool:
        return bool(self.pending or self.carry or self.retracts) or (
            self.read_cursor != self.cursor
        )

    def build(self, now: float, budget: int = 1 << 30) -> Draft | None:
        """Propose frame ``seq + 1`` from carried and pending comments, or ``None``."""
        if not self.has_work():
            return None
        offered = self.carry + self.pending
        pick = self._select(offered, budget)
        return Draft(
            seq=self.seq + 1,
            ts_ms=int(now * 1000),
            items=pick.items,
            dropped=pick.dropped,
            cursor=self.read_cursor,
            consumed=len(self.pending),
            carry=pick.carry,
            dropped_by_tier=pick.dropped_by_tier,
            folded=pick.folded,
            retract=list(self.retracts),
        )

    def committed(self, draft: Draft) -> None:
        """The draft is durably committed: advance. Call once per successful commit."""
        if draft.seq != self.seq + 1:
            raise ValueError(f"draft seq {draft.seq} does not follow {self.seq}")
        self.seq = draft.seq
        self.cursor = draft.cursor
        del self.pending[: draft.consumed]
        self.carry = list(draft.carry)
        self.retracts = self.retracts[len(draft.retract) :]
