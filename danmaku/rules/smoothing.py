"""``Smoother``: a room's display budget per second, not per tick.

Pure rules, no I/O and no clock: the worker passes ``now`` (seconds, any monotonic or wall
clock, the same one every call). Each tick the merger hands ``Smoother.plan`` the priority
items carried from the last frame, the ordinary comments waiting in the room's queue, and
the comments read in this tick; it gets back what the frame shows, what keeps waiting, and
what is dropped. ``committed(plan)`` records the frame once it is durably committed (a
plan that is not committed changes nothing but the sampler's fairness memory, so a retried
build is harmless).

Promises, with budget ``B`` items/s, window ``W`` s, maximum wait ``A`` s:

- **Budget over any window:** the frames committed within any window of ``W`` seconds
  (times ``t`` with ``t0 <= t < t0 + W - 1 us``) carry at most ``floor(B x W)`` items,
  priority items included.
- **Paced:** a frame shows at most the tick's share of the budget (``frame_budget``, 4 at
  40/s and 100 ms), more only to show comments that would otherwise wait longer than
  ``A``, and never beyond the window's budget.
- **Bursts wait, they are not cut:** ordinary comments beyond the tick's share wait in the
  queue (oldest shown first). While the comments offered stay within ``B x W`` per window
  of ``W``, none is dropped (each waits at most about ``W``).
- **Bounded queue:** at most ``floor(B x W)`` comments wait after a frame, and none waits
  longer than ``A`` (measured from the ``now`` of the first plan that saw it): what would be
  older when shown is dropped instead. Only then does sampling choose (``FrameSampler``:
  identical spam folded, fair per user, least recently shown first), so a 100x spike
  still shows each viewer at most ``B`` items per second.
- **Accounting:** every ordinary comment offered is exactly one of: shown, folded into a
  shown item's ``count``, dropped (counted in the frame's ``dropped``), or still waiting.
  Priority items follow ``FrameSampler``'s rules (first in a frame, the overflow carried,
  the backlog capped at ``backlog_s`` of the budget).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from danmaku.config import DEFAULTS
from danmaku.rules.sampling import _EPS, FrameSampler, Item, _prio, _weight, frame_budget

__all__ = ["Plan", "Smoother", "Waiting"]

_WINDOW_SLACK = 1e-6  # s: float time stamps of ticks exactly W apart are not "within" W


@dataclass(frozen=True, slots=True)
class Waiting:
    """An ordinary comment in a room's queue: the frame item (a folded one carries
    ``count``) and when it entered the queue (the ``now`` of the first plan that saw it)."""

    item: Item
    since: float


@dataclass(frozen=True, slots=True)
class Plan:
    """One frame's decision. ``items``: priority first (tier, then age), then ordinary
    ones in stream order. ``keep``: ordinary comments still waiting after this frame, in
    stream order. ``carry``: priority items offered first to the next frame."""

    now: float
    items: list[Item]
    keep: list[Waiting]
    carry: list[Item] = field(default_factory=list)
    dropped: int = 0
    dropped_by_tier: dict[int, int] = field(default_factory=dict)
    folded: int = 0
    carried_by_tier: dict[int, int] = field(default_factory=dict)
    credit: float = 0.0  # the pace's fraction left for the next frame


class Smoother:
    """Per-room pacing of the display budget. One instance per room; not thread-safe.

    ``per_second``, ``window_s`` and ``max_wait_s`` may be changed at any time (room
    settings; a window shorter than ``1 / per_second`` counts as that long); ``tick_s``
    is the worker's nominal tick (for the pace and for what counts
    as "would be too old at the next tick")."""

    def __init__(
        self,
        sampler: FrameSampler,
        per_second: float,
        *,
        tick_s: float,
        window_s: float = DEFAULTS.smooth_window_s,
        max_wait_s: float = DEFAULTS.max_wait_s,
        backlog_s: float = math.inf,
    ) -> None:
        self.sampler = sampler
        self.per_second = per_second
        self.tick_s = tick_s
        self.window_s = window_s
        self.max_wait_s = max_wait_s
        self.backlog_s = backlog_s
        self.credit = 0.0
        self._shown: deque[tuple[float, int]] = deque()  # (frame time, items) within window

    @property
    def window(self) -> float:
        """The window in force: ``window_s``, or long enough for one item of the budget
        (a window of 0.1 s at 1 item/s would show nothing at all)."""
        rate = max(0.0, self.per_second)
        return max(self.window_s, 1.0 / rate if rate > 0 else 0.0)

    @property
    def window_budget(self) -> int:
        """Items all frames within one window may carry (and comments that may wait)."""
        return math.floor(max(0.0, self.per_second) * self.window + _EPS)

    def used(self, now: float) -> int:
        """Items shown by committed frames within the window ending at ``now``."""
        horizon = now - self.window + _WINDOW_SLACK
        while self._shown and self._shown[0][0] < horizon:
            self._shown.popleft()
        return sum(n for t, n in self._shown if t >= horizon)

    def plan(
        self, now: float, carry: list[Item], waiting: list[Waiting], fresh: list[Item]
    ) -> Plan:
        """The next frame at ``now`` from the carried priority items, the waiting
        ordinary comments (stream order) and this tick's comments (stream order). Never
        mutates its arguments or the dicts in them."""
        allowance = max(0, self.window_budget - self.used(now))
        pace, credit = frame_budget(max(0.0, self.per_second), self.tick_s, self.credit)
        max_wait = max(0.0, self.max_wait_s) + _EPS

        priority = [*carry, *(i for i in fresh if _prio(i) >= 1)]
        queue = [*waiting, *(Waiting(i, now) for i in fresh if _prio(i) < 1)]
        dropped_by_tier: dict[int, int] = {0: 0}
        live: list[Waiting] = []
        for w in queue:  # waited too long already (a late tick): never shown that old
            if now - w.since > max_wait:
                dropped_by_tier[0] += _weight(w.item)
            else:
                live.append(w)
        due = [w for w in live if now + self.tick_s - w.since > max_wait]
        frame_n = min(allowance, max(pace, len(due)))

        cap = None
        if math.isfinite(self.backlog_s):
            cap = math.ceil(max(0.0, self.per_second) * self.backlog_s)
        if priority:
            psel = self.sampler.select(priority, frame_n, max_carry=cap, remember=False)
            shown_prio, new_carry = psel.items, psel.carry
            for tier, n in psel.dropped_by_tier.items():
                dropped_by_tier[tier] = dropped_by_tier.get(tier, 0) + n
        else:
            shown_prio, new_carry = [], []
        slots = frame_n - len(shown_prio)
        shown, keep, lost = self._ordinary(live, due, slots)
        dropped_by_tier[0] += lost
        items = [*shown_prio, *shown]
        carried: dict[int, int] = {}
        for it in new_carry:
            carried[_prio(it)] = carried.get(_prio(it), 0) + 1
        return Plan(
            now=now,
            items=items,
            keep=keep,
            carry=new_carry,
            dropped=sum(dropped_by_tier.values()),
            dropped_by_tier=dict(sorted(dropped_by_tier.items())),
            folded=sum(_weight(i) - 1 for i in shown),
            carried_by_tier=carried,
            credit=credit,
        )

    def _ordinary(
        self, live: list[Waiting], due: list[Waiting], slots: int
    ) -> tuple[list[Item], list[Waiting], int]:
        """Shown items, what keeps waiting, and how many comments are dropped."""
        room = self.window_budget  # may wait after this frame
        due_ids = {id(w) for w in due}
        if len(due) <= slots and len(live) - slots <= room:  # no contention: FIFO
            return [w.item for w in live[:slots]], live[slots:], 0
        lost = 0
        shown: list[Waiting] = []
        if len(due) > slots:  # more must go now than may: a fair choice among them
            picked, n = self._choose(due, slots)
            shown, lost = picked, n
            rest_slots = 0
        else:
            shown, rest_slots = list(due), slots - len(due)
        rest = [w for w in live if id(w) not in due_ids]
        if len(rest) > rest_slots + room:  # more than the window can show: sample
            rest, n = self._choose(rest, rest_slots + room)
            lost += n
        shown += rest[:rest_slots]
        order = {str(w.item.get("id")): k for k, w in enumerate(live)}
        shown.sort(key=lambda w: order.get(str(w.item.get("id")), -1))
        return [w.item for w in shown], rest[rest_slots:], lost

    def _choose(self, entries: list[Waiting], n: int) -> tuple[list[Waiting], int]:
        """``n`` of ``entries`` by the sampler's rules (spam folded, fair per user), in
        stream order (a folded item waits as its earliest comment), and the comments
        dropped."""
        sel = self.sampler.select([w.item for w in entries], n, remember=False)
        by_id = {str(w.item.get("id")): w for w in entries}
        order = {str(w.item.get("id")): k for k, w in enumerate(entries)}
        kept = [Waiting(it, by_id[str(it.get("id"))].since) for it in sel.items]
        kept.sort(key=lambda w: order[str(w.item.get("id"))])
        return kept, sel.dropped

    def committed(self, plan: Plan) -> None:
        """The plan's frame is durably committed: count its items in the window."""
        if plan.items:
            self._shown.append((plan.now, len(plan.items)))
            self.sampler.note_shown(plan.items)
        self.credit = plan.credit
