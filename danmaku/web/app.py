"""The HTTP API (FastAPI, an ASGI app served by Hypercorn's trio worker).

FastAPI validates request bodies against their schemas and publishes the OpenAPI
document at ``/openapi.json``. Everything here is stateless: live figures come from
Redis through the ``Store``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, field_validator

from danmaku import auth, protocol
from danmaku.config import Settings
from danmaku.metrics import CONTENT_TYPE, Metrics
from danmaku.rules import nicks, room_settings
from danmaku.rules.clientip import parse_trusted
from danmaku.rules.review import REPORT_REASONS
from danmaku.store import Store, StoreError
from danmaku.supervise import LoopHealth
from danmaku.verifier import TokenVerifier
from danmaku.web.guards import (
    RETRY_AFTER_S,
    BodyLimit,
    ErrorBoundary,
    SecurityHeaders,
    StrictJSON,
    validation_error,
)
from danmaku.web.identity import create_router as create_identity_router
from danmaku.web.identity import session_refusal
from danmaku.web.moderation import create_router
from danmaku.web.platform import create_router as create_platform_router
from danmaku.web.platform_admin import create_router as create_platform_admin_router
from danmaku.web.replay import create_router as create_replay_router
from danmaku.web.review import create_router as create_review_router
from danmaku.web.routing import GatewayHints, GatewayOut
from danmaku.web.routing import create_router as create_routing_router

RoomName = Annotated[str, Path(pattern=protocol.ROOM_RE.pattern, description="room name")]


DEVICE_COOKIE = "dm_device"
DEVICE_COOKIE_MAX_AGE_S = 400 * 86400  # the most browsers keep a cookie


class SessionRequest(BaseModel):
    nick: str = Field(min_length=1, max_length=64, description="display name")
    room: str | None = Field(
        default=None,
        pattern=protocol.ROOM_RE.pattern,
        description="the room the guest is for: its guest policy, IP bans and staff nicks "
        "are checked (403 guests off or banned, 409 a nick that looks like a staff one)",
    )

    @field_validator("nick")
    @classmethod
    def _cleaned(cls, value: str) -> str:
        # Control, bidi and invisible characters go; nothing left is a 422 (rules/nicks).
        return nicks.clean(value, 64)


class UserOut(BaseModel):
    uid: str
    nick: str
    role: str


class SessionOut(BaseModel):
    token: str
    user: UserOut
    gateway: GatewayOut | None = Field(
        default=None, description="where to connect for the room named (as GET .../gateway)"
    )


class RoomOut(BaseModel):
    room: str
    tick_ms: int
    seq: int = Field(description="latest frame seq")
    online: int = Field(
        description="people watching, over all gateways: distinct users plus anonymous "
        "connections (one user with three tabs counts 1)"
    )
    connections: int = Field(0, description="WebSocket connections, over all gateways")
    comments_per_s: float = Field(description="comments merged per second (last second)")
    shown_per_s: float = Field(description="items shown in frames per second")
    dropped_per_s: float = Field(description="comments left out by sampling per second")
    shed_per_s: float = Field(description="comments shed at the door by the ingest ceiling")
    latency_p99_ms: float = Field(
        description="p99 of gateway receive -> frame built, over the last second's items"
    )
    settings: dict[str, Any] = Field(description="settings moderators have set")
    effective: dict[str, Any] = Field(
        description="the settings in force: moderators' values over the server defaults"
    )
    comments_stored: int = Field(description="comments in the room stream (capped)")
    limits: dict[str, Any]


def _static(name: str) -> str:
    return (resources.files("danmaku.web") / "static" / name).read_text(encoding="utf-8")


def create_app(
    settings: Settings,
    store: Store,
    metrics: Metrics,
    *,
    ws_url: Callable[[], str],
    health: LoopHealth | None = None,
) -> FastAPI:
    """Build the app. ``ws_url`` gives the gateway URL players should connect to;
    ``health``, the process's background loops, which ``/readyz`` reports."""
    app = FastAPI(
        title="danmaku",
        version="0.1.0",
        description="Live-stream bullet comments: player, moderation and live figures.",
        docs_url=None,  # our own page below: FastAPI's loads Swagger UI from a CDN
        openapi_url="/openapi.json",
    )
    app.state.settings = settings  # read by request dependencies (staff token checks)
    app.state.store = store  # ... which also note the staff roles they see
    app.state.verifier = TokenVerifier(settings, metrics)  # HS256 and platform tokens
    app.add_exception_handler(RequestValidationError, validation_error)
    app.mount(
        "/static",
        StaticFiles(directory=str(resources.files("danmaku.web") / "static")),
        name="static",
    )
    # Swagger UI's assets from the swagger-ui-py package (pinned in pyproject.toml).
    app.mount(
        "/api/docs/assets",
        StaticFiles(directory=str(resources.files("swagger_ui") / "static")),
        name="swagger-ui",
    )

    app.include_router(create_router(settings, store))
    app.include_router(create_identity_router(store))
    app.include_router(create_replay_router(settings, store, metrics))
    app.include_router(create_review_router(settings, store, metrics))
    app.include_router(create_platform_router(settings, store, metrics))  # server API
    hints = GatewayHints(settings, store, metrics, ws_url)  # room-affine routing (issue 25)
    app.include_router(create_routing_router(hints))
    app.include_router(create_platform_admin_router(settings, store, metrics))  # tiers, hooks
    app.add_middleware(SecurityHeaders)
    app.add_middleware(StrictJSON)  # inside BodyLimit: what it buffers is bounded
    app.add_middleware(BodyLimit, max_bytes=settings.max_http_body_bytes)

    def count(route: str, status: int) -> None:
        metrics.http_requests.labels(route, f"{status // 100}xx").inc()

    # Added last: the outermost, so it sees every failure of everything inside it.
    app.add_middleware(
        ErrorBoundary,
        count=count,
        trusted=parse_trusted(settings.trusted_proxies),
        header=settings.proxy_header.lower(),
    )

    limits = {"max_text_chars": settings.max_text_chars, "max_text_bytes": settings.max_text_bytes}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def player() -> str:
        return _static("player.html")

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    async def api_docs() -> str:
        return _static("api-docs.html")

    @app.get("/console", response_class=HTMLResponse, include_in_schema=False)
    async def console() -> str:
        return _static("console.html")

    @app.get("/api/config", summary="Where players connect")
    async def config() -> dict[str, Any]:
        # Several gateways (comma-separated): players pick one and move on after a failure.
        urls = [u.strip() for u in ws_url().split(",") if u.strip()]
        first = urls[0] if urls else ""
        return {
            "ws_url": first,
            "ws_urls": urls,
            "tick_ms": settings.tick_ms,
            "limits": limits,
            "report_reasons": list(REPORT_REASONS),
        }

    @app.post(
        "/api/session",
        response_model=SessionOut,
        response_model_exclude_none=True,
        summary="A guest viewer token",
    )
    async def session(body: SessionRequest, request: Request, response: Response) -> SessionOut:
        limit = settings.guest_sessions_per_ip_per_min
        if limit > 0:
            # The client as the error boundary resolved it (behind a trusted proxy: the
            # forwarded address). Identities must not be free: one address gets a few.
            ip = request.client.host if request.client else "unknown"
            count, wait_s = await store.moderation.count_guest_session(ip, time.time())
            if count > limit:
                raise HTTPException(
                    429,
                    f"over {limit} guest sessions per minute from this address; retry later",
                    headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
                )
        # A guest belongs to a device: the browser's signed cookie keeps its uid, so a new
        # nickname is a new name, never a new identity (bans and limits key on the uid).
        uid = auth.device_uid(settings.secret, request.cookies.get(DEVICE_COOKIE))
        if uid is None:
            uid = auth.guest_uid()
        response.set_cookie(
            DEVICE_COOKIE,
            auth.device_ticket(settings.secret, uid),
            max_age=DEVICE_COOKIE_MAX_AGE_S,
            path="/api/session",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or settings.public_web_url.startswith("https:"),
        )
        try:
            nick = nicks.clean(body.nick, settings.max_nick_chars)
        except nicks.NickError as exc:
            raise HTTPException(422, str(exc)) from exc
        if body.room is not None:
            ip = request.client.host if request.client else ""
            await session_refusal(store, body.room, ip, nick, uid, settings.guests)
        token = auth.mint(
            settings.secret, uid=uid, nick=nick, ttl_s=settings.session_ttl_s, guest=True
        )
        metrics.sessions_issued.inc()
        gateway = await hints.hint(body.room, uid) if body.room is not None else None
        return SessionOut(
            token=token, user=UserOut(uid=uid, nick=nick, role="viewer"), gateway=gateway
        )

    @app.get("/api/room-settings", summary="The room settings: names, kinds, bounds, defaults")
    async def room_settings_schema() -> list[dict[str, Any]]:
        return [s.spec() | {"default": s.default_for(settings)} for s in room_settings.SCHEMA]

    @app.get("/api/rooms/{room}", response_model=RoomOut, summary="Room settings and figures")
    async def room_info(room: RoomName) -> RoomOut:
        try:
            info = await store.rooms.room_info(room)
        except StoreError as exc:
            raise HTTPException(
                503, "storage unavailable", headers={"Retry-After": str(RETRY_AFTER_S)}
            ) from exc
        effective = room_settings.effective(info["settings"], settings)
        info["settings"] = room_settings.public(info["settings"])
        return RoomOut(
            room=room, tick_ms=settings.tick_ms, limits=limits, effective=effective, **info
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", summary="Redis answers and no background loop is failing")
    async def readyz() -> Response:
        try:
            redis_ok = await store.ping()
        except StoreError:
            redis_ok = False
        failing = health.failing() if health is not None else {}
        ok = redis_ok and not failing
        body = {"ok": ok, "redis": redis_ok, "failing_loops": failing}
        return JSONResponse(body, status_code=200 if ok else 503)

    return app
