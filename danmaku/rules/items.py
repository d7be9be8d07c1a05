"""The comment item and the frame, as they travel on the wire: one declared type each.

A comment is stored by the gateway as JSON (its payload in the room stream), read back
by the worker (``merge.parse_item``), chosen by the sampler and the smoother, and sent
in a frame's ``items`` byte for byte as here: these ``TypedDict``s name every field the
protocol names (docs/protocol.md, "frame"), so the type checker holds every role to the
same names. They are plain dicts at run time (what orjson encodes fastest).
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = ["Frame", "Item"]


class Item(TypedDict, total=False):
    """One comment in a frame. Every item the worker builds has ``id``, ``uid``, ``nick``,
    ``text``, ``color``, ``mode``, ``ts`` and ``prio``; the rules read them with
    ``.get`` and a default, so a test may hand them partial items."""

    id: str  # the comment id (its stream id: unique per room, time ordered)
    uid: str
    nick: str
    text: str
    color: str | None  # "#rrggbb"
    mode: str  # "scroll" | "top" | "bottom"
    ts: int  # ms: when the gateway received it
    prio: int  # 0 ordinary, 1 highlighted, 2 staff
    role: str  # staff comments only: "moderator" | "streamer" | "admin"
    count: int  # folded comments only: how many identical comments it stands for (>= 2)


class Frame(TypedDict):
    """A frame message (``protocol.encode_frame``)."""

    type: str  # "frame"
    room: str
    seq: int
    ts: int
    items: list[Item]
    dropped: int
    online: int
    retract: NotRequired[list[str]]
