"""Protocol parsing and encoding: bytes in, decisions out (no sockets)."""

from __future__ import annotations

import orjson
import pytest

from danmaku import protocol
from danmaku.protocol import CommentRequest, PingRequest, ProtocolError, TextLimits

LIMITS = TextLimits(max_chars=10, max_bytes=20)


def parse(obj: object) -> object:
    return protocol.parse_client_message(orjson.dumps(obj), LIMITS)


def test_valid_comment_is_normalised() -> None:
    msg = parse({"type": "comment", "text": "  hi \n there ", "nonce": "n", "color": "#ABCDEF"})
    assert msg == CommentRequest(text="hi there", nonce="n", color="#abcdef", mode="scroll")


def test_ping() -> None:
    assert parse({"type": "ping", "nonce": "p"}) == PingRequest("p")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff\xfe", "bad_request"),
        (b"null", "bad_request"),
        (b'"text"', "bad_request"),
        (b'{"type": 3}', "bad_request"),
        (b'{"type": "x"}', "unknown_type"),
        (b'{"type": "comment", "text": "a"}', "bad_request"),
        (b'{"type": "comment", "text": "a", "nonce": ""}', "bad_request"),
        (b'{"type": "comment", "text": "a", "nonce": "has space"}', "bad_request"),
        (b'{"type": "comment", "text": "", "nonce": "n"}', "empty"),
        (b'{"type": "comment", "text": "12345678901", "nonce": "n"}', "too_long"),
        ('{"type": "comment", "text": "弹幕弹幕弹幕弹", "nonce": "n"}'.encode(), "too_long"),
        (b'{"type": "comment", "text": "a", "nonce": "n", "color": "#12345"}', "bad_request"),
        (b'{"type": "comment", "text": "a", "nonce": "n", "mode": "fly"}', "bad_request"),
        # A trailing newline once passed the anchored patterns ($ matches before it); a
        # nonce with one would have split the door's "\n"-separated nonce list.
        (b'{"type": "comment", "text": "a", "nonce": "n\\n"}', "bad_request"),
        (b'{"type": "comment", "text": "a", "nonce": "n\\u007f"}', "bad_request"),
        (b'{"type": "comment", "text": "a", "nonce": "' + b"n" * 65 + b'"}', "bad_request"),
        (b'{"type": "comment", "text": "a", "nonce": "n", "color": "#ffffff\\n"}', "bad_request"),
    ],
)
def test_bad_messages_have_codes(raw: bytes, code: str) -> None:
    out = protocol.parse_client_message(raw, LIMITS)
    assert isinstance(out, ProtocolError) and out.code == code
    assert out.code in protocol.ERROR_CODES


def test_error_echoes_the_nonce_when_known() -> None:
    out = parse({"type": "comment", "text": "x" * 50, "nonce": "abc"})
    assert isinstance(out, ProtocolError) and out.nonce == "abc"
    wire = orjson.loads(protocol.error(out))
    assert wire == {"type": "error", "code": "too_long", "message": out.message, "nonce": "abc"}


def test_frame_encoding() -> None:
    items = [
        {
            "id": "1-0",
            "uid": "u",
            "nick": "n",
            "text": "t",
            "color": "#ffffff",
            "mode": "scroll",
            "ts": 5,
            "prio": 0,
        }
    ]
    frame = orjson.loads(protocol.encode_frame("r", 3, 99, items, 2, 10, retract=["0-1"]))
    assert frame == {
        "type": "frame",
        "room": "r",
        "seq": 3,
        "ts": 99,
        "items": items,
        "dropped": 2,
        "online": 10,
        "retract": ["0-1"],
    }
    assert "retract" not in orjson.loads(protocol.encode_frame("r", 3, 99, [], 0, 0))


@pytest.mark.parametrize("room", ["a", "A-b_9", "x" * 64])
def test_valid_rooms(room: str) -> None:
    assert protocol.valid_room(room)


@pytest.mark.parametrize("room", ["", "x" * 65, "a b", "a/b", "ä", "a{b}", "a\n"])
def test_invalid_rooms(room: str) -> None:
    assert not protocol.valid_room(room)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("abc\u202edcba", "abcdcba"),  # right-to-left override
        ("a\u2066b\u2069c", "abc"),  # isolates
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("bell\x07 and\x1b[31m esc", "bell and[31m esc"),
        ("line\nbreak\ttab", "line break tab"),
        ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),  # joiner kept
        ("c1\x85control\x9b", "c1 control"),
    ],
)
def test_control_and_invisible_characters_are_stripped(raw: str, shown: str) -> None:
    msg = parse({"type": "comment", "text": raw, "nonce": "n"})
    big = protocol.parse_client_message(
        orjson.dumps({"type": "comment", "text": raw, "nonce": "n"}), TextLimits(100, 300)
    )
    assert isinstance(big, CommentRequest) and big.text == shown, (msg, big)


def test_only_invisible_text_is_empty() -> None:
    out = parse({"type": "comment", "text": "\u202e\u200b\x00", "nonce": "n"})
    assert isinstance(out, ProtocolError) and out.code == "empty"
