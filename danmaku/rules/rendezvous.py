"""Which gateways serve a room: rendezvous (highest-random-weight) hashing over the
registered gateways, spreading a room over as few of them as its size needs.

Every gateway URL gets a weight per room, ``hash(room, url)``; a room's gateways in
order of weight are its *rendezvous order*. Because a weight depends only on the room and
the one gateway, removing a gateway changes the order of no other pair (the rooms it
held move, and only they), and adding one moves a room only where the newcomer comes
first (about 1/n of them). A room of ``V`` viewers is served by the first
``k = ceil((V + 1) / share)`` gateways of the order (at least 1, at most all): a small
room sits on one gateway, so one gateway reads its frames; a celebrity room spreads as
each of its gateways fills to its share.

Pure: no I/O, no clock; ``now`` and the random draw ``pick`` are arguments.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MAX_URLS = 8  # the choice and its fallbacks in one answer; a client asks again after that
MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    """One gateway process as its registry entry says (``expires_at`` in the reader's
    clock: the entry's time to live, added to when it was read)."""

    gateway_id: str
    url: str
    connections: int
    capacity: int  # connections it takes in all (0: no cap)
    draining: bool
    healthy: bool
    expires_at: float


@dataclass(frozen=True, slots=True)
class Target:
    """A URL clients connect to: the live processes behind it summed (``danmaku gateway
    --processes N`` shares one port, so its processes are one target)."""

    url: str
    connections: int
    capacity: int  # 0: no cap
    ids: frozenset[str]
    key: int  # key64(url): hashed once per registry read, not once per room

    @property
    def full(self) -> bool:
        return self.capacity > 0 and self.connections >= self.capacity


@dataclass(frozen=True, slots=True)
class Route:
    """Where one client should connect for a room: ``urls[0]`` is the choice, the rest
    the fallback order; ``spread`` gateways share the room (k), ``viewers`` it has."""

    room: str
    urls: tuple[str, ...]
    spread: int
    viewers: int


def key64(text: str) -> int:
    """64 bits of BLAKE2b of ``text``: the same in every process and every run (never
    Python's salted ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def mix64(x: int) -> int:
    """MurmurHash3's 64-bit finaliser: every input bit moves every output bit."""
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK64
    return x ^ (x >> 33)


def weight(room: str, url: str) -> int:
    """The rendezvous weight of a (room, gateway) pair. ``mix64(key64(room) ^
    key64(url))``: one BLAKE2b per room and one per gateway URL, then a few integer
    operations per pair, so ranking hundreds of gateways for a room stays cheap."""
    return mix64(key64(room) ^ key64(url))


def live_targets(entries: Iterable[GatewayEntry], now: float) -> list[Target]:
    """The URLs that may take new viewers: entries not expired at ``now``, healthy and not
    draining, merged by URL (sorted by URL)."""
    merged: dict[str, list[GatewayEntry]] = {}
    for e in entries:
        if e.expires_at > now and e.healthy and not e.draining and e.url:
            merged.setdefault(e.url, []).append(e)
    out = []
    for url in sorted(merged):
        group = merged[url]
        # One process without a cap makes the URL uncapped.
        cap = 0 if any(e.capacity <= 0 for e in group) else sum(e.capacity for e in group)
        out.append(
            Target(
                url,
                sum(e.connections for e in group),
                cap,
                frozenset(e.gateway_id for e in group),
                key64(url),
            )
        )
    return out


class Rendezvous:
    """Rendezvous routing of rooms to gateways.

    ``share``: viewers of one room per gateway before the room spreads to the next one;
    ``load_factor``: a gateway holding more than ``load_factor`` x the mean connections
    (plus one share, so small numbers never count as overload) is passed over for rooms
    it holds no viewers of (bounded-load hashing; 0 = off). Full or overloaded gateways
    still come last in the fallback order.
    """

    def __init__(self, share: int, load_factor: float = 0.0, max_urls: int = MAX_URLS) -> None:
        if share < 1 or load_factor < 0 or max_urls < 1:
            raise ValueError("share >= 1, load_factor >= 0, max_urls >= 1")
        self.share = share
        self.load_factor = load_factor
        self.max_urls = max_urls

    def order(
        self, room: str, targets: Sequence[Target], held: Mapping[str, int] | None = None
    ) -> list[Target]:
        """The room's rendezvous order: by weight, then the full and overloaded targets
        (those holding none of the room's viewers, per ``held``: URL -> viewers) after
        the rest, each part by weight."""
        held = held or {}
        rk = key64(room)
        # (weight, url): URLs are unique, so two targets are never compared themselves.
        weighed = sorted(((mix64(rk ^ t.key), t.url, t) for t in targets), reverse=True)
        ranked = [t for _, _, t in weighed]
        limit = self._load_limit(targets)
        fit: list[Target] = []
        rest: list[Target] = []
        for t in ranked:
            (rest if self._passed_over(t, limit, held.get(t.url, 0)) else fit).append(t)
        return fit + rest

    def spread(self, viewers: int, available: int) -> int:
        """k: how many gateways a room of ``viewers`` needs (counting the one asking),
        at least 1 and at most ``available``."""
        need = math.ceil((max(0, viewers) + 1) / self.share)
        return max(1, min(need, available))

    def route(
        self,
        room: str,
        entries: Iterable[GatewayEntry],
        room_viewers: Mapping[str, int],
        now: float,
        pick: float,
    ) -> Route | None:
        """Where a client of ``room`` should connect, or ``None`` when no gateway is live.

        ``room_viewers``: the room's connections per gateway id (the presence reports);
        ``pick`` in [0, 1): the client's draw among the room's ``k`` gateways, weighted by
        the room's free share on each (so the emptiest fills first, and a burst of joins
        before the next presence report still spreads)."""
        entry_list = list(entries)
        url_of = {e.gateway_id: e.url for e in entry_list}
        return self.route_targets(room, live_targets(entry_list, now), url_of, room_viewers, pick)

    def route_targets(
        self,
        room: str,
        targets: Sequence[Target],
        url_of: Mapping[str, str],
        room_viewers: Mapping[str, int],
        pick: float,
    ) -> Route | None:
        """``route`` over targets already made from the entries (``live_targets``; a
        caller that reuses one registry read for many rooms makes them once);
        ``url_of``: gateway id -> URL of every entry read."""
        if not targets:
            return None
        held: dict[str, int] = {}
        viewers = 0
        for gid, n in room_viewers.items():
            n = max(0, n)
            viewers += n
            url = url_of.get(gid)
            if url is not None:
                held[url] = held.get(url, 0) + n
        ordered = self.order(room, targets, held)
        usable = [t for t in ordered if not t.full] or ordered
        k = self.spread(viewers, len(usable))
        first = usable[:k]
        free = [max(0, self.share - held.get(t.url, 0)) + 1 for t in first]
        point = min(max(pick, 0.0), 0.999999) * sum(free)
        chosen = len(first) - 1
        for i, w in enumerate(free):
            if point < w:
                chosen = i
                break
            point -= w
        urls = [first[chosen].url] + [t.url for t in ordered if t.url != first[chosen].url]
        return Route(room, tuple(urls[: self.max_urls]), k, viewers)

    # ---- bounded load -----------------------------------------------------------------
    def _load_limit(self, targets: Sequence[Target]) -> float:
        if self.load_factor <= 0 or not targets:
            return math.inf
        mean = sum(t.connections for t in targets) / len(targets)
        return self.load_factor * mean + self.share

    @staticmethod
    def _passed_over(target: Target, limit: float, held: int) -> bool:
        """Full, or over the load limit for a room it holds no viewers of yet."""
        return target.full or (held == 0 and target.connections > limit)
