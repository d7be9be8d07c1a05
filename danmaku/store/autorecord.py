"""What the automatic recorder reads and remembers in Redis (``web/autorecord.py``,
``rules/autorecord.py``): one lease (a single recorder in the deployment), a scan of
the recently active rooms with their ``auto_record`` setting and the broadcast on air,
and the recordings it started (``dm:autorecord:ours``: room -> broadcast id)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from danmaku.rules.autorecord import RoomView
from danmaku.store import keys
from danmaku.store.core import StoreCore
from danmaku.store.records import _s

LEASE = f"{keys.PREFIX}:autorecord:lease"  # string: the recording process (SET NX PX)
OURS = f"{keys.PREFIX}:autorecord:ours"  # hash: room -> the broadcast the recorder started

Call = Callable[..., Any]


class AutoRecordOps:
    """The recorder's Redis operations. ``call`` is the store's thread bridge."""

    def __init__(self, core: StoreCore) -> None:
        self._r = core.r
        self._call = core.call
        self._m = core.metrics

    async def lease(self, holder: str, ttl_ms: int) -> bool:
        """Take or keep the recorder's lease for ``holder``; ``False``: another has it."""

        def run() -> bool:
            if self._r.set(LEASE, holder, nx=True, px=ttl_ms):
                return True
            if _s(self._r.get(LEASE) or b"") == holder:
                self._r.pexpire(LEASE, ttl_ms)
                return True
            return False

        held: bool = await self._call("autorecord_lease", run)
        return held

    async def scan(self, active_since_ms: int, limit: int, default_on: bool) -> list[RoomView]:
        """The rooms active since ``active_since_ms`` (at most ``limit``, the most recent)
        and every room with a recording the recorder started, as the rule sees them
        (``default_on``: ``auto_record`` where the room set none). Two round trips."""

        def run() -> tuple[dict[str, int], dict[str, str], list[Any]]:
            found: Any = self._r.zrevrangebyscore(
                keys.ROOMS, "+inf", active_since_ms, 0, limit, withscores=True
            )
            ours = {_s(k): _s(v) for k, v in self._r.hgetall(OURS).items()}
            active = {_s(r): int(score) for r, score in found}
            pipe = self._r.pipeline(transaction=False)
            rooms = list(dict.fromkeys([*active, *ours]))
            for room in rooms:
                pipe.hget(keys.settings(room), "auto_record")
                pipe.hmget(keys.live(room), "id", "end")
            for room in rooms:
                if room not in active:  # recording, idle past the window (or pruned)
                    pipe.zscore(keys.ROOMS, room)
            return active, ours, pipe.execute() if rooms else []

        active, ours, replies = await self._call("autorecord_scan", run)
        rooms = list(dict.fromkeys([*active, *ours]))
        idle = iter(replies[2 * len(rooms) :])
        out = []
        for i, room in enumerate(rooms):
            auto, (live_id, live_end) = replies[2 * i : 2 * i + 2]
            score = active[room] if room in active else int(next(idle) or 0)
            on = default_on if auto is None else float(auto) != 0
            on_air = _s(live_id) if live_id and not live_end else None
            out.append(RoomView(room, score, on, on_air, ours.get(room)))
        return out

    async def remember(self, room: str, broadcast_id: str | None) -> None:
        """Note the recording started in ``room`` (``None``: none any more)."""

        def run() -> None:
            if broadcast_id is None:
                self._r.hdel(OURS, room)
            else:
                self._r.hset(OURS, room, broadcast_id)

        await self._call("autorecord_scan", run)
