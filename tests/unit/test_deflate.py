"""permessage-deflate without I/O: the offer the gateway agrees to, frames compressed once
(checked against wsproto's own compressor and decoder), and inflation bounded by the
message limit."""

from __future__ import annotations

import random

import orjson
import pytest
import wsproto
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

from danmaku.gateway.deflate import (
    Agreement,
    FrameDeflater,
    ServerDeflate,
    deflate_message,
    deflated_text_frame,
    negotiate,
)
from danmaku.gateway.fastpath import text_frame
from danmaku.gateway.inbound import FastInbound

LIMIT = 4096


def test_browser_offers_are_agreed_with_no_context_takeover_both_ways() -> None:
    chromium = negotiate(["permessage-deflate; client_max_window_bits"])
    firefox = negotiate(["permessage-deflate"])
    for agreed in (chromium, firefox):
        assert agreed is not None
        assert agreed.response == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        )


def test_an_offer_of_the_largest_server_window_is_answered_with_it() -> None:
    agreed = negotiate(["permessage-deflate; client_max_window_bits=15; server_max_window_bits=15"])
    assert agreed is not None and "server_max_window_bits=15" in agreed.params


@pytest.mark.parametrize(
    "header",
    [
        "permessage-deflate; server_max_window_bits=10",  # smaller than the shared frames'
        "permessage-deflate; server_max_window_bits",  # a value is required
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=x",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; x-unknown",
        "x-webkit-deflate-frame",
        "",
    ],
)
def test_offers_the_gateway_cannot_honour_are_declined(header: str) -> None:
    assert negotiate([header]) is None


def test_the_first_acceptable_of_several_offers_is_taken() -> None:
    header = (
        "permessage-deflate; server_max_window_bits=9, permessage-deflate; client_max_window_bits"
    )
    agreed = negotiate([header])
    assert agreed == Agreement(
        "permessage-deflate; client_max_window_bits",
        "server_no_context_takeover; client_no_context_takeover",
    )
    assert negotiate(["x-foo", 'permessage-deflate; client_max_window_bits="12"']) is not None


def _pair(
    offer: PerMessageDeflate | None = None,
) -> tuple[wsproto.WSConnection, wsproto.WSConnection]:
    """A wsproto client offering deflate and a server that accepted with ServerDeflate, as
    the gateway does; returns (server, client)."""
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = Request(host="x", target="/ws", extensions=[offer or PerMessageDeflate()])
    server.receive_data(client.send(request))
    (req,) = list(server.events())
    assert isinstance(req, Request)
    agreed = negotiate([str(e) for e in req.extensions])
    assert agreed is not None
    client.receive_data(server.send(AcceptConnection(extensions=[ServerDeflate(agreed, LIMIT)])))
    (accepted,) = list(client.events())
    assert isinstance(accepted, AcceptConnection)
    (ext,) = accepted.extensions
    assert isinstance(ext, PerMessageDeflate) and ext.server_no_context_takeover
    assert ext.client_no_context_takeover
    return server, client


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=3000), st.booleans()), min_size=1, max_size=6))
def test_frames_deflated_once_decode_in_wsproto_and_match_its_own_compressor(
    messages: list[tuple[str, bool]],
) -> None:
    """Any text, compressed on its own, is what wsproto's server would send for it, and
    wsproto's client decodes it; a sequence mixing compressed and plain frames on one
    connection decodes in order (no context is carried between messages)."""
    server, client = _pair()
    for text, compress in messages:
        payload = text.encode()
        wire = deflated_text_frame(payload) if compress else text_frame(payload)
        if compress:
            assert wire == server.send(TextMessage(data=text))
        client.receive_data(wire)
        events = list(client.events())
        assert len(events) == 1 and isinstance(events[0], TextMessage)
        assert events[0].data == text and events[0].message_finished


def test_the_deflater_leaves_short_frames_plain_and_reports_each_encode() -> None:
    seen: list[tuple[int, int]] = []
    deflater = FrameDeflater(min_bytes=128, on_encode=lambda a, b: seen.append((a, b)))
    assert deflater(b"x" * 127) is None
    wire = deflater(b'{"text":"' + b"ha" * 200 + b'"}')
    assert wire is not None and wire[0] == 0xC1 and len(wire) < 100
    assert seen == [(411, len(wire))]


def _client_frame(body: bytes, rsv1: bool = True) -> bytes:
    """A masked final text frame from a client, payload ``body`` (already compressed)."""
    n, key = len(body), b"\x01\x02\x03\x04"
    head = bytes((0xC1 if rsv1 else 0x81,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(body))
    return head + key + masked


def _server_ext(server: wsproto.WSConnection) -> ServerDeflate:
    """The server connection's deflate extension, as wsproto holds it."""
    assert server.connection is not None
    (ext,) = server.connection._proto.extensions
    assert isinstance(ext, ServerDeflate)
    return ext


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3 * LIMIT), st.sampled_from([b"a", b"{}", bytes(range(32, 127))]))
def test_client_messages_inflate_up_to_the_limit_and_no_further(size: int, unit: bytes) -> None:
    """A compressed client message within the limit arrives whole; one beyond it ends the
    connection with 1009, having inflated at most one byte past the limit."""
    server, _ = _pair()
    text = (unit * (size // len(unit) + 1))[:size]
    ext = _server_ext(server)
    largest = 0
    inflate = ext._inflate

    def watched(data: bytes) -> bytes | CloseReason:
        nonlocal largest
        out = inflate(data)
        largest = max(largest, ext._inflated)
        return out

    ext._inflate = watched  # type: ignore[method-assign]
    server.receive_data(_client_frame(deflate_message(text)))
    events = list(server.events())
    if size <= LIMIT:
        assert len(events) == 1 and isinstance(events[0], TextMessage)
        assert events[0].data.encode() == text
    else:
        assert len(events) == 1 and isinstance(events[0], CloseConnection)
        assert events[0].code == CloseReason.MESSAGE_TOO_BIG
    assert largest <= LIMIT + 1


def test_a_4_kib_bomb_is_stopped_at_the_limit() -> None:
    """4 KiB of deflate that would inflate to ~4 MB: 1009 after at most LIMIT + 1 bytes."""
    bomb = deflate_message(b" " * 4_000_000, 9)
    assert len(bomb) < 4096
    server, _ = _pair()
    ext = _server_ext(server)
    server.receive_data(_client_frame(bomb))
    (event,) = list(server.events())
    assert isinstance(event, CloseConnection) and event.code == 1009
    assert ext._inflated <= LIMIT + 1


def test_corrupt_deflate_data_is_a_1007() -> None:
    server, _ = _pair()
    server.receive_data(_client_frame(b"\xff\xff\xff\xff"))
    (event,) = list(server.events())
    assert isinstance(event, CloseConnection) and event.code == 1007


def test_messages_in_a_row_each_inflate_on_their_own() -> None:
    """client_no_context_takeover: each message is inflated alone; the counter and the
    window start over for every message."""
    server, client = _pair()
    for k in range(5):
        text = f"comment {k} " + "x" * (LIMIT - 20)
        server.receive_data(client.send(TextMessage(data=text)))
        (event,) = list(server.events())
        assert isinstance(event, TextMessage) and event.data == text
        assert _server_ext(server)._decompressor is None


def _fast_server(inflate: bool = True) -> tuple[FastInbound, list[str], wsproto.WSConnection]:
    """A server connection that agreed to deflate, with FastInbound installed as the
    gateway does; returns (inbound, what reached the sink, the wsproto client)."""
    server, client = _pair()
    assert server.connection is not None
    sunk: list[str] = []
    return FastInbound(server.connection, sunk.append, LIMIT, inflate=inflate), sunk, client


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=LIMIT // 4), min_size=1, max_size=5), st.integers(1, 64))
def test_compressed_comments_stay_on_the_fast_path(texts: list[str], step: int) -> None:
    """A browser compresses everything it sends once deflate is agreed: FastInbound
    inflates those frames itself (in any split of the bytes), in order, without wsproto."""
    inbound, sunk, client = _fast_server()
    data = b"".join(client.send(TextMessage(data=t)) for t in texts)
    assert data[0] == 0xC1  # compressed by wsproto's client
    for i in range(0, len(data), step):
        inbound.receive_data(data[i : i + step])
    assert sunk == texts and inbound.fast and list(inbound.events()) == []


def test_a_bomb_leaves_the_fast_path_and_wsproto_closes_with_1009() -> None:
    inbound, sunk, client = _fast_server()
    inbound.receive_data(client.send(TextMessage(data="before")))
    inbound.receive_data(_client_frame(deflate_message(b" " * 4_000_000, 9)))
    assert sunk == ["before"] and not inbound.fast
    (event,) = list(inbound.events())
    assert isinstance(event, CloseConnection) and event.code == 1009


def test_without_inflate_compressed_frames_go_to_wsproto() -> None:
    inbound, sunk, client = _fast_server(inflate=False)
    inbound.receive_data(client.send(TextMessage(data="squeezed " * 20)))
    assert sunk == [] and not inbound.fast
    (event,) = list(inbound.events())
    assert isinstance(event, TextMessage) and event.data == "squeezed " * 20


def realistic_frame(rng: random.Random, items: int = 20) -> bytes:
    """A frame as a busy room sends it: ``items`` comments from distinct users, mixed
    CJK and ASCII text of 2-30 characters, stream ids and timestamps as the worker makes
    them, a few colours and modes."""
    cjk = "哈哈哈草前方高能弹幕好强加油这波可以啊绝了主播牛" + "ｗ"
    ascii_words = ["666", "lol", "gg", "wow", "nice", "2333", "awsl", "yyds", "kksk", "?"]
    base = 1_733_140_000_000 + rng.randrange(10**6)
    out = []
    for i in range(items):
        words = [
            "".join(rng.choice(cjk) for _ in range(rng.randint(1, 8)))
            if rng.random() < 0.6
            else rng.choice(ascii_words)
            for _ in range(rng.randint(1, 4))
        ]
        uid = f"u{rng.randrange(10**7)}"
        out.append(
            {
                "id": f"{base + i * 4}-{rng.randrange(4)}",
                "uid": uid,
                "nick": f"viewer_{rng.randrange(10**5)}",
                "text": " ".join(words)[:30],
                "color": rng.choice(["#ffffff", "#ffffff", "#fe0302", "#00cd00"]),
                "mode": rng.choice(["scroll", "scroll", "scroll", "top"]),
                "ts": base + i * 4,
                "prio": 0,
            }
        )
    body = {"type": "frame", "room": "live-42", "seq": 1234, "ts": base + 100}
    body |= {"items": out, "dropped": 0, "online": 52_318}
    return orjson.dumps(body)


def test_a_realistic_frame_costs_under_90_bytes_a_comment_and_half_the_plain() -> None:
    """Issue 21's egress goal on what a busy room sends (fixed seeds): compressed, a
    comment costs at most half its plain bytes and below ~90 bytes (the python-socketio
    peer's figure)."""
    for seed in range(5):
        payload = realistic_frame(random.Random(seed))
        plain = len(text_frame(payload)) / 20
        deflated = len(deflated_text_frame(payload)) / 20
        assert deflated <= plain / 2 and deflated < 90, (seed, plain, deflated)
