"""A room's settings and live figures, for the web app (``store.rooms``, a component
of ``Store``). The gateway reads settings back in its presence round (``Feed``), the
worker in its online round (``Frames.online_counts``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from danmaku.store import keys, presence
from danmaku.store.core import StoreCore
from danmaku.store.records import _decode_room_settings, _sum_fresh


class Rooms:
    """Room settings (read and set) and ``room_info``. ``stream_maxlen``: where the
    comment count switches from counted to estimated (the stream is trimmed there)."""

    def __init__(self, core: StoreCore, stream_maxlen: int) -> None:
        self._r = core.r
        self._call = core.call
        self._execute_scripted = core.execute_scripted
        self._stream_maxlen = stream_maxlen
        self._online = core.register(presence.ONLINE)

    async def room_settings(self, room: str) -> dict[str, float | str]:
        """The room's moderator-set settings (only those set; text ones as text)."""
        raw = await self._call("room_settings", lambda: self._r.hgetall(keys.settings(room)))
        return _decode_room_settings(raw)

    async def set_room_settings(self, room: str, values: Mapping[str, float | str | None]) -> None:
        """Set (or with ``None`` clear) room settings; workers and gateways see them
        within a second. A string is kept as text (``records.TEXT_SETTINGS``)."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            for name, value in values.items():
                if value is None:
                    pipe.hdel(keys.settings(room), name)
                elif isinstance(value, str):
                    pipe.hset(keys.settings(room), name, value)
                else:
                    pipe.hset(keys.settings(room), name, repr(float(value)))
            pipe.execute()

        await self._call("set_room_settings", run)

    async def room_info(self, room: str) -> dict[str, Any]:
        """Live figures of a room: last seq, online viewers (distinct users plus
        anonymous connections) and ``connections``, the worker's rates."""
        now_ms = int(time.time() * 1000)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(keys.meta(room), "seq")
            presence.queue_online(pipe, self._online, room, now_ms)
            pipe.hgetall(keys.stats(room))
            pipe.hmget(keys.door(room), "n", "avg")
            pipe.xlen(keys.comments(room))
            pipe.hgetall(keys.shed(room))
            pipe.hgetall(keys.settings(room))
            return self._execute_scripted(pipe)

        seq, online, stats, (counted, avg), entries, shed, room_settings = await self._call(
            "room_info", run
        )
        # Counted by the door; once the stream is trimmed, estimated from its entries.
        stored = max(0, int(counted or entries))
        if stored > self._stream_maxlen:
            stored = round(entries * float(avg or 1))
        head = presence.parse_online(online)
        info: dict[str, Any] = {
            "seq": int(seq or 0),
            "online": head.online,
            "connections": head.connections,
            "comments_stored": int(stored),
            "shed_per_s": round(_sum_fresh(shed, now_ms), 3),
            "settings": _decode_room_settings(room_settings),
        }
        for name in ("comments_per_s", "shown_per_s", "dropped_per_s", "latency_p99_ms"):
            info[name] = float(stats.get(name.encode(), 0) or 0)
        return info
