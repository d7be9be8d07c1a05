"""Held comments, reports, moderator notes, names and shield mode in Redis (issue 19).

A component of ``Store`` (``store.review``). The door (``scripts.INGEST``) puts
held comments into the room's review queue; here they leave it: ``approve_held`` appends
one to the room's comment stream with a fresh id in one atomic step that first takes it
out of the queue (``APPROVE``), so two approvals, by one moderator or two, deliver it
once; ``deny_held`` drops it. Every decision is audited.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from danmaku.store import keys, scripts
from danmaku.store.core import StoreCore
from danmaku.store.journal import audit
from danmaku.store.moderation import Moderation
from danmaku.store.records import _s

# Take a held comment out of the review queue and append it to the comment stream, as
# the door appends (the next id after the door's last, the door's count); only if it was
# still held: exactly once however many approve it.
# KEYS[1] = held hash, KEYS[2] = review queue, KEYS[3] = comment stream, KEYS[4] = door
# ARGV[1] = held id, ARGV[2] = the payload to append, ARGV[3] = MAXLEN (comments, ~)
# Returns the new comment id, or false when the comment was no longer held.
APPROVE = (
    scripts.APPEND_ONE
    + r"""
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return false end
redis.call('ZREM', KEYS[2], ARGV[1])
return append_one(KEYS[3], KEYS[4], ARGV[2], ARGV[3])
"""
)
NICKS_KEEP_S = 30 * 86400


def decode_raw_settings(raw: Mapping[Any, Any]) -> dict[str, float | str]:
    """A room's settings hash as read from Redis: numbers as floats, the rest as text
    (``guests`` is a word)."""
    out: dict[str, float | str] = {}
    for name, value in raw.items():
        text = _s(value)
        try:
            out[_s(name)] = float(text)
        except ValueError:
            out[_s(name)] = text
    return out


def _held_item(hid: str, score: float, payload: Any) -> dict[str, Any] | None:
    try:
        item = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(item, dict):
        return None
    item["id"] = hid
    item["held_at"] = int(score)
    return item


class Review:
    """The review queue, reports, purges, names and notes, shield mode. Purges and
    name look-ups read and delete through ``moderation`` (the comment history's
    owner); approvals append to the comment stream as the door does (``stream_maxlen``)."""

    def __init__(self, core: StoreCore, moderation: Moderation, stream_maxlen: int) -> None:
        self._r = core.r
        self._call = core.call
        self._moderation = moderation
        self._stream_maxlen = stream_maxlen
        self._approve = core.register(APPROVE)

    # ---- the review queue ---------------------------------------------------------------
    async def held_comments(self, room: str, ttl_s: float) -> list[dict[str, Any]]:
        """The room's held comments, oldest first: each its payload with ``id`` (the held
        id) and ``held_at`` (ms). Items older than ``ttl_s`` are dropped on the way."""
        now_ms = int(time.time() * 1000)
        floor = now_ms - int(ttl_s * 1000)

        def run() -> tuple[list[Any], list[Any]]:
            pipe = self._r.pipeline(transaction=False)
            pipe.zrangebyscore(keys.review_queue(room), "-inf", floor)
            pipe.zrangebyscore(keys.review_queue(room), floor, "+inf", withscores=True)
            old, live = pipe.execute()
            if old:
                pipe = self._r.pipeline(transaction=False)
                pipe.zrem(keys.review_queue(room), *old)
                pipe.hdel(keys.held(room), *old)
                pipe.execute()
            payloads = self._r.hmget(keys.held(room), [h for h, _ in live]) if live else []
            return live, payloads

        live, payloads = await self._call("held", run)
        out = []
        for (hid, score), payload in zip(live, payloads, strict=True):
            item = _held_item(_s(hid), score, payload) if payload is not None else None
            if item is not None:
                out.append(item)
        return out

    async def held_count(self, room: str) -> int:
        """How many comments wait in the room's review queue (expired ones included until
        the next read drops them)."""
        return int(await self._call("held", lambda: self._r.zcard(keys.review_queue(room))))

    async def approve_held(self, room: str, held_id: str, *, by: str) -> str | None:
        """Deliver a held comment to the room as usual (frames, history, recording): its
        new comment id, or ``None`` when it is no longer held (approved or denied already,
        or expired). Exactly once, whoever approves it how often."""
        raw = await self._call("held", lambda: self._r.hget(keys.held(room), held_id))
        if raw is None:
            return None
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            item = None
        if not isinstance(item, dict):
            await self.deny_held(room, held_id, by=by)
            return None
        # Shown now: its time is the approval's (players place comments by it, and the
        # worker's latency figures would count the wait in review as delivery time).
        held_ts = item.get("ts")
        item["ts"] = int(time.time() * 1000)
        payload = orjson.dumps(item)
        script = self._approve

        def run() -> Any:
            new_id = script(
                keys=[
                    keys.held(room),
                    keys.review_queue(room),
                    keys.comments(room),
                    keys.door(room),
                ],
                args=[held_id, payload, self._stream_maxlen],
            )
            if not new_id:
                return None
            now_ms = int(time.time() * 1000)
            pipe = self._r.pipeline(transaction=False)
            pipe.zadd(keys.ROOMS, {room: now_ms})
            pipe.zadd(keys.HOT, {room: now_ms})
            audit(
                pipe,
                room,
                by,
                "approve",
                held_id,
                {
                    "uid": item.get("uid"),
                    "nick": item.get("nick"),
                    "text": item.get("text"),
                    "id": _s(new_id),
                    "held_ts": held_ts,
                },
            )
            pipe.execute()
            return _s(new_id)

        result: str | None = await self._call("approve", run)
        return result

    async def deny_held(self, room: str, held_id: str, *, by: str) -> bool:
        """Drop a held comment unseen; ``False`` when it was no longer held."""

        def run() -> bool:
            raw = self._r.hget(keys.held(room), held_id)
            pipe = self._r.pipeline(transaction=False)
            pipe.hdel(keys.held(room), held_id)
            pipe.zrem(keys.review_queue(room), held_id)
            removed, _ = pipe.execute()
            if not removed:
                return False
            try:
                item = orjson.loads(raw) if raw is not None else {}
            except orjson.JSONDecodeError:
                item = {}
            item = item if isinstance(item, dict) else {}
            pipe = self._r.pipeline(transaction=False)
            audit(
                pipe,
                room,
                by,
                "deny",
                held_id,
                {"uid": item.get("uid"), "nick": item.get("nick"), "text": item.get("text")},
            )
            pipe.execute()
            return True

        return await self._call("deny", run)

    async def review_words(self, room: str) -> list[str]:
        """The room's review words, sorted."""
        raw: Any = await self._call("held", lambda: self._r.smembers(keys.review_words(room)))
        return sorted(_s(w) for w in raw)

    async def change_review_words(
        self, room: str, add: Iterable[str], remove: Iterable[str], *, by: str
    ) -> None:
        """Add/remove review words of a room (gateways follow within a second); audited."""
        add, remove = list(add), list(remove)

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            if add:
                pipe.sadd(keys.review_words(room), *add)
            if remove:
                pipe.srem(keys.review_words(room), *remove)
            pipe.hincrby(keys.settings(room), "review_v", 1)
            audit(pipe, room, by, "review_words", "", {"add": add, "remove": remove})
            pipe.execute()

        await self._call("held", run)

    # ---- reports ------------------------------------------------------------------------
    async def count_report(self, room: str, uid: str, now: float) -> tuple[int, float]:
        """Count one more report by ``uid`` in ``room`` this minute: the minute's count
        so far (this one included) and the seconds until the minute ends."""
        minute = int(now // 60)
        key = keys.report_quota(room, uid, minute)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 120)
            return pipe.execute()

        count, _ = await self._call("report", run)
        return int(count), (minute + 1) * 60 - now

    async def add_report(
        self,
        room: str,
        comment: Mapping[str, Any],
        reason: str,
        reporter: str,
        *,
        keep: int,
    ) -> int:
        """File a report of ``comment`` (its stored payload with ``id``) by ``reporter``
        for ``reason``; a user's second report of one comment replaces its first. Returns
        how many users have reported the comment. Keeps the ``keep`` most recently
        reported comments."""
        cid = str(comment["id"])
        now_ms = int(time.time() * 1000)

        def run() -> int:
            raw = self._r.hget(keys.reports(room), cid)
            try:
                entry = orjson.loads(raw) if raw is not None else None
            except orjson.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict):
                entry = {
                    "comment": {
                        k: comment.get(k) for k in ("id", "uid", "nick", "text", "ts", "role")
                    },
                    "by": {},
                    "first": now_ms,
                }
            entry["by"][reporter] = reason
            entry["last"] = now_ms
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(keys.reports(room), cid, orjson.dumps(entry))
            pipe.zadd(keys.reports_queue(room), {cid: now_ms})
            # Audited (issue 24): the webhooks' report.filed events come from the audit log.
            detail = {"reason": reason, "uid": comment.get("uid"), "reports": len(entry["by"])}
            audit(pipe, room, reporter, "report", cid, detail)
            pipe.zrange(keys.reports_queue(room), 0, -keep - 1)
            *_, dropped = pipe.execute()
            if dropped:
                pipe = self._r.pipeline(transaction=False)
                pipe.zrem(keys.reports_queue(room), *dropped)
                pipe.hdel(keys.reports(room), *dropped)
                pipe.execute()
            return len(entry["by"])

        return await self._call("report", run)

    async def reports(self, room: str) -> list[dict[str, Any]]:
        """Reported comments, most recently reported first: the comment, ``count`` (users
        who reported it), ``reasons`` (reason -> count), ``first``/``last`` (ms), and
        ``user_count`` (reports against the comment's author, over the whole queue)."""

        def run() -> tuple[list[Any], list[Any]]:
            ids: list[Any] = list(self._r.zrevrange(keys.reports_queue(room), 0, -1))
            return ids, (self._r.hmget(keys.reports(room), ids) if ids else [])

        ids, raws = await self._call("report", run)
        out = []
        for cid, raw in zip(ids, raws, strict=True):
            try:
                entry = orjson.loads(raw) if raw is not None else None
            except orjson.JSONDecodeError:
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("by"), dict):
                continue
            reasons: dict[str, int] = {}
            for reason in entry["by"].values():
                reasons[str(reason)] = reasons.get(str(reason), 0) + 1
            out.append(
                {
                    "id": _s(cid),
                    "comment": entry.get("comment", {}),
                    "count": len(entry["by"]),
                    "reasons": reasons,
                    "first": entry.get("first"),
                    "last": entry.get("last"),
                }
            )
        per_user: dict[str, int] = {}
        for item in out:
            author = str(item["comment"].get("uid", ""))
            per_user[author] = per_user.get(author, 0) + item["count"]
        for item in out:
            item["user_count"] = per_user[str(item["comment"].get("uid", ""))]
        return out

    async def dismiss_report(self, room: str, comment_id: str, *, by: str) -> bool:
        """Close the reports of a comment (the comment stays); ``False``: none open."""

        def run() -> bool:
            pipe = self._r.pipeline(transaction=False)
            pipe.hdel(keys.reports(room), comment_id)
            pipe.zrem(keys.reports_queue(room), comment_id)
            removed, _ = pipe.execute()
            if removed:
                pipe = self._r.pipeline(transaction=False)
                audit(pipe, room, by, "dismiss_reports", comment_id, {})
                pipe.execute()
            return bool(removed)

        return await self._call("report", run)

    async def drop_reports(self, room: str, comment_ids: Iterable[str]) -> None:
        """Forget the reports of these comments (they were deleted)."""
        ids = list(comment_ids)
        if not ids:
            return

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.hdel(keys.reports(room), *ids)
            pipe.zrem(keys.reports_queue(room), *ids)
            pipe.execute()

        await self._call("report", run)

    # ---- purge --------------------------------------------------------------------------
    async def purge(
        self, room: str, uid: str, since_ms: int, *, by: str, max_comments: int = 500
    ) -> list[str]:
        """Delete ``uid``'s comments in the room from ``since_ms`` on (at most
        ``max_comments``, newest first), each retracted from every screen by the next
        frame as a moderator's delete is; returns the ids deleted. Audited once as
        ``purge`` besides each delete."""
        found: list[str] = []
        before: str | None = None
        while len(found) < max_comments:
            page, before = await self._moderation.recent_comments(
                room, before=before, limit=min(100, max_comments - len(found)), uid=uid
            )
            recent = [c for c in page if int(str(c["id"]).split("-")[0]) >= since_ms]
            found += [str(c["id"]) for c in recent]
            if len(recent) < len(page) or before is None:
                break
            if before and int(before.split("-")[0]) < since_ms:
                break
        deleted = [cid for cid in found if await self._moderation.delete_comment(room, cid, by=by)]

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            audit(pipe, room, by, "purge", uid, {"since": since_ms, "deleted": len(deleted)})
            pipe.execute()

        await self._call("purge", run)
        await self.drop_reports(room, deleted)
        return deleted

    # ---- names and notes ------------------------------------------------------------------
    async def remember_names(self, room: str, names: Mapping[str, str]) -> None:
        """Note the nick last seen for these uids in the room (uid -> nick)."""
        if not names:
            return

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(keys.nicks(room), mapping=dict(names))  # type: ignore[arg-type]
            pipe.expire(keys.nicks(room), NICKS_KEEP_S)
            pipe.execute()

        await self._call("names", run)

    async def names(self, room: str, uids: list[str]) -> dict[str, str]:
        """uid -> the nick last seen for each uid in the room: from the names noted, else
        from the user's latest comment in the room's recent history (then noted)."""
        if not uids:
            return {}
        raw: Any = await self._call("names", lambda: self._r.hmget(keys.nicks(room), uids))
        out = {u: _s(n) for u, n in zip(uids, raw, strict=True) if n is not None}
        found: dict[str, str] = {}
        for uid in uids:
            if uid in out:
                continue
            page, _ = await self._moderation.recent_comments(
                room, before=None, limit=1, uid=uid, scan_max=2000
            )
            if page and isinstance(page[0].get("nick"), str):
                found[uid] = page[0]["nick"]
        if found:
            await self.remember_names(room, found)
        return out | found

    async def note(self, room: str, uid: str) -> dict[str, Any] | None:
        """The moderators' private note about ``uid`` in the room (``text``, ``by``,
        ``ts``), or ``None``."""
        raw = await self._call("notes", lambda: self._r.hget(keys.notes(room), uid))
        try:
            value = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    async def set_note(self, room: str, uid: str, text: str, *, by: str) -> dict[str, Any] | None:
        """Write (or with empty ``text`` remove) the note about ``uid``; audited."""
        entry = {"text": text, "by": by, "ts": int(time.time() * 1000)} if text else None

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            if entry is None:
                pipe.hdel(keys.notes(room), uid)
            else:
                pipe.hset(keys.notes(room), uid, orjson.dumps(entry))
            audit(pipe, room, by, "note", uid, {"text": text})
            pipe.execute()

        await self._call("notes", run)
        return entry

    # ---- shield mode --------------------------------------------------------------------
    async def raw_settings(self, room: str) -> dict[str, float | str]:
        """The room's settings hash, words kept as words (``decode_raw_settings``)."""
        raw: Any = await self._call("shield", lambda: self._r.hgetall(keys.settings(room)))
        return decode_raw_settings(raw)

    async def shield_on(
        self,
        room: str,
        changes: Mapping[str, float | str],
        saved: Mapping[str, float | str | None],
        *,
        by: str,
    ) -> bool:
        """Turn shield mode on: keep ``saved`` (the values before) and write ``changes``,
        announced to the room and audited. ``False`` (nothing written) when it is on."""
        blob = orjson.dumps(dict(saved))

        def run() -> bool:
            if not self._r.set(keys.shield(room), blob, nx=True):
                return False
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(keys.settings(room), mapping={k: _raw(v) for k, v in changes.items()})
            pipe.execute()
            return True

        return await self._call("shield", run)

    async def shield_off(self, room: str) -> dict[str, float | str | None] | None:
        """Turn shield mode off: the saved settings written back (``None`` ones cleared)
        and returned, or ``None`` when it was not on."""

        def run() -> Any:
            pipe = self._r.pipeline(transaction=False)
            pipe.get(keys.shield(room))
            pipe.delete(keys.shield(room))
            raw, deleted = pipe.execute()
            if not deleted or raw is None:
                return None
            try:
                saved = orjson.loads(raw)
            except orjson.JSONDecodeError:
                saved = {}
            saved = saved if isinstance(saved, dict) else {}
            pipe = self._r.pipeline(transaction=False)
            pipe.hdel(keys.settings(room), "shield")
            for name, value in saved.items():
                if value is None:
                    pipe.hdel(keys.settings(room), name)
                else:
                    pipe.hset(keys.settings(room), name, _raw(value))
            pipe.execute()
            return saved

        result: dict[str, float | str | None] | None = await self._call("shield", run)
        return result


def _raw(value: float | str) -> str:
    """How the settings hash stores a value (numbers as ``set_room_settings`` writes)."""
    return value if isinstance(value, str) else repr(float(value))
