"""FastInbound: client frames in, text messages out, with wsproto as the judge of anything
else. Tested by passing bytes (frames built by a wsproto client connection)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)

from danmaku.gateway.inbound import FastInbound

MAX = 4096


def client_bytes(*events: Event) -> bytes:
    """What a browser would send: masked frames, as wsproto's client writes them."""
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(e) for e in events)


def raw_frame(first: int, payload: bytes, *, mask: bytes | None = b"\x01\x02\x03\x04") -> bytes:
    """A frame written by hand (for what a well-behaved client never sends)."""
    n = len(payload)
    length = bytes([n | (0x80 if mask else 0)]) if n < 126 else bytes([126 | 0x80]) + n.to_bytes(2)
    if mask is None:
        return bytes([first]) + length + payload
    return bytes([first]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Server:
    """A server connection with FastInbound installed, recording what came out."""

    def __init__(self, max_bytes: int = MAX) -> None:
        self.conn = Connection(ConnectionType.SERVER)
        self.sunk: list[str] = []
        self.inbound = FastInbound(self.conn, self.sunk.append, max_bytes)

    def feed(self, data: bytes, step: int | None = None) -> list[Event]:
        step = step or len(data) or 1
        events: list[Event] = []
        for i in range(0, len(data), step):
            self.inbound.receive_data(data[i : i + step])
            events += list(self.inbound.events())
        return events


def test_text_messages_go_to_the_sink_in_order_without_events() -> None:
    texts = ["hello", "", "é弾幕🎉" * 10, "x" * 125, "y" * 126, "z" * 3000]
    server = Server()
    events = server.feed(client_bytes(*(TextMessage(t) for t in texts)))
    assert server.sunk == texts
    assert events == []
    assert server.inbound.fast and server.inbound.fast_messages == len(texts)


def test_frames_split_anywhere_are_reassembled() -> None:
    texts = [f"comment {i} " + "弾" * (i * 7) for i in range(40)]
    data = client_bytes(*(TextMessage(t) for t in texts))
    for step in (1, 2, 3, 5, 7, 13, 64):
        server = Server()
        assert server.feed(data, step) == []
        assert server.sunk == texts, step
        assert server.inbound.fast


def test_a_ping_hands_the_rest_to_wsproto_in_order() -> None:
    server = Server()
    data = client_bytes(TextMessage("a"), TextMessage("b"), Ping(b"p"), TextMessage("c"))
    events = server.feed(data)
    assert server.sunk == ["a", "b"]
    assert [type(e) for e in events] == [Ping, TextMessage]
    assert isinstance(events[1], TextMessage) and events[1].data == "c"
    assert not server.inbound.fast
    # From now on everything is wsproto's, the sink is not called again.
    later = server.feed(client_bytes(TextMessage("d")))
    assert server.sunk == ["a", "b"]
    assert [e.data for e in later if isinstance(e, TextMessage)] == ["d"]


def test_a_ping_split_across_reads_is_still_whole_for_wsproto() -> None:
    server = Server()
    data = client_bytes(TextMessage("a"), Ping(b"ping!"), TextMessage("b"))
    events = server.feed(data, step=3)
    assert server.sunk == ["a"]
    assert [type(e) for e in events] == [Ping, TextMessage]


def test_fragmented_and_binary_messages_are_wsproto_s() -> None:
    server = Server()
    data = client_bytes(
        TextMessage("first ", message_finished=False),
        TextMessage("second", message_finished=True),
        BytesMessage(b"\x00\x01"),
    )
    events = server.feed(data)
    assert server.sunk == []
    texts = "".join(e.data for e in events if isinstance(e, TextMessage))
    assert texts == "first second"
    assert any(isinstance(e, BytesMessage) for e in events)


def test_invalid_utf8_gets_wsproto_s_1007() -> None:
    server = Server()
    events = server.feed(client_bytes(TextMessage("ok")) + raw_frame(0x81, b"\xff\xfe bad"))
    assert server.sunk == ["ok"]
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert closes and closes[0].code == 1007


def test_an_unmasked_client_frame_gets_wsproto_s_1002() -> None:
    server = Server()
    events = server.feed(raw_frame(0x81, b"naked", mask=None))
    assert server.sunk == []
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert closes and closes[0].code == 1002


def test_reserved_bits_are_not_taken() -> None:
    server = Server()
    events = server.feed(raw_frame(0x81 | 0x40, b"rsv1 set"))
    assert server.sunk == []
    assert any(isinstance(e, CloseConnection) and e.code == 1002 for e in events)


def test_oversized_frames_go_to_wsproto_and_nothing_big_is_buffered() -> None:
    server = Server(max_bytes=100)
    big = "x" * 101
    data = client_bytes(TextMessage("small"), TextMessage(big))
    # Only the header of the big frame has arrived: already wsproto's, not ours to hold.
    events = server.feed(data[: len(data) - 90])
    assert server.sunk == ["small"]
    assert not server.inbound.fast and server.inbound._buf == b""
    events += server.feed(data[len(data) - 90 :])
    assert "".join(e.data for e in events if isinstance(e, TextMessage)) == big


def test_an_unfinished_frame_is_the_only_thing_held() -> None:
    server = Server(max_bytes=1000)
    data = client_bytes(TextMessage("y" * 1000))
    server.feed(data[:-1])
    assert server.sunk == [] and len(server.inbound._buf) == len(data) - 1 <= 1000 + 8
    server.feed(data[-1:])
    assert server.sunk == ["y" * 1000] and server.inbound._buf == b""


def test_the_peer_vanishing_mid_frame_is_an_abnormal_close() -> None:
    server = Server()
    data = client_bytes(TextMessage("whole"), TextMessage("cut short"))
    server.feed(data[:-3])
    server.inbound.receive_data(None)  # EOF
    events = list(server.inbound.events())
    assert server.sunk == ["whole"]
    # wsproto's own answer to EOF (the unfinished frame's bytes reached it first).
    assert isinstance(events[0], CloseConnection) and events[0].code == 1006
    assert server.inbound.state is ConnectionState.CLOSED


def test_a_close_frame_closes_through_wsproto() -> None:
    server = Server()
    events = server.feed(client_bytes(TextMessage("bye"), CloseConnection(1000, "done")))
    assert server.sunk == ["bye"]
    assert [type(e) for e in events] == [CloseConnection]
    assert server.inbound.state is ConnectionState.REMOTE_CLOSING


def test_once_the_server_is_closing_wsproto_takes_everything() -> None:
    server = Server()
    server.inbound.send(CloseConnection(1000))
    assert server.inbound.state is ConnectionState.LOCAL_CLOSING
    events = server.feed(client_bytes(TextMessage("late")))
    assert server.sunk == []
    assert [e.data for e in events if isinstance(e, TextMessage)] == ["late"]


messages = st.lists(
    st.one_of(
        st.text(max_size=300).map(TextMessage),
        st.binary(max_size=40).map(BytesMessage),
        st.binary(max_size=20).map(Ping),
    ),
    max_size=12,
)


def whole(events: list[Event], out: list[tuple[str, object]], parts: list[object]) -> None:
    """Events as whole messages: wsproto hands out a message's payload as it arrives."""
    for e in events:
        if isinstance(e, Message):
            parts.append(e.data)
            if e.message_finished:
                joined = "".join(parts) if isinstance(e, TextMessage) else b"".join(parts)  # type: ignore[arg-type]
                out.append((type(e).__name__, joined))
                parts.clear()
        else:
            out.append((type(e).__name__, getattr(e, "payload", None)))


@given(messages, st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_same_messages_as_wsproto_alone(events: list[Message | Ping], cuts: list[int]) -> None:
    """Whatever the messages and however TCP splits them, sink + events deliver exactly
    what wsproto alone would, in the same order."""
    data = client_bytes(*events)
    alone = Connection(ConnectionType.SERVER)
    alone.receive_data(data)
    expected: list[tuple[str, object]] = []
    whole(list(alone.events()), expected, [])

    conn = Connection(ConnectionType.SERVER)
    got: list[tuple[str, object]] = []
    parts: list[object] = []
    inbound = FastInbound(conn, lambda t: got.append(("TextMessage", t)), MAX)
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        inbound.receive_data(data[pos : pos + step])
        whole(list(inbound.events()), got, parts)
        pos += step
        i += 1
    assert got == expected
    assert [kind for kind, _ in got] == [type(e).__name__ for e in events]


# ---- pongs (the answers to the gateway's liveness pings) ----------------------------------
def test_with_on_pong_pongs_are_taken_and_the_connection_stays_fast() -> None:
    conn = Connection(ConnectionType.SERVER)
    sunk: list[str] = []
    pongs: list[int] = []
    inbound = FastInbound(conn, sunk.append, MAX, lambda: pongs.append(1))
    data = client_bytes(TextMessage("a"), Pong(b""), Pong(b"x" * 125), TextMessage("b"))
    for byte in range(len(data)):  # split at every byte
        inbound.receive_data(data[byte : byte + 1])
    assert sunk == ["a", "b"] and len(pongs) == 2
    assert inbound.fast and list(inbound.events()) == []


def test_without_on_pong_a_pong_is_wsproto_s() -> None:
    server = Server()
    events = server.feed(client_bytes(TextMessage("a"), Pong(b"p"), TextMessage("b")))
    assert server.sunk == ["a"] and not server.inbound.fast
    assert [type(e) for e in events] == [Pong, TextMessage]


def test_a_pong_over_125_bytes_gets_wsproto_s_1002() -> None:
    conn = Connection(ConnectionType.SERVER)
    pongs: list[int] = []
    inbound = FastInbound(conn, lambda t: None, MAX, lambda: pongs.append(1))
    inbound.receive_data(raw_frame(0x8A, b"x" * 126))
    events = list(inbound.events())
    assert pongs == [] and not inbound.fast
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1002


# A client's messages, pings and pongs (what the pong-aware properties below feed in).
CLIENT_EVENTS = st.lists(
    st.one_of(
        st.text(max_size=300).map(TextMessage),
        st.binary(max_size=40).map(BytesMessage),
        st.binary(max_size=20).map(Ping),
        st.binary(max_size=125).map(Pong),
    ),
    max_size=12,
)


@given(
    CLIENT_EVENTS,
    st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_with_on_pong_same_as_wsproto_alone(events: list[Event], cuts: list[int]) -> None:
    """With pongs taken too: sink + pong reports + events are what wsproto alone gives,
    in order, however TCP splits the bytes (pong payloads are not reported)."""
    data = client_bytes(*events)
    alone = Connection(ConnectionType.SERVER)
    alone.receive_data(data)
    expected: list[tuple[str, object]] = []
    whole(list(alone.events()), expected, [])
    expected = [("Pong", None) if k == "Pong" else (k, v) for k, v in expected]

    conn = Connection(ConnectionType.SERVER)
    got: list[tuple[str, object]] = []
    parts: list[object] = []
    inbound = FastInbound(
        conn, lambda t: got.append(("TextMessage", t)), MAX, lambda: got.append(("Pong", None))
    )
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        inbound.receive_data(data[pos : pos + step])
        whole(list(inbound.events()), got, parts)
        pos += step
        i += 1
    got = [("Pong", None) if k == "Pong" else (k, v) for k, v in got]
    assert got == expected


# ---- take(): the poller's reads, where a lone pong is an idle viewer's common case ------
def test_a_read_of_one_pong_is_reported_and_nothing_is_handed_on() -> None:
    conn = Connection(ConnectionType.SERVER)
    pongs: list[int] = []
    inbound = FastInbound(conn, lambda t: None, MAX, lambda: pongs.append(1))
    for payload in (b"", b"x", b"y" * 125):
        assert inbound.take(client_bytes(Pong(payload))) is None
    assert pongs == [1, 1, 1] and inbound.fast and list(inbound.events()) == []


def test_reads_that_only_look_like_a_lone_pong_are_parsed_as_usual() -> None:
    """An unmasked pong, one over 125 bytes, a pong behind an unfinished frame and a read
    longer than its pong are not the lone pong a read of one is: the usual parse (and
    wsproto, as judge) decides."""
    pongs: list[int] = []
    unmasked = FastInbound(
        Connection(ConnectionType.SERVER), lambda t: None, MAX, lambda: pongs.append(1)
    )
    assert unmasked.take(raw_frame(0x8A, b"abcd", mask=None)) is not None  # for wsproto
    assert not unmasked.fast and pongs == []

    big = FastInbound(Connection(ConnectionType.SERVER), lambda t: None, MAX, lambda: None)
    assert big.take(raw_frame(0x8A, b"x" * 126)) is not None and not big.fast

    sunk: list[str] = []
    behind = FastInbound(Connection(ConnectionType.SERVER), sunk.append, MAX, lambda: None)
    # A text frame whose masked payload reads 8A 80 ...: on their own, its last 6 bytes
    # would pass for a masked empty pong.
    text = raw_frame(0x81, b"AAAAAA", mask=bytes([0xCB, 0xC1, 0x00, 0x00]))
    assert text[6:8] == b"\x8a\x80" and len(text[6:]) == 6
    assert behind.take(text[:6]) is None  # the start of the text frame is held
    assert behind.take(text[6:]) is None and sunk == ["AAAAAA"] and behind.fast

    got: list[str] = []
    more = FastInbound(Connection(ConnectionType.SERVER), got.append, MAX, lambda: got.append("P"))
    assert more.take(client_bytes(Pong(b""), TextMessage("after"))) is None
    assert got == ["P", "after"] and more.fast


def framed(events: list[Event]) -> list[bytes]:
    """Each event's bytes on their own, as one client connection writes them."""
    client = Connection(ConnectionType.CLIENT)
    return [client.send(e) for e in events]


@given(
    CLIENT_EVENTS,
    st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_take_with_on_pong_same_as_wsproto_alone(events: list[Event], cuts: list[int]) -> None:
    """Through ``take`` (the poller's reads, handing on what wsproto must parse, which
    the reader task then gives it): sink + pong reports + events are what wsproto alone
    gives, in order, whether each frame is a read of its own (cut 0: a lone pong is the
    common read of an idle viewer) or TCP splits the bytes anywhere."""
    frames = framed(events)
    data = b"".join(frames)
    alone = Connection(ConnectionType.SERVER)
    alone.receive_data(data)
    expected: list[tuple[str, object]] = []
    whole(list(alone.events()), expected, [])
    expected = [("Pong", None) if k == "Pong" else (k, v) for k, v in expected]

    reads: list[bytes] = []
    pos, i = 0, 0
    bounds = [sum(len(f) for f in frames[: k + 1]) for k in range(len(frames))]
    while pos < len(data):
        step = cuts[i % len(cuts)]
        end = next(b for b in bounds if b > pos) if step == 0 else pos + step
        reads.append(data[pos:end])
        pos = end
        i += 1

    conn = Connection(ConnectionType.SERVER)
    got: list[tuple[str, object]] = []
    parts: list[object] = []
    inbound = FastInbound(
        conn, lambda t: got.append(("TextMessage", t)), MAX, lambda: got.append(("Pong", None))
    )
    for read in reads:
        if inbound.fast:
            rest = inbound.take(read)
            if rest is not None:
                inbound.receive_data(rest)  # the reader task, woken with them
        else:
            inbound.receive_data(read)
        whole(list(inbound.events()), got, parts)
    got = [("Pong", None) if k == "Pong" else (k, v) for k, v in got]
    assert got == expected
