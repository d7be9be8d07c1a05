"""What a banned viewer is told: until when and why (pure, no I/O).

The door (Lua) knows a uid's ban only as a number (banned-until); the reason lives in
the store beside it. A gateway keeps the reasons of its rooms' bans in a ``BanReasons``
(read with the room's state, updated by ban events), so a ``banned`` error can carry
``until`` and ``reason`` with no Redis read per refused comment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_REASON = 200  # characters of a ban or timeout reason
MAX_REASONS_KEPT = 10_000  # per room on a gateway; beyond, the oldest are forgotten


def banned_fields(until_s: Any, reason: Any = "") -> dict[str, Any]:
    """The ``until`` (ms since the epoch; ``None``: permanent) and ``reason`` (left
    out when none) fields of a ``banned`` error, from a ban's until (epoch seconds,
    0 = permanent) and reason."""
    until: int | None = None
    if isinstance(until_s, int | float) and math.isfinite(until_s) and until_s > 0:
        until = int(until_s * 1000)
    out: dict[str, Any] = {"until": until}
    if isinstance(reason, str) and reason:
        out["reason"] = reason[:MAX_REASON]
    return out


def until_from_retry(retry_after_ms: int, now_ms: int) -> float:
    """A ban's until (epoch seconds, 0 = permanent) from the door's answer: the time left
    (``retry_after_ms``; 0 for a permanent ban)."""
    return (now_ms + retry_after_ms) / 1000 if retry_after_ms > 0 else 0.0


class BanReasons:
    """uid -> (until, reason) of a room's bans, bounded (oldest entries go first)."""

    __slots__ = ("_by_uid",)

    def __init__(self, initial: Mapping[str, tuple[float, str]] | None = None) -> None:
        self._by_uid: dict[str, tuple[float, str]] = {}
        for uid, (until, reason) in (initial or {}).items():
            self.note(uid, until, reason)

    def note(self, uid: str, until: Any, reason: Any) -> None:
        self._by_uid.pop(uid, None)
        if len(self._by_uid) >= MAX_REASONS_KEPT:
            self._by_uid.pop(next(iter(self._by_uid)))
        value = float(until) if isinstance(until, int | float) else 0.0
        self._by_uid[uid] = (value, reason[:MAX_REASON] if isinstance(reason, str) else "")

    def reason(self, uid: str) -> str:
        entry = self._by_uid.get(uid)
        return entry[1] if entry else ""

    def __len__(self) -> int:
        return len(self._by_uid)
