"""The fan-out fast path: prebuilt frame bytes written straight to idle sockets, with
every behaviour of the queued path kept (order, partial writes, slow peers, pings)."""

from __future__ import annotations

import socket

import orjson
import redis
import trio
import wsproto
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request, TextMessage

from danmaku.config import Settings
from danmaku.gateway.fastpath import text_frame
from danmaku.metrics import Metrics
from danmaku.store import Store
from danmaku.system import System
from tests.client import connect, label, start_system, token


def test_text_frame_matches_wsproto_for_every_length_class() -> None:
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="x", target="/ws")))
    next(server.events())
    client.receive_data(server.send(AcceptConnection()))
    next(client.events())
    for n in (0, 1, 125, 126, 127, 65535, 65536, 70000):
        payload = ("é" * n).encode()[:n] if n else b""
        payload = payload.decode("utf-8", "ignore").encode()
        assert text_frame(payload) == server.send(TextMessage(data=payload.decode()))
        client.receive_data(text_frame(payload))
        (event,) = list(client.events())
        assert isinstance(event, TextMessage) and event.data == payload.decode()


class RawViewer:
    """A WebSocket viewer on a raw socket with a tiny receive window, parsed by wsproto:
    it can stop reading, and every byte it does read is checked for valid framing."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.messages: list[dict[str, object]] = []
        self.pongs: list[bytes] = []
        self.pings = 0  # pings from the server (wsproto's client does not answer them)
        self._parts: list[str] = []

    @classmethod
    async def open(cls, port: int, room: str) -> RawViewer:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        viewer = cls(trio.SocketStream(sock))
        await viewer.stream.send_all(viewer.ws.send(Request(host="x", target=f"/ws?room={room}")))
        return viewer

    async def read_through(self, seq: int, timeout: float) -> None:
        """Read until the last message is frame ``seq`` or ``timeout`` passes (callers
        assert what arrived)."""
        with trio.move_on_after(timeout):
            while not self.messages or self.messages[-1].get("seq") != seq:
                await self.read(until=len(self.messages) + 1)

    async def read(self, until: int, timeout: float = 15.0) -> None:
        """Read until ``until`` messages have arrived."""
        with trio.fail_after(timeout):
            while len(self.messages) < until:
                data = await self.stream.receive_some(65536)
                assert data, "server closed"
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            self.messages.append(orjson.loads("".join(self._parts)))
                            self._parts = []
                    if isinstance(event, Pong):
                        self.pongs.append(bytes(event.payload))
                    if isinstance(event, Ping):
                        self.pings += 1
                    assert not isinstance(event, CloseConnection), event


async def test_partial_writes_never_corrupt_the_stream(system: System) -> None:
    """A peer that stops reading makes sends partial; when it reads again every frame it
    gets is whole and in order (some may have been dropped oldest-first, never cut)."""
    assert system.ws_port
    slow = await RawViewer.open(system.ws_port, "partial")
    await slow.read(until=1)  # welcome
    async with trio.open_nursery() as n:
        sender = await connect(n, system.ws_port, "partial", tok=token("u"))
        normal = await connect(n, system.ws_port, "partial")
        text = "x" * 80
        last = None
        for k in range(150):
            last = await sender.comment(f"{text} {label(k)}", nonce=f"{k}")
        assert last is not None
        await normal.wait_for(lambda c: last["id"] in c.item_ids())
        frames_sent = normal.frames[-1]["seq"]
        # Now read everything the slow viewer was sent.
        await slow.read(until=1 + 1)
        await slow.read_through(frames_sent, timeout=3)
        frames = [m for m in slow.messages if m["type"] == "frame"]
        seqs = [int(str(f["seq"])) for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert seqs[-1] == frames_sent, "the newest frame arrived"
        assert system.metrics.frame_writes_fast._value.get() > 0
        assert system.metrics.frame_writes_partial._value.get() > 0, "no partial write tested"
        n.cancel_scope.cancel()
    await slow.stream.aclose()


async def test_viewer_vanishing_mid_write_harms_no_one(system: System) -> None:
    assert system.ws_port
    gone = await RawViewer.open(system.ws_port, "vanish")
    await gone.read(until=1)
    async with trio.open_nursery() as n:
        sender = await connect(n, system.ws_port, "vanish", tok=token("u"))
        watcher = await connect(n, system.ws_port, "vanish")
        for k in range(20):
            await sender.comment(f"{'y' * 80} {label(k)}", nonce=f"a{k}")
        # Reset the connection (RST), with frames possibly half written.
        gone.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        await gone.stream.aclose()
        ids = [(await sender.comment(f"after {label(k)}", nonce=f"b{k}"))["id"] for k in range(20)]
        await watcher.wait_for(lambda c: set(ids) <= set(c.item_ids()))
        with trio.fail_after(5):
            while system.metrics.connections_open._value.get() != 2:
                await trio.sleep(0.05)
        n.cancel_scope.cancel()


async def test_pings_are_answered_while_frames_flow(system: System) -> None:
    assert system.ws_port
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "ping")
        sender = await connect(n, system.ws_port, "ping", tok=token("u"))

        # The flood is stopped, and has stopped, before the connections close: stopping
        # both at once let it send on a socket the teardown had just closed (1000).
        flooding = trio.CancelScope()
        stopped = trio.Event()

        async def flood() -> None:
            try:
                with flooding:
                    for k in range(100):
                        await sender.comment(f"p {label(k)}", nonce=f"{k}")
            finally:
                stopped.set()

        n.start_soon(flood)
        for _ in range(20):
            with trio.fail_after(5):
                await viewer.ws.ping()  # returns when the matching pong arrives
            await trio.sleep(0.01)
        flooding.cancel()
        await stopped.wait()
        n.cancel_scope.cancel()


async def test_queued_path_alone_still_delivers_everything(
    nursery: trio.Nursery, settings: Settings
) -> None:

    system: System = await start_system(nursery, settings.replace(fast_path=0))
    assert system.ws_port
    async with trio.open_nursery() as n:
        viewers = [await connect(n, system.ws_port, "slowpath") for _ in range(5)]
        sender = await connect(n, system.ws_port, "slowpath", tok=token("u"))
        ids = [(await sender.comment(f"q {label(k)}", nonce=f"{k}"))["id"] for k in range(30)]
        for v in viewers:
            await v.wait_for(lambda c: set(ids) <= set(c.item_ids()))
            assert v.item_ids() == ids
        assert system.metrics.frame_writes_fast._value.get() == 0
        n.cancel_scope.cancel()


async def test_pongs_never_land_inside_a_partly_written_frame(system: System) -> None:
    """Regression: after a partial fast-path write, trio-websocket's reader answered the
    peer's pings with pongs written into the middle of the unfinished frame. The peer
    pings while not reading; when it reads, the stream must parse cleanly."""
    assert system.ws_port
    slow = await RawViewer.open(system.ws_port, "pong")
    await slow.read(until=1)  # welcome
    async with trio.open_nursery() as n:
        sender = await connect(n, system.ws_port, "pong", tok=token("u"))
        normal = await connect(n, system.ws_port, "pong")
        last = None
        for k in range(150):
            last = await sender.comment(f"{'z' * 80} {label(k)}", nonce=f"{k}")
            if k % 5 == 0:  # pings arrive while frames are stuck half-written
                await slow.stream.send_all(slow.ws.send(Ping(f"p{k}".encode())))
        assert last is not None
        await normal.wait_for(lambda c: last["id"] in c.item_ids())
        frames_sent = normal.frames[-1]["seq"]
        await slow.read_through(frames_sent, timeout=5)
        assert slow.messages[-1].get("seq") == frames_sent
        assert slow.pongs, "the pings were answered"
        assert system.metrics.frame_writes_partial._value.get() > 0, "no partial write tested"
        n.cancel_scope.cancel()
    await slow.stream.aclose()


def _masked(first: int, payload: bytes, mask: bytes = b"\x07\x01\x09\x03") -> bytes:
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((first, 0x80 | len(payload))) + mask + body


async def test_comments_after_a_ping_or_a_fragment_still_arrive(system: System) -> None:
    """Plain text comments are parsed by FastInbound; a WebSocket ping or a fragmented
    message hands the connection to wsproto mid-stream. Every comment is acked, in order,
    and the ping is answered, whichever parser read it."""
    assert system.ws_port and system.gateway
    async with trio.open_nursery() as n:
        sender = await connect(n, system.ws_port, "inbound", tok=token("u"))
        first = [await sender.comment(f"fast {label(k)}", nonce=f"a{k}") for k in range(3)]
        (session,) = [v for v in system.gateway._viewers if v.user is not None]
        inbound = session.ws._wsproto
        assert inbound.fast and inbound.fast_messages == 3
        # A fragmented comment followed by a whole one, written in one go.
        msg = orjson.dumps({"type": "comment", "text": "in two parts", "nonce": "frag"})
        whole = orjson.dumps({"type": "comment", "text": "after the parts", "nonce": "next"})
        await sender.ws._stream.send_all(
            _masked(0x01, msg[:10]) + _masked(0x80, msg[10:]) + _masked(0x81, whole)
        )
        await sender.wait_for(lambda c: c.reply("next") is not None)
        assert not inbound.fast  # wsproto reads this connection from now on
        with trio.fail_after(5):
            await sender.ws.ping(b"still there?")  # returns when the pong arrives
        later = [await sender.comment(f"slow {label(k)}", nonce=f"b{k}") for k in range(3)]
        acks = [*first, sender.reply("frag"), sender.reply("next"), *later]
        assert all(a is not None and a["type"] == "ack" for a in acks), acks
        replies = [m["nonce"] for m in sender.messages if m.get("type") == "ack"]
        assert replies == ["a0", "a1", "a2", "frag", "next", "b0", "b1", "b2"]
        n.cancel_scope.cancel()


def _server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole unmasked frame in ``data``."""
    out, i = [], 0
    while i + 2 <= len(data):
        opcode, n, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if n == 126:
            n, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        out.append((opcode, data[i : i + n]))
        i += n
    return out


async def test_no_frame_follows_the_close_frame(system: System) -> None:
    """The gateway closes a viewer (1007: invalid UTF-8) while frames flow, and the viewer
    does not answer the close: until the gateway gives up on it, nothing follows its
    close frame (the fast path's one flag for the wire turns off when trio-websocket
    closes)."""
    assert system.ws_port
    closer = await RawViewer.open(system.ws_port, "closing")
    await closer.read(until=1)  # welcome
    async with trio.open_nursery() as n:
        sender = await connect(n, system.ws_port, "closing", tok=token("u"))

        async def keep_sending() -> None:
            for k in range(10_000):
                await sender.comment(f"flow {label(k)}", nonce=f"c{k}")
                await trio.sleep(0.005)

        n.start_soon(keep_sending)
        await closer.read(until=4)  # frames are flowing to it
        mask = b"\x01\x02\x03\x04"
        bad = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\xff\xfe"))
        await closer.stream.send_all(b"\x81\x82" + mask + bad)  # masked text, not UTF-8
        data = b""
        with trio.move_on_after(1.5):  # frames keep coming for the others meanwhile
            while chunk := await closer.stream.receive_some(65536):
                data += chunk
        n.cancel_scope.cancel()
    frames = _server_frames(data)
    opcodes = [op for op, _ in frames]
    assert opcodes.count(0x8) == 1 and opcodes[-1] == 0x8, opcodes[-5:]
    assert int.from_bytes(frames[-1][1][:2], "big") == 1007
    await closer.stream.aclose()


async def test_frames_that_arrive_together_go_out_together_in_order(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Frames the feed reads at once (it fell behind) reach each viewer in one send():
    all of them, in order, at each viewer's density; counted as one run."""
    gw: System = await start_system(nursery, settings, ("gateway",))
    assert gw.ws_port
    r = redis.Redis.from_url(settings.redis_url)
    async with trio.open_nursery() as n:
        full = await connect(n, gw.ws_port, "runs")
        sparse = await connect(n, gw.ws_port, "runs")
        await sparse.send(type="density", value=0.25)
        await sparse.wait_for(lambda c: bool(c.of_type("notice")))
        await trio.sleep(1.5)  # the gateway has read the room once: it is "known"
        runs_before = gw.metrics.frame_runs._value.get()
        # Three frames committed at once (the test plays the worker; no notice: the
        # gateway's sweep reads them in one read).
        for seq in (1, 2, 3):
            items = [
                {"id": f"{seq}-{k}", "uid": "u", "nick": "n", "text": f"t{seq}.{k}"}
                | {"color": "#ffffff", "mode": "scroll", "ts": 1, "prio": 0}
                for k in range(8)
            ]
            frame = {"type": "frame", "room": "runs", "seq": seq, "ts": 1, "items": items}
            frame |= {"dropped": 0, "online": 2}
            r.xadd("dm:{runs}:frames", {"d": orjson.dumps(frame)}, id=f"{seq}-0")
        for viewer in (full, sparse):
            await viewer.wait_for(lambda c: len(c.frames) == 3, timeout=5)
            assert [f["seq"] for f in viewer.frames] == [1, 2, 3]
        assert all(len(f["items"]) == 8 and f["dropped"] == 0 for f in full.frames)
        for f in sparse.frames:  # a quarter of the items, the rest stated as dropped
            assert len(f["items"]) < 8 and len(f["items"]) + f["dropped"] == 8
        assert gw.metrics.frame_runs._value.get() == runs_before + 1
        n.cancel_scope.cancel()
    r.close()


async def test_runs_reach_a_slow_viewer_whole_and_in_order(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Runs of frames while one viewer's socket is full: it gets them through its queue
    (partial run writes finished first, oldest frames dropped when over its cap), every
    frame whole and in order; a viewer that reads gets every frame."""
    gw: System = await start_system(nursery, settings, ("gateway",))
    assert gw.ws_port
    r = redis.Redis.from_url(settings.redis_url)
    store = Store(settings.redis_url, Metrics(process=False))
    notices = store.notices
    slow = await RawViewer.open(gw.ws_port, "slowruns")
    await slow.read(until=1)  # welcome; then it stops reading
    async with trio.open_nursery() as n:
        normal = await connect(n, gw.ws_port, "slowruns")
        await trio.sleep(1.5)  # the gateway has read the room once: it is "known"
        text = "z" * 90
        last = 0
        for _run in range(40):  # runs of 8 frames of ~1.2 KB: ~380 KB in all
            pipe = r.pipeline(transaction=False)
            for _ in range(8):
                last += 1
                items = [
                    {"id": f"{last}-{k}", "uid": "u", "nick": "n", "text": f"{text}{k}"}
                    | {"color": "#ffffff", "mode": "scroll", "ts": 1, "prio": 0}
                    for k in range(10)
                ]
                frame = {"type": "frame", "room": "slowruns", "seq": last, "ts": 1}
                frame |= {"items": items, "dropped": 0, "online": 2}
                pipe.xadd("dm:{slowruns}:frames", {"d": orjson.dumps(frame)}, id=f"{last}-0")
            pipe.execute()
            # as a worker does after its commit: tell the room's gateways
            await trio.to_thread.run_sync(notices.notify_sync, ["slowruns"])
            await trio.sleep(0.02)
        await normal.wait_for(lambda c: len(c.frames) == last, timeout=15)
        assert [f["seq"] for f in normal.frames] == list(range(1, last + 1))
        assert gw.metrics.frame_runs._value.get() > 0, "no run was formed"
        assert gw.metrics.frame_writes_partial._value.get() > 0, "the slow socket never filled"
        await slow.read_through(last, timeout=10)  # now it reads everything sent to it
        seqs = [int(str(m["seq"])) for m in slow.messages if m["type"] == "frame"]
        assert seqs == sorted(set(seqs)) and seqs[-1] == last
        n.cancel_scope.cancel()
    r.close()
    store.close()
    await slow.stream.aclose()
