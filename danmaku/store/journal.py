"""What every moderation write appends besides its own keys: an entry in the room's
audit log, and for actions gateways must act on, an event in the room's control stream
(which every gateway with viewers in the room reads: effective within ~0.1 s). Queued on
the caller's pipeline, so the action and its record land in one round trip.

Shared by the components that write moderation actions (``Moderation``, ``Review``,
``Identity``, ``Replay``, ``Platform``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from danmaku.store import keys

AUDIT_MAXLEN = 10_000
CONTROL_MAXLEN = 1_000


def audit(pipe: Any, room: str, who: str, action: str, target: str, detail: Any) -> None:
    """Queue the audit entry of ``action`` by ``who`` on ``target`` (``detail``: JSON)."""
    entry = {
        "ts": int(time.time() * 1000),
        "by": who,
        "action": action,
        "target": target,
        "detail": orjson.dumps(detail),
    }
    pipe.xadd(keys.audit(room), entry, maxlen=AUDIT_MAXLEN, approximate=True)


def control(pipe: Any, room: str, event: Mapping[str, Any]) -> None:
    """Queue ``event`` on the room's control stream. The caller wakes the gateways that
    hold the room after the pipeline ran (``Notices.notify_sync``)."""
    pipe.xadd(
        keys.control(room), {"e": orjson.dumps(event)}, maxlen=CONTROL_MAXLEN, approximate=True
    )
