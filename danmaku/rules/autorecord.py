"""Automatic recording (issue 24: "room setting: record whenever the room is live"): when
a room that set ``auto_record`` starts or ends a broadcast. Pure: no I/O, ``now`` given.

A room is *live* while it has viewers or comments: the store's last-activity time of
the room (``dm:rooms``: gateways mark rooms with viewers every presence round, and every
comment, publish and moderation act marks it) is recent. With hysteresis, so a room
does not flap: a recording starts when the room was active within ``LIVE_WINDOW_MS``
and none is on air; the recording it started ends once the room has been idle for the
idle time (``DANMAKU_AUTO_RECORD_IDLE_S``), or as soon as the room turns
``auto_record`` off. A broadcast someone else started (the console, the server API) is
never ended here, and none is started over it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

AUTO_BY = "auto:record"  # who starts and ends automatic recordings (audit, webhooks)
LIVE_WINDOW_MS = 10_000  # active this recently: the room is live now

Action = Literal["start", "end", "forget"]


@dataclass(frozen=True, slots=True)
class RoomView:
    """What the recorder knows of a room: last activity (ms), whether ``auto_record`` is
    in force, the broadcast on air (``None``: none), and the one this recorder started
    and believes on air (``None``: none)."""

    room: str
    active_ms: int
    auto: bool
    on_air: str | None
    ours: str | None


def decide(view: RoomView, now_ms: int, idle_ms: int) -> Action | None:
    """What to do with the room now: ``start`` a recording, ``end`` ours, ``forget`` ours
    (it is no longer on air: ended or replaced by someone else), or nothing."""
    idle_for = now_ms - view.active_ms
    if view.ours is not None:
        if view.on_air != view.ours:
            return "forget"
        if not view.auto or idle_for >= idle_ms:
            return "end"
        return None
    if view.auto and view.on_air is None and idle_for < LIVE_WINDOW_MS:
        return "start"
    return None


def title(room: str, now_ms: int) -> str:
    """An automatic recording's title: the room and its start (UTC)."""
    return f"{room} {time.strftime('%Y-%m-%d %H:%M', time.gmtime(now_ms / 1000))} UTC"
