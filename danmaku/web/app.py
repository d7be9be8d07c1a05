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
from danmaku.rules.clientip import parse_trusted
from danmaku.store import Store, StoreError
from danmaku.supervise import LoopHealth
from danmaku.web.guards import (
    RETRY_AFTER_S,
    BodyLimit,
    ErrorBoundary,
    SecurityHeaders,
    StrictJSON,
    validation_error,
)
from danmaku.web.moderation import create_router
from danmaku.web.platform import create_router as create_platform_router
from danmaku.web.replay import create_router as create_replay_router

RoomName = Annotated[str, Path(pattern=protocol.ROOM_RE.pattern, description="room name")]


DEVICE_COOKIE = "dm_device"
DEVICE_COOKIE_MAX_AGE_S = 400 * 86400  # the most browsers keep a cookie


class SessionRequest(BaseModel):
    nick: str = Field(min_length=1, max_length=64, description="display name")

    @field_validator("nick")
    @classmethod
    def _printable(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value or any(not ch.isprintable() for ch in value):
            raise ValueError("nick must be printable text")
        return value


class UserOut(BaseModel):
    uid: str
    nick: str
    role: str


class SessionOut(BaseModel):
    token: str
    user: UserOut


class RoomOut(BaseModel):
    room: str
    tick_ms: int
    seq: int = Field(description="latest frame seq")
    online: int = Field(description="viewers connected, over all gateways")
    comments_per_s: float = Field(description="comments merged per second (last second)")
    shown_per_s: float = Field(description="items shown in frames per second")
    dropped_per_s: float = Field(description="comments left out by sampling per second")
    shed_per_s: float = Field(description="comments shed at the door by the ingest ceiling")
    latency_p99_ms: float = Field(
        description="p99 of gateway receive -> frame built, over the last second's items"
    )
    settings: dict[str, float] = Field(description="settings moderators have set")
    effective: dict[str, float] = Field(
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
        docs_url="/api/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings  # read by request dependencies (staff token checks)
    app.state.store = store  # ... which also note the staff roles they see
    app.add_exception_handler(RequestValidationError, validation_error)
    app.mount(
        "/static",
        StaticFiles(directory=str(resources.files("danmaku.web") / "static")),
        name="static",
    )

    app.include_router(create_router(settings, store))
    app.include_router(create_replay_router(settings, store, metrics))
    app.include_router(create_platform_router(settings, store, metrics))  # server API
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

    @app.get("/console", response_class=HTMLResponse, include_in_schema=False)
    async def console() -> str:
        return _static("console.html")

    @app.get("/api/config", summary="Where players connect")
    async def config() -> dict[str, Any]:
        # Several gateways (comma-separated): players pick one and move on after a failure.
        urls = [u.strip() for u in ws_url().split(",") if u.strip()]
        first = urls[0] if urls else ""
        return {"ws_url": first, "ws_urls": urls, "tick_ms": settings.tick_ms, "limits": limits}

    @app.post("/api/session", response_model=SessionOut, summary="A guest viewer token")
    async def session(body: SessionRequest, request: Request, response: Response) -> SessionOut:
        limit = settings.guest_sessions_per_ip_per_min
        if limit > 0:
            # The client as the error boundary resolved it (behind a trusted proxy: the
            # forwarded address). Identities must not be free: one address gets a few.
            ip = request.client.host if request.client else "unknown"
            count, wait_s = await store.count_guest_session(ip, time.time())
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
        nick = body.nick[: settings.max_nick_chars]
        token = auth.mint(settings.secret, uid=uid, nick=nick, ttl_s=settings.session_ttl_s)
        metrics.sessions_issued.inc()
        return SessionOut(token=token, user=UserOut(uid=uid, nick=nick, role="viewer"))

    @app.get("/api/rooms/{room}", response_model=RoomOut, summary="Room settings and figures")
    async def room_info(room: RoomName) -> RoomOut:
        try:
            info = await store.room_info(room)
        except StoreError as exc:
            raise HTTPException(
                503, "storage unavailable", headers={"Retry-After": str(RETRY_AFTER_S)}
            ) from exc
        defaults = {
            "budget": settings.display_budget,
            "slow_mode_s": 0.0,
            "ingest_ceiling": settings.ingest_ceiling,
            "mute": 0.0,
            "smooth_window_s": settings.smooth_window_s,
            "max_wait_s": settings.max_wait_s,
        }
        effective = defaults | {k: v for k, v in info["settings"].items() if k in defaults}
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
