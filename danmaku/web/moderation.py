"""The moderation API: ``/api/rooms/{room}/...`` for moderators, streamers and admins.

Auth: ``Authorization: Bearer <token>``; no or bad token -> 401, a viewer token (or a
staff token for another room) -> 403. A staff token with a ``room`` claim acts in that
room only; without one, in every room. Every action is written to the room's audit log;
gateways and workers act on it within a second (see docs/operations.md).

Roles rank admin > streamer > moderator > viewer (``auth.RANK``): a ban, timeout or
comment delete aimed at a user of the actor's rank or above is refused with 403 (an
admin may do anything), and so is lifting or overwriting a ban a higher role set. The
target's role is the highest the system has seen that user hold in the room
(``Store.note_role``: every staff request here notes its token's role), and for a
comment also what its stored priority says (staff comments carry ``PRIO_STAFF``).

The room's staff list (``/staff``, kept by the room's streamer or an admin) changes who
is staff in that room: a listed uid acts with the granted role even with a viewer token,
a revoked one as a viewer even with a moderator token (``auth.effective_role``, the rule
the gateway applies too); the staff check and the rank checks here go by it.

Comment ids (path and ``before``/``after``) are checked by ``rules.ids`` before they
reach Redis: a malformed one is a 400, not a storage error.
"""

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from pydantic import AfterValidator, BaseModel, Field, create_model

from danmaku import auth, protocol
from danmaku.auth import User
from danmaku.config import Settings
from danmaku.rules import room_settings
from danmaku.rules.ids import comment_id_problem
from danmaku.rules.wordfilter import MAX_REGEX, REGEX_PREFIX, check_entry
from danmaku.store import Store, StoreError
from danmaku.verifier import KeysUnavailable, TokenVerifier
from danmaku.web.guards import RETRY_AFTER_S

RoomName = Annotated[str, Path(pattern=protocol.ROOM_RE.pattern, description="room name")]
Uid = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$", description="user id")]
CommentId = Annotated[
    str, Path(description="comment id, `<ms>-<seq>` (e.g. 1700000000000-0); else 400")
]


class BanIn(BaseModel):
    uid: str = Field(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")
    duration_s: int | None = Field(
        default=None, ge=1, le=10 * 365 * 86400, description="timeout length; none = permanent"
    )
    close: bool = Field(default=True, description="also close the user's open connections")
    reason: str = Field(default="", max_length=200)


class BanOut(BaseModel):
    uid: str
    until: float | None = Field(description="epoch seconds; null = permanent")
    reason: str = Field(default="", description="as given when the ban was set")


def _settings_model() -> type[BaseModel]:
    """The settings patch model, from the one schema (``rules/room_settings.py``): only
    the fields given change; ``null`` resets one to the server default."""
    fields: dict[str, Any] = {}
    for setting in room_settings.SCHEMA:
        if not setting.writable:
            continue
        kind: Any = {"number": float, "flag": bool, "text": str}.get(setting.kind)
        if setting.kind == "choice":
            kind = Literal[setting.choices]
        unit = f" ({setting.unit})" if setting.unit else ""
        field = Field(
            default=None,
            ge=setting.lo,
            le=setting.hi,
            max_length=setting.max_len or None,
            pattern=setting.pattern,
            description=setting.help + unit,
        )
        fields[setting.name] = (kind | None, field)
    model: type[BaseModel] = create_model("SettingsIn", **fields)
    model.__doc__ = _settings_model.__doc__
    return model


if TYPE_CHECKING:
    SettingsIn = BaseModel
else:
    SettingsIn = _settings_model()


def _blockable(entry: str) -> str:
    """A 422 saying why, for an entry no word filter can use (only ``*``, a ``re:``
    pattern too long or too slow, ...): ``wordfilter.check_entry``."""
    check_entry(entry)
    return entry


class WordsIn(BaseModel):
    add: list[
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=len(REGEX_PREFIX) + MAX_REGEX,
                description="a word, a phrase, a word with '*' wildcards, or 're:PATTERN'",
            ),
            AfterValidator(_blockable),
        ]
    ] = Field(default_factory=list, max_length=5000)
    remove: list[Annotated[str, Field(min_length=1, max_length=len(REGEX_PREFIX) + MAX_REGEX)]] = (
        Field(default_factory=list, max_length=5000)
    )


class WordsOut(BaseModel):
    room: list[str]
    global_: list[str] = Field(alias="global")


class PinIn(BaseModel):
    text: str = Field(min_length=1, max_length=200)
    duration_s: int | None = Field(default=None, ge=1, le=86400 * 7)


class NoticeIn(BaseModel):
    text: str = Field(min_length=1, max_length=200)


class StaffIn(BaseModel):
    role: Literal["moderator", "streamer"] = Field(
        description="the role granted in the room (streamer: by an admin only)"
    )


class StaffOut(BaseModel):
    uid: str
    role: str = Field(description="moderator, streamer, or revoked")
    by: str = Field(description="who set the entry (role:uid)")
    ts: int = Field(description="when (ms)")


class CommentsOut(BaseModel):
    items: list[dict[str, Any]]
    next: str | None = Field(
        description="history: pass as ?before= for the next (older) page; feed: as ?after="
    )


def public_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Room settings as the API shows them (``rules.room_settings.public``)."""
    return dict(room_settings.public(values))


def _bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return authorization[7:].strip()


async def verified(request: Request, token: str) -> User:
    """The token's user (HS256, or the platform's RS256/ES256: ``verifier.py``). 401 for
    a bad token, 503 when the platform's keys cannot be fetched."""
    verifier: TokenVerifier = request.app.state.verifier
    try:
        return await verifier.verify_async(token)
    except KeysUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from exc
    except auth.TokenError as exc:
        raise HTTPException(
            401, f"unauthorized: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from exc


async def _staff(request: Request, room: RoomName, token: Annotated[str, Depends(_bearer)]) -> User:
    """A user with staff rights in the path's room, as it acts there: its token's role
    under the room's staff list (``auth.in_room``), so a listed viewer token acts as a
    moderator and a revoked moderator token as a viewer. 401 bad token, 403 not staff in
    this room or a token for another room. Notes the token's role for the room (what rank
    checks on this user go by)."""
    user = await verified(request, token)
    if not user.allowed_in(room):
        raise HTTPException(403, "the token is for another room")
    store: Store = request.app.state.store
    listed = await guarded(
        store.moderation.enter_role(room, user.uid, user.role, everywhere=user.rooms is None)
    )
    user = auth.in_room(user, listed)
    if not user.is_staff:
        if listed == auth.REVOKED:
            raise HTTPException(403, "your staff rights in this room were revoked")
        raise HTTPException(
            403,
            "a moderator, streamer or admin token (or a place on the room's staff list) is needed",
        )
    return user


Staff = Annotated[User, Depends(_staff)]


def who(user: User) -> str:
    return f"{user.role}:{user.uid}"


async def guarded(coro: Any) -> Any:
    """Await a store call; Redis trouble becomes 503 with ``Retry-After``."""
    try:
        return await coro
    except StoreError as exc:
        raise HTTPException(
            503, "storage unavailable", headers={"Retry-After": str(RETRY_AFTER_S)}
        ) from exc


def checked_id(value: str, what: str = "comment id") -> str:
    """``value`` if it is a valid comment id, else 400 saying what is wrong."""
    problem = comment_id_problem(value)
    if problem is not None:
        raise HTTPException(400, f"bad {what}: {problem}")
    return value


def _a(role: str) -> str:
    return f"an {role}" if role[:1] in "aeiou" else f"a {role}"


def _refuse_rank(user: User, action: str, target_role: str) -> None:
    """403 unless ``user`` outranks a user of ``target_role`` (or is an admin)."""
    if not auth.may_act_on(user.role, target_role):
        raise HTTPException(
            403,
            f"{_a(user.role)} cannot {action} {_a(target_role)}: "
            "only a higher role (or an admin) can",
        )


def author_role(item: dict[str, Any], seen: str, listed: str | None = None) -> str:
    """The role of a comment's author: the highest of what the system has seen the uid
    hold in the room, what the comment's stored priority implies (staff priority: at
    least a moderator) and its stored ``role`` when the gateway records one, each under
    the author's entry on the room's staff list (a revoked moderator's old comments are
    a viewer's)."""
    candidates = [seen]
    if item.get("prio") == protocol.PRIO_STAFF:
        candidates.append("moderator")
    if item.get("role") in auth.ROLES:
        candidates.append(str(item["role"]))
    return max((auth.effective_role(c, listed) for c in candidates), key=auth.rank)


def create_router(settings: Settings, store: Store) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["moderation"])

    async def admin(request: Request, token: Annotated[str, Depends(_bearer)]) -> User:
        user = await verified(request, token)
        if user.role != "admin":
            raise HTTPException(403, "an admin token is needed")
        if user.rooms is not None:
            raise HTTPException(
                403, "an admin token limited to some rooms cannot change global settings"
            )
        return user

    @router.post("/rooms/{room}/bans", response_model=BanOut, summary="Ban or time out a user")
    async def ban(room: RoomName, body: BanIn, user: Staff) -> BanOut:
        _refuse_rank(
            user, "ban or time out", await guarded(store.moderation.role_in(room, body.uid))
        )
        setter = await guarded(store.moderation.ban_setter(room, body.uid))
        if setter is not None and not auth.may_lift(user.role, setter):
            raise HTTPException(
                403, f"the user's ban was set by {_a(setter)}; {_a(user.role)} cannot change it"
            )
        until = time.time() + body.duration_s if body.duration_s else 0.0
        await guarded(
            store.moderation.ban(
                room,
                body.uid,
                until,
                close=body.close,
                by=who(user),
                reason=body.reason,
                role=user.role,
            )
        )
        return BanOut(uid=body.uid, until=until or None, reason=body.reason)

    @router.get("/rooms/{room}/bans", response_model=list[BanOut], summary="Bans in force")
    async def bans(room: RoomName, user: Staff) -> list[BanOut]:
        current = await guarded(store.moderation.bans(room))
        reasons = await guarded(store.identity.ban_reasons(room))
        return [
            BanOut(uid=u, until=t or None, reason=reasons.get(u, (0.0, ""))[1])
            for u, t in sorted(current.items())
        ]

    @router.delete("/rooms/{room}/bans/{uid}", status_code=204, summary="Lift a ban")
    async def unban(room: RoomName, uid: Uid, user: Staff) -> None:
        setter = await guarded(store.moderation.ban_setter(room, uid))
        if setter is not None and not auth.may_lift(user.role, setter):
            raise HTTPException(
                403, f"this ban was set by {_a(setter)}; {_a(user.role)} cannot lift it"
            )
        if not await guarded(store.moderation.unban(room, uid, by=who(user))):
            raise HTTPException(404, "no such ban")

    @router.delete(
        "/rooms/{room}/comments/{comment_id}",
        status_code=204,
        summary="Delete a comment (retracted from players in the next frame)",
    )
    async def delete_comment(room: RoomName, comment_id: CommentId, user: Staff) -> None:
        checked_id(comment_id)
        item = await guarded(store.moderation.comment(room, comment_id))
        if item is None:
            raise HTTPException(404, "no such comment in the room's history")
        author = str(item.get("uid", ""))
        if author != user.uid:  # one's own comments: always
            seen, listed = (
                await guarded(store.moderation.roles_of(room, author)) if author else ("", None)
            )
            _refuse_rank(user, "delete the comments of", author_role(item, seen, listed))
        if not await guarded(store.moderation.delete_comment(room, comment_id, by=who(user))):
            raise HTTPException(404, "no such comment in the room's history")

    @router.get(
        "/rooms/{room}/comments",
        response_model=CommentsOut,
        summary="Recent comments, unsampled, newest first",
    )
    async def comments(
        room: RoomName,
        user: Staff,
        before: Annotated[str | None, Query(description="comment id; else 400")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        uid: Annotated[str | None, Query(max_length=64)] = None,
        q: Annotated[str | None, Query(max_length=100, description="text contains")] = None,
    ) -> CommentsOut:
        if before is not None:
            checked_id(before, "before")
        items, nxt = await guarded(
            store.moderation.recent_comments(room, before=before, limit=limit, uid=uid, text=q)
        )
        return CommentsOut(items=items, next=nxt)

    @router.get(
        "/rooms/{room}/feed",
        response_model=CommentsOut,
        summary="Live unsampled feed: comments newer than `after`, oldest first",
    )
    async def feed(
        room: RoomName,
        user: Staff,
        after: Annotated[str, Query(description="comment id, or $; else 400")] = "$",
        limit: Annotated[int, Query(ge=1, le=2000)] = 1000,
    ) -> CommentsOut:
        if after != "$":
            checked_id(after, "after")
        items, cursor = await guarded(store.moderation.comments_after(room, after, limit))
        return CommentsOut(items=items, next=cursor)

    @router.patch("/rooms/{room}/settings", summary="Slow mode, budget, ceiling, mute")
    async def change_settings(room: RoomName, body: SettingsIn, user: Staff) -> dict[str, Any]:
        given = body.model_dump(exclude_unset=True)
        if not given:
            raise HTTPException(422, "no setting given")
        values = room_settings.encode_changes(given)
        await guarded(store.rooms.set_room_settings(room, values))
        await guarded(store.moderation.announce_settings(room, given, by=who(user)))
        return public_settings(await guarded(store.rooms.room_settings(room)))

    @router.get("/rooms/{room}/words", summary="Blocked words (room and global)")
    async def words(room: RoomName, user: Staff) -> dict[str, list[str]]:
        room_words, global_words = await guarded(store.moderation.words(room))
        return {"room": room_words, "global": global_words}

    @router.patch("/rooms/{room}/words", summary="Add or remove blocked words of a room")
    async def change_words(room: RoomName, body: WordsIn, user: Staff) -> dict[str, list[str]]:
        await guarded(store.moderation.change_words(room, body.add, body.remove, by=who(user)))
        room_words, global_words = await guarded(store.moderation.words(room))
        return {"room": room_words, "global": global_words}

    @router.patch("/words", summary="Add or remove global blocked words (admin)")
    async def change_global_words(
        body: WordsIn, user: Annotated[User, Depends(admin)]
    ) -> dict[str, list[str]]:
        await guarded(store.moderation.change_words(None, body.add, body.remove, by=who(user)))
        _, global_words = await guarded(store.moderation.words(None))
        return {"global": global_words}

    @router.get("/rooms/{room}/highlights", summary="Users granted the highlighted tier")
    async def highlights(room: RoomName, user: Staff) -> list[str]:
        uids: list[str] = await guarded(store.moderation.highlights(room))
        return uids

    @router.put(
        "/rooms/{room}/highlights/{uid}",
        status_code=204,
        summary="Grant a user the highlighted tier",
    )
    async def grant(room: RoomName, uid: Uid, user: Staff) -> None:
        await guarded(store.moderation.set_highlight(room, uid, True, by=who(user)))

    @router.delete(
        "/rooms/{room}/highlights/{uid}", status_code=204, summary="Revoke the highlighted tier"
    )
    async def revoke(room: RoomName, uid: Uid, user: Staff) -> None:
        await guarded(store.moderation.set_highlight(room, uid, False, by=who(user)))

    # ---- the room's staff list ------------------------------------------------------------
    def _may_change_staff(user: User, target_role: str) -> None:
        """403 unless ``user`` may change the staff-list entry of a user whose role in
        the room is ``target_role``: the room's streamer or an admin only, and only of
        a lower role (an admin: anyone)."""
        if auth.rank(user.role) < auth.rank("streamer"):
            raise HTTPException(
                403,
                f"{_a(user.role)} cannot appoint or remove room staff: "
                "only the room's streamer or an admin can",
            )
        _refuse_rank(user, "change the staff role of", target_role)

    @router.get("/rooms/{room}/staff", response_model=list[StaffOut], summary="Room staff list")
    async def staff(room: RoomName, user: Staff) -> list[StaffOut]:
        entries = await guarded(store.moderation.staff_list(room))
        return [
            StaffOut(uid=uid, role=str(e["role"]), by=str(e.get("by", "")), ts=int(e.get("ts", 0)))
            for uid, e in sorted(entries.items())
        ]

    async def _write_staff(room: str, uid: str, role: str, user: User) -> StaffOut:
        written = await guarded(
            store.moderation.set_staff(
                room, uid, role, by=who(user), max_entries=settings.staff_list_max
            )
        )
        if not written:
            raise HTTPException(
                409,
                f"the room's staff list is full ({settings.staff_list_max} entries, "
                "DANMAKU_STAFF_LIST_MAX)",
            )
        return StaffOut(uid=uid, **written)

    @router.put(
        "/rooms/{room}/staff/{uid}",
        response_model=StaffOut,
        summary="Appoint a user as the room's moderator (or, by an admin, streamer)",
    )
    async def appoint(room: RoomName, uid: Uid, body: StaffIn, user: Staff) -> StaffOut:
        _may_change_staff(user, await guarded(store.moderation.role_in(room, uid)))
        if not auth.may_appoint(user.role, body.role):
            raise HTTPException(
                403,
                f"{_a(user.role)} cannot grant the {body.role} role: only a role below "
                "one's own (an admin may grant any)",
            )
        return await _write_staff(room, uid, body.role, user)

    @router.delete(
        "/rooms/{room}/staff/{uid}",
        status_code=204,
        summary="Remove a user's staff rights in the room (also a moderator token's)",
    )
    async def remove_staff(room: RoomName, uid: Uid, user: Staff) -> None:
        seen, listed = await guarded(store.moderation.roles_of(room, uid))
        _may_change_staff(user, auth.effective_role(seen, listed))
        if seen in auth.IRREVOCABLE:
            raise HTTPException(
                409,
                f"the user holds a platform-signed {seen} token, which a room's staff list "
                "cannot revoke: revoke the token (or let it expire)",
            )
        await _write_staff(room, uid, auth.REVOKED, user)

    @router.put("/rooms/{room}/pin", summary="Pin a message")
    async def pin(room: RoomName, body: PinIn, user: Staff) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        until = now_ms + body.duration_s * 1000 if body.duration_s else None
        value = {"text": body.text, "by": user.nick or user.uid, "ts": now_ms, "until": until}
        await guarded(store.moderation.set_pin(room, value, body.duration_s, by=who(user)))
        return value

    @router.get("/rooms/{room}/pin", summary="The pinned message, or null")
    async def current_pin(room: RoomName, user: Staff) -> dict[str, Any] | None:
        current: dict[str, Any] | None = await guarded(store.moderation.get_pin(room))
        return current

    @router.delete("/rooms/{room}/pin", status_code=204, summary="Unpin")
    async def unpin(room: RoomName, user: Staff) -> None:
        await guarded(store.moderation.set_pin(room, None, None, by=who(user)))

    @router.post("/rooms/{room}/notices", status_code=204, summary="Show a room notice")
    async def notice(room: RoomName, body: NoticeIn, user: Staff) -> None:
        await guarded(
            store.moderation.post_notice(
                room, body.text, by=who(user), nick=user.nick, role=user.role
            )
        )

    @router.get("/rooms/{room}/audit", summary="The room's audit log, newest first")
    async def audit(
        room: RoomName, user: Staff, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        return list(await guarded(store.moderation.audit_log(room, limit)))

    return router
