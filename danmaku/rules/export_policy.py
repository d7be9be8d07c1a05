"""Replay exports: who may start one now (``ExportSlots``), and how a client may cache
one (``etag``, ``not_modified``, ``cache_control``). Pure: no I/O, time is an argument.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

# Bump when an export's bytes change for the same recording (format or escaping), so
# clients holding an old ETag get the new file.
EXPORT_VERSION = 2
# After a broadcast ends, the worker may still record comments accepted before the end
# for this long (the live hash's ending window, ``Replay.end_broadcast``).
ENDING_WINDOW_MS = 60_000
SETTLED_MAX_AGE_S = 300  # a finished broadcast can still lose comments to moderators
RETRY_AFTER_S = 5


class ExportSlots:
    """Exports in progress, at most ``total`` at once and ``per_ip`` per client address
    (0 = unlimited). ``acquire`` either takes a slot or says which limit refused it;
    every taken slot is given back with ``release``."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self._by_ip: Counter[str] = Counter()
        self.active = 0

    def acquire(self, ip: str) -> str | None:
        """Take a slot for ``ip``: ``None`` when taken, else the limit that refused it
        (``"total"`` or ``"per_ip"``)."""
        if self.total and self.active >= self.total:
            return "total"
        if self.per_ip and self._by_ip[ip] >= self.per_ip:
            return "per_ip"
        self.active += 1
        self._by_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        if self._by_ip[ip] <= 0:
            raise ValueError(f"no export slot held for {ip!r}")
        self.active -= 1
        self._by_ip[ip] -= 1
        if not self._by_ip[ip]:
            del self._by_ip[ip]  # the table holds only addresses exporting now


def etag(
    room: str,
    broadcast: dict[str, Any],
    fmt: str,
    length: int,
    last_id: str | None,
    banned: Iterable[str],
) -> str:
    """A strong ETag for an export: it changes whenever the file would. The file depends
    on the broadcast (title, start, end), the recording (``XLEN`` falls on a delete,
    the last id moves on an append) and who is banned now (their comments are left out)."""
    h = hashlib.blake2b(digest_size=16)
    ban_list = sorted(banned)
    parts: list[Any] = [EXPORT_VERSION, room, fmt, broadcast, length, last_id, ban_list]
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return f'"{h.hexdigest()}"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``tag`` (weak comparison, RFC 9110)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False


def settled(broadcast: dict[str, Any], now_ms: int) -> bool:
    """The broadcast has ended and its recording can no longer grow."""
    end = broadcast.get("end")
    return end is not None and now_ms - int(end) >= ENDING_WINDOW_MS


def cache_control(broadcast: dict[str, Any], now_ms: int) -> str:
    """A settled broadcast's export may be cached for a while (moderators can still
    delete comments from it; revalidation with the ETag is cheap); one on air or just
    ended must be revalidated every time."""
    if settled(broadcast, now_ms):
        return f"public, max-age={SETTLED_MAX_AGE_S}"
    return "no-cache"
