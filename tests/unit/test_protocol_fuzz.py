"""Fuzz the client message decoder: whatever arrives, it answers and never raises."""

from __future__ import annotations

import re

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku import protocol
from danmaku.protocol import CommentRequest, ProtocolError, TextLimits

LIMITS = TextLimits(100, 300)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["comment", "ping", "density", "other"]) | json_values,
        "text": st.text(max_size=400) | json_values,
        "nonce": st.text(max_size=70) | json_values,
        "color": st.text(max_size=8) | json_values,
        "mode": st.sampled_from(["scroll", "top", "bottom", "x"]) | json_values,
        "value": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(raw: bytes) -> None:
    out = protocol.parse_client_message(raw, LIMITS)
    assert isinstance(out, ProtocolError) or out is not None


@settings(max_examples=600, deadline=None)
@given(messages)
def test_random_messages_are_accepted_only_when_valid(msg: dict[str, object]) -> None:
    out = protocol.parse_client_message(orjson.dumps(msg), LIMITS)
    if isinstance(out, ProtocolError):
        assert out.code in protocol.ERROR_CODES
        return
    if isinstance(out, CommentRequest):
        assert 0 < len(out.text) <= 100 and len(out.text.encode()) <= 300
        assert out.text == out.text.strip() and "\n" not in out.text
        assert protocol.COLOR_RE.match(out.color) and out.mode in protocol.MODES
        assert re.fullmatch(r"[\x21-\x7e]{1,64}", out.nonce)
