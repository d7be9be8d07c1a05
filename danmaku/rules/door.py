"""The door of one room, as an executable spec: what ``scripts.INGEST`` decides, in Python.

``DoorModel`` keeps, in memory, everything the Lua door keeps in Redis for one room and
answers each comment the way the script does: resent, refused (with its code and
``retry_after_ms``), held for review or kept. It runs nothing in production; it is the
specification the script is held to: tests/integration/test_door_conformance.py runs
generated sequences of comments, bans, mutes, slow mode, review modes and clock steps
through both and asserts identical answers. Change a rule here first, then in the script.

The rules, per comment, in order (the first that applies decides):

1. **Resend:** the user's (nonce) is among their last ``NONCE_RING`` kept or held
   comments and was stored less than the nonce TTL ago -> the same id again (a held
   one's held id), nothing charged.
2. **Staff** (``flags == "s"``): only their own bucket (``DoorBuckets``: staff rate and
   burst; rate 0 = not limited) -> ``rate_limited``. Staff skip every rule below.
3. **Banned:** a ban in force (``until_s`` 0 = permanent, else epoch seconds) ->
   ``banned`` (0 ms when permanent, else the ms left, rounded up).
4. **Muted room:** unless the comment is highlighted (``"h"``) or the user was granted
   the highlighted tier in the room -> ``muted``.
5. **Duplicate:** the same normalised text (its 8-byte key) among the user's last
   ``NONCE_RING`` stored ordinary comments, within the duplicate window -> ``duplicate``
   (the ms left, at least 1).
6. **Slow mode** (a room setting, replacing the bucket): less than ``slow_mode_s`` since
   the user's last stored ordinary comment -> ``slow_mode``.
7. Otherwise the user's **token bucket** (``take_tokens``) -> ``rate_limited``.
8. **Held for review** (the script's step 4): ``rules.review.hold_reason`` over the
   room's ``review`` mode, the sender (staff, highlighted by token or granted), the
   gateway's flag (``"r"``: a review word or a link, ``ReviewCheck``), and when the
   user's first comment in the room was stored (``first_seen``) against the room's
   ``first_chat_min`` (or the door's default). A comment to hold while the review queue
   holds ``review_queue_max`` items -> ``review_full`` (5000 ms); else it is held (a
   held id, not the stream). The queue is counted once per batch, at the first comment
   to hold, after the items older than ``review_ttl_s`` (at most 500 a batch) leave it.

A stored (kept or held) comment records its nonce (staff too) and, unless staff, its
text key, the bucket's new state and the time (for slow mode). A refused comment changes
nothing. The rings hold the last ``NONCE_RING`` entries *between* batches: within a batch,
what it stored is remembered too (a batch may hold more than a ring of one user's comments).

First comments: the door notes (``first_seen``) when a user's first comment was stored,
but it looks only for users it has no state for, and for every non-staff sender while
first-time chatters are held (review ``suspicious`` with ``first_chat_min`` > 0): a user
whose earlier comments were all staff is noted at their first ordinary comment only if
the door has forgotten them or first-time chatters are held then.

Users' states live in generations, as in the script: at a batch at least ``keep`` after
the current generation began (the longest of the bucket's refill, slow mode, the
duplicate window and the nonce TTL, plus 1 s, in ms rounded up), the current generation
becomes the old one and the old one is forgotten; a user stored in neither starts
afresh (full bucket, empty rings, no slow-mode time).

Time is in integer milliseconds, as the script reads Redis ``TIME``; seconds are
``ms / 1000`` on both sides, so the float arithmetic (and the ``retry_after_ms``
rounding) is the same. Not modelled: what Redis expires by its own wall clock (the
idle users' hashes, the first-comment records after ``first_chat_keep_s``, an idle
review queue, staff buckets) and moderators taking items off the review queue.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from danmaku.rules.ratelimit import DoorBuckets, take_tokens
from danmaku.rules.review import REVIEW_MODES, hold_reason

__all__ = ["NONCE_RING", "REVIEW_RETRY_MS", "DoorModel", "Verdict"]

NONCE_RING = 32  # scripts.NONCE_RING: the nonces and texts a user's state holds
HOUR_MS = 3_600_000  # what a wait that cannot end is reported as
REVIEW_RETRY_MS = 5000  # the script's REVIEW_RETRY_MS: a full review queue's retry
EXPIRE_BATCH = 500  # the held items the script lets expire per batch at most


@dataclass(frozen=True, slots=True)
class Verdict:
    """The door's answer to one comment: ``kept`` (a new id), ``held`` (a held id, for
    review), ``resent`` (the id of the comment index ``resent_of``) or refused
    (``code``, ``retry_after_ms``)."""

    kept: bool = False
    resent_of: int | None = None
    code: str | None = None
    retry_after_ms: int = 0
    held: bool = False


@dataclass(slots=True)
class _User:
    tokens: float
    stamp: float
    last: float | None = None  # seconds of the last stored ordinary comment
    nonces: list[tuple[bytes, int, int]] = field(default_factory=list)  # key, ms, index
    texts: list[tuple[bytes, int]] = field(default_factory=list)  # key, expiry ms


class DoorModel:
    """One room's door, in memory. Not thread-safe, unbounded: a model for tests.

    ``admit`` takes one batch (what the script gets in one call: the same ``now_ms`` for
    every comment) and returns a ``Verdict`` per comment, in order. Comments are
    numbered from 0 across the model's life, so a resend names the comment it repeats.
    The room's state is public and set between batches as moderators set it: ``bans``,
    ``highlighted``, ``muted``, ``slow_mode_s``, ``review`` (a ``REVIEW_MODES`` value),
    ``first_chat_min`` (``None``: the door's default).
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
        first_chat_min: float,
        review_queue_max: int,
        review_ttl_s: float,
    ) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self.duplicate_window_s = float(duplicate_window_s)
        self.nonce_ttl_s = float(nonce_ttl_s)
        self._staff = DoorBuckets(rate, burst, staff_rate, staff_burst)
        self.default_first_chat_min = float(first_chat_min)
        self.review_queue_max = review_queue_max
        self.review_ttl_ms = float(review_ttl_s) * 1000
        self.bans: dict[str, float] = {}  # uid -> until_s (0 = permanent)
        self.highlighted: set[str] = set()  # granted by moderators
        self.muted = False
        self.slow_mode_s = 0.0
        self.review = "off"
        self.first_chat_min: float | None = None
        self.first_seen: dict[str, int] = {}  # uid -> ms their first comment was stored
        self._queue: list[int] = []  # ms each waiting held comment was held, ascending
        self._queued: int | None = None  # this batch's count of the queue, once counted
        self._users: dict[str, _User] = {}
        self._gen = 0  # ms the current generation of user states began
        self._current: set[str] = set()  # users stored in this generation
        self._old: set[str] = set()  # users stored in the last one
        self._looked: set[str] = set()  # this batch: users whose first comment was read
        self._next = 0  # the index of the next comment

    def admit(self, comments: list[tuple[str, bytes, bytes, str]], now_ms: int) -> list[Verdict]:
        """Decide a batch: each comment is ``(uid, nonce_key, text_key, flags)`` with
        flags ``"s"`` (staff), ``"h"`` (highlighted), ``"r"`` (ordinary, flagged for
        review by the gateway) or ``"-"``."""
        if self.review not in REVIEW_MODES:
            raise ValueError(f"review must be one of {REVIEW_MODES}, not {self.review!r}")
        now = now_ms / 1000
        keep = max(
            self.burst / max(self.rate, 1e-6),
            self.slow_mode_s,
            self.duplicate_window_s,
            self.nonce_ttl_s,
        )
        if now_ms - self._gen >= math.ceil(keep * 1000) + 1000:  # a new generation
            self._old, self._current, self._gen = self._current, set(), now_ms
        known = self._current | self._old  # whom the script has a state for
        hold_first = self.review == "suspicious" and self._first_chat_min() > 0
        self._queued = None
        self._looked = set()
        for uid, *_ in comments:
            if uid not in known:  # never stored, or forgotten with its generation
                self._users.pop(uid, None)
        out = []
        for uid, nonce, text, flags in comments:
            if flags != "s" and (hold_first or uid not in known):
                self._looked.add(uid)
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
        held = self._hold(uid, flags, now_ms) is not None
        if held:
            if self._queued is None:  # once per batch: expired items go, then count
                expired = bisect.bisect_right(self._queue, now_ms - self.review_ttl_ms)
                del self._queue[: min(expired, EXPIRE_BATCH)]
                self._queued = len(self._queue)
            if self._queued >= self.review_queue_max:
                return Verdict(code="review_full", retry_after_ms=REVIEW_RETRY_MS)
            self._queued += 1
            bisect.insort(self._queue, now_ms)  # by time, as the script's zset
        # a staff comment's state is stored too (its nonce), so the user is known
        self._current.add(uid)
        if uid in self._looked and uid not in self.first_seen:
            self.first_seen[uid] = now_ms
        u.nonces.insert(0, (nonce, now_ms, self._next))
        if flags != "s":
            u.tokens, u.stamp, u.last = tokens, stamp, now
            if self.duplicate_window_s > 0:
                until = now_ms + math.ceil(self.duplicate_window_s * 1000)
                u.texts.insert(0, (text, until))
        return Verdict(held=True) if held else Verdict(kept=True)

    def _hold(self, uid: str, flags: str, now_ms: int) -> str | None:
        """Rule 8: why this admitted comment is held (``None``: it is shown)."""
        return hold_reason(
            self.review,
            staff=flags == "s",
            highlighted=flags == "h" or uid in self.highlighted,
            flagged=flags == "r",
            first_ms=self.first_seen.get(uid),
            now_ms=now_ms,
            first_chat_min=self._first_chat_min(),
        )

    def _first_chat_min(self) -> float:
        return self.default_first_chat_min if self.first_chat_min is None else self.first_chat_min

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
