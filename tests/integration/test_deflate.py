"""permessage-deflate against a real gateway and Redis, checked by an independent client
(wsproto's own PerMessageDeflate on a raw socket): the same JSON as a plain client gets,
plain bytes for a client that did not offer it, compressed once per gateway, and a
compressed bomb closed with 1009."""

from __future__ import annotations

from typing import Any

import orjson
import trio
import wsproto
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from danmaku.config import Settings
from danmaku.gateway.deflate import deflate_message
from danmaku.system import System
from tests.client import connect, label, start_system, token


def frame_heads(data: bytes) -> list[int]:
    """The first byte of every complete server frame in ``data`` (unmasked frames)."""
    heads, pos = [], 0
    while len(data) - pos >= 2:
        n, head = data[pos + 1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if pos + head + n > len(data):
            break
        heads.append(data[pos])
        pos += head + n
    return heads


class WsprotoViewer:
    """A viewer on a raw socket, parsed by wsproto, offering permessage-deflate (or not):
    keeps every message (parsed), the raw bytes received, and the agreed extensions."""

    def __init__(self, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.raw = b""
        self.messages: list[dict[str, Any]] = []
        self.extensions: list[Any] = []
        self.closed: int | None = None
        self._parts: list[str] = []

    @classmethod
    async def open(cls, port: int, room: str, *, deflate: bool, tok: str = "") -> WsprotoViewer:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        viewer = cls(stream, ws)
        target = f"/ws?room={room}" + (f"&token={tok}" if tok else "")
        offer = [PerMessageDeflate()] if deflate else []
        await stream.send_all(ws.send(Request(host="x", target=target, extensions=offer)))
        return viewer

    async def read(self, until: Any, timeout: float = 10.0) -> None:
        """Read until ``until(self)`` holds (or the server closes)."""
        with trio.fail_after(timeout):
            while not until(self) and self.closed is None:
                data = await self.stream.receive_some(65536)
                if not data:
                    self.closed = 1006
                    break
                if self.extensions or self.messages:
                    self.raw += data  # frames only (after the handshake response)
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, AcceptConnection):
                        self.extensions = list(event.extensions)
                        self.messages.append({"type": "_accepted"})
                    elif isinstance(event, RejectConnection):
                        raise AssertionError(f"rejected: {event.status_code}")
                    elif isinstance(event, TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            self.messages.append(orjson.loads("".join(self._parts)))
                            self._parts = []
                    elif isinstance(event, CloseConnection):
                        self.closed = event.code
                    elif isinstance(event, Ping):
                        await self.stream.send_all(self.ws.send(event.response()))

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    def frames(self) -> dict[int, dict[str, Any]]:
        return {m["seq"]: m for m in self.messages if m["type"] == "frame"}

    def has_items(self, ids: set[str]) -> bool:
        return ids <= {i["id"] for f in self.frames().values() for i in f["items"]}


async def _comments(port: int, room: str, n: int, nursery: trio.Nursery) -> set[str]:
    sender = await connect(nursery, port, room, tok=token("sender"))
    ids = set()
    for k in range(n):
        ack = await sender.comment(f"a comment long enough to fill frames {label(k)}", f"n{k}")
        assert ack["type"] == "ack", ack
        ids.add(ack["id"])
    return ids


async def test_deflated_frames_decode_to_what_a_plain_client_gets(system: System) -> None:
    """Two viewers offering deflate and one plain viewer see the same frames (same JSON
    per seq); the deflate viewers' frames were compressed (RSV1) and the plain one's not;
    each frame was compressed once for the gateway, not once per viewer."""
    assert system.ws_port
    port, room = system.ws_port, "deflate"
    zipped = [await WsprotoViewer.open(port, room, deflate=True) for _ in range(2)]
    plain = await WsprotoViewer.open(port, room, deflate=False)
    for v in [*zipped, plain]:
        await v.read(lambda v: any(m["type"] == "welcome" for m in v.messages))
    for v in zipped:
        (ext,) = v.extensions
        assert isinstance(ext, PerMessageDeflate) and ext.server_no_context_takeover
    assert plain.extensions == []
    m = system.metrics
    encodes0 = m.deflate_encodes._value.get()
    async with trio.open_nursery() as n:
        ids = await _comments(port, room, 30, n)
        n.cancel_scope.cancel()
    for v in [*zipped, plain]:
        await v.read(lambda v: v.has_items(ids))
    # The same JSON, frame by frame (the viewers joined at the same seq).
    assert zipped[0].frames() == plain.frames() == zipped[1].frames()
    assert 0xC1 in frame_heads(zipped[0].raw), "no compressed frame arrived"
    assert set(frame_heads(plain.raw)) == {0x81}, "a plain client got only plain text frames"
    big = [f for f in plain.frames().values() if len(orjson.dumps(f)) >= 128]
    assert m.deflate_encodes._value.get() - encodes0 == len(big), "compressed once per frame"
    before = m.deflate_fanout.labels("before")._value.get()
    after = m.deflate_fanout.labels("after")._value.get()
    assert 0 < after < before / 2


async def test_a_compressed_comment_is_taken_and_a_bomb_closes_with_1009(system: System) -> None:
    """A sender whose client compresses its messages is served as any other; a 4 KiB
    compressed message inflating to ~4 MB closes that connection with 1009, and the
    gateway goes on serving."""
    assert system.ws_port
    port, room = system.ws_port, "bomb"
    sender = await WsprotoViewer.open(port, room, deflate=True, tok=token("zip"))
    await sender.read(lambda v: any(m["type"] == "welcome" for m in v.messages))
    await sender.send(
        orjson.dumps({"type": "comment", "text": "squeezed " * 5, "nonce": "z1"}).decode()
    )
    await sender.read(lambda v: any(m.get("nonce") == "z1" for m in v.messages))
    assert [m["type"] for m in sender.messages if m.get("nonce") == "z1"] == ["ack"]

    bomb = deflate_message(b'{"type":"comment","text":"' + b" " * 4_000_000, 9)
    assert len(bomb) < 4096
    key = b"\x11\x22\x33\x44"
    frame = b"\xc1\xfe" + len(bomb).to_bytes(2, "big") + key
    frame += bytes(b ^ key[i % 4] for i, b in enumerate(bomb))
    await sender.stream.send_all(frame)
    await sender.read(lambda v: v.closed is not None)
    assert sender.closed == 1009
    with trio.fail_after(5):
        while system.metrics.connections_closed.labels("too_big")._value.get() < 1:
            await trio.sleep(0.05)
    async with trio.open_nursery() as n:
        after = await connect(n, port, room, tok=token("next"))
        assert (await after.comment("still here", "s1"))["type"] == "ack"
        n.cancel_scope.cancel()


async def test_deflate_off_answers_every_offer_with_plain_frames(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await start_system(nursery, settings.replace(deflate=0))
    assert system.ws_port
    viewer = await WsprotoViewer.open(system.ws_port, "off", deflate=True)
    await viewer.read(lambda v: any(m["type"] == "welcome" for m in v.messages))
    assert viewer.extensions == []
    async with trio.open_nursery() as n:
        ids = await _comments(system.ws_port, "off", 5, n)
        n.cancel_scope.cancel()
    await viewer.read(lambda v: v.has_items(ids))
    assert set(frame_heads(viewer.raw)) == {0x81}
    system.cancel_scope.cancel()
