"""Conformance: the Lua door (``scripts.INGEST`` on a real Redis) and its executable spec
(``rules.door.DoorModel``) give the same answer to every comment of generated sequences
of comments (users, nonces, texts, staff, highlighted and flagged-for-review flags), clock
steps, bans, timeouts, mutes, slow mode, granted highlights, review modes and the time
first-time chatters are held, under generated limits (the review queue's bound and item
lifetime among them), including which comments are held for review.

The review words are the gateway's half (``ReviewCheck``, before the door): the door
reads only its verdict, the comment's ``"r"`` flag, which the sequences generate.

The door reads its clock from the call here (``clock_ms``), so a sequence may span
minutes of door time (nonce TTLs, duplicate windows, timeouts, slow mode, bucket
refills, user-state generations) in milliseconds of test time."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from danmaku.metrics import Metrics
from danmaku.rules.door import DoorModel, Verdict
from danmaku.rules.review import REVIEW_MODES, review_code
from danmaku.store import Ingest, IngestLimits, Outcome, Store, door_key

NONCE_TTL_S = 60  # short, so that sequences cross it; longer than any slow mode below
START_MS = 1_764_000_000_000
_rooms = itertools.count()

users = st.sampled_from(["ann", "bob", "cy"])
comment = st.tuples(
    users,
    st.one_of(  # mostly a few nonces (resends), sometimes many (the ring of 32 overflows)
        st.sampled_from([f"n{i}" for i in range(4)]),
        st.sampled_from([f"n{i}" for i in range(40)]),
    ),
    st.one_of(  # "gg"/"GG": one normalised text; many texts overflow the ring of 32
        st.sampled_from(["gg", "GG", "lol", "hello there"]),
        st.sampled_from([f"t{i}" for i in range(40)]),
    ),
    st.sampled_from("---hsr"),
)
step = st.one_of(
    st.tuples(
        st.just("tick"),
        st.sampled_from([0, 1, 7, 250, 999, 1000, 2500, 31_000, 59_999, 60_000, 60_001]),
    ),
    st.tuples(st.just("batch"), st.lists(comment, min_size=1, max_size=12)),
    st.tuples(st.just("ban"), users, st.sampled_from([0.0, 1.5, 10.0])),  # 0: permanent
    st.tuples(st.just("unban"), users),
    st.tuples(st.just("mute"), st.booleans()),
    st.tuples(st.just("slow"), st.sampled_from([0.0, 2.0, 5.0])),
    st.tuples(st.just("highlight"), users, st.booleans()),
    st.tuples(st.just("review"), st.sampled_from(REVIEW_MODES)),
    st.tuples(st.just("first_chat"), st.sampled_from([None, 0.0, 1.0, 5.0])),  # None: default
)
# the room's review mode to begin with (a "review" step may change it): mostly on, so
# that holds (and full queues) are common
review_st = st.sampled_from(["off", "suspicious", "suspicious", "all"])
limits_st = st.builds(
    IngestLimits,
    rate_per_s=st.sampled_from([0.5, 2.0, 50.0]),
    burst=st.sampled_from([0.0, 1.0, 3.0, 40.0]),
    duplicate_window_s=st.sampled_from([0.0, 3.0]),
    staff_rate_per_s=st.sampled_from([0.0, 0.5]),
    staff_burst=st.sampled_from([0.0, 1.0, 2.0]),
    first_chat_min=st.sampled_from([0.0, 1.0, 5.0]),
    review_queue_max=st.sampled_from([1, 3, 1000]),
    review_ttl_s=st.sampled_from([30, 120, 3600]),
)


def agrees(outcome: Outcome, verdict: Verdict, ids: list[str | None]) -> bool:
    """Whether the script's answer is the model's; records a stored comment's id."""
    if verdict.kept or verdict.held:
        ids.append(outcome.id)
        stored = bool(outcome.id) and not outcome.resent and outcome.code is None
        return stored and outcome.held == verdict.held
    ids.append(None)
    if verdict.resent_of is not None:
        return outcome.resent and outcome.id == ids[verdict.resent_of]
    return (outcome.code, outcome.retry_after_ms) == (verdict.code, verdict.retry_after_ms)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(limits=limits_st, review=review_st, steps=st.lists(step, min_size=1, max_size=40))
def test_the_lua_door_decides_every_comment_as_the_model_does(
    redis_url: str, limits: IngestLimits, review: str, steps: list[tuple[Any, ...]]
) -> None:
    both_decide_alike(redis_url, limits, [("review", review), *steps])


def test_the_rings_hold_the_last_32_nonces_and_texts(redis_url: str) -> None:
    """Past the end of the rings (what random sequences rarely reach): 40 comments, then
    each nonce resent and each text repeated, oldest first and newest first."""
    many = [("ann", f"n{i}", f"t{i}", "-") for i in range(40)]
    again = [("ann", f"n{i}", f"t{i}", "-") for i in range(40)]
    texts = [("ann", f"m{i}", f"t{i}", "-") for i in range(40)]
    limits = IngestLimits(1000.0, 1000.0, 30.0, 0.0, 0.0)
    both_decide_alike(
        redis_url,
        limits,
        [("batch", many), ("tick", 5), ("batch", again), ("batch", texts[::-1])],
    )


# The hold step by hand (each line's answer in its comment): first-time chatters, a
# granted highlight, a flagged text, a resend of a held comment and a full queue.
REVIEW_LIMITS = IngestLimits(50.0, 40.0, 0.0, 0.0, 0.0, first_chat_min=1.0, review_queue_max=3)
REVIEW_STEPS: list[tuple[Any, ...]] = [
    ("review", "suspicious"),
    ("batch", [("ann", "n1", "hello", "-")]),  # ann's first comment: held (1 queued)
    ("tick", 1000),
    ("batch", [("ann", "n1", "hello", "-")]),  # its resend: the same held id
    ("tick", 61_000),
    ("batch", [("ann", "n2", "again", "-")]),  # a minute on: shown
    ("highlight", "bob", True),
    ("batch", [("bob", "n1", "hi", "-")]),  # granted the highlighted tier: shown
    ("batch", [("ann", "n3", "see www.example.com", "r")]),  # flagged: held (2 queued)
    ("first_chat", 0.0),  # first-time chatters no longer held
    ("batch", [("cy", f"n{i}", f"t{i}", "r") for i in range(3)]),  # held, then full twice
]


def test_the_hold_step_by_hand(redis_url: str) -> None:
    both_decide_alike(redis_url, REVIEW_LIMITS, REVIEW_STEPS)


def test_a_staff_user_forgotten_is_noted_at_their_first_ordinary_comment(
    redis_url: str,
) -> None:
    """The door notes first comments only for users it has no state for (or while
    first-time chatters are held): a user seen only as staff, then forgotten with their
    generation, is noted at their next ordinary comment, even with review off."""
    steps: list[tuple[Any, ...]] = [
        ("batch", [("dan", "n1", "x", "s")]),
        ("tick", 70_000),  # past the generation's keep (61 s): twice, forgotten
        ("batch", [("eve", "n1", "x", "-")]),
        ("tick", 70_000),
        ("batch", [("dan", "n2", "y", "-")]),  # noted now
        ("tick", 70_000),
        ("review", "suspicious"),
        ("batch", [("dan", "n3", "z", "-")]),  # noted 70 s ago: shown
    ]
    both_decide_alike(redis_url, REVIEW_LIMITS, steps)
    with pytest.raises(AssertionError):  # a model that never forgets holds it
        both_decide_alike(redis_url, REVIEW_LIMITS, steps, _NeverForgets)


class _NeverForgets(DoorModel):
    def admit(self, comments: list[tuple[str, bytes, bytes, str]], now_ms: int) -> list[Verdict]:
        self._gen = now_ms  # no new generation: every user stays known
        return super().admit(comments, now_ms)


class _IgnoresGrantedHighlights(DoorModel):
    def _hold(self, uid: str, flags: str, now_ms: int) -> str | None:
        granted, self.highlighted = self.highlighted, set()
        try:
            return super()._hold(uid, flags, now_ms)
        finally:
            self.highlighted = granted


class _ForgetsFirstComments(DoorModel):
    def _hold(self, uid: str, flags: str, now_ms: int) -> str | None:
        self.first_seen.pop(uid, None)
        return super()._hold(uid, flags, now_ms)


class _UnboundedQueue(DoorModel):
    def admit(self, comments: list[tuple[str, bytes, bytes, str]], now_ms: int) -> list[Verdict]:
        self.review_queue_max = 10**9
        return super().admit(comments, now_ms)


class _HoldsStaff(DoorModel):
    def _hold(self, uid: str, flags: str, now_ms: int) -> str | None:
        return "all" if flags == "s" and self.review != "off" else super()._hold(uid, flags, now_ms)


@pytest.mark.parametrize(
    "wrong", [_IgnoresGrantedHighlights, _ForgetsFirstComments, _UnboundedQueue, _HoldsStaff]
)
def test_a_wrong_hold_in_the_model_is_caught(redis_url: str, wrong: type[DoorModel]) -> None:
    """The suite can fail: a model with a deliberately wrong hold step disagrees with
    the script on the hand-made sequence (a staff comment added for ``_HoldsStaff``)."""
    steps = [*REVIEW_STEPS, ("batch", [("sam", "n1", "hi", "s")])]
    both_decide_alike(redis_url, REVIEW_LIMITS, steps)  # the right model agrees
    with pytest.raises(AssertionError):
        both_decide_alike(redis_url, REVIEW_LIMITS, steps, wrong)


def both_decide_alike(
    redis_url: str,
    limits: IngestLimits,
    steps: list[tuple[Any, ...]],
    model_class: type[DoorModel] = DoorModel,
) -> None:
    """Run ``steps`` through a fresh room's Lua door and a ``model_class`` (a
    ``DoorModel``); assert that every comment gets the same answer from both."""
    room = f"spec{next(_rooms)}"
    model = model_class(
        rate=limits.rate_per_s,
        burst=limits.burst,
        duplicate_window_s=limits.duplicate_window_s,
        nonce_ttl_s=NONCE_TTL_S,
        staff_rate=limits.staff_rate_per_s,
        staff_burst=limits.staff_burst,
        first_chat_min=limits.first_chat_min,
        review_queue_max=limits.review_queue_max,
        review_ttl_s=limits.review_ttl_s,
    )

    async def run() -> None:
        store = Store(redis_url, Metrics(process=False), nonce_ttl_s=NONCE_TTL_S)
        now_ms = START_MS
        ids: list[str | None] = []  # per comment index: the id the script gave it
        try:
            for kind, *args in steps:
                if kind == "tick":
                    now_ms += args[0]
                elif kind == "batch":
                    batch = [
                        Ingest(
                            uid,
                            nonce,
                            b"{}",
                            door_key(text.lower()),
                            exempt=flags == "s",
                            highlight=flags == "h",
                            suspect=flags == "r",
                        )
                        for uid, nonce, text, flags in args[0]
                    ]
                    got = await store.intake.append_comments({room: batch}, limits, clock_ms=now_ms)
                    want = model.admit(
                        [
                            (c.uid, door_key(c.nonce), c.text_hash, f)
                            for c, (*_, f) in zip(batch, args[0], strict=True)
                        ],
                        now_ms,
                    )
                    for i, (outcome, verdict) in enumerate(zip(got[room], want, strict=True)):
                        assert agrees(outcome, verdict, ids), (i, args[0][i], outcome, verdict)
                elif kind == "ban":
                    uid, duration = args
                    until = 0.0 if duration == 0 else now_ms / 1000 + duration
                    await store.moderation.ban(room, uid, until, close=False, by="spec")
                    model.bans[uid] = until
                elif kind == "unban":
                    await store.moderation.unban(room, args[0], by="spec")
                    model.bans.pop(args[0], None)
                elif kind == "mute":
                    await store.rooms.set_room_settings(room, {"mute": 1.0 if args[0] else None})
                    model.muted = args[0]
                elif kind == "slow":
                    await store.rooms.set_room_settings(room, {"slow_mode_s": args[0] or None})
                    model.slow_mode_s = args[0]
                elif kind == "highlight":
                    uid, granted = args
                    await store.moderation.set_highlight(room, uid, granted, by="spec")
                    (model.highlighted.add if granted else model.highlighted.discard)(uid)
                elif kind == "review":
                    await store.rooms.set_room_settings(room, {"review": review_code(args[0])})
                    model.review = args[0]
                elif kind == "first_chat":
                    await store.rooms.set_room_settings(room, {"first_chat_min": args[0]})
                    model.first_chat_min = args[0]
        finally:
            store.close()

    trio.run(run)
