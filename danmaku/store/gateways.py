"""The gateway registry: which gateways are up, where clients reach them, how full they
are (issue 25, room-affine routing).

Each gateway keeps one entry, a JSON string ``dm:{:gateways}:gw:<id>`` with a time to
live (``SET ... PX``), refreshed every few seconds (``gateway/announce.py``); its id is
also in the index ``dm:{:gateways}:index`` (a zset: id -> when it last announced, by its
own clock, only to prune ids long gone). An entry that is not refreshed expires on
Redis's clock, so a killed gateway disappears without anyone's help and no two clocks
are compared. Readers (the web app, at most once a second per process) list the index
and read the entries with their remaining time to live.

Both keys carry the hash tag ``{:gateways}`` (a ``:`` is never in a room name, so no
room's keys share it): on a Redis Cluster they live on one shard, which every gateway
writes a few times a minute and every web process reads about once a second. That is
the only key every gateway touches for routing, and never per frame or per comment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from danmaku.rules.rendezvous import GatewayEntry
from danmaku.store import keys
from danmaku.store.core import StoreCore
from danmaku.store.records import ONLINE_FRESH_MS, _s

T = TypeVar("T")

TAG = "{:gateways}"
INDEX = f"{keys.PREFIX}:{TAG}:index"
MAX_GATEWAYS = 10_000  # entries one read takes (a registry this big is a config error)
PRUNE_AFTER_TTLS = 10  # ids silent for this many TTLs leave the index


def entry_key(gateway_id: str) -> str:
    """String: one gateway's registry entry (JSON), with a time to live."""
    return f"{keys.PREFIX}:{TAG}:gw:{gateway_id}"


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a gateway says of itself."""

    gateway_id: str
    url: str
    connections: int
    capacity: int  # 0: no cap
    draining: bool
    healthy: bool

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "url": self.url,
                "conns": self.connections,
                "cap": self.capacity,
                "draining": self.draining,
                "healthy": self.healthy,
            }
        )


def parse_entry(
    gateway_id: str, raw: bytes | None, pttl_ms: int, now: float
) -> GatewayEntry | None:
    """An entry read back (``None``: gone, expired, or not an entry)."""
    if raw is None or pttl_ms == -2:
        return None
    try:
        doc = orjson.loads(raw)
        url = str(doc["url"])
        conns, cap = int(doc["conns"]), int(doc["cap"])
        draining, healthy = bool(doc["draining"]), bool(doc["healthy"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    # -1 (no expiry) should not happen; treat it as one more second of life.
    ttl_s = pttl_ms / 1000 if pttl_ms >= 0 else 1.0
    return GatewayEntry(gateway_id, url, conns, cap, draining, healthy, now + ttl_s)


class Gateways:
    """The registry's Redis side and the room's viewers per gateway.

    Constructed with the store's client, thread bridge and metrics (``Store.gateways``).
    """

    def __init__(self, core: StoreCore) -> None:
        self._r = core.r
        self._call = core.call
        self._m = core.metrics

    async def announce(self, entry: Announcement, ttl_s: float) -> None:
        """Write (or refresh) ``entry`` for ``ttl_s`` seconds."""
        ttl_ms = max(1, int(ttl_s * 1000))
        now_ms = int(time.time() * 1000)

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.set(entry_key(entry.gateway_id), entry.encode(), px=ttl_ms)
            pipe.zadd(INDEX, {entry.gateway_id: now_ms})
            pipe.zremrangebyscore(INDEX, "-inf", now_ms - PRUNE_AFTER_TTLS * ttl_ms)
            # With every gateway gone the index goes too.
            pipe.pexpire(INDEX, PRUNE_AFTER_TTLS * ttl_ms)
            pipe.execute()

        await self._call("gateway_announce", run)

    async def remove(self, gateway_id: str) -> None:
        """Take a gateway out of the registry (its orderly exit)."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.delete(entry_key(gateway_id))
            pipe.zrem(INDEX, gateway_id)
            pipe.execute()

        await self._call("gateway_remove", run, abandon=True)

    async def entries(self, now: float) -> list[GatewayEntry]:
        """Every registered gateway, with ``expires_at`` = ``now`` (the caller's clock) +
        the entry's remaining time to live."""

        def run() -> tuple[list[str], list[Any]]:
            ids = [_s(x) for x in self._r.zrange(INDEX, 0, MAX_GATEWAYS - 1)]
            if not ids:
                return ids, []
            pipe = self._r.pipeline(transaction=False)
            for gid in ids:
                pipe.get(entry_key(gid))
                pipe.pttl(entry_key(gid))
            return ids, pipe.execute()

        ids, replies = await self._call("gateway_list", run)
        out = []
        for i, gid in enumerate(ids):
            entry = parse_entry(gid, replies[2 * i], int(replies[2 * i + 1]), now)
            if entry is not None:
                out.append(entry)
        return out

    async def room_viewers(self, room: str) -> dict[str, int]:
        """The room's connections per gateway id, from the gateways' fresh presence
        reports (``store.presence``)."""
        raw = await self._call("room_viewers", lambda: self._r.hgetall(keys.online(room)))
        now_ms = int(time.time() * 1000)
        out: dict[str, int] = {}
        for field, value in raw.items():
            conns, _, rest = _s(value).partition(":")
            stamp = rest.partition(":")[0]
            if conns.isdigit() and stamp.isdigit() and now_ms - int(stamp) <= ONLINE_FRESH_MS:
                out[_s(field)] = int(conns)
        return out
