"""The comment item and the frame, as they travel on the wire: one declared type each.

A comment is stored by the gateway as JSON (its payload in the room stream), read back
by the worker (``merge.parse_item``), chosen by the sampler and the smoother, and sent
in a frame's ``items`` byte for byte as here: these ``TypedDict``s name every field the
protocol names (docs/protocol.md, "frame"), so the type checker holds every role to the
same names. They are plain dicts at run time (what orjson encodes fastest).
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = ["Frame", "Gift", "Item", "Tier"]


class Tier(TypedDict):
    """A paid or gift item's tier (``rules.tiers``): its name, place in the table
    (``level``, 0 = lowest), colour and how long it stays pinned (``pin_s``)."""

    name: str
    level: int
    color: str
    pin_s: int


class Gift(TypedDict):
    """A gift item's gift: its name, how many, and the value of one."""

    name: str
    count: int
    value: float


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
    prio: int  # 0 ordinary, 1 highlighted, 2 staff (and system), 3 paid and gifts
    role: str  # staff comments only: "moderator" | "streamer" | "admin"
    count: int  # folded comments only: how many identical comments it stands for (>= 2)
    # Published by the platform's backend (server API) only:
    kind: str  # "paid" | "gift" | "system" (absent: a comment)
    amount: float  # paid: the amount paid; gift: count x value
    currency: str  # paid (and gifts, when given): ISO 4217 code, e.g. "USD"
    gift: Gift  # gift only
    tier: Tier  # paid and gift: the amount's tier


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
