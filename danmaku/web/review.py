"""The API of held comments, reports, the user card and shield mode (issue 19).

Staff routes (a moderator, streamer or admin of the room, as ``web/moderation.py``
checks them): the review queue (list, approve, deny), review words, the reports queue
(list, dismiss), names, a user's card (ban history from the audit log, reports against
them, the private note), purge, shield mode. Viewers (any valid token for the room) file
reports, rate-limited per user.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from danmaku import auth
from danmaku.auth import User
from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules import room_settings
from danmaku.rules.review import HELD_ID, shield_changes
from danmaku.store import Store
from danmaku.web.moderation import (
    RoomName,
    Staff,
    Uid,
    WordsIn,
    _bearer,
    _refuse_rank,
    author_role,
    checked_id,
    guarded,
    public_settings,
    who,
)

HeldId = Annotated[str, Path(description="held id, `h<n>` (from the review queue)")]
UID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
AUDIT_SCAN = 1000  # audit entries a user card looks through for the user's bans


class ReportIn(BaseModel):
    comment_id: str = Field(max_length=40, description="the reported comment's id")
    reason: Literal["spam", "harassment", "hate", "sexual", "other"]


class NoteIn(BaseModel):
    text: str = Field(max_length=1000, description="empty: remove the note")


class PurgeIn(BaseModel):
    uid: str = Field(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")
    minutes: int = Field(default=10, ge=1, le=1440, description="comments of the last N minutes")


def _held_id(value: str) -> str:
    if not HELD_ID.fullmatch(value):
        raise HTTPException(400, "bad held id: expected h<number>")
    return value


async def _viewer(
    request: Request, room: RoomName, token: Annotated[str, Depends(_bearer)]
) -> User:
    """Any valid token for the room (guests included); 401 otherwise."""
    settings: Settings = request.app.state.settings
    try:
        return auth.verify(settings.secret, token, room=room)
    except auth.TokenError as exc:
        raise HTTPException(
            401, f"unauthorized: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from exc


Viewer = Annotated[User, Depends(_viewer)]


def create_router(settings: Settings, store: Store, metrics: Metrics) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["review"])

    # ---- held for review ------------------------------------------------------------------
    @router.get("/rooms/{room}/held", summary="Comments held for review, oldest first")
    async def held(room: RoomName, user: Staff) -> list[dict[str, Any]]:
        return list(await guarded(store.review.held_comments(room, settings.review_ttl_s)))

    @router.post(
        "/rooms/{room}/held/{held_id}/approve",
        summary="Approve a held comment: delivered to the room as usual, exactly once",
    )
    async def approve(room: RoomName, held_id: HeldId, user: Staff) -> dict[str, str]:
        new_id = await guarded(store.review.approve_held(room, _held_id(held_id), by=who(user)))
        if new_id is None:
            raise HTTPException(404, "not held (approved, denied or expired already)")
        metrics.review_decisions.labels("approved").inc()
        return {"id": new_id}

    @router.post(
        "/rooms/{room}/held/{held_id}/deny",
        status_code=204,
        summary="Deny a held comment: never shown",
    )
    async def deny(room: RoomName, held_id: HeldId, user: Staff) -> None:
        if not await guarded(store.review.deny_held(room, _held_id(held_id), by=who(user))):
            raise HTTPException(404, "not held (approved, denied or expired already)")
        metrics.review_decisions.labels("denied").inc()

    @router.get("/rooms/{room}/review-words", summary="Review words (held, not refused)")
    async def review_words(room: RoomName, user: Staff) -> list[str]:
        return list(await guarded(store.review.review_words(room)))

    @router.patch("/rooms/{room}/review-words", summary="Add or remove review words")
    async def change_review_words(room: RoomName, body: WordsIn, user: Staff) -> list[str]:
        await guarded(store.review.change_review_words(room, body.add, body.remove, by=who(user)))
        return list(await guarded(store.review.review_words(room)))

    # ---- reports ----------------------------------------------------------------------------
    @router.post(
        "/rooms/{room}/reports",
        status_code=202,
        summary="Report a comment (a viewer's token; rate-limited per user: 429)",
    )
    async def report(room: RoomName, body: ReportIn, user: Viewer) -> dict[str, Any]:
        checked_id(body.comment_id)
        limit = settings.reports_per_min
        if limit > 0:
            count, wait_s = await guarded(store.review.count_report(room, user.uid, time.time()))
            if count > limit:
                metrics.reports.labels("limited").inc()
                raise HTTPException(
                    429,
                    f"over {limit} reports per minute; retry later",
                    headers={"Retry-After": str(max(1, int(wait_s + 0.999)))},
                )
        item = await guarded(store.moderation.comment(room, body.comment_id))
        if item is None:
            raise HTTPException(404, "no such comment in the room's history")
        count = await guarded(
            store.review.add_report(room, item, body.reason, user.uid, keep=settings.reports_max)
        )
        metrics.reports.labels("accepted").inc()
        return {"comment_id": body.comment_id, "reports": count}

    @router.get("/rooms/{room}/reports", summary="Reported comments, most recent first")
    async def reports(room: RoomName, user: Staff) -> list[dict[str, Any]]:
        return list(await guarded(store.review.reports(room)))

    @router.delete(
        "/rooms/{room}/reports/{comment_id}",
        status_code=204,
        summary="Dismiss the reports of a comment (the comment stays)",
    )
    async def dismiss(room: RoomName, comment_id: str, user: Staff) -> None:
        checked_id(comment_id)
        if not await guarded(store.review.dismiss_report(room, comment_id, by=who(user))):
            raise HTTPException(404, "no open reports of this comment")

    # ---- names, the user card, notes, purge -------------------------------------------------
    @router.get("/rooms/{room}/names", summary="Nicks and roles of users (up to 100 uids)")
    async def names(
        room: RoomName,
        user: Staff,
        uid: Annotated[list[str], Query(max_length=100)],
    ) -> dict[str, dict[str, str]]:
        uids = [u for u in dict.fromkeys(uid) if UID_RE.fullmatch(u)]
        found = await guarded(store.review.names(room, uids))
        out = {}
        for u in uids:
            role = await guarded(store.moderation.role_in(room, u))
            out[u] = {"nick": found.get(u, ""), "role": role}
        return out

    @router.get("/rooms/{room}/users/{uid}", summary="A user's card: name, role, history")
    async def card(room: RoomName, uid: Uid, user: Staff) -> dict[str, Any]:
        found = await guarded(store.review.names(room, [uid]))
        role = await guarded(store.moderation.role_in(room, uid))
        bans = await guarded(store.moderation.bans(room))
        log = await guarded(store.moderation.audit_log(room, AUDIT_SCAN))
        history = [
            e for e in log if e["target"] == uid and e["action"] in ("ban", "unban", "purge")
        ]
        against = [
            r for r in await guarded(store.review.reports(room)) if r["comment"].get("uid") == uid
        ]
        note = await guarded(store.review.note(room, uid))
        return {
            "uid": uid,
            "nick": found.get(uid, ""),
            "role": role,
            "banned_until": (bans[uid] or None) if uid in bans else False,
            "moderation": history,
            "reports": against,
            "reports_count": sum(r["count"] for r in against),
            "note": note,
        }

    @router.put("/rooms/{room}/users/{uid}/note", summary="Moderators' private note on a user")
    async def set_note(
        room: RoomName, uid: Uid, body: NoteIn, user: Staff
    ) -> dict[str, Any] | None:
        note: dict[str, Any] | None = await guarded(
            store.review.set_note(room, uid, body.text.strip(), by=who(user))
        )
        return note

    @router.post(
        "/rooms/{room}/purge",
        summary="Delete a user's comments of the last N minutes, retracted from every screen",
    )
    async def purge(room: RoomName, body: PurgeIn, user: Staff) -> dict[str, Any]:
        if body.uid != user.uid:
            seen, listed = await guarded(store.moderation.roles_of(room, body.uid))
            _refuse_rank(user, "purge the comments of", author_role({}, seen, listed))
        since_ms = int((time.time() - body.minutes * 60) * 1000)
        deleted = await guarded(store.review.purge(room, body.uid, since_ms, by=who(user)))
        return {"uid": body.uid, "deleted": deleted}

    # ---- shield mode ------------------------------------------------------------------------
    @router.put("/rooms/{room}/shield", summary="Shield mode on (a strict preset; audited)")
    async def shield_on(room: RoomName, user: Staff) -> dict[str, Any]:
        current = await guarded(store.review.raw_settings(room))
        plan = shield_changes(
            current,
            slow_mode_s=settings.shield_slow_mode_s,
            first_chat_min=settings.shield_first_chat_minutes,
        )
        if not await guarded(store.review.shield_on(room, plan.changes, plan.saved, by=who(user))):
            raise HTTPException(409, "shield mode is on already")
        changed = room_settings.shown_changes(plan.changes)
        await guarded(store.moderation.announce_settings(room, changed, by=who(user)))
        return public_settings(await guarded(store.review.raw_settings(room)))

    @router.delete("/rooms/{room}/shield", summary="Shield mode off: the settings before return")
    async def shield_off(room: RoomName, user: Staff) -> dict[str, Any]:
        saved = await guarded(store.review.shield_off(room))
        if saved is None:
            raise HTTPException(409, "shield mode is not on")
        changes: dict[str, Any] = {"shield": False} | room_settings.shown_changes(saved)
        await guarded(store.moderation.announce_settings(room, changes, by=who(user)))
        return public_settings(await guarded(store.review.raw_settings(room)))

    return router
