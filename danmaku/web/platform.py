"""The server API: the platform's backend publishes into rooms and lists live rooms.

Auth: ``Authorization: Bearer <key>`` with one of ``DANMAKU_API_KEYS`` (compared in
constant time), or a server token (``danmaku token --role server``, its own JWT
audience). A user token -- whatever its role -- is refused with 403 on publishing: a
browser never holds what the server API takes. The room directory also takes an admin
token (the console's room switcher).

Publishing (``POST /api/rooms/{room}/messages``, and ``POST /api/messages`` for many
rooms or messages at once): ``kind`` = ``paid`` (amount, currency, payer), ``gift``
(name, count, value), ``system`` (an announcement), or ``comment`` (on behalf of a user:
through the room's door like a viewer's comment, so bans, limits, slow mode and blocked
words hold). Each message has a client-given ``id``: a retry within
``DANMAKU_PUBLISH_ID_TTL_S`` returns the first result and never shows twice (paid, gift,
system: a Redis key per room and id, set with the append in one script; comments: the
door's nonce ring). Paid and gift messages carry their tier (``rules.tiers``), have the
highest priority (never sampled away) and, when their tier says so, take the room's pin.
Rates: ``DANMAKU_PUBLISH_RATE_PER_S`` messages per second per key, over all web
processes; beyond, 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import lru_cache
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, model_validator

from danmaku import auth, protocol
from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules import tiers
from danmaku.rules.normalize import normalize
from danmaku.rules.wordfilter import WordFilter
from danmaku.store import Store
from danmaku.store.platform import Publish
from danmaku.store.records import Ingest, IngestLimits, door_key
from danmaku.web.moderation import RoomName, _bearer, _staff, guarded, who

MsgId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="your id (retries)")]
Uid = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")]
MAX_PAID_TEXT = 200  # characters of a paid, gift or system message (Super Chat: 200)
DIRECTORY_ROOMS = 1000
PIN_FIELDS = (
    "kind",
    "uid",
    "amount",
    "tier",
    "currency",
    "gift",
)  # a paid pin's extras  # the most recent rooms the directory sorts and pages


class GiftIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    count: int = Field(default=1, ge=1, le=1_000_000)
    value: float = Field(ge=0, le=1e9, description="the value of one, in the amount's unit")


class MessageIn(BaseModel):
    """One message. Which fields a kind needs: paid -- ``uid``, ``nick``, ``amount``,
    ``currency`` (``text`` optional); gift -- ``uid``, ``nick``, ``gift``; system --
    ``text``; comment -- ``uid``, ``nick``, ``text`` (``color``, ``mode`` optional)."""

    id: MsgId
    kind: Literal["paid", "gift", "system", "comment"]
    text: str = Field(default="", max_length=MAX_PAID_TEXT)
    uid: Uid | None = Field(default=None, description="payer, giver or commenter")
    nick: str | None = Field(default=None, max_length=64)
    amount: float | None = Field(default=None, gt=0, le=1e9)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217")
    gift: GiftIn | None = None
    color: str | None = Field(default=None, pattern=protocol.COLOR_RE.pattern)
    mode: Literal["scroll", "top", "bottom"] = "scroll"

    @model_validator(mode="after")
    def _complete(self) -> MessageIn:
        self.text = protocol.tidy_text(self.text)
        need = {
            "paid": ("uid", "nick", "amount", "currency"),
            "gift": ("uid", "nick", "gift"),
            "system": ("text",),
            "comment": ("uid", "nick", "text"),
        }[self.kind]
        missing = [n for n in need if not getattr(self, n)]
        if missing:
            raise ValueError(f"a {self.kind} message needs {', '.join(missing)}")
        return self


class RoomMessageIn(MessageIn):
    room: str = Field(pattern=protocol.ROOM_RE.pattern)


class BatchIn(BaseModel):
    messages: list[RoomMessageIn] = Field(min_length=1, max_length=10_000)


class PublishOut(BaseModel):
    id: str = Field(description="your message id")
    room: str
    status: Literal["published", "duplicate", "refused"] = Field(
        description="duplicate: this id was published before (comment_id is the first one)"
    )
    comment_id: str | None = Field(description="the item id in frames and history")
    code: str | None = Field(default=None, description="refused: the door's error code")
    retry_after_ms: int = 0
    tier: dict[str, Any] | None = None


class RoomLine(BaseModel):
    room: str
    online: int
    comments_per_s: float
    shown_per_s: float
    shed_per_s: float
    seq: int
    lease_holder: str | None = Field(description="the worker merging the room")
    active_ms: int = Field(description="last activity (ms since epoch)")


class DirectoryOut(BaseModel):
    rooms: list[RoomLine]
    total: int = Field(description="active rooms (at most 1000 are listed)")
    next_offset: int | None


_api_keys = lru_cache(maxsize=4)(tiers.api_keys)  # @FILE read once per process


def server_identity(settings: Settings, keys: tuple[str, ...], token: str) -> str | None:
    """``"key-<hash>"`` for an API key, the backend's uid for a server token, ``None``
    for anything else. Every key is compared, in constant time."""
    given = token.encode()
    match = False
    for key in keys:
        match |= hmac.compare_digest(given, key.encode())
    if match:
        return "key-" + hashlib.sha256(given).hexdigest()[:12]
    try:
        return auth.verify_server(settings.secret, token)
    except auth.TokenError:
        return None


def _refuse(settings: Settings, token: str) -> HTTPException:
    try:
        auth.verify(settings.secret, token)
    except auth.TokenError:
        return HTTPException(
            401,
            "unauthorized: an API key or a server token is needed",
            {"WWW-Authenticate": "Bearer"},
        )
    return HTTPException(403, "a user token cannot use the server API: use an API key")


def _payload(m: MessageIn, table: tuple[tiers.Tier, ...], now_ms: int) -> dict[str, Any]:
    """The stored item of a paid, gift or system message (as ``merge.parse_item`` reads)."""
    item: dict[str, Any] = {"uid": m.uid or "system", "nick": m.nick or "", "text": m.text}
    item |= {"color": m.color, "mode": m.mode, "ts": now_ms, "kind": m.kind}
    if m.kind == "system":
        item |= {"prio": protocol.PRIO_STAFF, "nick": m.nick or "System"}
        return item
    amount = m.amount if m.kind == "paid" else (m.gift.count * m.gift.value if m.gift else 0.0)
    tier = tiers.tier_for(amount or 0.0, table)
    item |= {"prio": protocol.PRIO_PAID, "amount": amount, "tier": tier.wire()}
    item["color"] = m.color or tier.color
    if m.currency:
        item["currency"] = m.currency
    if m.kind == "gift" and m.gift:
        item["gift"] = m.gift.model_dump()
    return item


def create_router(settings: Settings, store: Store, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["server"])
    _api_keys(settings.api_keys)  # a bad @FILE fails at start-up, not on a request
    table = tiers.load(settings.paid_tiers)
    limits = IngestLimits.from_settings(settings)

    async def limit(ident: str, n: int, kinds: list[str]) -> None:
        rate = settings.publish_rate_per_s
        if rate <= 0:
            return
        total, wait_s = await guarded(store.platform.count_publishes(ident, n, time.time()))
        if total > rate:
            for kind in kinds:
                metrics.published.labels(kind, "limited").inc()
            raise HTTPException(
                429,
                f"over {rate:g} messages per second for this key; retry later",
                headers={"Retry-After": str(max(1, int(wait_s + 0.999)))},
            )

    async def publish(ident: str, messages: list[tuple[str, MessageIn]]) -> list[PublishOut]:
        """Publish in order; the comments go through their rooms' doors."""
        await limit(ident, len(messages), [m.kind for _, m in messages])
        now_ms = int(time.time() * 1000)
        out: list[PublishOut | None] = [None] * len(messages)
        direct: list[tuple[int, Publish, dict[str, Any]]] = []
        direct_rooms: list[tuple[int, str]] = []
        door: dict[str, list[tuple[int, Ingest]]] = {}
        filters: dict[str, WordFilter] = {}
        for i, (room, m) in enumerate(messages):
            if m.kind == "comment":
                if len(m.text) > settings.max_text_chars:
                    out[i] = PublishOut(
                        id=m.id, room=room, status="refused", comment_id=None, code="too_long"
                    )
                    continue
                if room not in filters:
                    own, common = await guarded(store.moderation.words(room))
                    filters[room] = WordFilter([*own, *common])
                key = normalize(m.text)
                if filters[room].match(m.text, key) is not None:
                    out[i] = PublishOut(
                        id=m.id, room=room, status="refused", comment_id=None, code="blocked"
                    )
                    continue
                nick = (m.nick or "")[: settings.max_nick_chars]
                fields: dict[str, Any] = {"uid": m.uid, "nick": nick}
                fields |= {"text": m.text, "color": m.color, "mode": m.mode, "ts": now_ms}
                fields["prio"] = protocol.PRIO_ORDINARY
                nonce = "pub:" + m.id
                ingest = Ingest(m.uid or "", nonce, orjson.dumps(fields), door_key(key))
                door.setdefault(room, []).append((i, ingest))
            else:
                direct_rooms.append((i, room))
        if direct_rooms:  # paid and gift: the room's own tier table, else the global one
            own = await guarded(store.room_tiers.get_many([room for _, room in direct_rooms]))
            for i, room in direct_rooms:
                item = _payload(messages[i][1], tiers.room_table(own.get(room), table), now_ms)
                direct.append((i, Publish(room, messages[i][1].id, orjson.dumps(item)), item))
        if direct:
            results = await guarded(
                store.platform.publish([p for _, p, _ in direct], settings.publish_id_ttl_s)
            )
            pins: list[tuple[str, dict[str, Any], int, int]] = []
            for (i, p, item), res in zip(direct, results, strict=True):
                m = messages[i][1]
                tier = item.get("tier")
                out[i] = PublishOut(
                    id=m.id,
                    room=p.room,
                    status="published" if res.fresh else "duplicate",
                    comment_id=res.comment_id,
                    tier=tier,
                )
                if res.fresh and tier and tier["pin_s"] > 0:
                    pin: dict[str, Any] = {
                        "text": m.text,
                        "by": item["nick"],
                        "ts": now_ms,
                        "until": now_ms + tier["pin_s"] * 1000,
                        "id": res.comment_id,
                        **{k: item[k] for k in PIN_FIELDS if k in item},
                    }
                    pins.append((p.room, pin, tier["pin_s"], tier["level"]))
            # In order: the pin rule (PIN_PAID) holds within a batch as across requests.
            await guarded(store.platform.pin_paid(pins))
        if door:
            batch = {room: [ing for _, ing in entries] for room, entries in door.items()}
            outcomes = await guarded(store.intake.append_comments(batch, limits))
            for room, entries in door.items():
                for (i, _), o in zip(entries, outcomes.get(room, []), strict=False):
                    m = messages[i][1]
                    status: Literal["published", "duplicate", "refused"] = (
                        "refused" if o.code else "duplicate" if o.resent else "published"
                    )
                    out[i] = PublishOut(
                        id=m.id,
                        room=room,
                        status=status,
                        comment_id=o.id,
                        code=o.code,
                        retry_after_ms=o.retry_after_ms,
                    )
        done = [o for o in out if o is not None]
        for (_, m), o in zip(messages, done, strict=True):
            metrics.published.labels(m.kind, o.status).inc()
        return done

    @router.post(
        "/api/rooms/{room}/messages",
        response_model=PublishOut,
        summary="Publish into a room as the platform (server API)",
        responses={
            200: {"description": "a retry: this id was published before"},
            409: {"description": "a comment the room's door refused (ban, limits, words)"},
            429: {"description": "over the key's publish rate"},
        },
        status_code=201,
    )
    async def publish_one(
        room: RoomName, body: MessageIn, ident: Server, response: Response
    ) -> PublishOut:
        (result,) = await publish(ident, [(room, body)])
        if result.status == "duplicate":
            response.status_code = 200
        elif result.status == "refused":
            raise HTTPException(
                409,
                {"code": result.code, "retry_after_ms": result.retry_after_ms},
            )
        return result

    @router.post(
        "/api/messages",
        response_model=list[PublishOut],
        summary="Publish many messages, in many rooms (server API)",
        description="At most `DANMAKU_PUBLISH_BATCH_MAX` messages "
        f"({settings.publish_batch_max} here); every message counts against the key's "
        "rate. Results in the order given.",
    )
    async def publish_many(body: BatchIn, ident: Server) -> list[PublishOut]:
        if len(body.messages) > settings.publish_batch_max:
            raise HTTPException(422, f"at most {settings.publish_batch_max} messages per request")
        return await publish(ident, [(m.room, m) for m in body.messages])

    @router.get("/api/rooms", response_model=DirectoryOut, summary="Live rooms (server, admin)")
    async def directory(
        _: Operator,
        sort: Annotated[
            Literal["online", "comments_per_s", "shed_per_s", "room", "active"], Query()
        ] = "online",
        order: Annotated[Literal["asc", "desc"], Query()] = "desc",
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=DIRECTORY_ROOMS)] = 0,
        active_s: Annotated[int, Query(ge=1, le=3600, description="active within (s)")] = 60,
    ) -> DirectoryOut:
        since = int(time.time() * 1000) - active_s * 1000
        rooms = await guarded(store.platform.room_directory(since, DIRECTORY_ROOMS))
        field = "active_ms" if sort == "active" else sort
        rooms.sort(key=lambda r: (getattr(r, field), r.room), reverse=order == "desc")
        page = rooms[offset : offset + limit]
        lines = [
            RoomLine(
                room=r.room,
                online=r.online,
                comments_per_s=r.comments_per_s,
                shown_per_s=r.shown_per_s,
                shed_per_s=r.shed_per_s,
                seq=r.seq,
                lease_holder=r.holder,
                active_ms=r.active_ms,
            )
            for r in page
        ]
        nxt = offset + limit if offset + limit < len(rooms) else None
        return DirectoryOut(rooms=lines, total=len(rooms), next_offset=nxt)

    return router


async def server_auth(request: Request, token: Annotated[str, Depends(_bearer)]) -> str:
    """The backend's identity (``key-<hash>`` or a server token's uid); 401/403 else."""
    settings: Settings = request.app.state.settings
    ident = server_identity(settings, _api_keys(settings.api_keys), token)
    if ident is None:
        raise _refuse(settings, token)
    return ident


Server = Annotated[str, Depends(server_auth)]


async def operator_auth(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The server API's auth, or an admin token valid in every room; 401/403 else."""
    settings: Settings = request.app.state.settings
    token = _bearer(authorization)
    ident = server_identity(settings, _api_keys(settings.api_keys), token)
    if ident is not None:
        return ident
    try:
        user = auth.verify(settings.secret, token)
    except auth.TokenError as exc:
        raise HTTPException(401, f"unauthorized: {exc}", {"WWW-Authenticate": "Bearer"}) from exc
    if user.role != "admin" or user.rooms is not None:
        raise HTTPException(403, "the room directory is for the server API and admins")
    return who(user)


Operator = Annotated[str, Depends(operator_auth)]


async def staff_or_server(
    request: Request, room: RoomName, token: Annotated[str, Depends(_bearer)]
) -> str:
    """Who acts (``role:uid``): a staff user of the room, or the platform's backend
    (``server:<key or uid>``) -- for broadcast start and end."""
    settings: Settings = request.app.state.settings
    ident = server_identity(settings, _api_keys(settings.api_keys), token)
    if ident is not None:
        return f"server:{ident}"
    return who(await _staff(request, room, token))


StaffOrServer = Annotated[str, Depends(staff_or_server)]
