"""Moderation state in Redis: bans, deletes, blocked words, highlights, pins, notices,
the audit log, and the unsampled comment history. One component of ``Store``
(``store.moderation``); every write of an action also appends to the room's audit
log in the same pipeline, and actions gateways must act on go to the room's control
stream, which every gateway with viewers in the room reads (effective within ~0.1 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import orjson

from danmaku import auth
from danmaku.store import keys
from danmaku.store.core import StoreCore
from danmaku.store.journal import audit, control
from danmaku.store.notices import Notices
from danmaku.store.records import _s, id_key, split_entry
from danmaku.store.replay import Replay

RETRACT_MAX = 1_000  # retract ids kept waiting for a frame (oldest trimmed beyond)
DELETED_MAX = 100_000  # deletion marks kept (beyond: oldest dropped; also by stream trim)


def _comments(entries: Iterable[Any]) -> list[tuple[str, bytes]]:
    """``(id, payload)`` of every comment in these stream entries, in their order."""
    return [c for entry_id, f in entries for c in split_entry(_s(entry_id), f[b"d"])]


def _entry(raw: Any) -> dict[str, Any] | None:
    """A stored staff-list entry, or ``None`` when it is not one."""
    try:
        entry = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(entry, dict) or entry.get("role") not in auth.STAFF_ENTRIES:
        return None
    return entry


def _entry_role(raw: Any) -> str | None:
    """The role (or ``auth.REVOKED``) of a stored staff-list entry; ``None``: none."""
    entry = _entry(raw) if raw is not None else None
    return str(entry["role"]) if entry is not None else None


def staff_roles(raw: Mapping[Any, Any]) -> dict[str, str]:
    """uid -> entry role of a staff-list hash as read from Redis (malformed left out)."""
    out = {}
    for uid, value in raw.items():
        role = _entry_role(value)
        if role is not None:
            out[_s(uid)] = role
    return out


class Moderation:
    """Bans, deletes, blocked words, highlights, pins, notices, the staff list and the
    audit log of rooms, and their unsampled comment history (the web app's moderation
    API; gateways read the staff list and words through ``Feed``). A delete also takes
    the comment out of the room's recordings: hence ``replay``."""

    def __init__(self, core: StoreCore, replay: Replay, notices: Notices) -> None:
        self._r = core.r
        self._call = core.call
        self._replay = replay
        self.notices = notices

    # ---- staff roles --------------------------------------------------------------------
    # Who is staff where, as far as the system has seen: the web API notes the role of
    # every staff token acting in a room, the gateway of every staff token connecting. A
    # moderator's action on a user is checked against the user's rank here (the user's
    # token is not at hand), so a streamer who has been seen cannot be banned by one.
    async def note_role(self, room: str, uid: str, role: str, *, everywhere: bool = False) -> None:
        """Remember that ``uid`` holds ``role`` in ``room`` (the highest role seen is kept;
        viewers are not recorded). ``everywhere``: the token is valid in every room (no
        ``room`` claim), so the role is noted for every room. Cheap and idempotent: call
        it on every staff action or connection."""
        value = auth.rank(role)
        if value <= 0:
            return

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            # GT: only ever raises a user's rank, atomically (no read-modify-write race).
            pipe.zadd(keys.roles(room), {uid: value}, gt=True)
            if everywhere:
                pipe.zadd(keys.STAFF, {uid: value}, gt=True)
            pipe.execute()

        await self._call("roles", run)

    async def roles_of(self, room: str, uid: str) -> tuple[str, str | None]:
        """``(seen, listed)``: the highest role ``uid`` has been seen with in ``room`` (or
        with a token valid everywhere; ``"viewer"`` if never seen as staff), and its entry
        on the room's staff list (``None``: not on it)."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.zscore(keys.roles(room), uid)
            pipe.zscore(keys.STAFF, uid)
            pipe.hget(keys.staff_list(room), uid)
            return pipe.execute()

        *scores, entry = await self._call("roles", run)
        seen = auth.role_of_rank(int(max((s or 0 for s in scores), default=0)))
        return seen, _entry_role(entry)

    async def role_in(self, room: str, uid: str) -> str:
        """The role ``uid`` has in ``room`` as far as the system knows: the highest role
        seen (``roles_of``) under the room's staff list (``auth.effective_role``)."""
        seen, listed = await self.roles_of(room, uid)
        return auth.effective_role(seen, listed)

    # ---- the room's staff list ------------------------------------------------------------
    # Appointed by the room's streamer or an admin (web API); every gateway with viewers in
    # the room reads ``staff_v`` of the settings hash each presence round (0.5 s) and the
    # list itself only when that changed, so a change reaches open connections within 1 s.
    async def enter_role(
        self, room: str, uid: str, role: str, *, everywhere: bool = False
    ) -> str | None:
        """``note_role(room, uid, role)`` and ``uid``'s staff-list entry in the room
        (``None``: not listed), in one round trip: what a staff request needs."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            value = auth.rank(role)
            if value > 0:
                pipe.zadd(keys.roles(room), {uid: value}, gt=True)
                if everywhere:
                    pipe.zadd(keys.STAFF, {uid: value}, gt=True)
            pipe.hget(keys.staff_list(room), uid)
            return pipe.execute()

        return _entry_role((await self._call("roles", run))[-1])

    async def staff_list(self, room: str) -> dict[str, dict[str, Any]]:
        """The room's staff list: uid -> ``{"role", "by", "ts"}`` (``role``: a granted role
        or ``auth.REVOKED``). Malformed entries are left out."""
        raw: Any = await self._call("staff", partial(self._r.hgetall, keys.staff_list(room)))
        out: dict[str, dict[str, Any]] = {}
        for uid, value in raw.items():
            entry = _entry(value)
            if entry is not None:
                out[_s(uid)] = entry
        return out

    async def set_staff(
        self, room: str, uid: str, role: str, *, by: str, max_entries: int = 0
    ) -> dict[str, Any] | None:
        """Put ``uid`` on the room's staff list with ``role`` (a role in ``auth.GRANTABLE``,
        or ``auth.REVOKED``: a revocation), bump ``staff_v`` and audit it (``staff_grant``
        or ``staff_revoke``). Returns the entry written (``role``, ``by``, ``ts``), or
        ``None`` (nothing written) when the list already holds ``max_entries`` other uids
        (0: no cap)."""
        if role not in auth.STAFF_ENTRIES:
            raise ValueError(f"not a staff-list entry: {role!r}")
        entry = {"role": role, "by": by, "ts": int(time.time() * 1000)}
        action = "staff_revoke" if role == auth.REVOKED else "staff_grant"

        def run() -> bool:
            if max_entries > 0:
                pipe = self._r.pipeline(transaction=False)
                pipe.hexists(keys.staff_list(room), uid)
                pipe.hlen(keys.staff_list(room))
                present, size = pipe.execute()
                if not present and size >= max_entries:
                    return False
            pipe = self._r.pipeline(transaction=False)
            # The entry before the version: a gateway that sees the new version (it reads
            # the version first, the list after) reads this entry too.
            pipe.hset(keys.staff_list(room), uid, orjson.dumps(entry))
            pipe.hincrby(keys.settings(room), "staff_v", 1)
            audit(pipe, room, by, action, uid, {"role": role})
            pipe.execute()
            return True

        return entry if await self._call("set_staff", run) else None

    # ---- bans ---------------------------------------------------------------------------
    async def ban(
        self,
        room: str,
        uid: str,
        until_s: float,
        *,
        close: bool,
        by: str,
        reason: str = "",
        role: str = "admin",
    ) -> None:
        """Ban ``uid`` until ``until_s`` (epoch seconds; 0 = permanent). With ``close``,
        gateways close the user's open connections in the room. Idempotent. ``role``: the
        role of who sets it, kept so that only the same or a higher role can lift it."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(keys.bans(room), uid, repr(float(until_s)))
            pipe.hset(keys.ban_by(room), uid, auth.rank(role))
            why = {"until": until_s, "reason": reason}
            pipe.hset(keys.ban_reasons(room), uid, orjson.dumps(why))
            control(pipe, room, {"kind": "ban", "uid": uid, "close": close} | why)
            audit(pipe, room, by, "ban", uid, {"until": until_s, "reason": reason, "close": close})
            pipe.execute()
            self.notices.notify_sync((room,))  # wake the room's gateways

        await self._call("ban", run)

    async def ban_setter(self, room: str, uid: str) -> str | None:
        """The role that set ``uid``'s ban in force, or ``None`` when no ban is in force.
        A ban from before setters were kept counts as set by an admin."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(keys.bans(room), uid)
            pipe.hget(keys.ban_by(room), uid)
            return pipe.execute()

        until, setter = await self._call("bans", run)
        if until is None:
            return None
        value = float(until)
        if value != 0 and value <= time.time():
            return None  # expired
        return auth.role_of_rank(int(setter)) if setter is not None else "admin"

    async def unban(self, room: str, uid: str, *, by: str) -> bool:
        """Lift a ban; ``False`` if there was none."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hdel(keys.bans(room), uid)
            pipe.hdel(keys.ban_by(room), uid)
            pipe.hdel(keys.ban_reasons(room), uid)
            audit(pipe, room, by, "unban", uid, {})
            return pipe.execute()

        return bool((await self._call("unban", run))[0])

    async def bans(self, room: str) -> dict[str, float]:
        """Bans in force: uid -> until (0 = permanent). Expired entries are removed."""
        raw = await self._call("bans", lambda: self._r.hgetall(keys.bans(room)))
        now = time.time()
        out: dict[str, float] = {}
        expired = []
        for uid, until in raw.items():
            value = float(until)
            if value == 0 or value > now:
                out[_s(uid)] = value
            else:
                expired.append(uid)
        if expired:

            def drop() -> None:
                pipe = self._r.pipeline(transaction=False)
                pipe.hdel(keys.bans(room), *expired)
                pipe.hdel(keys.ban_by(room), *expired)
                pipe.hdel(keys.ban_reasons(room), *expired)
                pipe.execute()

            await self._call("bans", drop)
        return out

    # ---- comments -----------------------------------------------------------------------
    # The comment stream packs comments per entry (scripts.INGEST), so a delete cannot
    # remove one: it marks the id in keys.deleted, and every reader of the stream skips
    # marked ids (these below, and the worker through RoomMerger.drop).
    def _entries_around(self, room: str, comment_id: str, count: int) -> list[Any]:
        """The entry holding ``comment_id`` (the last with an id at or before it), then
        up to ``count`` newer ones, and the deletion marks from its millisecond on."""
        pipe = self._r.pipeline(transaction=False)
        pipe.xrevrange(keys.comments(room), comment_id, "-", 1)
        if count:
            pipe.xrange(keys.comments(room), f"({comment_id}", "+", count)
        pipe.zrangebyscore(keys.deleted(room), id_key(comment_id)[0], "+inf")
        replies = pipe.execute()
        return replies if count else [replies[0], [], replies[1]]

    async def comment(self, room: str, comment_id: str) -> dict[str, Any] | None:
        """The stored comment (its JSON payload, ``id`` added), or ``None`` when no such
        comment is in the room's history or it was deleted. ``comment_id`` must be valid
        (``rules.ids``): Redis refuses malformed stream ids."""
        holder, _, gone = await self._call(
            "delete_comment", partial(self._entries_around, room, comment_id, 0)
        )
        found = [p for cid, p in _comments(holder) if cid == comment_id]
        if not found or comment_id.encode() in gone:
            return None
        item: dict[str, Any] = orjson.loads(found[0])
        item["id"] = comment_id
        return item

    async def delete_comment(self, room: str, comment_id: str, *, by: str) -> bool:
        """Take a comment out of the room's history and queue its retraction for the next
        frame. ``False`` when no such comment is in history (or it is already deleted)."""
        try:
            id_key(comment_id)
        except ValueError:
            return False
        holder, _, gone = await self._call(
            "delete_comment", partial(self._entries_around, room, comment_id, 0)
        )
        found = [p for cid, p in _comments(holder) if cid == comment_id]
        if not found or comment_id.encode() in gone:
            return False
        await self._replay.unrecord(room, comment_id)
        payload = orjson.loads(found[0])

        def after() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.zadd(keys.deleted(room), {comment_id: id_key(comment_id)[0]})
            # Marks older than the stream's first entry mark nothing any more.
            pipe.xrange(keys.comments(room), "-", "+", 1)
            pipe.hincrby(keys.door(room), "n", -1)
            pipe.rpush(keys.retract(room), comment_id)
            pipe.ltrim(keys.retract(room), -RETRACT_MAX, -1)
            pipe.zadd(keys.ROOMS, {room: int(time.time() * 1000)})
            pipe.zadd(keys.HOT, {room: int(time.time() * 1000)})
            audit(
                pipe,
                room,
                by,
                "delete",
                comment_id,
                {"uid": payload.get("uid"), "text": payload.get("text")},
            )
            _, first, *_ = pipe.execute()
            oldest = id_key(_s(first[0][0]))[0] if first else 0
            pipe = self._r.pipeline(transaction=False)
            pipe.zremrangebyscore(keys.deleted(room), "-inf", f"({oldest}")
            pipe.zremrangebyrank(keys.deleted(room), 0, -DELETED_MAX - 1)
            pipe.execute()

        await self._call("delete_comment", after)
        return True

    async def recent_comments(
        self,
        room: str,
        *,
        before: str | None,
        limit: int,
        uid: str | None = None,
        text: str | None = None,
        scan_max: int = 5000,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, unsampled: up to ``limit`` comments older than ``before``,
        optionally only by ``uid`` and/or containing ``text`` (case-insensitive). Scans at
        most ``scan_max`` comments per call; returns the page and the cursor for the next
        (``None`` at the end of history)."""
        needle = text.casefold() if text else None
        out: list[dict[str, Any]] = []
        below = id_key(before) if before else None  # only comments older than this
        cursor = before or "+"  # inclusive: the entry holding `before` may hold older ones
        scanned = 0
        last = before
        while len(out) < limit and scanned < scan_max:
            chunk = min(500, scan_max - scanned)

            def read(cursor: str = cursor, chunk: int = chunk) -> tuple[Any, Any]:
                entries = self._r.xrevrange(keys.comments(room), cursor, "-", chunk)
                if not entries:
                    return entries, []
                low, high = id_key(_s(entries[-1][0]))[0], id_key(_s(entries[0][0]))[0]
                return entries, self._r.zrangebyscore(keys.deleted(room), low, high)

            entries, gone = await self._call("recent_comments", read)
            if not entries:
                return out, None
            skip = {_s(x) for x in gone}
            for entry_id, fields in entries:
                for cid, payload in reversed(_comments([(entry_id, fields)])):
                    if below is not None and id_key(cid) >= below:
                        continue
                    if scanned >= scan_max:
                        return out, last
                    scanned += 1
                    last = cid
                    if cid in skip:
                        continue
                    item = orjson.loads(payload)
                    item["id"] = cid
                    if uid and item.get("uid") != uid:
                        continue
                    if needle and needle not in str(item.get("text", "")).casefold():
                        continue
                    out.append(item)
                    if len(out) >= limit:
                        return out, cid
                cursor = f"({_s(entry_id)}"
            below = None  # from here on, exclusive ranges do it
            if len(entries) < chunk:
                return out, None
        return out, last

    async def comments_after(
        self, room: str, after: str, limit: int
    ) -> tuple[list[dict[str, Any]], str]:
        """The live, unsampled feed: up to ``limit`` comments newer than ``after`` (a
        comment id, or ``"$"`` for "from now"), oldest first, and the cursor to pass next
        time. At 2,000 comments/s a console polling twice a second gets every one."""
        if after == "$":
            top: Any = await self._call(
                "comments_after", partial(self._r.xrevrange, keys.comments(room), "+", "-", 1)
            )
            return [], (_comments(top)[-1][0] if top else "0-0")
        try:
            floor = id_key(after)
        except ValueError:
            floor, after = (0, 0), "0-0"
        holder, newer, gone = await self._call(
            "comments_after", partial(self._entries_around, room, after, limit)
        )
        skip = {_s(x) for x in gone}
        out: list[dict[str, Any]] = []
        cursor = after
        for cid, payload in _comments(holder + newer):
            if id_key(cid) <= floor:
                continue
            if len(out) >= limit:
                break
            cursor = cid
            if cid in skip:
                continue
            item = orjson.loads(payload)
            item["id"] = cid
            out.append(item)
        return out, cursor

    # ---- words, highlights ------------------------------------------------------------
    async def change_words(
        self, room: str | None, add: Iterable[str], remove: Iterable[str], *, by: str
    ) -> None:
        """Add/remove blocked words of a room (``room=None``: the global list)."""
        add, remove = list(add), list(remove)

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            key = keys.words(room) if room else keys.GLOBAL_WORDS
            if add:
                pipe.sadd(key, *add)
            if remove:
                pipe.srem(key, *remove)
            if room:
                pipe.hincrby(keys.settings(room), "words_v", 1)
                audit(pipe, room, by, "words", "", {"add": add, "remove": remove})
            else:
                pipe.incr(keys.GLOBAL_WORDS_VERSION)
            pipe.execute()

        await self._call("change_words", run)

    async def words(self, room: str | None) -> tuple[list[str], list[str]]:
        """``(room words, global words)``, sorted."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            if room:
                pipe.smembers(keys.words(room))
            pipe.smembers(keys.GLOBAL_WORDS)
            return pipe.execute()

        replies = await self._call("words", run)
        room_words = sorted(_s(w) for w in replies[0]) if room else []
        return room_words, sorted(_s(w) for w in replies[-1])

    async def global_words_version(self) -> int:
        raw = await self._call("words", lambda: self._r.get(keys.GLOBAL_WORDS_VERSION))
        return int(raw or 0)

    async def highlights(self, room: str) -> list[str]:
        """The uids granted the highlighted tier in ``room``, sorted."""
        raw: Any = await self._call("highlights", partial(self._r.smembers, keys.highlights(room)))
        return sorted(_s(u) for u in raw)

    async def set_highlight(self, room: str, uid: str, granted: bool, *, by: str) -> None:
        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            if granted:
                pipe.sadd(keys.highlights(room), uid)
            else:
                pipe.srem(keys.highlights(room), uid)
            audit(pipe, room, by, "highlight" if granted else "unhighlight", uid, {})
            pipe.execute()

        await self._call("set_highlight", run)

    # ---- pins, notices, settings changes ---------------------------------------------------
    async def set_pin(
        self, room: str, pin: dict[str, Any] | None, ttl_s: float | None, *, by: str
    ) -> None:
        """Pin a message (``None`` unpins); players show it until unpinned or expired."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            if pin is None:
                pipe.delete(keys.pin(room))
            elif ttl_s:
                pipe.set(keys.pin(room), orjson.dumps(pin), px=int(ttl_s * 1000))
            else:
                pipe.set(keys.pin(room), orjson.dumps(pin))
            control(pipe, room, {"kind": "pin", "pin": pin})
            audit(pipe, room, by, "pin" if pin else "unpin", "", pin or {})
            pipe.execute()
            self.notices.notify_sync((room,))  # wake the room's gateways

        await self._call("set_pin", run)

    async def get_pin(self, room: str) -> dict[str, Any] | None:
        raw = await self._call("get_pin", lambda: self._r.get(keys.pin(room)))
        return orjson.loads(raw) if raw else None

    async def post_notice(
        self, room: str, text: str, *, by: str, nick: str = "", role: str = ""
    ) -> None:
        """Show a notice to the room's viewers, signed with the poster's ``nick`` and
        ``role`` (``by``, role:uid, goes to the audit log)."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            event = {"kind": "notice", "text": text, "by": by, "nick": nick, "role": role}
            control(pipe, room, event)
            audit(pipe, room, by, "notice", "", {"text": text})
            pipe.execute()
            self.notices.notify_sync((room,))  # wake the room's gateways

        await self._call("post_notice", run)

    async def announce_settings(self, room: str, changes: Mapping[str, Any], *, by: str) -> None:
        """Tell viewers the room settings changed, and audit it."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            control(pipe, room, {"kind": "settings", "changes": dict(changes)})
            audit(pipe, room, by, "settings", "", dict(changes))
            pipe.execute()
            self.notices.notify_sync((room,))  # wake the room's gateways

        await self._call("announce_settings", run)

    async def count_guest_session(self, ip: str, now: float) -> tuple[int, float]:
        """Count one more guest token for client address ``ip`` in the current minute
        (shared by every web process); returns the minute's count so far, this one
        included, and the seconds until the minute ends. One round trip; the key
        expires on its own."""
        minute = int(now // 60)
        key = f"{keys.GUEST_SESSIONS}:{minute}:{ip}"

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 120)
            return pipe.execute()

        count, _ = await self._call("guest_session", run)
        return int(count), (minute + 1) * 60 - now

    async def audit_log(self, room: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` audit entries, newest first."""
        entries: Any = await self._call(
            "audit_log", lambda: self._r.xrevrange(keys.audit(room), "+", "-", count=limit)
        )
        out = []
        for entry_id, f in entries:
            out.append(
                {
                    "id": _s(entry_id),
                    "ts": int(f[b"ts"]),
                    "by": _s(f[b"by"]),
                    "action": _s(f[b"action"]),
                    "target": _s(f[b"target"]),
                    "detail": orjson.loads(f[b"detail"]),
                }
            )
        return out
