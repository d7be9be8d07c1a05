"""The pure rules of issue 24's last pieces: a room's tier table and its fallback, the
check of webhook URLs, which events a registered endpoint takes and how an outbox lets
the cursors pass events not meant for it, the automatic recorder's decision (no
flapping, never touching a broadcast it did not start), and a broadcast's video delay in
its exports."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from danmaku.rules import autorecord, replay_export, tiers
from danmaku.rules import webhooks as rules
from danmaku.rules.autorecord import RoomView
from danmaku.rules.webhooks import Endpoint, Outbox

GLOBAL = tiers.DEFAULT_TIERS


# ---- tier tables -----------------------------------------------------------------------------
def test_a_room_table_falls_back_to_the_global_one_when_absent_or_broken() -> None:
    assert tiers.room_table(None, GLOBAL) is GLOBAL
    assert tiers.room_table([{"name": "x", "min": 1, "color": "nope"}], GLOBAL) is GLOBAL
    assert tiers.room_table("not a list", GLOBAL) is GLOBAL
    own = tiers.room_table(
        [
            {"name": "b", "min": 10, "color": "#000000", "pin_s": 5},
            {"name": "a", "min": 0, "color": "#ffffff"},
        ],
        GLOBAL,
    )
    assert [(t.name, t.level) for t in own] == [("a", 0), ("b", 1)]
    assert tiers.tier_for(9.99, own).name == "a" and tiers.tier_for(10, own).name == "b"


rows = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.from_regex(r"[a-z]{1,8}", fullmatch=True),
            "min": st.floats(0, 1e6, allow_nan=False),
            "color": st.from_regex(r"#[0-9a-f]{6}", fullmatch=True),
            "pin_s": st.integers(0, tiers.MAX_PIN_S),
        }
    ),
    min_size=1,
    max_size=32,
    unique_by=(lambda r: r["name"], lambda r: r["min"]),
)


@given(rows, st.lists(st.floats(0, 2e6, allow_nan=False), min_size=2, max_size=20))
def test_any_valid_room_table_orders_its_tiers_by_amount(
    given_rows: list[dict[str, Any]], amounts: list[float]
) -> None:
    table = tiers.room_table(given_rows, GLOBAL)
    assert table is not GLOBAL
    assert [t.min for t in table] == sorted(t.min for t in table)
    assert [t.level for t in table] == list(range(len(table)))
    levels = [tiers.tier_for(a, table).level for a in sorted(amounts)]
    assert levels == sorted(levels)  # paying more never gets a lower tier


# ---- webhook URLs and endpoints --------------------------------------------------------------
def test_webhook_urls_are_absolute_http_without_credentials() -> None:
    for ok in ("http://127.0.0.1:8000/hook", "https://example.com/a?b=c", "https://[::1]/h"):
        assert rules.url_problem(ok) is None, ok
    for bad in (
        "ftp://example.com/",
        "example.com/hook",
        "/hook",
        "http://",
        "https://u:p@example.com/",
        "https://u@example.com/",
        "http://example.com/a b",
        "http://example.com/\x00",
        "http://example.com:99999/",
        "javascript:alert(1)",
        "https://example.com/" + "a" * 2048,
    ):
        assert rules.url_problem(bad), bad


@given(st.text(max_size=100))
def test_the_url_check_never_raises(url: str) -> None:
    problem = rules.url_problem(url)
    assert problem is None or isinstance(problem, str)


def event(kind: str, ms: int) -> dict[str, Any]:
    return {"id": f"r:in:{ms}-0", "type": kind, "room": "r", "ts": ms, "data": {}}


def test_an_endpoint_takes_its_event_types_from_its_creation_on() -> None:
    ep = Endpoint("wh_1", "http://h/", "s" * 16, frozenset({"user.banned"}), created_ms=1000)
    assert ep.wants(event("user.banned", 1000))
    assert not ep.wants(event("user.banned", 999))  # recorded before it was registered
    assert not ep.wants(event("comment.accepted", 2000))
    every = Endpoint("env-0", "http://h/", "s" * 16)
    assert every.wants(event("comment.accepted", 1)) and every.wants(event("x", 0))


@given(st.lists(st.booleans(), max_size=50), st.integers(1, 5))
def test_events_passed_over_never_hold_back_the_cursors(wanted: list[bool], delivered: int) -> None:
    """``done`` (what the reader may commit) never passes an undelivered wanted event, and
    reaches the last event once every wanted one is delivered."""
    box = Outbox.new(100)
    for n, want in enumerate(wanted, start=1):
        if want:
            box.push(n, {"n": n})
        else:
            box.pass_over(n)
    pending = [n for n, _ in box.queue]
    assert box.done == (pending[0] - 1 if pending else len(wanted))
    while box.queue:
        batch = box.batch(delivered)
        box.finish(batch[-1][0])
    assert box.done == len(wanted)


# ---- the automatic recorder ------------------------------------------------------------------
NOW = 10_000_000
IDLE = 300_000


def view(
    active_ago: int, auto: bool = True, on_air: str | None = None, ours: str | None = None
) -> RoomView:
    return RoomView("r", NOW - active_ago, auto, on_air, ours)


def test_the_recorder_starts_when_live_and_ends_its_own_when_idle_or_switched_off() -> None:
    assert autorecord.decide(view(0), NOW, IDLE) == "start"
    assert autorecord.decide(view(0, auto=False), NOW, IDLE) is None
    assert autorecord.decide(view(60_000), NOW, IDLE) is None  # not live now: no start
    assert autorecord.decide(view(0, on_air="x"), NOW, IDLE) is None  # someone else's
    assert autorecord.decide(view(IDLE, on_air="x", ours="x"), NOW, IDLE) == "end"
    assert autorecord.decide(view(0, auto=False, on_air="x", ours="x"), NOW, IDLE) == "end"
    assert autorecord.decide(view(0, on_air="y", ours="x"), NOW, IDLE) == "forget"
    assert autorecord.decide(view(0, on_air=None, ours="x"), NOW, IDLE) == "forget"


@given(
    st.integers(0, 10 * IDLE),
    st.booleans(),
    st.sampled_from([None, "a", "b"]),
    st.sampled_from([None, "a"]),
)
def test_the_recorder_never_touches_what_it_did_not_start_and_never_flaps(
    ago: int, auto: bool, on_air: str | None, ours: str | None
) -> None:
    action = autorecord.decide(view(ago, auto, on_air, ours), NOW, IDLE)
    if action == "end":
        assert ours is not None and on_air == ours
    if action == "start":
        assert on_air is None and ours is None and auto
        # what it starts is not ended by the same view of the room
        assert autorecord.decide(view(ago, auto, "new", "new"), NOW, IDLE) is None


# ---- a broadcast's video delay in its exports ------------------------------------------------
def comment(i: int, offset: int) -> dict[str, Any]:
    return {"id": f"{i}-0", "uid": "u", "nick": "n", "text": f"c{i}", "color": "#ffffff"} | {
        "mode": "scroll",
        "prio": 0,
        "ts": 0,
        "offset_ms": offset,
    }


@given(st.lists(st.integers(0, 10_000_000), max_size=30), st.integers(0, 120_000))
def test_a_delay_moves_every_comment_earlier_never_before_zero_in_order(
    offsets: list[int], delay: int
) -> None:
    comments = [comment(i, o) for i, o in enumerate(sorted(offsets))]
    meta = {"id": "b1", "title": "t", "start": 1, "end": 2, "delay_ms": delay}
    doc = orjson.loads(replay_export.whole(replay_export.encoder("json", "r", meta), comments))
    got = [c["offset_ms"] for c in doc["comments"]]
    assert got == [max(0, o - delay) for o in sorted(offsets)]
    assert got == sorted(got) and doc["count"] == len(comments)


def test_no_delay_is_the_plain_encoder_and_bad_delays_count_as_none() -> None:
    meta: dict[str, Any] = {"id": "b1", "title": "t", "start": 1, "end": 2}
    assert isinstance(replay_export.encoder("xml", "r", meta), replay_export.XmlEncoder)
    for bad in (True, "100", -5, None):
        assert replay_export.delay_of(meta | {"delay_ms": bad}) == 0
    xml = replay_export.whole(
        replay_export.encoder("xml", "r", meta | {"delay_ms": 1500}), [comment(1, 4000)]
    ).decode()
    assert '<d p="2.500,' in xml


# ---- settings ---------------------------------------------------------------------------------
def test_the_new_settings_are_checked_at_start_up() -> None:
    import pytest

    from danmaku.config import Settings

    for bad in (
        {"auto_record": 2},
        {"auto_record_idle_s": 0},
        {"auto_record_idle_s": 3001},
        {"auto_record_poll_ms": 0},
        {"replay_offset_s": -1.0},
        {"replay_offset_s": 121.0},
        {"webhook_endpoints_max": -1},
    ):
        with pytest.raises(ValueError):
            Settings(**bad)  # type: ignore[arg-type]
    Settings(auto_record=1, auto_record_idle_s=3000, replay_offset_s=120.0, webhook_endpoints_max=0)
