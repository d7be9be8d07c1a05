"""Where a client should connect for a room (issue 25, room-affine routing).

``GET /api/rooms/{room}/gateway`` (and the ``gateway`` field of ``POST /api/session``
for a room) answers ``{"room", "url", "urls", "ttl_s"}``: ``url`` is the room's
rendezvous choice among the registered gateways (``rules.rendezvous``), ``urls`` the
order to try (first = ``url``), ``ttl_s`` how long the answer may be reused. With no
live gateway registered, or the registry unreadable, the answer is the configured
WebSocket URL(s) of ``/api/config``: any gateway serves any room, only at a higher Redis
cost, so routing is never a reason for a client not to connect.

Costs: one web process reads the registry at most once per ``CACHE_S`` and a room's
viewers per gateway at most once per ``CACHE_S`` (cached for up to ``MAX_ROOMS`` rooms).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Annotated

import trio
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from danmaku import protocol
from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules.rendezvous import GatewayEntry, Rendezvous, Target, live_targets
from danmaku.store import Store, StoreError

RoomName = Annotated[str, Path(pattern=protocol.ROOM_RE.pattern, description="room name")]

CACHE_S = 1.0  # registry and per-room reads are reused this long (well under the TTL)
MAX_ROOMS = 10_000  # rooms whose viewer counts one web process keeps


class GatewayOut(BaseModel):
    room: str
    url: str = Field(description="where to connect: the room's rendezvous choice")
    urls: list[str] = Field(description="the order to try after a failure (first = url)")
    ttl_s: int = Field(description="how long this answer may be reused")


def pick_of(key: str) -> float:
    """A client's stable draw in [0, 1) from a key of its own (its uid)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class GatewayHints:
    """Answers "where should this client connect for this room", with short caches."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        ws_url: Callable[[], str],
        rng: random.Random | None = None,
    ) -> None:
        self.registry = store.gateways
        self.metrics = metrics
        self.ws_url = ws_url
        self.rng = rng or random.Random()
        self.ttl_s = max(1, round(settings.gateway_registry_ttl_s))
        self.rendezvous = Rendezvous(settings.room_share, settings.gateway_load_factor)
        # The last registry read, made into targets once (ranking is per room, cheap).
        self._targets: list[Target] = []
        self._url_of: dict[str, str] = {}
        self._expires_at = -float("inf")  # the first of its live entries to expire
        self._entries_at = -float("inf")
        self._lock = trio.Lock()  # one registry read at a time; the others reuse it
        self._rooms: dict[str, tuple[float, dict[str, int]]] = {}

    async def hint(self, room: str, key: str | None = None) -> GatewayOut:
        """The answer for ``room``; ``key`` (a uid) makes the draw among the room's
        gateways stable for that client, else it is random."""
        now = trio.current_time()
        try:
            targets = await self._registry(now)
            viewers = await self._room_viewers(room, now) if targets else {}
        except StoreError:
            self.metrics.gateway_routes.labels("unavailable").inc()
            return self._configured(room)
        pick = pick_of(key) if key else self.rng.random()
        route = self.rendezvous.route_targets(room, targets, self._url_of, viewers, pick)
        if route is None:
            self.metrics.gateway_routes.labels("no_gateways").inc()
            return self._configured(room)
        self.metrics.gateway_routes.labels("routed").inc()
        return GatewayOut(room=room, url=route.urls[0], urls=list(route.urls), ttl_s=self.ttl_s)

    def _configured(self, room: str) -> GatewayOut:
        urls = [u.strip() for u in self.ws_url().split(",") if u.strip()]
        return GatewayOut(room=room, url=urls[0] if urls else "", urls=urls, ttl_s=self.ttl_s)

    async def _registry(self, now: float) -> list[Target]:
        """The live targets of a registry read at most ``CACHE_S`` old, read again
        sooner when one of its entries has expired since."""
        if now - self._entries_at < CACHE_S and now < self._expires_at:
            return self._targets
        async with self._lock:
            read_at = trio.current_time()
            if read_at - self._entries_at >= CACHE_S or read_at >= self._expires_at:
                entries = await self.registry.entries(read_at)
                self._targets = live_targets(entries, read_at)
                self._url_of = {e.gateway_id: e.url for e in entries}
                live = [e.expires_at for e in entries if e.expires_at > read_at]
                self._expires_at = min(live, default=float("inf"))
                self._entries_at = read_at
                self._count(entries, read_at)
        return self._targets

    async def _room_viewers(self, room: str, now: float) -> dict[str, int]:
        cached = self._rooms.get(room)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        viewers = await self.registry.room_viewers(room)
        self._rooms.pop(room, None)
        self._rooms[room] = (now, viewers)
        while len(self._rooms) > MAX_ROOMS:  # the oldest read goes first
            self._rooms.pop(next(iter(self._rooms)))
        return viewers

    def _count(self, entries: list[GatewayEntry], now: float) -> None:
        states = {"serving": 0, "draining": 0, "unhealthy": 0}
        for e in entries:
            if e.expires_at <= now:
                continue
            states["draining" if e.draining else "unhealthy" if not e.healthy else "serving"] += 1
        for state, n in states.items():
            self.metrics.gateways_registered.labels(state).set(n)


def create_router(hints: GatewayHints) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/api/rooms/{room}/gateway",
        response_model=GatewayOut,
        summary="Where to connect for a room (room-affine routing)",
    )
    async def room_gateway(room: RoomName) -> GatewayOut:
        """The room's gateway: ``url`` (the rendezvous choice over the live registered
        gateways) and ``urls`` (the order to try after a failure); without registered
        gateways, the configured WebSocket URLs. Ask again after a failed connection."""
        return await hints.hint(room)

    return router
