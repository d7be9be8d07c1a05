"""Replay API: broadcasts (the room's stream clock) and exports of their comments.

Starting and ending a broadcast needs a staff token; listing and exporting are public,
like the recording they belong to.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from danmaku.config import Settings
from danmaku.rules import replay_export
from danmaku.store import Store
from danmaku.web.moderation import RoomName, Staff, guarded, who

BroadcastId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,16}$", description="broadcast id")]
MEDIA = {
    "json": "application/json",
    "xml": "application/xml; charset=utf-8",
    "ass": "text/x-ssa; charset=utf-8",
}


class BroadcastIn(BaseModel):
    title: str = Field(default="", max_length=200)


async def export(store: Store, room: str, broadcast_id: str, fmt: str) -> bytes:
    """The broadcast's comments in ``fmt``; raises ``KeyError`` for an unknown one."""
    meta = await store.broadcast(room, broadcast_id)
    if meta is None:
        raise KeyError(broadcast_id)
    comments = await store.recorded(room, broadcast_id)
    if fmt == "xml":
        return replay_export.to_bilibili_xml(comments, chat_id=broadcast_id)
    if fmt == "ass":
        title = meta.get("title") or f"{room} {broadcast_id}"
        return replay_export.to_ass(comments, title=title).encode()
    return replay_export.to_json(room, meta, comments)


def create_router(settings: Settings, store: Store) -> APIRouter:
    router = APIRouter(prefix="/api/rooms/{room}/broadcasts", tags=["replay"])

    @router.post("", summary="Start a broadcast (the stream clock starts now)")
    async def start(room: RoomName, body: BroadcastIn, user: Staff) -> dict[str, Any]:
        return dict(await guarded(store.start_broadcast(room, body.title, by=who(user))))

    @router.post("/{broadcast_id}/end", summary="End a broadcast")
    async def end(room: RoomName, broadcast_id: BroadcastId, user: Staff) -> dict[str, Any]:
        try:
            return dict(await guarded(store.end_broadcast(room, broadcast_id, by=who(user))))
        except KeyError as exc:
            raise HTTPException(404, "no such broadcast") from exc

    @router.get("", summary="Broadcasts of the room, newest first")
    async def listing(room: RoomName) -> list[dict[str, Any]]:
        return list(await guarded(store.broadcasts(room)))

    @router.get("/{broadcast_id}", summary="One broadcast")
    async def one(room: RoomName, broadcast_id: BroadcastId) -> dict[str, Any]:
        meta = await guarded(store.broadcast(room, broadcast_id))
        if meta is None:
            raise HTTPException(404, "no such broadcast")
        return dict(meta)

    @router.get(
        "/{broadcast_id}/danmaku",
        summary="Export the broadcast's comments: JSON, Bilibili XML or ASS subtitles",
        response_class=Response,
    )
    async def danmaku(
        room: RoomName,
        broadcast_id: BroadcastId,
        format: Annotated[Literal["json", "xml", "ass"], Query()] = "json",
    ) -> Response:
        try:
            body = await guarded(export(store, room, broadcast_id, format))
        except KeyError as exc:
            raise HTTPException(404, "no such broadcast") from exc
        name = f"{room}-{broadcast_id}.{format}"
        return Response(
            body,
            media_type=MEDIA[format],
            headers={"Content-Disposition": f'inline; filename="{name}"'},
        )

    return router
