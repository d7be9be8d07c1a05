"""Replay API: broadcasts (the room's stream clock) and exports of their comments.

Starting and ending a broadcast needs a staff token or the server API's auth (an API key
or a server token: the platform's "stream started" hook); listing and exporting are
public, like the recording they belong to.

An export (``GET .../danmaku?format=json|xml|ass``) is streamed: the recording is read
in pages and each page is ordered and encoded in a worker thread (``export_chunks``), so
a broadcast of any size costs the event loop nothing but a few thread hops and the
process a few pages of memory. Exports in progress are limited per process, in total
and per client address (``DANMAKU_MAX_EXPORTS``, ``DANMAKU_MAX_EXPORTS_PER_IP``): over
either, 429 with ``Retry-After``. Each export has an ETag (``rules.export_policy``):
``If-None-Match`` answers 304 without reading the recording. Built files are not kept:
see docs/operations.md, "Exports".
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Annotated, Any, Literal

import orjson
import trio
from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules import export_policy, replay_export, room_settings
from danmaku.rules.replay_order import Key, Ordering
from danmaku.store import Store
from danmaku.store.replay import EXPORT_PAGE, ExportHead
from danmaku.web.moderation import RoomName, guarded
from danmaku.web.platform import StaffOrServer

log = logging.getLogger(__name__)

BroadcastId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,16}$", description="broadcast id")]
MEDIA = {
    "json": "application/json",
    "xml": "application/xml; charset=utf-8",
    "ass": "text/x-ssa; charset=utf-8",
}
# Comments an export may hold while putting pages in order: a few pages' worth (each a
# (key, id, raw payload) of ~300 bytes) -- about 1 MB.
HOLD_CAP = 4 * EXPORT_PAGE


MAX_T_S = 30 * 86400  # a link's `t` (s) at most: no broadcast is longer than a month


async def begin(
    store: Store, settings: Settings, room: str, title: str, *, by: str
) -> dict[str, Any]:
    """Start a broadcast in ``room`` with the room's replay offset (``replay_offset_s``,
    else ``DANMAKU_REPLAY_OFFSET_S``) as its video delay. Raises ``StoreError``."""
    own = await store.rooms.room_settings(room)
    offset = room_settings.effective(own, settings)["replay_offset_s"]
    delay_ms = round(float(offset) * 1000)
    return dict(await store.replay.start_broadcast(room, title, by=by, delay_ms=delay_ms))


class BroadcastIn(BaseModel):
    title: str = Field(default="", max_length=200)


def _encode(
    enc: replay_export.Encoder,
    ordering: Ordering[tuple[str, bytes]],
    page: int,
    items: list[tuple[Key, tuple[str, bytes]]],
) -> bytes:
    """Run in a worker thread: order one page in, encode what is final."""
    comments = []
    for _, (cid, raw) in ordering.feed(page, items):
        c = orjson.loads(raw)
        c["id"] = cid
        comments.append(c)
    return enc.feed(comments) if comments else b""


async def export_chunks(store: Store, head: ExportHead, fmt: str) -> AsyncGenerator[bytes, None]:
    """The export of ``head``'s broadcast in ``fmt``, in chunks (about a page each): the
    same bytes as ``replay_export.whole`` over ``store.recorded``, built with at most
    ``HOLD_CAP`` comments and one page in memory. Raises ``StoreError`` mid-way if
    Redis fails."""
    pages = await store.replay.export_index(head)
    enc = replay_export.encoder(fmt, head.room, head.meta)
    ordering: Ordering[tuple[str, bytes]] = Ordering(pages, HOLD_CAP)
    yield enc.head(sum(p.count for p in pages))
    while (i := ordering.next_page()) is not None:
        items = await store.replay.export_page(
            head, pages[i - 1].last_id if i else None, pages[i].last_id
        )
        chunk = await trio.to_thread.run_sync(_encode, enc, ordering, i, items)
        if chunk:
            yield chunk
    yield enc.tail()


def export_client_ip(request: Request) -> str:
    """The address per-IP export limits count: the client's (the web app's error
    boundary puts the address a trusted proxy forwarded in ``scope["client"]``, see
    ``DANMAKU_TRUSTED_PROXIES``; otherwise it is the socket's peer)."""
    return request.client.host if request.client else "unknown"


class _ExportResponse(StreamingResponse):
    """A streamed export that gives its slot back however the response ends (done,
    client gone, Redis failed), and closes its chunk generator."""

    def __init__(
        self, chunks: AsyncGenerator[bytes, None], release: Callable[[], None], **kw: Any
    ) -> None:
        super().__init__(chunks, **kw)
        self._chunks = chunks
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
            with trio.CancelScope(shield=True):
                await self._chunks.aclose()


def create_router(settings: Settings, store: Store, metrics: Metrics) -> APIRouter:
    router = APIRouter(prefix="/api/rooms/{room}/broadcasts", tags=["replay"])
    slots = export_policy.ExportSlots(settings.max_exports, settings.max_exports_per_ip)

    @router.post("", summary="Start a broadcast (the stream clock starts now)")
    async def start(room: RoomName, body: BroadcastIn, by: StaffOrServer) -> dict[str, Any]:
        meta: dict[str, Any] = await guarded(begin(store, settings, room, body.title, by=by))
        return meta

    @router.post("/{broadcast_id}/end", summary="End a broadcast")
    async def end(room: RoomName, broadcast_id: BroadcastId, by: StaffOrServer) -> dict[str, Any]:
        try:
            return dict(await guarded(store.replay.end_broadcast(room, broadcast_id, by=by)))
        except KeyError as exc:
            raise HTTPException(404, "no such broadcast") from exc

    @router.get("", summary="Broadcasts of the room, newest first")
    async def listing(room: RoomName) -> list[dict[str, Any]]:
        return list(await guarded(store.replay.broadcasts(room)))

    @router.get("/{broadcast_id}", summary="One broadcast")
    async def one(room: RoomName, broadcast_id: BroadcastId) -> dict[str, Any]:
        meta = await guarded(store.replay.broadcast(room, broadcast_id))
        if meta is None:
            raise HTTPException(404, "no such broadcast")
        return dict(meta)

    @router.get(
        "/{broadcast_id}/danmaku",
        summary="Export the broadcast's comments: JSON, Bilibili XML or ASS subtitles",
        description=(
            "Streamed. `ETag` + `If-None-Match` -> 304. Limited per process in total and "
            "per client address: 429 with `Retry-After` beyond."
        ),
        response_class=Response,
        responses={304: {"description": "not modified"}, 429: {"description": "busy"}},
    )
    async def danmaku(
        request: Request,
        room: RoomName,
        broadcast_id: BroadcastId,
        format: Annotated[Literal["json", "xml", "ass"], Query()] = "json",
        t: Annotated[
            float,
            Query(
                ge=0,
                le=MAX_T_S,
                description="start at this many seconds into the replay (its aligned time): "
                "only comments from there on",
            ),
        ] = 0,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        head = await guarded(store.replay.export_head(room, broadcast_id))
        if head is None:
            raise HTTPException(404, "no such broadcast")
        meta = head.meta
        if t > 0:  # recorded offsets are before the alignment: the delay moves the start
            from_ms = int(t * 1000) + replay_export.delay_of(head.meta)
            head = dataclasses.replace(head, from_ms=from_ms)
            meta = head.meta | {"from_ms": from_ms}  # its own ETag
        tag = export_policy.etag(room, meta, format, head.length, head.last_id, head.banned)
        cache = {
            "ETag": tag,
            "Cache-Control": export_policy.cache_control(head.meta, int(time.time() * 1000)),
        }
        if export_policy.not_modified(if_none_match, tag):
            metrics.exports.labels(format, "not_modified").inc()
            return Response(status_code=304, headers=cache)
        ip = export_client_ip(request)
        refused = slots.acquire(ip)
        if refused is not None:
            metrics.exports.labels(format, "limited").inc()
            limit = slots.per_ip if refused == "per_ip" else slots.total
            what = "from your address" if refused == "per_ip" else "on this server"
            raise HTTPException(
                429,
                f"too many exports in progress {what} (limit {limit}); retry later",
                headers={"Retry-After": str(export_policy.RETRY_AFTER_S)},
            )
        metrics.exports_active.inc()
        outcome = ["failed"]

        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                async with aclosing(export_chunks(store, head, format)) as built:
                    async for chunk in built:
                        yield chunk
                outcome[0] = "streamed"
            except Exception as exc:
                log.warning("export of %s/%s (%s) failed: %r", room, broadcast_id, format, exc)
                raise

        def release() -> None:
            slots.release(ip)
            metrics.exports_active.dec()
            metrics.exports.labels(format, outcome[0]).inc()

        name = f"{room}-{broadcast_id}.{format}"
        return _ExportResponse(
            chunks(),
            release,
            media_type=MEDIA[format],
            headers={**cache, "Content-Disposition": f'inline; filename="{name}"'},
        )

    return router
