"""The room's door in Redis (``store.intake``, a component of ``Store``; the gateway
sees it as ``interfaces.IngestStore``): comments admitted and appended by the Lua script
``scripts.INGEST``, one call per room per batch (``rules/door.py`` is its executable
spec)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from danmaku.store import keys, scripts
from danmaku.store.core import StoreCore, queue_script
from danmaku.store.records import Ingest, IngestLimits, Outcome, _s, door_key


class Intake:
    """The door: ``append_comments``. Keeps ``stream_maxlen`` entries of each room's
    comment stream and a resend's nonce for ``nonce_ttl_s``."""

    def __init__(self, core: StoreCore, *, stream_maxlen: int, nonce_ttl_s: int) -> None:
        self._r = core.r
        self._call = core.call
        self._execute_scripted = core.execute_scripted
        self._stream_maxlen = stream_maxlen
        self._nonce_ttl_s = nonce_ttl_s
        self._ingest = core.register(scripts.INGEST)

    async def append_comments(
        self,
        batch: Mapping[str, Sequence[Ingest]],
        limits: IngestLimits,
        *,
        clock_ms: int | None = None,
    ) -> dict[str, list[Outcome]]:
        """Admit and append comments per room in one pipeline (one Lua call per room).

        Returns, per room and in order, each comment's ``Outcome`` (see ``scripts.INGEST``:
        stored, resent, or refused by duplicate/slow mode/rate limit; staff (``exempt``)
        only by their own, more generous bucket, ``limits.staff_rate_per_s``). Also marks
        the rooms active for worker discovery. ``clock_ms``: the door's clock for this
        call instead of Redis ``TIME`` (for the conformance suite; serving never sets it:
        every gateway must read the one clock of the room's shard).
        """
        now_ms = int(time.time() * 1000)
        clock = "" if clock_ms is None else str(clock_ms)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for room, comments in batch.items():
                ks = [
                    keys.comments(room),
                    keys.settings(room),
                    keys.bans(room),
                    keys.highlights(room),
                    keys.users(room),
                    keys.users_old(room),
                    keys.door(room),
                    keys.staff_buckets(room),
                    keys.first_comments(room),
                    keys.held(room),
                    keys.review_queue(room),
                ]
                args: list[Any] = [
                    self._stream_maxlen,
                    self._nonce_ttl_s,
                    limits.rate_per_s,
                    limits.burst,
                    limits.duplicate_window_s,
                    limits.staff_rate_per_s,
                    limits.staff_burst,
                    limits.first_chat_min,
                    limits.review_queue_max,
                    limits.review_ttl_s,
                    limits.first_chat_keep_s,
                    clock,
                ]
                for c in comments:
                    flags = "s" if c.exempt else "h" if c.highlight else "r" if c.suspect else "-"
                    if len(c.text_hash) != 8:  # the door's slots are 8 bytes wide
                        raise ValueError(f"text_hash must be door_key(...), not {c.text_hash!r}")
                    args += [c.uid, c.payload, flags, door_key(c.nonce), c.text_hash]
                queue_script(pipe, self._ingest, ks, args)
            pipe.zadd(keys.ROOMS, {room: now_ms for room in batch})
            pipe.zadd(keys.HOT, {room: now_ms for room in batch})
            return self._execute_scripted(pipe)

        replies = await self._call("append_comments", run)
        out: dict[str, list[Outcome]] = {}
        for room, reply in zip(batch, replies, strict=False):
            out[room] = [Outcome.parse(_s(x)) for x in reply]
        return out
