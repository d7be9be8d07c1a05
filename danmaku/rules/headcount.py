"""``HeadCount``: what one gateway tells Redis about one room's viewers each presence
round, so that a room's ``online`` counts people, not connections, over all gateways.

Pure: no I/O, no clock of its own (callers pass ``now_ms``). The store writes the report
(``Store.sync_rooms``) and counts the room (``Store`` presence ops, one Lua script):

* anonymous viewers (no token) count once per connection: they carry no stable key
  (a guest from ``POST /api/session`` has a token, and its device cookie keeps its
  ``uid``, so guests count as users);
* a room with at most ``exact_max`` distinct users on this gateway is listed exactly
  (``LocalViewers.users``); the list is written when it changed, and at least every
  ``LIST_REFRESH_MS`` (so a list lost with Redis comes back);
* beyond that, the gateway adds its users to the room's HyperLogLog of the current
  ``HLL_BUCKET_MS`` bucket: all of them in the first round of a bucket, then only those
  new since (a HyperLogLog cannot forget a member: a bucket is rebuilt from scratch
  every period). Readers count the union of the current and the previous bucket, so a
  user who left stops counting within two buckets.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

HLL_BUCKET_MS = 5000
LIST_REFRESH_MS = 10_000


@dataclass(frozen=True, slots=True)
class LocalViewers:
    """One gateway's report of a room's viewers for a presence round (``sync_rooms``):
    connections, anonymous connections, and the distinct users either as an exact list
    (``users``; ``None``: unchanged since it was last written) or, in a big room, uids to
    add to the room's HyperLogLog of ``bucket`` (``hll``)."""

    conns: int
    anonymous: int
    users: tuple[str, ...] | None = None
    hll: bool = False
    hll_add: tuple[str, ...] = ()
    bucket: int = 0


def hll_bucket(now_ms: int) -> int:
    """The HyperLogLog bucket that ``now_ms`` (wall clock, ms) falls in."""
    return now_ms // HLL_BUCKET_MS


class HeadCount:
    """One room's viewers on one gateway, as reported to Redis. Call ``report`` each
    round and ``confirm`` once the store took that report; a round whose write failed is
    simply not confirmed (the next report then carries everything again)."""

    __slots__ = ("_added", "_bucket", "_pending", "_written", "_written_at", "exact_max")

    def __init__(self, exact_max: int) -> None:
        self.exact_max = max(0, exact_max)
        self._written: frozenset[str] | None = None  # the exact list Redis holds
        self._written_at = 0
        self._bucket = -1  # the HyperLogLog bucket whose users were all added
        self._added: set[str] = set()  # users added to ``_bucket`` so far
        self._pending = False  # a report was made and not confirmed (its write failed)

    def report(
        self,
        users: Set[str],
        anonymous: int,
        conns: int,
        now_ms: int,
        joined: Set[str] | None = None,
    ) -> LocalViewers:
        """What to write for this round: ``users`` are the distinct uids of the room's
        connections with a token here, ``anonymous`` the connections without one,
        ``conns`` all of them; ``joined`` (optional) the uids that came since the last
        report, so that a big room's newcomers are found without a pass over
        ``users`` (after a report that was not confirmed, it is made anyway)."""
        pending, self._pending = self._pending, True
        if len(users) <= self.exact_max:
            stale = now_ms - self._written_at >= LIST_REFRESH_MS
            if self._written is None or stale or users != self._written:
                return LocalViewers(conns, anonymous, tuple(sorted(users)))
            return LocalViewers(conns, anonymous, None)
        bucket = hll_bucket(now_ms)
        if bucket != self._bucket:
            fresh: Set[str] = users
        elif joined is None or pending:
            fresh = {uid for uid in users if uid not in self._added}
        else:
            fresh = {uid for uid in joined if uid not in self._added}
        return LocalViewers(conns, anonymous, None, True, tuple(sorted(fresh)), bucket)

    def confirm(self, report: LocalViewers, now_ms: int) -> None:
        """The store wrote ``report`` (made by ``report`` at ``now_ms``)."""
        self._pending = False
        if not report.hll:
            self._bucket, self._added = -1, set()
            if report.users is not None:
                self._written, self._written_at = frozenset(report.users), now_ms
            return
        self._written = None  # the list was removed: a return to exact mode rewrites it
        if report.bucket != self._bucket:
            self._bucket, self._added = report.bucket, set(report.hll_add)
        else:
            self._added.update(report.hll_add)


REWRITE_MS = 2000  # a quiet room's report is rewritten this often (see QuietRounds)


@dataclass(frozen=True, slots=True)
class _Written:
    conns: int
    anonymous: int
    hll: bool
    idle: bool  # offered and shed were both 0
    at_ms: int


class QuietRounds:
    """Which rooms' reports a presence round must write, so that an idle gateway does
    not rewrite what Redis already holds twice a second (most of its idle CPU was
    those Redis commands: measured in docs/benchmarks.md).

    A room's report is written when it carries news: the room is new or gone here, its
    connections or anonymous count changed, it has a user list or HyperLogLog newcomers
    to write, comments were offered or shed (or were in the last written round, so the
    0 replaces the old rate), or ``REWRITE_MS`` passed since it was last written. That
    bound keeps a quiet report fresh: readers drop reports older than
    ``records.ONLINE_FRESH_MS`` (5 s), so even a failed round or two never makes this
    gateway's viewers look gone. Rooms not written are still read back (settings,
    epoch, the room-wide rate) every round. Pure: ``now_ms`` is passed in."""

    def __init__(self, rewrite_ms: int = REWRITE_MS) -> None:
        self.rewrite_ms = rewrite_ms
        self._written: dict[str, _Written] = {}

    def quiet(
        self,
        reports: dict[str, LocalViewers | None],
        offered: dict[str, float],
        shed: dict[str, float],
        now_ms: int,
    ) -> set[str]:
        """The rooms of ``reports`` whose write this round can skip."""
        out = set()
        for room, report in reports.items():
            last = self._written.get(room)
            if (
                last is None
                or report is None
                or report.users is not None
                or report.hll_add
                or not last.idle
                or offered.get(room, 0.0) > 0.0
                or shed.get(room, 0.0) > 0.0
                or now_ms - last.at_ms >= self.rewrite_ms
                or (report.conns, report.anonymous, report.hll)
                != (last.conns, last.anonymous, last.hll)
            ):
                continue
            out.add(room)
        return out

    def written(
        self,
        reports: dict[str, LocalViewers | None],
        quiet: Set[str],
        offered: dict[str, float],
        shed: dict[str, float],
        now_ms: int,
    ) -> None:
        """The store wrote ``reports`` but ``quiet`` (call after a successful round)."""
        for room, report in reports.items():
            if room in quiet:
                continue
            if report is None:
                self._written.pop(room, None)
                continue
            idle = offered.get(room, 0.0) <= 0.0 and shed.get(room, 0.0) <= 0.0
            self._written[room] = _Written(report.conns, report.anonymous, report.hll, idle, now_ms)

    def failed(self) -> None:
        """A round's write failed: write every room in full at the next one."""
        self._written.clear()
