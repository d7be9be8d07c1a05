"""The platform's configuration over HTTP (issue 24): a room's own paid tier table, and
the webhook endpoints the operator registers (see ``webhooks.service``).

Tier tables: ``GET /api/rooms/{room}/tiers`` (public: players and pages may show what
each tier looks like) answers the table in force, the room's own or the global one
(``DANMAKU_PAID_TIERS``); ``PUT`` gives the room its own (the server API, or the room's
streamer or an admin: moderators do not set prices), ``DELETE`` goes back to the global
one. The publish path reads the room's table on every request, so a change holds for
the next message.

Webhook endpoints: ``GET/POST /api/webhooks`` and ``DELETE /api/webhooks/{id}``, with
the server API's auth (an API key or a server token) only. Registered endpoints live in
Redis next to ``DANMAKU_WEBHOOK_URLS``; the delivering process picks changes up at its
next poll (``DANMAKU_WEBHOOK_POLL_MS``), without a restart.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, Field, field_validator

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules import tiers
from danmaku.rules import webhooks as hook_rules
from danmaku.store import Store
from danmaku.web.moderation import RoomName, guarded
from danmaku.web.platform import Server, StaffOrServer

TIER_SETTERS = ("server", "streamer", "admin")  # who may set a room's prices
EndpointId = Annotated[str, Path(pattern=r"^wh_[0-9a-f]{16}$", description="endpoint id")]


class TierIn(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    min: float = Field(ge=0, le=1e9, description="the smallest amount of the tier")
    color: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")
    pin_s: int = Field(default=0, ge=0, le=tiers.MAX_PIN_S, description="seconds pinned")


class TiersIn(BaseModel):
    tiers: list[TierIn] = Field(min_length=1, max_length=32)


class TierOut(BaseModel):
    name: str
    min: float
    color: str
    pin_s: int
    level: int = Field(description="the tier's priority: its place by amount (0 = lowest)")


class TiersOut(BaseModel):
    room: str
    own: bool = Field(description="the room's own table (else the global one)")
    tiers: list[TierOut]


class EndpointIn(BaseModel):
    url: str = Field(max_length=2048, description="http(s) URL that receives events")
    events: list[str] = Field(
        default_factory=list, max_length=16, description="event types; empty: all"
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="HMAC-SHA256 key of the signature; none: one is generated and answered once",
    )
    description: str = Field(default="", max_length=200)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = hook_rules.url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(hook_rules.EVENT_TYPES))
        if unknown:
            raise ValueError(
                f"unknown event types {unknown}; known: {list(hook_rules.EVENT_TYPES)}"
            )
        return sorted(set(value))


class EndpointOut(BaseModel):
    id: str
    url: str
    events: list[str] = Field(description="event types it receives; empty: all")
    description: str
    created_ms: int
    secret: str | None = Field(
        default=None, description="only in the answer to the POST that created it"
    )


def _table_out(room: str, table: tuple[tiers.Tier, ...], own: bool) -> TiersOut:
    rows = [
        TierOut(name=t.name, min=t.min, color=t.color, pin_s=t.pin_s, level=t.level) for t in table
    ]
    return TiersOut(room=room, own=own, tiers=rows)


def create_router(settings: Settings, store: Store, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["server"])
    default = tiers.load(settings.paid_tiers)

    @router.get("/api/rooms/{room}/tiers", response_model=TiersOut, summary="The room's paid tiers")
    async def get_tiers(room: RoomName) -> TiersOut:
        rows = (await guarded(store.room_tiers.get_many([room])))[room]
        return _table_out(room, tiers.room_table(rows, default), rows is not None)

    @router.put(
        "/api/rooms/{room}/tiers",
        response_model=TiersOut,
        summary="Give the room its own paid tiers (server API, streamer, admin)",
        description="1-32 tiers; names and amounts unique; sorted by `min` (the level "
        "follows). An amount maps to the highest tier whose `min` it reaches.",
    )
    async def put_tiers(room: RoomName, body: TiersIn, by: StaffOrServer) -> TiersOut:
        if by.partition(":")[0] not in TIER_SETTERS:
            raise HTTPException(
                403, "a room's paid tiers are set by its streamer, an admin or the server API"
            )
        rows = [t.model_dump() for t in body.tiers]
        try:
            table = tiers.table(rows)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        stored = [{"name": t.name, "min": t.min, "color": t.color, "pin_s": t.pin_s} for t in table]
        await guarded(store.room_tiers.set(room, stored, by=by))
        return _table_out(room, table, True)

    @router.delete(
        "/api/rooms/{room}/tiers",
        response_model=TiersOut,
        summary="Back to the global paid tiers (server API, streamer, admin)",
    )
    async def delete_tiers(room: RoomName, by: StaffOrServer) -> TiersOut:
        if by.partition(":")[0] not in TIER_SETTERS:
            raise HTTPException(
                403, "a room's paid tiers are set by its streamer, an admin or the server API"
            )
        await guarded(store.room_tiers.clear(room, by=by))
        return _table_out(room, default, False)

    # ---- webhook endpoints -------------------------------------------------------------
    @router.get(
        "/api/webhooks",
        response_model=list[EndpointOut],
        summary="Registered webhook endpoints (server API; secrets are never listed)",
    )
    async def list_endpoints(_: Server) -> list[EndpointOut]:
        return [_endpoint_out(e) for e in await guarded(store.webhook_endpoints.all())]

    @router.post(
        "/api/webhooks",
        response_model=EndpointOut,
        status_code=201,
        summary="Register a webhook endpoint (server API)",
        description="Receives the events recorded from now on (of `events`, or all), "
        "signed with its `secret` (given, or generated and answered once here). At most "
        "`DANMAKU_WEBHOOK_ENDPOINTS_MAX` endpoints: 409 beyond. Delivery starts at the "
        "next poll of the delivering process, without a restart.",
        responses={409: {"description": "as many endpoints as allowed are registered"}},
    )
    async def add_endpoint(body: EndpointIn, _: Server) -> EndpointOut:
        entry = {
            "id": "wh_" + secrets.token_hex(8),
            "url": body.url,
            "events": body.events,
            "secret": body.secret or "whsec_" + secrets.token_urlsafe(24),
            "description": body.description,
            "created_ms": int(time.time() * 1000),
        }
        most = settings.webhook_endpoints_max
        if not await guarded(store.webhook_endpoints.add(entry, most)):
            raise HTTPException(
                409, {"code": "too_many_webhooks", "message": f"at most {most} endpoints"}
            )
        out = _endpoint_out(entry)
        out.secret = str(entry["secret"])  # answered this once; never listed
        return out

    @router.delete(
        "/api/webhooks/{endpoint_id}",
        status_code=204,
        summary="Remove a webhook endpoint (server API); its queued events are dropped",
    )
    async def remove_endpoint(endpoint_id: EndpointId, _: Server) -> Response:
        if not await guarded(store.webhook_endpoints.remove(endpoint_id)):
            raise HTTPException(404, "no such webhook endpoint")
        return Response(status_code=204)

    return router


def _endpoint_out(entry: dict[str, Any]) -> EndpointOut:
    return EndpointOut(
        id=str(entry.get("id", "")),
        url=str(entry.get("url", "")),
        events=[str(e) for e in entry.get("events") or []],
        description=str(entry.get("description", "")),
        created_ms=int(entry.get("created_ms", 0)),
    )
