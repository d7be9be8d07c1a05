"""The pure rules of the platform integration: paid tiers, the platform fields of a
stored item, paid items last to go from a priority backlog, the smoother's pace under
one item per tick, webhook signatures, backoff, events from audit records, outboxes."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from danmaku import auth
from danmaku.config import Settings
from danmaku.rules import tiers
from danmaku.rules import webhooks as wh
from danmaku.rules.items import Item
from danmaku.rules.merge import RoomMerger, parse_item
from danmaku.rules.sampling import FrameSampler
from danmaku.rules.smoothing import Smoother

SECRET = "s" * 40


# ---- tiers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "name", "pin_s"),
    [
        *[(0.5, "blue", 0), (1, "blue", 0), (4.99, "lightblue", 0), (5, "green", 120)],
        *[(19.99, "yellow", 300), (50, "magenta", 1800), (100, "red", 3600), (1e6, "red", 3600)],
    ],
)
def test_super_chat_table(amount: float, name: str, pin_s: int) -> None:
    tier = tiers.tier_for(amount)
    assert (tier.name, tier.pin_s) == (name, pin_s)


@given(st.lists(st.floats(min_value=0, max_value=1e9), min_size=2, max_size=50))
def test_a_bigger_amount_never_gets_a_lower_tier(amounts: list[float]) -> None:
    levels = [tiers.tier_for(a).level for a in sorted(amounts)]
    assert levels == sorted(levels)


def test_a_custom_table_from_json_or_a_file(tmp_path: Path) -> None:
    rows = [{"name": "big", "min": 100, "color": "#ff0000", "pin_s": 60}]
    rows.append({"name": "small", "min": 0, "color": "#00ff00", "pin_s": 0})
    table = tiers.load(orjson.dumps(rows).decode())
    assert [t.name for t in table] == ["small", "big"] and [t.level for t in table] == [0, 1]
    path = tmp_path / "tiers.json"
    path.write_bytes(orjson.dumps(rows))
    assert tiers.load(f"@{path}") == table
    assert tiers.tier_for(150, table).wire() == {
        "name": "big",
        "level": 1,
        "color": "#ff0000",
        "pin_s": 60,
    }


@pytest.mark.parametrize(
    "bad",
    [
        "[]",
        "not json",
        '[{"name": "x", "min": -1, "color": "#ffffff"}]',
        '[{"name": "x", "min": 1, "color": "red"}]',
        '[{"name": "x", "min": 1, "color": "#ffffff", "pin_s": 1.5}]',
        orjson.dumps([{"name": n, "min": 1, "color": "#ffffff"} for n in "ab"]).decode(),
        "@/no/such/file",
    ],
)
def test_a_bad_table_is_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ValueError, match="DANMAKU_PAID_TIERS"):
        Settings(paid_tiers=bad)


def test_api_keys_and_webhook_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DANMAKU_API_KEYS"):
        Settings(api_keys="short")
    keys = tmp_path / "keys"
    keys.write_text("# the platform\nkey-aaaaaaaaaaaaaaaa\n\nkey-bbbbbbbbbbbbbbbb\n")
    assert tiers.api_keys(f"@{keys}") == ("key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb")
    with pytest.raises(ValueError, match="DANMAKU_WEBHOOK_SECRET"):
        Settings(webhook_urls="http://x/")
    with pytest.raises(ValueError, match="not an http"):
        Settings(webhook_urls="ftp://x/", webhook_secret="k")


# ---- server tokens ---------------------------------------------------------------------------
def test_server_and_user_tokens_never_pass_for_each_other() -> None:
    server = auth.mint_server(SECRET, uid="backend")
    assert auth.verify_server(SECRET, server) == "backend"
    with pytest.raises(auth.TokenError):
        auth.verify(SECRET, server)  # not a viewer, not staff: nothing in a room
    for role in auth.ROLES:
        with pytest.raises(auth.TokenError):
            auth.verify_server(SECRET, auth.mint(SECRET, uid="u", nick="n", role=role))
    with pytest.raises(auth.TokenError):
        auth.verify_server("t" * 40, server)


# ---- the platform fields of an item ---------------------------------------------------------
def _payload(**extra: object) -> bytes:
    base = {"uid": "u", "nick": "n", "text": "t", "ts": 5, "prio": 3}
    return orjson.dumps(base | extra)


def test_paid_fields_pass_through_parse_item() -> None:
    tier = {"name": "red", "level": 6, "color": "#d00000", "pin_s": 3600}
    item = parse_item(_payload(kind="paid", amount=120, currency="USD", tier=tier, x=1))
    assert item is not None
    assert item["kind"] == "paid" and item["amount"] == 120 and item["tier"] == tier
    assert "x" not in item and item["prio"] == 3


@pytest.mark.parametrize(
    "extra",
    [
        {"kind": "bogus", "amount": 5},
        {"amount": 5},  # no kind: a comment, whatever else it carries
    ],
)
def test_platform_fields_need_a_platform_kind(extra: dict[str, object]) -> None:
    item = parse_item(_payload(**extra))
    assert item is not None and "amount" not in item and "kind" not in item


@given(
    st.dictionaries(
        st.sampled_from(["amount", "currency", "gift", "tier"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(),
            st.text(max_size=9),
        )
        | st.dictionaries(
            st.text(max_size=6), st.integers(0, 99) | st.text(max_size=4), max_size=5
        ),
    )
)
def test_malformed_platform_fields_are_left_out_never_raise(extra: dict[str, object]) -> None:
    item = parse_item(_payload(kind="gift", **extra))
    assert item is not None and item["kind"] == "gift"
    for name in ("gift", "tier"):
        if name in item:
            assert isinstance(item[name], dict)  # type: ignore[literal-required]
    if "amount" in item:
        assert isinstance(item["amount"], int | float) and item["amount"] >= 0


def test_prio_above_paid_is_no_comment() -> None:
    assert parse_item(_payload(prio=4)) is None


# ---- paid items: last to go from a priority backlog -----------------------------------------
def _it(i: int, prio: int) -> Item:
    return {"id": f"{i}-0", "uid": f"u{i}", "text": f"t{i}", "ts": i, "prio": prio}


def test_a_priority_flood_drops_staff_items_before_paid_ones() -> None:
    paid = [_it(i, 3) for i in range(3)]  # the oldest
    staff = [_it(10 + i, 2) for i in range(20)]
    sel = FrameSampler(random.Random(1)).select([*paid, *staff], budget=2, max_carry=5)
    kept = [*sel.items, *sel.carry]
    assert all(p in kept for p in paid)
    assert sel.dropped_by_tier.get(3, 0) == 0 and sel.dropped_by_tier[2] == 16
    assert sel.items[:2] == paid[:2]  # paid first


def test_paid_items_alone_over_the_backlog_still_drop_the_oldest() -> None:
    paid = [_it(i, 3) for i in range(10)]
    sel = FrameSampler(random.Random(1)).select(paid, budget=1, max_carry=2)
    assert [*sel.items, *sel.carry] == paid[-3:] and sel.dropped_by_tier[3] == 7


def test_a_carried_item_shows_under_a_budget_below_one_item_per_tick() -> None:
    """Regression: at 2 items/s and 50 ms ticks a carried priority item never showed
    while nothing else made a frame (the pace's fraction was thrown away each tick)."""
    smoother = Smoother(FrameSampler(random.Random(1)), 2.0, tick_s=0.05, backlog_s=2.0)
    merger = RoomMerger("r", 0, "0-0", smoother=smoother)
    merger.add([("1000-0", _payload(kind="paid", amount=50))])
    shown = []
    for k in range(40):  # two seconds of ticks
        draft = merger.build(10.0 + k * 0.05)
        if draft is not None:
            shown += draft.items
            merger.committed(draft)
    assert [i["id"] for i in shown] == ["1000-0"]


# ---- webhooks ---------------------------------------------------------------------------------
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**40))
def test_a_signature_verifies_only_its_own_body_and_time(body: bytes, ts: int) -> None:
    sig = wh.sign("secret", ts, body)
    assert sig.startswith("sha256=") and wh.verify("secret", str(ts), body, sig)
    assert not wh.verify("secret", str(ts + 1), body, sig)
    assert not wh.verify("secret", str(ts), body + b"x", sig)
    assert not wh.verify("other", str(ts), body, sig)


def test_backoff_doubles_to_its_cap() -> None:
    assert [wh.backoff_s(a) for a in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert wh.backoff_s(10_000) == 60


def _audit(action: str, target: str, **detail: object) -> dict[bytes, bytes]:
    return {
        b"ts": b"1700000000000",
        b"by": b"moderator:m1",
        b"action": action.encode(),
        b"target": target.encode(),
        b"detail": orjson.dumps(detail),
    }


def test_audit_records_become_events_with_stable_ids() -> None:
    ban = wh.audit_event("r", "5-0", _audit("ban", "u1", until=0, reason="spam"))
    timeout = wh.audit_event("r", "6-0", _audit("ban", "u1", until=1700000060.0))
    assert ban is not None and ban["type"] == "user.banned" and ban["id"] == "r:audit:5-0"
    assert ban["data"] == {"uid": "u1", "until": None, "reason": "spam", "by": "moderator:m1"}
    assert timeout is not None and timeout["type"] == "user.timed_out"
    deleted = wh.audit_event("r", "7-0", _audit("delete", "9-1", uid="u2", text="x"))
    assert deleted is not None and deleted["data"]["id"] == "9-1"
    started = wh.audit_event("r", "8-0", _audit("broadcast_start", "abc", title="T"))
    assert started is not None and started["type"] == "broadcast.started"
    assert wh.audit_event("r", "9-0", _audit("words", "", add=["x"])) is None
    assert wh.audit_event("r", "9-0", {b"action": b"ban", b"detail": b"not json"}) is not None
    events = wh.comment_events("r", [("1-0", _payload()), ("1-1", b"junk")])
    assert [e["id"] for e in events] == ["r:in:1-0"] and events[0]["type"] == "comment.accepted"
    assert {e["type"] for e in [ban, timeout, deleted, started, *events]} <= set(wh.EVENT_TYPES)


@given(st.integers(min_value=1, max_value=20), st.lists(st.integers(0, 8), max_size=40))
def test_an_outbox_is_bounded_and_counts_what_it_drops(cap: int, steps: list[int]) -> None:
    box = wh.Outbox.new(cap)
    n = dropped = 0
    delivered: list[int] = []
    for step in steps:
        if step < 5:  # push a few
            for _ in range(step):
                n += 1
                dropped += box.push(n, {"n": n})
        else:  # a sender finishes a batch
            batch = box.batch(step - 4)
            if batch:
                delivered += [k for k, _ in batch]
                box.finish(batch[-1][0])
        assert len(box.queue) <= cap
        assert box.done <= n
    # Every event was delivered, dropped, or is still queued: none twice, none lost.
    queued = [k for k, _ in box.queue]
    assert len(delivered) + dropped + len(queued) == n
    assert sorted(delivered + queued) == sorted(set(delivered + queued))
