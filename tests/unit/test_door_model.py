"""The door's executable spec (``rules.door.DoorModel``): pure, the clock passed in."""

from __future__ import annotations

from danmaku.rules.door import NONCE_RING, DoorModel, Verdict
from danmaku.store.records import door_key as k


def model(**kw: float) -> DoorModel:
    args = dict(
        rate=1.0,
        burst=2.0,
        duplicate_window_s=3.0,
        nonce_ttl_s=60,
        staff_rate=0.5,
        staff_burst=1,
        first_chat_min=0.0,
        review_queue_max=2,
        review_ttl_s=60,
    )
    args.update(kw)
    return DoorModel(**args)  # type: ignore[arg-type]


def test_a_sequence_known_by_hand() -> None:
    """The spec checked against intent, not only against the script (the conformance
    suite, tests/integration/test_door_conformance.py, holds the script to it)."""
    m = model()
    t0 = 1_000_000  # ms; steps of halves of seconds keep the float arithmetic exact
    first = m.admit([("a", k("n1"), k("hi"), "-"), ("a", k("n2"), k("yo"), "-")], t0)
    assert [v.kept for v in first] == [True, True]
    # a resend of n1, a third comment (bucket empty: half a token back, 0.5 s to wait),
    # a staff comment with the same nonce (another user: not a resend)
    again = m.admit(
        [("a", k("n1"), k("hi"), "-"), ("a", k("n3"), k("x"), "-"), ("s", k("n1"), k("hi"), "s")],
        t0 + 500,
    )
    assert again[0] == Verdict(resent_of=0)
    assert again[1] == Verdict(code="rate_limited", retry_after_ms=500)
    assert again[2].kept
    # 1.5 s in: tokens are back, but "hi" is still a duplicate for 1.5 s
    later = m.admit([("a", k("n4"), k("hi"), "-"), ("a", k("n5"), k("new"), "-")], t0 + 1500)
    assert later == [Verdict(code="duplicate", retry_after_ms=1500), Verdict(kept=True)]
    # the staff member's bucket (burst 1, 0.5/s) is empty: 1 s after their comment, 1 s
    assert m.admit([("s", k("n9"), k("q"), "s")], t0 + 1500) == [
        Verdict(code="rate_limited", retry_after_ms=1000)
    ]
    m.bans["a"] = (t0 + 5000) / 1000
    assert m.admit([("a", k("n6"), k("z"), "-")], t0 + 2000) == [
        Verdict(code="banned", retry_after_ms=3000)
    ]
    m.bans["a"] = 0.0  # permanent
    assert m.admit([("a", k("n6"), k("z"), "-")], t0 + 2000) == [Verdict(code="banned")]
    m.bans = {}
    m.muted = True
    assert m.admit([("a", k("n6"), k("z"), "-"), ("a", k("n7"), k("z"), "h")], t0 + 2000) == [
        Verdict(code="muted"),
        Verdict(kept=True),
    ]
    m.muted, m.slow_mode_s = False, 10.0  # last kept ordinary comment: 2 s in
    assert m.admit([("a", k("n8"), k("w"), "-")], t0 + 2500) == [
        Verdict(code="slow_mode", retry_after_ms=9500)
    ]
    # after the nonce TTL an old nonce is a new comment
    m.slow_mode_s = 0.0
    assert m.admit([("a", k("n1"), k("fresh"), "-")], t0 + 61_000) == [Verdict(kept=True)]


def test_a_refused_duplicate_does_not_restart_its_window() -> None:
    m = model(rate=100.0, burst=100.0, duplicate_window_s=30.0)
    t0 = 1_000_000
    assert m.admit([("u", k("a"), k("666"), "-")], t0) == [Verdict(kept=True)]
    assert m.admit([("u", k("b"), k("666"), "-")], t0 + 10_000)[0].retry_after_ms == 20_000
    assert m.admit([("v", k("b"), k("666"), "-")], t0 + 10_000) == [Verdict(kept=True)]
    assert m.admit([("u", k("c"), k("666"), "-")], t0 + 29_000)[0].retry_after_ms == 1_000
    assert m.admit([("u", k("d"), k("666"), "-")], t0 + 30_000) == [Verdict(kept=True)]


def test_staff_skip_bans_mute_duplicates_and_slow_mode() -> None:
    m = model(staff_rate=0.0, staff_burst=0)  # staff not limited at all
    m.bans["s"], m.muted, m.slow_mode_s = 0.0, True, 60.0
    same = [("s", k(f"n{i}"), k("same"), "s") for i in range(5)]
    assert all(v.kept for v in m.admit(same, 1_000_000))


def test_the_rings_are_bounded_between_batches() -> None:
    m = model(rate=1000.0, burst=1000.0)
    t0 = 1_000_000
    m.admit([("u", k(f"n{i}"), k(f"t{i}"), "-") for i in range(NONCE_RING + 8)], t0)
    # the oldest 8 have left the ring: sent again, they are new comments
    assert m.admit([("u", k("n0"), k("x"), "-")], t0 + 1) == [Verdict(kept=True)]
    assert m.admit([("u", k("n39"), k("y"), "-")], t0 + 2) == [Verdict(resent_of=NONCE_RING + 7)]


def test_the_hold_step_known_by_hand() -> None:
    """Rule 8 against intent: first-time chatters, flagged texts, staff and highlighted
    senders, a resend of a held comment, the queue's bound and its items' lifetime."""
    m = model(rate=100.0, burst=100.0, first_chat_min=1.0, review_queue_max=2, review_ttl_s=60)
    t0 = 1_000_000
    # review off: shown, but the first comment is noted
    assert m.admit([("old", k("n1"), k("a"), "-")], t0) == [Verdict(kept=True)]
    assert m.first_seen == {"old": t0}
    m.review = "suspicious"
    m.highlighted.add("vip")
    got = m.admit(
        [
            ("old", k("n2"), k("b"), "-"),  # noted just now: a first-time chatter, held
            ("new", k("n1"), k("a"), "h"),  # highlighted by token: shown
            ("vip", k("n1"), k("a"), "-"),  # granted the highlighted tier: shown
            ("mod", k("n1"), k("a"), "s"),  # staff: shown, not noted
            ("new", k("n2"), k("b"), "-"),  # noted by their first comment above: held
            ("new", k("n3"), k("c"), "-"),  # the queue (2) is full
        ],
        t0 + 1000,
    )
    assert got == [
        Verdict(held=True),
        Verdict(kept=True),
        Verdict(kept=True),
        Verdict(kept=True),
        Verdict(held=True),
        Verdict(code="review_full", retry_after_ms=5000),
    ]
    assert "mod" not in m.first_seen
    # a minute after their first comments: shown, unless flagged ("r")
    got = m.admit(
        [
            ("old", k("n2"), k("b"), "-"),
            ("old", k("n3"), k("c"), "-"),
            ("old", k("n4"), k("d"), "r"),
        ],
        t0 + 60_000,
    )
    assert got[:2] == [Verdict(resent_of=1), Verdict(kept=True)]  # n2: comment 1
    assert got[2] == Verdict(code="review_full", retry_after_ms=5000)
    # 60 s after they were held, the two held items leave the queue: room again
    m.review = "all"
    assert m.admit([("old", k("n5"), k("e"), "-")], t0 + 61_000) == [Verdict(held=True)]
    m.first_chat_min = 0.0  # the room's own setting: first-time chatters not held
    m.review = "suspicious"
    assert m.admit([("nu", k("n1"), k("a"), "-")], t0 + 61_000) == [Verdict(kept=True)]
