"""RoomMerger: frames from a room's comments, with no I/O and no clock."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.protocol import encode_frame
from danmaku.rules.merge import RoomMerger, parse_item, stream_id_ms
from danmaku.rules.sampling import FrameSampler, Selection
from danmaku.worker.frame_build import recording as _recording
from danmaku.worker.rooms import sampling_selector


def payload(uid: str, text: str, prio: int = 0) -> bytes:
    return orjson.dumps(
        {
            "uid": uid,
            "nick": uid,
            "text": text,
            "color": "#ffffff",
            "mode": "scroll",
            "ts": 1,
            "prio": prio,
        }
    )


def test_a_tick_without_comments_builds_no_frame() -> None:
    m = RoomMerger("r", seq=7, cursor="5-0")
    assert m.build(now=100.0) is None


def test_frame_carries_every_comment_in_order_with_stream_ids() -> None:
    m = RoomMerger("r", seq=0, cursor="0-0")
    m.add([("10-0", payload("a", "one")), ("10-1", payload("b", "two"))])
    d = m.build(now=12.5)
    assert d is not None
    assert (d.seq, d.ts_ms, d.cursor, d.dropped) == (1, 12500, "10-1", 0)
    assert [(i["id"], i["text"]) for i in d.items] == [("10-0", "one"), ("10-1", "two")]


def test_uncommitted_draft_is_offered_again_with_the_same_seq() -> None:
    m = RoomMerger("r", seq=3, cursor="1-0")
    m.add([("2-0", payload("a", "x"))])
    first = m.build(now=1.0)
    m.add([("3-0", payload("a", "y"))])  # the commit failed; more arrived meanwhile
    second = m.build(now=1.1)
    assert first is not None and second is not None
    assert first.seq == second.seq == 4
    assert [i["text"] for i in second.items] == ["x", "y"]
    assert second.cursor == "3-0"


def test_commit_advances_and_forgets_consumed_comments() -> None:
    m = RoomMerger("r", seq=0, cursor="0-0")
    m.add([("1-0", payload("a", "x"))])
    d = m.build(now=1.0)
    assert d is not None
    m.add([("2-0", payload("a", "y"))])  # read while the commit was in flight
    m.committed(d)
    assert (m.seq, m.cursor) == (1, "1-0")
    nxt = m.build(now=1.1)
    assert nxt is not None and nxt.seq == 2 and [i["text"] for i in nxt.items] == ["y"]
    m.committed(nxt)
    assert m.build(now=1.2) is None


def test_committing_out_of_order_is_refused() -> None:
    m = RoomMerger("r", seq=0, cursor="0-0")
    m.add([("1-0", payload("a", "x"))])
    d = m.build(now=1.0)
    assert d is not None
    m.committed(d)
    with pytest.raises(ValueError):
        m.committed(d)


def test_undecodable_payload_is_skipped_but_the_cursor_moves_past_it() -> None:
    m = RoomMerger("r", seq=0, cursor="0-0")
    m.add([("1-0", b"{broken"), ("1-1", b"[1]"), ("1-2", payload("a", "ok"))])
    d = m.build(now=1.0)
    assert d is not None and [i["text"] for i in d.items] == ["ok"] and d.cursor == "1-2"
    assert m.invalid == 2


def test_selector_decides_and_carry_is_offered_first_next_time() -> None:
    def keep_one(items: list[dict], budget: int) -> Selection:
        return Selection(items=items[:1], dropped=0, carry=items[1:])

    m = RoomMerger("r", seq=0, cursor="0-0", selector=keep_one)
    m.add([("1-0", payload("a", "p1", 2)), ("1-1", payload("b", "p2", 2))])
    d = m.build(now=1.0)
    assert d is not None and [i["text"] for i in d.items] == ["p1"]
    m.committed(d)
    assert m.has_work()
    d2 = m.build(now=1.1)
    assert d2 is not None and [i["text"] for i in d2.items] == ["p2"]


def test_stream_id_ms() -> None:
    assert stream_id_ms("1700000000123-4") == 1700000000123
    assert stream_id_ms("junk") == 0


# ---- stored payloads are validated where the worker parses them ---------------------------
def test_payloads_that_are_no_comment_are_skipped_and_counted() -> None:
    bad = [
        b"",
        b"null",
        b'"text"',
        b'{"text": "no uid"}',
        b'{"uid": 5, "text": "x"}',
        b'{"uid": "u", "text": ["x"]}',
        b'{"uid": "u", "text": "x", "ts": "soon"}',
        b'{"uid": "u", "text": "x", "ts": true}',
        b'{"uid": "u", "text": "x", "prio": 7}',
        b'{"uid": "u", "text": "x", "ts": -5}',
        b'{"uid": "u", "text": "x", "color": 3}',
    ]
    m = RoomMerger("r", seq=0, cursor="0-0")
    m.add([(f"1-{i}", p) for i, p in enumerate(bad)] + [("2-0", payload("a", "ok"))])
    d = m.build(now=1.0)
    assert d is not None and [i["text"] for i in d.items] == ["ok"] and d.cursor == "2-0"
    assert m.invalid == len(bad)


def test_unknown_fields_are_left_out_and_missing_ones_filled_in() -> None:
    deep = b"[" * 400 + b"1" + b"]" * 400  # deeper than orjson.dumps accepts
    raw = b'{"uid": "u", "text": "hi", "count": 999, "extra": ' + deep + b"}"
    item = parse_item(raw, default_ts=7)
    assert item == {
        "uid": "u",
        "nick": "",
        "text": "hi",
        "color": "#ffffff",
        "mode": "scroll",
        "ts": 7,
        "prio": 0,
    }


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
fields = st.sampled_from(["uid", "nick", "text", "color", "mode", "ts", "prio", "count", "x"])


@given(st.one_of(st.binary(max_size=200), st.dictionaries(fields, json_values).map(orjson.dumps)))
@settings(max_examples=500)
def test_any_payload_gives_a_well_typed_item_or_none_and_a_frame(raw: bytes) -> None:
    item = parse_item(raw)
    if item is not None:
        assert isinstance(item["uid"], str) and isinstance(item["text"], str)
        assert set(item) == {"uid", "nick", "text", "color", "mode", "ts", "prio"}
        assert type(item.get("ts", 0)) is int and item.get("prio", 0) in (0, 1, 2)
    m = RoomMerger("r", seq=0, cursor="0-0", selector=sampling_selector(FrameSampler()))
    m.highlighted = {"u"}
    m.add([("1-0", raw)])
    d = m.build(now=1.0, budget=4)
    assert d is not None  # the cursor moved: a frame accounts for it
    encode_frame("r", d.seq, d.ts_ms, d.items, d.dropped, 0, d.retract)
    _recording(m.pending, 0, 0)  # what replay keeps of it encodes too
