"""``RoomMerger``: turns one room's stream of comments into consecutive frames.

Pure: no I/O, the time is passed in. The merger keeps what it has read but not yet seen
committed, so a failed commit loses nothing: the next ``build`` offers the same comments
again under the same ``seq``. Only ``committed(draft)`` moves it forward, which is what
makes "every stored comment in exactly one frame" hold across retries and takeovers.

Selection is delegated to a ``Selector`` (``select(items, budget) -> Selection``); the
default passes everything, the spike-control sampler limits it to the room's budget.
With a ``Smoother`` instead (what the worker uses), the budget holds per second: ordinary
comments beyond a tick's share wait in the merger's ``waiting`` queue across frames, and
the committed ``cursor`` stays at the start of the read batch holding the oldest waiting
comment, so a worker that takes the room over re-reads what was waiting (and skips, via
``seen``, what the last frames already showed): nothing is lost or shown twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from danmaku.rules.items import Item
from danmaku.rules.sampling import Selection
from danmaku.rules.smoothing import Plan, Smoother, Waiting


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
    plan: Plan | None = None  # with a ``Smoother``: its decision, including what waits


Selector = Callable[[list[Item], int], Selection]


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
MAX_PRIO = 3
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
    fields: dict[str, Any] = {}
    for name, (types, default) in _FIELDS.items():
        value = raw.get(name, default_ts if name == "ts" else default)
        if type(value) not in types:  # exact: a bool is not a ts or a prio
            return None
        fields[name] = value
    if not 0 <= fields["prio"] <= MAX_PRIO or not 0 <= fields["ts"] <= MAX_TS:
        return None
    role = raw.get("role")
    if role in STAFF_ROLES:  # only staff comments carry their author's role
        fields["role"] = role
    if "kind" in raw:
        fields.update(_platform_fields(raw))
    return cast(Item, fields)  # every field checked against _FIELDS (Item's names) above


# ---- items the platform publishes (server API: paid, gift, system) --------------------
KINDS = frozenset({"paid", "gift", "system"})


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


def _short(value: Any, n: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= n


def _platform_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The well-formed platform fields of a stored payload (nothing when ``kind`` is
    not one of ``KINDS``): what a frame may carry of them, and nothing else."""
    kind = raw.get("kind")
    if kind not in KINDS:
        return {}
    out: dict[str, Any] = {"kind": kind}
    if _number(raw.get("amount")):
        out["amount"] = raw["amount"]
    if _short(raw.get("currency"), 8):
        out["currency"] = raw["currency"]
    gift = raw.get("gift")
    if (
        isinstance(gift, dict)
        and _short(gift.get("name"), 64)
        and type(gift.get("count")) is int
        and gift["count"] >= 1
        and _number(gift.get("value"))
    ):
        out["gift"] = {"name": gift["name"], "count": gift["count"], "value": gift["value"]}
    tier = raw.get("tier")
    if (
        isinstance(tier, dict)
        and _short(tier.get("name"), 32)
        and type(tier.get("level")) is int
        and _short(tier.get("color"), 7)
        and type(tier.get("pin_s")) is int
    ):
        out["tier"] = {k: tier[k] for k in ("name", "level", "color", "pin_s")}
    return out


def take_all(items: list[Item], budget: int) -> Selection:
    """The selector without spike control: every comment of the tick is shown."""
    return Selection(items=list(items))


def _id_key(stream_id: str) -> tuple[int, int]:
    head, _, tail = stream_id.partition("-")
    return (int(head) if head.isdigit() else 0, int(tail) if tail.isdigit() else 0)


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

    def __init__(
        self,
        room: str,
        seq: int,
        cursor: str,
        selector: Selector = take_all,
        smoother: Smoother | None = None,
    ) -> None:
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
        self._smoother = smoother  # when set, it decides instead of ``selector``
        self.waiting: list[Waiting] = []  # ordinary comments kept across frames (smoother)
        # Read batches, oldest first: (id of its first comment, cursor before it). Each
        # read returns whole stream entries, so a batch start is a safe re-read point.
        self._batches: list[tuple[tuple[int, int], str]] = []
        # Ids shown by frames of a previous holder after the cursor (set at takeover):
        # skipped when read again, so a takeover never shows a comment twice.
        self.seen: set[str] = set()

    def add(self, comments: Iterable[tuple[str, bytes]]) -> None:
        """Take ``(stream id, payload)`` pairs read after ``read_cursor``, in order. A
        payload that is no comment (``parse_item``) is skipped and counted in ``invalid``;
        the cursor moves past it all the same, so it never holds the room up."""
        before = self.read_cursor
        first = True
        for stream_id, payload in comments:
            if first and self._smoother is not None:
                self._batches.append((_id_key(stream_id), before))
            first = False
            self.read_cursor = stream_id
            if stream_id in self.seen:
                self.seen.discard(stream_id)
                continue
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
        self.waiting = [w for w in self.waiting if w.item["id"] not in ids]

    def has_work(self) -> bool:
        return bool(self.pending or self.carry or self.retracts or self.waiting) or (
            self.read_cursor != self.cursor
        )

    def _restart_cursor(self, keep: list[Waiting]) -> str:
        """The committed cursor for a frame after which ``keep`` waits: the start of the
        read batch holding the oldest waiting comment (everything read if none waits)."""
        if not keep:
            return self.read_cursor
        oldest = min(_id_key(str(w.item["id"])) for w in keep)
        cursor = self.cursor
        for first, before in self._batches:
            if first > oldest:
                break
            cursor = before
        return cursor

    def build(
        self, now: float, budget: int = 1 << 30, *, clock: float | None = None
    ) -> Draft | None:
        """Propose frame ``seq + 1`` from carried, waiting and pending comments, or
        ``None``. ``now``: wall time (the frame's ``ts``). With a ``Smoother``, ``budget``
        is not used (the smoother paces the room's budget) and ``clock`` (default
        ``now``) is the time it measures windows and waits with: pass a monotonic one."""
        if not self.has_work():
            return None
        if self._smoother is not None:
            at = now if clock is None else clock
            plan = self._smoother.plan(at, self.carry, self.waiting, self.pending)
            cursor = self._restart_cursor(plan.keep)
            if not (plan.items or plan.dropped or self.pending or self.retracts) and (
                cursor == self.cursor
            ):
                # Everything still waits: no frame this tick. The pace's fraction still
                # accrues, or a budget under one item per tick would never show a carried
                # priority item (a paid one) until some other comment made a frame.
                self._smoother.credit = plan.credit
                return None
            return Draft(
                seq=self.seq + 1,
                ts_ms=int(now * 1000),
                items=plan.items,
                dropped=plan.dropped,
                cursor=cursor,
                consumed=len(self.pending),
                carry=plan.carry,
                dropped_by_tier=plan.dropped_by_tier,
                folded=plan.folded,
                retract=list(self.retracts),
                plan=plan,
            )
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
        if draft.plan is not None and self._smoother is not None:
            self._smoother.committed(draft.plan)
            self.waiting = list(draft.plan.keep)
            if not self.waiting:
                self._batches.clear()
            else:  # keep the batch holding the oldest waiting comment, and later ones
                oldest = min(_id_key(str(w.item["id"])) for w in self.waiting)
                while len(self._batches) > 1 and self._batches[1][0] <= oldest:
                    del self._batches[0]
