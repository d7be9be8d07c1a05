"""Admission rules at the door: the token bucket (per user, per staff member) and the
per-room ingest ceiling. The door's other rules (resends, bans, mute, duplicates, slow
mode) are in ``rules.door.DoorModel``, the executable spec of the Lua door.

Pure rules, no I/O: every time-dependent method takes ``now`` in seconds (any monotonic
origin, the same for all calls on one object) and randomness comes from an injected
``random.Random``. Every "may I?" answer is a wait in seconds: ``0.0`` means allowed,
anything else is the ``retry_after`` to report (``math.inf`` when waiting cannot help).
Who is staff (moderators, the streamer) is the caller's decision, not these rules'; staff
have a token bucket of their own, more generous (``DoorBuckets``).
"""

from __future__ import annotations

import math
import random

__all__ = [
    "DoorBuckets",
    "IngestCeiling",
    "TokenBucket",
    "admission_probability",
    "take_tokens",
]

_EPS = 1e-9  # float slack: a wait of exactly ``retry_after`` must then succeed


def take_tokens(
    tokens: float, stamp: float, now: float, rate: float, burst: float, n: float = 1.0
) -> tuple[float, float, float]:
    """One token-bucket step on explicit state: returns ``(wait, tokens, stamp)``.

    Refill ``(now - stamp) x rate`` tokens capped at ``burst`` (no refill if ``now`` is not
    after ``stamp``: a clock that steps back never mints tokens), then take ``n`` if there
    are that many (``wait`` = 0.0) or take nothing and return the seconds until there will
    be (``inf`` if ``n > burst`` or ``rate == 0``). This is the whole algorithm: the
    ``TokenBucket`` class and a Redis Lua script (see ``TokenBucket``) both do exactly this.
    """
    if now > stamp:
        tokens = min(burst, tokens + (now - stamp) * rate)
        stamp = now
    if tokens + _EPS >= n:
        return 0.0, max(0.0, tokens - n), stamp
    if n > burst or rate <= 0.0:
        return math.inf, tokens, stamp
    return (n - tokens) / rate, tokens, stamp


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, holding at most ``burst``; starts full.

    The state is two floats, ``(tokens, stamp)``: ``state`` / ``from_state`` move it in and
    out, e.g. to hold it in Redis so a user's limit holds across gateways. A bucket left
    untouched for ``idle_ttl`` seconds is full again, so its stored state may expire then.

    The same step as a Redis Lua script (one hash per user and room, e.g.
    ``{room}:u:{uid}``; take the time from Redis so gateways' clocks do not matter —
    Redis >= 5 replicates scripts by effects, so ``TIME`` is allowed before writes)::

        -- KEYS[1] bucket hash; ARGV: rate, burst, n
        local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
        local s = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
        local tokens = tonumber(s[1]) or burst
        local stamp = tonumber(s[2]) or now
        if now > stamp then
          tokens = math.min(burst, tokens + (now - stamp) * rate); stamp = now
        end
        local wait = 0
        if tokens + 1e-9 >= n then tokens = math.max(0, tokens - n)
        elseif n > burst or rate <= 0 then wait = -1   -- never
        else wait = (n - tokens) / rate end
        redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', stamp)
        redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
        return tostring(wait)  -- Redis would truncate a Lua number to an integer

    For many users at once (a gateway's batch of comments), run it for each key inside one
    pipeline or one script call with several keys of the same room (same hash slot).
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        if not (rate >= 0.0 and burst >= 0.0):
            raise ValueError("rate and burst must be >= 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = self.burst
        self.stamp: float | None = None  # None: never used, so full

    @classmethod
    def from_state(
        cls, rate: float, burst: float, state: tuple[float, float] | None
    ) -> TokenBucket:
        """A bucket with stored state (``None``: a new, full bucket)."""
        bucket = cls(rate, burst)
        if state is not None:
            bucket.tokens = min(bucket.burst, max(0.0, float(state[0])))
            bucket.stamp = float(state[1])
        return bucket

    def state(self, now: float) -> tuple[float, float]:
        """``(tokens, stamp)`` to store; a never-used bucket reports itself full at ``now``."""
        return self.tokens, (now if self.stamp is None else self.stamp)

    @property
    def idle_ttl(self) -> float:
        """Seconds after which an untouched bucket is full (``inf`` if rate is 0)."""
        return math.inf if self.rate <= 0.0 else self.burst / self.rate

    def take(self, now: float, n: float = 1.0) -> float:
        """Take ``n`` tokens: ``0.0`` if allowed, else seconds to wait (nothing taken)."""
        stamp = now if self.stamp is None else self.stamp  # (state(), inlined: per message)
        wait, self.tokens, self.stamp = take_tokens(
            self.tokens, stamp, now, self.rate, self.burst, n
        )
        return wait

    def peek(self, now: float, n: float = 1.0) -> float:
        """What ``take`` would answer, without changing the bucket."""
        tokens, stamp = self.state(now)
        return take_tokens(tokens, stamp, now, self.rate, self.burst, n)[0]


class DoorBuckets:
    """The token buckets of one room's door, as ``scripts.INGEST`` keeps them in Redis
    (its executable spec; tests/integration/test_door.py holds the two together).

    Every user has a bucket (``rate``/s, ``burst``); a staff comment is charged to the
    user's *staff* bucket instead (``staff_rate``/s, ``staff_burst``), a bucket of its
    own: what a user sends as staff never spends their ordinary tokens, nor the other
    way round. ``staff_rate <= 0``: staff are not limited. Buckets start full; a refused
    comment takes nothing. ``take`` answers the wait (0.0: allowed, ``inf``: never),
    which the door reports as ``retry_after_ms`` (``inf`` as one hour).

    In-memory and unbounded: a model for tests and tools, not for serving traffic.
    """

    __slots__ = ("_buckets", "burst", "rate", "staff_burst", "staff_rate")

    def __init__(self, rate: float, burst: float, staff_rate: float, staff_burst: float) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self.staff_rate, self.staff_burst = float(staff_rate), float(staff_burst)
        self._buckets: dict[tuple[str, bool], TokenBucket] = {}

    def take(self, uid: str, staff: bool, now: float) -> float:
        """Charge one comment of ``uid`` (as staff or not) at ``now``: the wait."""
        if staff and self.staff_rate <= 0.0:
            return 0.0
        bucket = self._buckets.get((uid, staff))
        if bucket is None:
            bucket = self._buckets[uid, staff] = (
                TokenBucket(self.staff_rate, self.staff_burst)
                if staff
                else TokenBucket(self.rate, self.burst)
            )
        return bucket.take(now)


def admission_probability(offered_rate: float, ceiling: float) -> float:
    """Share of ordinary comments to admit: 1.0 up to ``ceiling`` comments/s, then
    ``ceiling / offered_rate``, so about ``ceiling`` per second get through. A ceiling
    ``<= 0`` means no ceiling."""
    if ceiling <= 0.0 or offered_rate <= ceiling:
        return 1.0
    return ceiling / offered_rate


class IngestCeiling:
    """Per-room admission sampling: sheds ordinary comments when a room runs far past what
    can be shown, never priority ones (prio >= 1).

    Feed it the room's measured rate (comments/s, shared through Redis) with ``update``
    — the *offered* rate, counting comments before shedding, including shed ones. If only
    the rate after shedding is known, use ``update_from_admitted``: it divides by the
    probability in force to estimate the offered rate. ``ceiling <= 0`` disables it.
    ``shed`` counts the comments ``admit`` refused (for the metric).
    """

    __slots__ = ("ceiling", "probability", "shed")

    def __init__(self, ceiling: float = 2000.0) -> None:
        self.ceiling = float(ceiling)
        self.probability = 1.0
        self.shed = 0

    def update(self, offered_rate: float) -> float:
        """Set and return the admission probability for this offered rate."""
        self.probability = admission_probability(offered_rate, self.ceiling)
        return self.probability

    def update_from_admitted(self, admitted_rate: float) -> float:
        """Set and return the probability from the rate *after* shedding."""
        return self.update(admitted_rate / self.probability)

    def admit(self, prio: int, rng: random.Random) -> bool:
        """Admit one comment? Always for prio >= 1 and below the ceiling (no random draw
        then); otherwise with ``probability``."""
        if prio >= 1 or self.probability >= 1.0:
            return True
        if rng.random() < self.probability:
            return True
        self.shed += 1
        return False
