"""RoomMerger: frames from a room's comments, with no I/O and no clock."""

from __future__ import annotations

import orjson
import pytest

from danmaku.rules.merge import Pick, RoomMerger, stream_id_ms


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
    def keep_one(items: list[dict], budget: int) -> Pick:
        return Pick(items=items[:1], dropped=0, carry=items[1:])

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
