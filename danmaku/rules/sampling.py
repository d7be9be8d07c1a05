"""Spike control for one room's frame: priority tiers, spam folding, fair sampling.

Pure rules, no I/O and no clock: the broadcast worker hands ``FrameSampler.select`` the
comments it read during one tick (plus the priority items the previous frame carried)
and the frame's budget, and gets back what goes into the frame. Randomness comes from an
injected ``random.Random``, so a seeded sampler is fully deterministic.

Items are frame items as on the wire (``rules.items.Item``): ``id``, ``uid``, ``nick``,
``text``, ``color``, ``mode``, ``ts`` (int ms), ``prio`` (0 ordinary, 1 highlighted,
2 staff: system/streamer/moderator, 3 paid and gifts) and, for a folded item, ``count`` (int >= 2).
The sampler never mutates the dicts it is given: a shown item is the input dict itself,
or a shallow copy with ``count`` set when it represents folded duplicates.

Budget helpers: ``frame_budget`` / ``BudgetMeter`` turn a per-second display budget into
whole items per frame, carrying the fraction so the per-second rate holds exactly over
time. ``DensityLevels`` trims a selected frame into a few nested lower-density variants
that the gateway encodes once each (viewer-chosen density).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from danmaku.rules.items import Item
from danmaku.rules.normalize import normalize

__all__ = [
    "BudgetMeter",
    "DensityLevels",
    "FrameSampler",
    "Item",
    "Selection",
    "density_rank",
    "frame_budget",
]


PAID_TIER = 3  # protocol.PRIO_PAID: paid messages and gifts
_EPS = 1e-9  # float slack so 0.1 s x 30/s = 2.9999999999999996 still counts as 3


def _prio(item: Item) -> int:
    p = item.get("prio", 0)
    return p if isinstance(p, int) and p > 0 else 0


def _ts(item: Item) -> float:
    ts = item.get("ts", 0)
    return float(ts) if isinstance(ts, int | float) else 0.0


def _weight(item: Item) -> int:
    """How many comments an input item stands for (1, or its ``count`` if already folded)."""
    n = item.get("count", 1)
    return n if isinstance(n, int) and n > 1 else 1


@dataclass(frozen=True, slots=True)
class Selection:
    """What one frame carries, and the accounting of what it does not.

    Every ordinary comment offered is exactly one of: shown (an item of ``items``),
    folded into a shown item's ``count`` (``folded``), or dropped (``dropped``).
    Every priority comment offered is in ``items``, in ``carry``, or (only beyond the
    backlog cap ``max_carry``) dropped.
    """

    items: list[Item]
    """The frame's items, at most ``budget`` of them: priority items first (tier
    descending, then oldest first), then ordinary items oldest first (by ``ts``, ties in
    input order)."""
    dropped: int = 0
    """Comments left out of this frame for good: ordinary ones not sampled (a left-out
    folded item counts all the comments it stood for) and priority ones beyond the
    backlog cap. This is the frame's ``dropped`` field."""
    carry: list[Item] = field(default_factory=list)
    """Priority items (prio >= 1) that did not fit: offer them again, first, to the
    next frame (``select(sel.carry + new_items, ...)``). At most ``max_carry``."""
    dropped_by_tier: dict[int, int] = field(default_factory=dict)
    """``dropped`` by tier: ``{0: ordinary dropped}``, plus priority tiers with items
    dropped beyond the backlog cap; a dict so metrics can label by tier."""
    folded: int = 0
    """Comments folded away into the ``count`` of shown items (``count - 1`` each)."""
    carried_by_tier: dict[int, int] = field(default_factory=dict)
    """``len(carry)`` by tier (only tiers with carried items appear)."""


class _Group:
    """Ordinary comments of one tick with the same normalised text."""

    __slots__ = ("first", "item", "norm", "rep", "uids", "weight")

    def __init__(self, norm: str, rep: Item, first: tuple[float, int], uid: str) -> None:
        self.norm = norm
        self.rep = rep  # the earliest comment: its id, uid, nick, colour represent the group
        self.first = first  # (ts, input index) of ``rep``
        self.weight = _weight(rep)
        self.uids = {uid}
        self.item = rep  # what the frame shows (a copy with ``count`` once folded)

    @property
    def bucket(self) -> str:
        """Fairness key: the user, or the phrase itself when several users sent it."""
        if len(self.uids) >= 2:
            return "t:" + self.norm
        return "u:" + next(iter(self.uids))


class FrameSampler:
    """Chooses a frame's items under a budget. One instance per room (it remembers who
    was shown recently); not thread-safe.

    Rules, in order:

    1. Priority items (prio >= 1) always pass first: staff (2), then highlighted (1),
       oldest first within a tier. If they alone exceed the budget, the newest overflow
       goes to ``carry``; ordinary comments then get nothing. The backlog is bounded:
       with ``max_carry``, at most ``budget + max_carry`` priority items are kept, the
       newest; older ones are dropped (counted in ``dropped`` by tier), so a priority
       flood (several staff senders) cannot push a room's frames ever further behind.
       Paid items (``PAID_TIER``: paid messages and gifts) go last: one is dropped only
       when paid items alone exceed the backlog.
    2. Ordinary items are folded: comments whose ``normalize(text)`` is equal become one
       item, the earliest one (by ``ts``, then input order) with ``count`` = the number of
       comments it stands for (set only when that is >= 2). Folding happens before
       sampling, so a flood of one phrase competes for one slot.
    3. Fair sampling of what is left, into the remaining slots. Candidates are grouped
       into fairness buckets: a user's own items (a fold whose comments all came from one
       user is that user's item) or a *popular phrase* (a fold of >= 2 distinct users,
       a bucket of its own whatever the uid of its representative).

       a. Popular phrases go first, most distinct users first (ties random), but take at
          most ``ceil(fold_share x remaining slots)`` slots (default half, rounded up).
       b. Then round-robin over the buckets: every bucket gets one item before any gets
          a second, so a user who sends 100 comments gets no more than one who sends 1
          while others wait. Bucket order: least recently shown first (the sampler
          remembers the frame in which each bucket was last shown, up to
          ``history_size`` buckets, oldest forgotten first; never or forgotten = first),
          ties in random order. Each bucket's item is a random one of its items.

       Randomness comes only from ``rng``: the same seed and inputs give the same frame;
       choice is never first-come.

    Each ``select`` call counts as one frame for that memory; a retried build of the same
    frame only shifts it by one frame, which is harmless.
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        fold_share: float = 0.5,
        history_size: int = 4096,
    ) -> None:
        if not 0.0 <= fold_share <= 1.0:
            raise ValueError("fold_share must be within [0, 1]")
        if history_size < 0:
            raise ValueError("history_size must be >= 0")
        self.rng = rng if rng is not None else random.Random()
        self.fold_share = fold_share
        self.history_size = history_size
        self._frame = 0
        self._last_shown: dict[str, int] = {}  # bucket -> frame; insertion order = age

    def select(
        self,
        items: list[Item],
        budget: int,
        max_carry: int | None = None,
        *,
        remember: bool = True,
    ) -> Selection:
        """Choose at most ``budget`` items of ``items`` for one frame (see the class rules).

        ``items``: the priority items carried from the previous frame followed by this
        tick's comments, any order. ``budget`` >= 0 items. ``max_carry``: at most this many
        priority items carried to the next frame, the oldest beyond are dropped (``None``:
        no cap). ``remember=False``: choose without counting a frame or recording the
        chosen buckets as shown (a choice of what may wait, not of what is shown: call
        ``note_shown`` for what is). Never mutates ``items`` or the dicts in it.
        """
        if budget < 0:
            raise ValueError("budget must be >= 0")
        if remember:
            self._frame += 1
        priority: list[tuple[int, float, int, Item]] = []
        ordinary: list[tuple[int, Item]] = []
        for idx, item in enumerate(items):
            p = _prio(item)
            if p >= 1:
                priority.append((-p, _ts(item), idx, item))
            else:
                ordinary.append((idx, item))
        dropped_by_tier: dict[int, int] = {}
        if max_carry is not None and len(priority) > budget + max(0, max_carry):
            # Over the backlog: keep the newest, drop the oldest (whatever their tier),
            # but paid items only when paid items alone overflow it: they were paid for.
            by_age = sorted(priority, key=lambda e: (-e[0] >= PAID_TIER, e[1], e[2]))
            gone = by_age[: len(priority) - budget - max(0, max_carry)]
            gone_at = {e[2] for e in gone}
            priority = [e for e in priority if e[2] not in gone_at]
            for e in gone:
                dropped_by_tier[-e[0]] = dropped_by_tier.get(-e[0], 0) + _weight(e[3])
        priority.sort(key=lambda e: e[:3])
        shown = [e[3] for e in priority[:budget]]
        carry = [e[3] for e in priority[budget:]]

        groups = _fold(ordinary)
        picks = self._sample(groups, budget - len(shown), remember)
        picked = {id(g) for g in picks}
        dropped_ordinary = sum(g.weight for g in groups if id(g) not in picked)
        dropped_by_tier[0] = dropped_ordinary
        picks.sort(key=lambda g: g.first)
        shown.extend(g.item for g in picks)
        return Selection(
            items=shown,
            dropped=sum(dropped_by_tier.values()),
            carry=carry,
            dropped_by_tier=dict(sorted(dropped_by_tier.items())),
            folded=sum(g.weight - 1 for g in picks),
            carried_by_tier=dict(Counter(_prio(it) for it in carry)),
        )

    def _sample(self, groups: list[_Group], slots: int, remember: bool = True) -> list[_Group]:
        if slots <= 0 or not groups:
            return []
        if len(groups) <= slots:  # no contention: everything is shown
            if remember:
                self._remember({g.bucket for g in groups})
            return list(groups)
        rng = self.rng
        picks: list[_Group] = []
        shown: set[str] = set()
        buckets: dict[str, list[_Group]] = {}
        for g in groups:
            buckets.setdefault(g.bucket, []).append(g)

        popular = [g for g in groups if len(g.uids) >= 2]
        if popular and self.fold_share > 0.0:
            popular.sort(key=lambda g: (-len(g.uids), rng.random()))
            for g in popular[: math.ceil(slots * self.fold_share)]:
                picks.append(g)
                shown.add(g.bucket)
                del buckets[g.bucket]
            slots -= len(picks)
        if slots == 0:
            if remember:
                self._remember(shown)
            return picks

        last = self._last_shown
        ranked = sorted(buckets.items(), key=lambda kv: (last.get(kv[0], -1), rng.random()))
        queues: list[tuple[str, list[_Group]]] = []
        for key, cands in ranked:
            if len(cands) > 1:
                cands = rng.sample(cands, min(len(cands), slots))
            queues.append((key, cands))
        rnd = 0
        while slots > 0 and queues:
            for key, queue in queues:
                picks.append(queue[rnd])
                shown.add(key)
                slots -= 1
                if slots == 0:
                    break
            rnd += 1
            queues = [kq for kq in queues if len(kq[1]) > rnd]
        if remember:
            self._remember(shown)
        return picks

    def note_shown(self, items: list[Item]) -> None:
        """Count a frame and record these shown ordinary items' buckets (their users; a
        folded item also its phrase) as shown in it: the fairness memory when choices
        were made with ``remember=False``."""
        self._frame += 1
        keys: set[str] = set()
        for it in items:
            if _prio(it) >= 1:
                continue
            keys.add("u:" + str(it.get("uid", "")))
            if _weight(it) >= 2:
                text = it.get("text", "")
                keys.add("t:" + normalize(text if isinstance(text, str) else str(text)))
        self._remember(keys)

    def _remember(self, keys: set[str]) -> None:
        """Record ``keys`` as shown in the current frame; forget the oldest beyond bound."""
        last = self._last_shown
        for key in sorted(keys):  # sorted: eviction order independent of set hashing
            last.pop(key, None)
            last[key] = self._frame
        while len(last) > self.history_size:
            del last[next(iter(last))]


def _fold(ordinary: list[tuple[int, Item]]) -> list[_Group]:
    """Group ordinary comments by normalised text, in order of first appearance."""
    groups: dict[str, _Group] = {}
    for idx, item in ordinary:
        text = item.get("text", "")
        norm = normalize(text if isinstance(text, str) else str(text))
        uid = str(item.get("uid", ""))
        first = (_ts(item), idx)
        g = groups.get(norm)
        if g is None:
            groups[norm] = _Group(norm, item, first, uid)
            continue
        g.weight += _weight(item)
        g.uids.add(uid)
        if first < g.first:
            g.rep, g.first = item, first
    out = list(groups.values())
    for g in out:
        g.item = {**g.rep, "count": g.weight} if g.weight >= 2 else g.rep
    return out


# ---- budget per frame -----------------------------------------------------------------------
def frame_budget(per_second: float, tick_s: float, carry_credit: float = 0.0) -> tuple[int, float]:
    """Whole items for a frame of ``tick_s`` seconds at ``per_second``, plus the new credit.

    ``carry_credit`` is the fraction left over by the previous frame (start with 0.0 and
    feed back what this returns). Returns ``(n, credit)`` with ``n = floor(per_second x
    tick_s + carry_credit)`` (within 1e-9 float slack) and ``0 <= credit < 1``, so the
    sum of ``n`` over frames never drifts from ``per_second x elapsed`` by one item or
    more: 40/s at 0.1 s gives 4 every frame, 15/s gives 1, 2, 1, 2, ...
    """
    if not (math.isfinite(per_second) and per_second >= 0.0):
        raise ValueError("per_second must be a finite number >= 0")
    if not (math.isfinite(tick_s) and tick_s >= 0.0):
        raise ValueError("tick_s must be a finite number >= 0")
    total = per_second * tick_s + max(0.0, carry_credit)
    n = math.floor(total + _EPS)
    return n, max(0.0, total - n)


class BudgetMeter:
    """``frame_budget`` with the credit kept: ``take(tick_s)`` per frame.

    ``per_second`` may be changed at any time (a room setting); the fraction already
    earned is kept. Pass the tick actually elapsed to follow a jittery clock, or the
    nominal tick for a fixed frame rate.
    """

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.credit = 0.0

    def take(self, tick_s: float) -> int:
        """Items the next frame may carry."""
        n, self.credit = frame_budget(self.per_second, tick_s, self.credit)
        return n


# ---- viewer-chosen density ------------------------------------------------------------------
def density_rank(item: Item) -> float:
    """A stable pseudo-random number in [0, 1) derived from the item's ``id`` only.

    The same id gives the same rank in every process (blake2b, not Python's salted hash),
    so every gateway trims a frame identically.
    """
    digest = hashlib.blake2b(str(item.get("id", "")).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


class DensityLevels:
    """A few density variants of a selected frame, to encode once each.

    A level is the fraction of ordinary items to keep, in [0, 1]. An ordinary item is
    kept at level ``L`` iff ``density_rank(item) < L``; priority items (prio >= 1) are
    kept at every level. Promises: level 1.0 keeps everything; a lower level's list is a
    subset of a higher level's (same order as the input); over many frames the kept
    share of ordinary items tends to ``L`` (per frame it varies); the decision depends on
    the item's id only, so it is the same on every gateway.
    """

    def __init__(self, levels: Sequence[float] = (1.0, 0.5, 0.25)) -> None:
        if not levels:
            raise ValueError("at least one density level is needed")
        for level in levels:
            if not 0.0 <= level <= 1.0:
                raise ValueError(f"density level {level!r} is not within [0, 1]")
        self.levels: tuple[float, ...] = tuple(levels)

    def split(self, items: list[Item]) -> list[list[Item]]:
        """One sub-list of ``items`` per level, in the order of ``levels``."""
        ranks = [-1.0 if _prio(it) >= 1 else density_rank(it) for it in items]
        return [
            [it for it, r in zip(items, ranks, strict=True) if r < level] for level in self.levels
        ]

    def index_for(self, density: float) -> int:
        """The level to serve a viewer asking for ``density``: the largest level not above
        it, or the smallest level when all are above it."""
        below = [(lv, i) for i, lv in enumerate(self.levels) if lv <= density + _EPS]
        if below:
            return max(below)[1]
        return min((lv, i) for i, lv in enumerate(self.levels))[1]
