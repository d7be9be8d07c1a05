"""Notices: who is told that a room has news, and when a gateway reads a room anyway.

A committer (a worker's commit, a moderation event, a paid pin) names each room in the
notice stream of every gateway that *holds* the room (has viewers of it), never in one
stream every gateway reads. Two pure parts, no I/O, no clock of their own (callers pass
``now`` in seconds of any monotonic clock):

* ``HolderCache`` (committer side): each room's holders as last read from Redis, kept
  ``ttl_s`` so a commit does not read them every time; ``by_holder`` groups rooms per
  gateway so each gets one notice per commit round naming all its rooms.
* ``FeedSchedule`` (gateway side): which local rooms to register as held (new ones at
  once, all every ``refresh_s``), which to read without a notice: *fresh* rooms (held
  for less than the committers' cache period, so committers may not name them yet) every
  ``poll_s``, and *quiet* rooms (no notice and no read for ``sweep_s``: a lost notice) once
  per ``sweep_s``, all those found in one read at most every second (``check_s``). Its
  cost follows the rooms that joined or went quiet, never all rooms each second.

The frame stream stays the source of truth: a notice only says "read this room from your
cursor", so a lost, late or repeated notice delays or repeats a read, never a frame.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence


class HolderCache:
    """Each room's holders (gateway notice ids), as read at ``now``, trusted ``ttl_s``.

    ``ttl_s`` 0: never trusted (read on every commit). Entries of rooms not asked for
    are pruned once the cache holds more than twice the rooms it held at the last prune,
    so its size follows the rooms the process commits for.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = max(0.0, ttl_s)
        self._rooms: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._pruned_at = 64  # size that triggers the next prune

    def stale(self, rooms: Iterable[str], now: float) -> list[str]:
        """The rooms (each once, in order) whose holders must be read before a notice."""
        out: list[str] = []
        for room in dict.fromkeys(rooms):
            entry = self._rooms.get(room)
            if entry is None or now - entry[0] >= self.ttl_s or now < entry[0]:
                out.append(room)
        return out

    def put(self, room: str, holders: Iterable[str], now: float) -> None:
        """``room``'s holders as read at ``now``."""
        self._rooms[room] = (now, tuple(sorted(set(holders))))
        if len(self._rooms) > self._pruned_at:
            self._rooms = {
                r: e for r, e in self._rooms.items() if 0 <= now - e[0] < max(self.ttl_s, 1e-9)
            }
            self._pruned_at = max(64, 2 * len(self._rooms))

    def holders(self, room: str) -> tuple[str, ...]:
        """What is cached for ``room`` (empty: none known, or never read)."""
        entry = self._rooms.get(room)
        return entry[1] if entry is not None else ()

    def __len__(self) -> int:
        return len(self._rooms)


def by_holder(rooms: Iterable[str], holders: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Per gateway, the rooms (in the order given, each once) it holds among ``rooms``:
    one notice per gateway naming all of them."""
    out: dict[str, list[str]] = {}
    for room in dict.fromkeys(rooms):
        for holder in holders.get(room, ()):
            out.setdefault(holder, []).append(room)
    return out


class FeedSchedule:
    """A gateway feed's bookkeeping of its local rooms. Single owner (one trio task group).

    - ``sync(local, now)``: the rooms that became local (register them and read them at
      once) and those that are no longer (unregister);
    - ``heard(rooms, now)``: a notice named these rooms, or they were read;
    - ``due(now)``: the rooms to read now without a notice, as (fresh, quiet);
    - ``wait_s(now, most)``: how long the feed may block for a notice before something
      is due;
    - ``refresh_due(now)``: time to register every local room again (before the
      registration's TTL runs out); ``refreshed(now)`` when done.
    """

    def __init__(self, *, sweep_s: float, fresh_s: float, poll_s: float, refresh_s: float):
        self.sweep_s = max(0.01, sweep_s)
        self.fresh_s = max(0.0, fresh_s)
        self.poll_s = max(0.001, poll_s)
        self.refresh_s = max(0.01, refresh_s)
        self.local: set[str] = set()
        # room -> last notice or read; insertion order is that time's order (a room
        # heard is moved to the end), so the quiet ones are a prefix: O(due), not O(rooms).
        self._heard: dict[str, float] = {}
        self._fresh: dict[str, float] = {}  # room -> until when it is polled
        self._refresh_at: float | None = None
        # Quiet rooms are looked for at most once per check_s (one read for all found).
        self.check_s = min(1.0, self.sweep_s / 2)
        self._check_at: float | None = None

    def sync(self, local: Collection[str], now: float) -> tuple[set[str], set[str]]:
        """``local``: the rooms with viewers now. Returns (added, removed)."""
        current = set(local)
        added, removed = current - self.local, self.local - current
        self.local = current
        for room in removed:
            self._heard.pop(room, None)
            self._fresh.pop(room, None)
        for room in added:
            self._fresh[room] = now + self.fresh_s
            self._touch(room, now)
        return added, removed

    def registered(self, rooms: Iterable[str], now: float) -> None:
        """The registration of ``rooms`` landed at ``now``: committers may still use
        holders read before it for ``fresh_s`` from now, so poll them until then."""
        for room in rooms:
            if room in self.local:
                self._fresh[room] = now + self.fresh_s

    def heard(self, rooms: Iterable[str], now: float) -> None:
        for room in rooms:
            if room in self.local:
                self._touch(room, now)

    def _touch(self, room: str, now: float) -> None:
        self._heard.pop(room, None)
        self._heard[room] = now

    def due(self, now: float) -> tuple[set[str], set[str]]:
        """(fresh rooms, quiet rooms) to read now. Fresh: all of them once any was not
        read for ``poll_s`` (one read for the lot, not one wake per room). Quiet: at most
        one check per ``check_s``, taking every room not heard for ``sweep_s - check_s``,
        so each is read before ``sweep_s`` passes, in one read per check, however the
        rooms' quiet times are spread."""
        for room in [r for r, until in self._fresh.items() if until <= now]:
            del self._fresh[room]
        fresh: set[str] = set()
        if any(now - self._heard.get(r, now) >= self.poll_s for r in self._fresh):
            fresh = set(self._fresh)
        quiet: set[str] = set()
        if self._heard and (self._check_at is None or now >= self._check_at):
            self._check_at = now + self.check_s
            for room, at in self._heard.items():
                if now - at < self.sweep_s - self.check_s:
                    break
                quiet.add(room)
        return fresh, quiet - fresh

    def wait_s(self, now: float, most: float) -> float:
        """Block at most this long: until the next fresh poll or quiet check is due."""
        wait = most
        if self._fresh:
            wait = min(wait, min(self._heard.get(r, now) for r in self._fresh) + self.poll_s - now)
        for at in self._heard.values():  # the oldest
            check = now if self._check_at is None else self._check_at
            wait = min(wait, max(check, at + self.sweep_s - self.check_s) - now)
            break
        return max(0.0, wait)

    def refresh_due(self, now: float) -> bool:
        return self._refresh_at is None or now >= self._refresh_at

    def refresh_now(self) -> None:
        """Register every local room again at the next chance (a registration failed)."""
        self._refresh_at = None

    def refreshed(self, now: float) -> None:
        self._refresh_at = now + self.refresh_s

    def next_refresh_s(self, now: float) -> float:
        return 0.0 if self._refresh_at is None else max(0.0, self._refresh_at - now)

    @property
    def fresh(self) -> set[str]:
        return set(self._fresh)
