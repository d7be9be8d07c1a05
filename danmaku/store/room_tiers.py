"""Per-room paid tier tables in Redis (issue 24: "room or global table").

A room's table is one string key, ``dm:{R}:tiers``, holding the validated rows as JSON
(``rules.tiers.table`` checks them before they get here); a room without one uses the
global table (``DANMAKU_PAID_TIERS``). The publish path reads the tables of the rooms of
one request in a single round trip. Changes are audited (``tiers`` / ``tiers_reset``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from danmaku.store import keys
from danmaku.store.core import StoreCore
from danmaku.store.journal import audit

T = TypeVar("T")
Call = Callable[..., Any]


def tiers_key(room: str) -> str:
    """String: the room's own paid tier table (JSON rows), absent = the global table."""
    return f"{keys.PREFIX}:{{{room}}}:tiers"


class RoomTiers:
    """Reads and writes rooms' own tier tables. ``call`` is the store's thread bridge
    (``Store._call``: op name, blocking function)."""

    def __init__(self, core: StoreCore) -> None:
        self._r = core.r
        self._call = core.call
        self._m = core.metrics

    async def get_many(self, rooms: Sequence[str]) -> dict[str, list[dict[str, Any]] | None]:
        """Each room's stored rows, ``None`` for a room using the global table. One round
        trip (a pipeline: on a Redis Cluster the rooms may live on different shards)."""
        names = list(dict.fromkeys(rooms))
        if not names:
            return {}

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for room in names:
                pipe.get(tiers_key(room))
            return pipe.execute()

        raw = await self._call("room_tiers", run)
        out: dict[str, list[dict[str, Any]] | None] = {}
        for room, value in zip(names, raw, strict=True):
            rows = orjson.loads(value) if value else None
            out[room] = rows if isinstance(rows, list) else None
        return out

    async def set(self, room: str, rows: Sequence[dict[str, Any]], *, by: str) -> None:
        """Give ``room`` its own table (rows already validated), audited as ``tiers``."""
        body = orjson.dumps(list(rows))

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.set(tiers_key(room), body)
            audit(pipe, room, by, "tiers", "", {"tiers": len(rows)})
            pipe.execute()

        await self._call("set_room_tiers", run)

    async def clear(self, room: str, *, by: str) -> bool:
        """Back to the global table; ``False`` when the room had no table of its own."""

        def run() -> bool:
            pipe = self._r.pipeline(transaction=False)
            pipe.delete(tiers_key(room))
            audit(pipe, room, by, "tiers_reset", "", {})
            return bool(pipe.execute()[0])

        had: bool = await self._call("set_room_tiers", run)
        return had
