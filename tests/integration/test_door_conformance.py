"""Conformance: the Lua door (``scripts.INGEST`` on a real Redis) and its executable spec
(``rules.door.DoorModel``) give the same answer to every comment of generated sequences
of comments (users, nonces, texts, staff and highlighted flags), clock steps, bans,
timeouts, mutes, slow mode and granted highlights, under generated limits.

The door reads its clock from the call here (``clock_ms``), so a sequence may span
minutes of door time (nonce TTLs, duplicate windows, timeouts, slow mode, bucket
refills, user-state generations) in milliseconds of test time."""

from __future__ import annotations

import itertools
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from danmaku.metrics import Metrics
from danmaku.rules.door import DoorModel, Verdict
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
    st.sampled_from("--hs"),
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
)
limits_st = st.builds(
    IngestLimits,
    rate_per_s=st.sampled_from([0.5, 2.0, 50.0]),
    burst=st.sampled_from([0.0, 1.0, 3.0, 40.0]),
    duplicate_window_s=st.sampled_from([0.0, 3.0]),
    staff_rate_per_s=st.sampled_from([0.0, 0.5]),
    staff_burst=st.sampled_from([0.0, 1.0, 2.0]),
)


def agrees(outcome: Outcome, verdict: Verdict, ids: list[str | None]) -> bool:
    """Whether the script's answer is the model's; records a kept comment's id."""
    if verdict.kept:
        ids.append(outcome.id)
        return bool(outcome.id) and not outcome.resent and outcome.code is None
    ids.append(None)
    if verdict.resent_of is not None:
        return outcome.resent and outcome.id == ids[verdict.resent_of]
    return (outcome.code, outcome.retry_after_ms) == (verdict.code, verdict.retry_after_ms)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(limits=limits_st, steps=st.lists(step, min_size=1, max_size=40))
def test_the_lua_door_decides_every_comment_as_the_model_does(
    redis_url: str, limits: IngestLimits, steps: list[tuple[Any, ...]]
) -> None:
    both_decide_alike(redis_url, limits, steps)


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


def both_decide_alike(redis_url: str, limits: IngestLimits, steps: list[tuple[Any, ...]]) -> None:
    """Run ``steps`` through a fresh room's Lua door and a ``DoorModel``; assert that
    every comment gets the same answer from both."""
    room = f"spec{next(_rooms)}"
    model = DoorModel(
        rate=limits.rate_per_s,
        burst=limits.burst,
        duplicate_window_s=limits.duplicate_window_s,
        nonce_ttl_s=NONCE_TTL_S,
        staff_rate=limits.staff_rate_per_s,
        staff_burst=limits.staff_burst,
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
        finally:
            store.close()

    trio.run(run)
