"""The store side of the platform integration: publishing into a room stream as the
platform (idempotent by the client's id), paid pins, per-key publish rates, the room
directory, and what the webhook service reads and remembers.

A published message goes into the room's comment stream like a comment the door kept
(same ids, same packing rules, the door hash's last id and count kept), so the worker
merges it into frames, history and recordings like any comment.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from danmaku.store import keys, presence, scripts
from danmaku.store.core import StoreCore, queue_script
from danmaku.store.journal import CONTROL_MAXLEN
from danmaku.store.notices import Notices
from danmaku.store.records import _s, _sum_fresh

PUBLISHED = f"{keys.PREFIX}:published"  # + ":{room}" hash tag + ":" + id: the id's comment
PUBLISH_RATE = f"{keys.PREFIX}:pubrate"  # + ":{key id}:{second}": publishes that second
WEBHOOK_LEASE = f"{keys.PREFIX}:webhooks:lease"  # string: the delivering process (SET NX PX)
WEBHOOK_CURSORS = f"{keys.PREFIX}:webhooks:cursors"  # hash: "{room}:in|audit" -> last id


def published(room: str, pub_id: str) -> str:
    """String: the comment id a client-given message id was published as (TTL)."""
    return f"{PUBLISHED}:{{{room}}}:{pub_id}"


# Publish one message, once per id: KEYS[1] = comment stream, KEYS[2] = door hash,
# KEYS[3] = the id's key; ARGV[1] = MAXLEN (comments), ARGV[2] = id TTL s, ARGV[3] =
# payload. The id is minted as the door's INGEST mints them (``scripts.APPEND_ONE``).
# Returns {1, id} (published) or {0, id} (that message id was published before as id).
PUBLISH = (
    scripts.APPEND_ONE
    + r"""
local seen = redis.call('GET', KEYS[3])
if seen then return {0, seen} end
local id = append_one(KEYS[1], KEYS[2], ARGV[3], ARGV[1])
redis.call('SET', KEYS[3], id, 'EX', ARGV[2])
return {1, id}
"""
)

# Pin a paid message: KEYS[1] = the room's pin; ARGV[1] = pin JSON, ARGV[2] = ms,
# ARGV[3] = its tier level. A staff pin is never replaced, nor a paid (or gift) pin of a higher
# tier still on; a paid pin of the same or a lower tier is (the newest shows).
# Returns 1 (pinned) or 0.
PIN_PAID = r"""
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, p = pcall(cjson.decode, cur)
  if not ok or type(p) ~= 'table' or (p.kind ~= 'paid' and p.kind ~= 'gift') then return 0 end
  local level = type(p.tier) == 'table' and tonumber(p.tier.level) or 0
  if level > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Publish:
    """One message to publish: the room, the client's id (idempotency) and the payload
    (the item's JSON, as the worker's ``parse_item`` reads it)."""

    room: str
    pub_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Published:
    """``fresh``: published now; else the id was published before as ``comment_id``."""

    comment_id: str
    fresh: bool


@dataclass(frozen=True, slots=True)
class RoomEntry:
    """One line of the room directory."""

    room: str
    online: int
    comments_per_s: float
    shown_per_s: float
    shed_per_s: float
    seq: int
    holder: str | None  # the worker holding the room's lease (its id), if any
    active_ms: int  # last activity (comments, viewers, moderation)


class Platform:
    """The platform's side of the store (``store.platform``): publishing into rooms,
    paid pins, publish rates, the room directory, and the webhook reader's lease and
    cursors. Publishes append as the door does (``stream_maxlen``)."""

    def __init__(self, core: StoreCore, stream_maxlen: int, notices: Notices) -> None:
        self._r = core.r
        self._call = core.call
        self._execute_scripted = core.execute_scripted
        self._stream_maxlen = stream_maxlen
        self.notices = notices
        self._publish = core.register(PUBLISH)
        self._pin_paid = core.register(PIN_PAID)
        self._online = core.register(presence.ONLINE)  # the head count (store/presence.py)

    async def publish(self, messages: Sequence[Publish], id_ttl_s: int) -> list[Published]:
        """Append ``messages`` to their rooms' comment streams in one pipeline, each at
        most once per ``pub_id`` within ``id_ttl_s`` (a retry returns the first comment
        id, ``fresh=False``). Marks the rooms active so a worker merges them."""
        now_ms = int(time.time() * 1000)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for m in messages:
                names = [keys.comments(m.room), keys.door(m.room), published(m.room, m.pub_id)]
                args = [self._stream_maxlen, id_ttl_s, m.payload]
                queue_script(pipe, self._publish, names, args)
            rooms = {m.room: now_ms for m in messages}
            if rooms:
                pipe.zadd(keys.ROOMS, rooms)
                pipe.zadd(keys.HOT, rooms)
            return self._execute_scripted(pipe)

        replies = await self._call("publish", run)
        return [Published(_s(r[1]), bool(int(r[0]))) for r in replies[: len(messages)]]

    async def pin_paid(self, pins: Sequence[tuple[str, Mapping[str, Any], int, int]]) -> list[bool]:
        """Pin paid messages ``(room, pin, ttl_s, tier level)``, in order, each unless a
        staff pin or a higher tier's paid pin is on in its room (``PIN_PAID``); gateways
        show what was pinned like a staff pin. One round trip for the lot, one more for
        the notices."""

        def run() -> list[bool]:
            pipe = self._r.pipeline(transaction=False)
            for room, pin, ttl_s, level in pins:
                args = [orjson.dumps(pin), ttl_s * 1000, level]
                queue_script(pipe, self._pin_paid, [keys.pin(room)], args)
            done = [bool(int(r)) for r in self._execute_scripted(pipe)]
            pipe = self._r.pipeline(transaction=False)
            for (room, pin, _, _), pinned in zip(pins, done, strict=True):
                if pinned:
                    event = orjson.dumps({"kind": "pin", "pin": pin})
                    pipe.xadd(
                        keys.control(room), {"e": event}, maxlen=CONTROL_MAXLEN, approximate=True
                    )
            if any(done):
                pipe.execute()
                # wake the rooms' gateways (best effort: they read quiet rooms anyway)
                self.notices.notify_sync(
                    room for (room, *_), ok in zip(pins, done, strict=True) if ok
                )
            return done

        return await self._call("pin_paid", run) if pins else []

    async def count_publishes(self, key_id: str, n: int, now: float) -> tuple[int, float]:
        """Count ``n`` publishes by ``key_id`` in the current second (shared by every web
        process); return the second's total and the seconds until it ends."""
        second = int(now)
        name = f"{PUBLISH_RATE}:{key_id}:{second}"

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.incrby(name, n)
            pipe.expire(name, 2)
            return pipe.execute()

        total, _ = await self._call("publish_rate", run)
        return int(total), second + 1 - now

    async def room_directory(self, active_since_ms: int, limit: int) -> list[RoomEntry]:
        """The rooms active since ``active_since_ms`` (at most ``limit``, the most recent),
        with their live figures."""

        def run() -> tuple[list[Any], list[Any]]:
            found = self._r.zrevrangebyscore(
                keys.ROOMS, "+inf", active_since_ms, start=0, num=limit, withscores=True
            )
            pipe = self._r.pipeline(transaction=False)
            now_ms = int(time.time() * 1000)
            for entry in found:
                r = _s(entry[0])
                presence.queue_online(pipe, self._online, r, now_ms)  # people, not sockets
                pipe.hgetall(keys.stats(r))
                pipe.hgetall(keys.shed(r))
                pipe.get(keys.lease(r))
                pipe.hget(keys.meta(r), "seq")
            return found, self._execute_scripted(pipe) if found else []

        found, replies = await self._call("room_directory", run)
        now_ms = int(time.time() * 1000)
        out = []
        for i, (room, score) in enumerate(found):
            online, stats, shed, lease, seq = replies[5 * i : 5 * i + 5]
            out.append(
                RoomEntry(
                    room=_s(room),
                    online=presence.parse_online(online).online,
                    comments_per_s=float(stats.get(b"comments_per_s", 0) or 0),
                    shown_per_s=float(stats.get(b"shown_per_s", 0) or 0),
                    shed_per_s=round(_sum_fresh(shed, now_ms), 3),
                    seq=int(seq or 0),
                    holder=_s(lease).rpartition(":")[0] or None if lease else None,
                    active_ms=int(score),
                )
            )
        return out

    # ---- webhooks: one delivering process, cursors over what the store records ------------
    async def webhook_lease(self, holder: str, ttl_ms: int) -> bool:
        """Take or keep the webhook lease for ``holder``; ``False`` when another has it."""

        def run() -> bool:
            if self._r.set(WEBHOOK_LEASE, holder, nx=True, px=ttl_ms):
                return True
            if _s(self._r.get(WEBHOOK_LEASE) or b"") == holder:
                self._r.pexpire(WEBHOOK_LEASE, ttl_ms)
                return True
            return False

        return await self._call("webhook_lease", run)

    async def webhook_read(
        self, since_ms: int, rooms_max: int, count: int, known: Mapping[str, str]
    ) -> dict[str, tuple[list[tuple[str, bytes]], list[tuple[str, dict[bytes, bytes]]]]]:
        """For each room active since ``since_ms`` (at most ``rooms_max``): its comment
        stream entries and audit entries after the cursors (at most ``count`` each), as
        ``(entry id, packed payload)`` and ``(entry id, fields)``. Cursors (``"ROOM:in"``,
        ``"ROOM:audit"``) come from ``known`` (the reader's own position), else from what
        was committed; a room with neither starts when webhooks were first switched on
        (``_start``), or at ``since_ms`` if later: what happened since is owed to the
        receivers, nothing before (a room idle past ``since_ms`` lost its cursors to
        ``webhook_prune`` after everything it had was read)."""
        now_ms = int(time.time() * 1000)

        def run() -> dict[str, Any]:
            self._r.hsetnx(WEBHOOK_CURSORS, "_start", now_ms)
            found = self._r.zrevrangebyscore(keys.ROOMS, "+inf", since_ms, 0, rooms_max)
            rooms = [_s(r) for r in found]
            fields = [f"{r}:{s}" for r in rooms for s in ("in", "audit")]
            ask = ["_start", *(f for f in fields if f not in known)]
            start, *stored = list(self._r.hmget(WEBHOOK_CURSORS, ask))
            committed = dict(zip(ask[1:], stored, strict=True))
            pipe = self._r.pipeline(transaction=False)
            for i, room in enumerate(rooms):
                for j, key in enumerate((keys.comments(room), keys.audit(room))):
                    name = fields[2 * i + j]
                    cur = known.get(name) or committed.get(name)
                    first = max(int(_s(start)), since_ms)  # older: delivered, or too old
                    low = "(" + _s(cur) if cur is not None else f"{first}-0"
                    pipe.xrange(key, low, "+", count=count)
            replies = pipe.execute() if rooms else []
            return {room: (replies[2 * i], replies[2 * i + 1]) for i, room in enumerate(rooms)}

        raw = await self._call("webhook_read", run)
        result = {}
        for room, (comments, audit) in raw.items():
            result[room] = (
                [(_s(eid), f.get(b"d", b"")) for eid, f in comments],
                [(_s(eid), dict(f)) for eid, f in audit],
            )
        return result

    async def webhook_prune(self, since_ms: int) -> int:
        """Forget the cursors of rooms not active since ``since_ms`` (the webhook reader
        no longer reads them; when one comes back it starts at ``since_ms``, after what
        was read). Returns how many cursors were dropped."""

        def run() -> int:
            names = [_s(n) for n in self._r.hkeys(WEBHOOK_CURSORS) if _s(n) != "_start"]
            rooms = sorted({n.rpartition(":")[0] for n in names})
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                pipe.zscore(keys.ROOMS, room)
            scores = dict(zip(rooms, pipe.execute() if rooms else [], strict=True))
            gone = [n for n in names if (scores.get(n.rpartition(":")[0]) or 0) < since_ms]
            for i in range(0, len(gone), 1000):
                self._r.hdel(WEBHOOK_CURSORS, *gone[i : i + 1000])
            return len(gone)

        return await self._call("webhook_prune", run)

    async def webhook_commit(self, cursors: Mapping[str, str]) -> None:
        """Remember ``{"room:in"|"room:audit": last entry id}`` handed to every URL."""
        mapping: dict[Any, Any] = dict(cursors)
        if mapping:
            await self._call(
                "webhook_commit", lambda: self._r.hset(WEBHOOK_CURSORS, mapping=mapping)
            )
