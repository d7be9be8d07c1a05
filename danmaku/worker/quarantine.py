"""``RoomQuarantine``: which rooms a worker must leave alone for a while after they failed.

A room whose tick fails (a corrupt cursor, a clobbered key, a bug that one room's
comments trigger) is released by its worker and not taken again until its backoff has
passed: first ``first`` seconds, doubling per failure up to ``cap``; a room that then
ran ``stable_s`` without failing starts from ``first`` again (``supervise.Backoff``).
Pure: no I/O, ``now`` is passed in. Bounded: at most ``max_rooms`` rooms are remembered
(the least recently failed are forgotten first; forgetting one only shortens its wait).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from danmaku.supervise import Backoff


@dataclass
class _Entry:
    backoff: Backoff
    until: float = float("-inf")


@dataclass
class RoomQuarantine:
    first: float = 0.5
    cap: float = 30.0
    stable_s: float = 30.0
    max_rooms: int = 10_000
    _rooms: dict[str, _Entry] = field(default_factory=dict)

    def failed(self, room: str, now: float) -> float:
        """``room`` failed at ``now``: the seconds it stays quarantined."""
        entry = self._rooms.pop(room, None)
        if entry is None:
            entry = _Entry(Backoff(self.first, self.cap, self.stable_s))
        delay = entry.backoff.failed(now)
        entry.until = now + delay
        self._rooms[room] = entry  # (re)inserted last: the dict's order is failure order
        while len(self._rooms) > self.max_rooms:
            del self._rooms[next(iter(self._rooms))]
        return delay

    def blocked(self, room: str, now: float) -> bool:
        """Must the worker leave ``room`` alone at ``now``?"""
        entry = self._rooms.get(room)
        return entry is not None and now < entry.until

    def retried(self, room: str, now: float) -> None:
        """The worker took ``room`` again at ``now`` (its stable run counts from here)."""
        entry = self._rooms.get(room)
        if entry is not None:
            entry.backoff.started(now)

    def forget_recovered(self, now: float) -> None:
        """Forget rooms that have run ``stable_s`` since their retry (their next failure
        starts from ``first`` anyway): keeps the memory to rooms still in trouble."""
        for room in [r for r, e in self._rooms.items() if e.backoff.stable(now)]:
            if now >= self._rooms[room].until:
                del self._rooms[room]

    def __len__(self) -> int:
        return len(self._rooms)
