"""``parse_target``: any request target gives a Handshake or a Refusal, never an exception."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from danmaku.gateway.handshake import MAX_PARAMS, Handshake, Refusal, parse_target

NAMES = st.sampled_from(["room", "token", "since", "epoch", "density", "x", "_", "ROOM", ""])
NASTY = st.sampled_from(
    ["²", "١٢", "%C2%B2", "%", "%zz", "%00", "\x00", "+", "1e309", "nan", "-1", "٣", "９"]
)
VALUES = st.one_of(st.text(max_size=40), NASTY, st.integers(-(10**30), 10**30).map(str))


@st.composite
def targets(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(NAMES, VALUES), max_size=20))
    query = "&".join(
        f"{n}={draw(st.sampled_from([v, quote(v, safe='')]))}" if draw(st.booleans()) else n
        for n, v in pairs
    )
    path = draw(st.sampled_from(["/ws", "/ws/", "/", "/WS", "http://h/ws", "", "*", "/ws#x"]))
    return f"{path}?{query}" if draw(st.booleans()) else path + query


@given(st.one_of(targets(), st.text(max_size=300)))
def test_any_target_is_answered_without_raising(target: str) -> None:
    result = parse_target(target)
    assert isinstance(result, Handshake | Refusal)
    if isinstance(result, Handshake):
        assert result.room.isascii() and 1 <= len(result.room) <= 64
        assert result.since is None or 0 <= result.since < 2**63
        assert 0 < result.density <= 1
    else:
        assert result.status in (0, 400, 404, 414) and result.message


def test_digits_are_ascii_only() -> None:
    # The example that stopped a whole process: "²".isdigit() is true, int("²") raises.
    for since in ("%C2%B2", "²", "١", "９", "-1", "1.0", "1e3", " 1", "1" * 19):
        refusal = parse_target(f"/ws?room=lobby&since={since}")
        assert isinstance(refusal, Refusal) and refusal.code == "bad_request", since
    assert parse_target("/ws?room=lobby&since=" + "9" * 18) == Handshake("lobby", since=10**18 - 1)


def test_known_parameters() -> None:
    got = parse_target("/ws?room=a-b_C&token=x.y.z&since=42&epoch=e1&density=0.25&_=123")
    assert got == Handshake("a-b_C", "x.y.z", 42, "e1", 0.25)


def test_refusals() -> None:
    cases = {
        "/ws": ("bad_room", 0),
        "/ws?room=a&room=b": ("bad_request", 0),  # repeated: ambiguous
        "/ws?room=a&density=2": ("bad_request", 0),
        "/ws?room=a&density=%D9%A1": ("bad_request", 0),  # an Arabic-Indic one
        "/ws?room=a&token=a%20b": ("unauthorized", 0),
        "/ws?room=a&epoch=%2F": ("bad_request", 0),
        "/chat?room=a": ("not_found", 404),
        "http://[::1/ws?room=a": ("bad_request", 400),  # urlsplit raises on this one
        "/ws?" + "&".join(["x=1"] * (MAX_PARAMS + 1)): ("bad_request", 400),
        "/ws?room=" + "a" * 9000: ("bad_request", 414),
    }
    for target, (code, status) in cases.items():
        refusal = parse_target(target)
        assert isinstance(refusal, Refusal), target
        assert (refusal.code, refusal.status) == (code, status), target
