"""The door of one room, as an executable spec: what ``scripts.INGEST`` decides, in Python.

``DoorModel`` keeps, in memory, everything the Lua door keeps in Redis for one room and
answers each comment the way the script does: resent, refused (with its code and
``retry_after_ms``) or kept. It runs nothing in production; it is the specification the
script is held to: tests/integration/test_door_conformance.py runs generated sequences
of comments, bans, mutes, slow mode and clock steps through both and asserts identical
answers. Change a rule here first, then in the script.

The rules, per comment, in order (the first that applies decides):

1. **Resend:** the user's (nonce) is among their last ``NONCE_RING`` kept comments and
   was kept less than the nonce TTL ago -> the same id again, nothing charged.
2. **Staff** (``flags == "s"``): only their own bucket (``DoorBuckets``: staff rate and
   burst; rate 0 = not limited) -> ``rate_limited``. Staff skip every rule below.
3. **Banned:** a ban in force (``until_s`` 0 = permanent, else epoch seconds) ->
   ``banned`` (0 ms when permanent, else the ms left, rounded up).
4. **Muted room:** unless the comment is highlighted (``"h"``) or the user was granted
   the highlighted tier in the room -> ``muted``.
5. **Duplicate:** the same normalised text (its 8-byte key) among the user's last
   ``NONCE_RING`` kept ordinary comments, within the duplicate window -> ``duplicate``
   (the ms left, at least 1).
6. **Slow mode** (a room setting, replacing the bucket): less than ``slow_mode_s`` since
   the user's last kept ordinary comment -> ``slow_mode``.
7. Otherwise the user's **token bucket** (``take_tokens``) -> ``rate_limited``.

A kept comment records its nonce (staff too) and, unless staff, its text key, the
bucket's new state and the time (for slow mode). A refused comment changes nothing. The
rings hold the last ``NONCE_RING`` entries *between* batches: within a batch, what it
kept is remembered too (a batch may hold more than a ring of one user's comments).

Time is in integer milliseconds, as the script reads Redis ``TIME``; seconds are
``ms / 1000`` on both sides, so the float arithmetic (and the ``retry_after_ms``
rounding) is the same. One known difference, on purpose: the script forgets a user's
state after it has been idle for a whole generation (``keep``: the longest of the
bucket's refill, slow mode, the duplicate window and the nonce TTL, plus 1 s); the model
never forgets. They differ only when slow mode is raised above the nonce TTL for a user
idle longer than the old ``keep``: the script then lets that user's next comment in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from danmaku.rules.ratelimit import DoorBuckets, take_tokens

__all__ = ["NONCE_RING", "DoorModel", "Verdict"]

NONCE_RING = 32  # scripts.NONCE_RING: the nonces and texts a user's state holds
HOUR_MS = 3_600_000  # what a wait that cannot end is reported as


@dataclass(frozen=True, slots=True)
class Verdict:
    """The door's answer to one comment: ``kept`` (a new id), ``resent`` (the id of the
    comment index ``resent_of``) or refused (``code``, ``retry_after_ms``)."""

    kept: bool = False
    resent_of: int | None = None
    code: str | None = None
    retry_after_ms: int = 0


@dataclass(slots=True)
class _User:
    tokens: float
    stamp: float
    last: float | None = None  # seconds of the last kept ordinary comment
    nonces: list[tuple[bytes, int, int]] = field(default_factory=list)  # key, ms, index
    texts: list[tuple[bytes, int]] = field(default_factory=list)  # key, expiry ms


class DoorModel:
    """One room's door, in memory. Not thread-safe, unbounded: a model for tests.

    ``admit`` takes one batch (what the script gets in one call: the same ``now_ms`` for
    every comment) and returns a ``Verdict`` per comment, in order. Comments are
    numbered from 0 across the model's life, so a resend names the comment it repeats.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        duplicate_window_s: float,
        nonce_ttl_s: float,
        staff_rate: float,
        staff_burst: float,
    ) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self.duplicate_window_s = float(duplicate_window_s)
        self.nonce_ttl_s = float(nonce_ttl_s)
        self._staff = DoorBuckets(rate, burst, staff_rate, staff_burst)
        self.bans: dict[str, float] = {}  # uid -> until_s (0 = permanent)
        self.highlighted: set[str] = set()  # granted by moderators
        self.muted = False
        self.slow_mode_s = 0.0
        self._users: dict[str, _User] = {}
        self._next = 0  # the index of the next comment

    def admit(self, comments: list[tuple[str, bytes, bytes, str]], now_ms: int) -> list[Verdict]:
        """Decide a batch: each comment is ``(uid, nonce_key, text_key, flags)`` with
        flags ``"s"`` (staff), ``"h"`` (highlighted) or ``"-"``."""
        now = now_ms / 1000
        out = []
        for uid, nonce, text, flags in comments:
            out.append(self._one(uid, nonce, text, flags, now_ms, now))
            self._next += 1
        for uid, *_ in comments:  # the rings are cut to size once per batch
            u = self._users[uid]
            del u.nonces[NONCE_RING:]
            del u.texts[NONCE_RING:]
        return out

    def _one(
        self, uid: str, nonce: bytes, text: bytes, flags: str, now_ms: int, now: float
    ) -> Verdict:
        u = self._users.get(uid)
        if u is None:
            u = self._users[uid] = _User(self.burst, now)
        ttl_ms = self.nonce_ttl_s * 1000
        for key, ms, index in u.nonces:  # newest first: the latest use of the nonce
            if key == nonce:
                if now_ms - ms < ttl_ms:
                    return Verdict(resent_of=index)
                break
        tokens, stamp = u.tokens, u.stamp
        if flags == "s":
            wait = self._staff.take(uid, True, now)
            if wait > 0.0:
                return Verdict(code="rate_limited", retry_after_ms=_ms(wait))
        else:
            refusal = self._refusal(uid, u, text, flags, now_ms, now)
            if refusal is not None:
                return refusal
            if self.slow_mode_s <= 0:
                wait, tokens, stamp = take_tokens(tokens, stamp, now, self.rate, self.burst)
                if wait > 0.0:
                    return Verdict(code="rate_limited", retry_after_ms=_ms(wait))
        u.nonces.insert(0, (nonce, now_ms, self._next))
        if flags != "s":
            u.tokens, u.stamp, u.last = tokens, stamp, now
            if self.duplicate_window_s > 0:
                until = now_ms + math.ceil(self.duplicate_window_s * 1000)
                u.texts.insert(0, (text, until))
        return Verdict(kept=True)

    def _refusal(
        self, uid: str, u: _User, text: bytes, flags: str, now_ms: int, now: float
    ) -> Verdict | None:
        """Rules 3-6 for an ordinary or highlighted comment (the bucket is the caller's)."""
        until = self.bans.get(uid)
        if until == 0:
            return Verdict(code="banned")
        if until is not None and until > now:
            return Verdict(code="banned", retry_after_ms=math.ceil((until - now) * 1000))
        if self.muted and flags != "h" and uid not in self.highlighted:
            return Verdict(code="muted")
        if self.duplicate_window_s > 0:
            for key, expiry in u.texts:  # newest first
                if key == text:
                    if expiry - now_ms > 0:
                        return Verdict(code="duplicate", retry_after_ms=expiry - now_ms)
                    break
        if self.slow_mode_s > 0 and u.last is not None and u.last + self.slow_mode_s > now:
            wait_ms = math.ceil((u.last + self.slow_mode_s - now) * 1000)
            return Verdict(code="slow_mode", retry_after_ms=wait_ms)
        return None


def _ms(wait_s: float) -> int:
    return HOUR_MS if math.isinf(wait_s) else math.ceil(wait_s * 1000)
