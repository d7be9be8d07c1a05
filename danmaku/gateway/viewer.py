"""``Viewer``: one WebSocket connection's outgoing side.

Frames reach a viewer from the room's broadcast loop without awaiting. The fast path
(``fastpath.RawWriter``) writes a frame's prebuilt bytes (or a batch of acks, framed
together) straight to the socket when nothing is queued or in flight for this viewer;
otherwise the frame joins one ordered,
bounded queue that a writer task drains. The writer exists only while there is something
to write (it is started on demand and ends when the queue is empty), so an idle viewer
costs no task, no queue and no event: memory per connection is what a gateway holding
tens of thousands of mostly idle viewers pays for. Overflow policies:

* frames: at most ``max_frames`` queued; when full the *oldest* whole frame is dropped
  (counted), so a slow viewer loses frames, never the room's time (the next frame's
  ``seq`` jump tells the client). The unwritten rest of a partly written frame is never
  dropped: it stays first in line, so the wire stays valid;
* control (acks, errors, notices): at most ``max_control``; when full the viewer is
  closed, because losing an ack would make a client resend forever;
* a write blocked for longer than ``stuck_timeout_s`` closes the viewer with
  ``CLOSE_TOO_SLOW`` (4000).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from danmaku.auth import User
from danmaku.gateway.fastpath import PING_FRAME, RawWriter, text_frame
from danmaku.metrics import Metrics
from danmaku.protocol import CLOSE_INTERNAL, CLOSE_TOO_SLOW

log = logging.getLogger(__name__)

_FRAME, _PARTIAL, _CONTROL, _PING = 0, 1, 2, 3
WRITE_BATCH_BYTES = 65536  # queued items written with one send() when raw writes are on


class OutFrame:
    """A frame ready to send: its JSON payload and its wire bytes, built once per
    gateway and shared by every viewer that gets it. ``deflated()`` is its wire form for
    viewers that agreed to ``permessage-deflate``: compressed on first use (once per
    gateway, whatever the number of such viewers), or the plain bytes when there is no
    deflater or the frame is below its minimum size."""

    __slots__ = ("_deflate", "payload", "seq", "wire", "zwire")

    def __init__(
        self,
        seq: int,
        payload: bytes,
        wire: bytes,
        deflate: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self.seq = seq
        self.payload = payload
        self.wire = wire
        self.zwire: bytes | None = None  # the deflated wire bytes, once made
        self._deflate = deflate

    @classmethod
    def build(
        cls, seq: int, payload: bytes, deflate: Callable[[bytes], bytes | None] | None = None
    ) -> OutFrame:
        return cls(seq, payload, text_frame(payload), deflate)

    def deflated(self) -> bytes:
        zwire = self.zwire
        if zwire is None:
            made = self._deflate(self.payload) if self._deflate is not None else None
            zwire = self.zwire = self.wire if made is None else made
        return zwire


# (kind, frame or text or the remaining wire bytes of a partly written frame or run of
# frames, payload bytes, frames, and for a viewer that agreed to deflate: the frames'
# wire bytes as plain frames and as deflated, else 0, 0)
_Entry = tuple[int, "OutFrame | str | memoryview | bytes", int, int, int, int]


class Viewer:
    """One viewer's outgoing side. Idle viewers hold no task, no queue and no event: a
    writer task is spawned (with ``spawn``, a nursery's ``start_soon``) only when
    something has to wait for the socket, and it ends when the queue is empty."""

    __slots__ = (
        "_closed",
        "_control",
        "_done",
        "_done_event",
        "_frames",
        "_m",
        "_max_control",
        "_max_frames",
        "_queue",
        "_raw",
        "_spawn",
        "_stuck_timeout_s",
        "_writing",
        "close_reason",
        "deflate",
        "fast_writes",
        "inflight",
        "ip_keys",
        "last_seq",
        "level",
        "min_seq",
        "on_done",
        "room",
        "user",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocketConnection,
        room: str,
        user: User | None,
        metrics: Metrics,
        *,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        max_frames: int = 64,
        max_control: int = 256,
        stuck_timeout_s: float = 10.0,
        fast: bool = True,
        deflate: bool = False,
    ) -> None:
        self.ws = ws
        self.room = room
        self.user = user
        self.min_seq = 0  # frames below this were already delivered (resume)
        self.last_seq = 0  # last frame queued or written
        self.inflight = 0  # comments submitted, not yet acked
        self.ip_keys: tuple[str, ...] = ()  # networks whose IP ban covers it (rules.ipbans)
        self.level = 0  # density level index (hub.DENSITY): 0 = every item
        self.close_reason: tuple[int, str] | None = None
        self.fast_writes = 0  # frames written by the fast path (for tests and metrics)
        # Called once when the socket is done (closed, broken or stuck): stop reading.
        self.on_done: Callable[[], object] | None = None
        self._m = metrics
        self._raw = RawWriter.for_connection(ws) if fast else None
        # The connection agreed to permessage-deflate: frames go out as ``deflated()``
        # (compressed once per gateway); control messages stay plain (valid: RSV1 unset).
        # Without raw writes, wsproto compresses what trio-websocket sends (per viewer).
        self.deflate = deflate and self._raw is not None
        self._spawn = spawn
        self._queue: deque[_Entry] | None = None  # one ordered queue, made when needed
        self._frames = 0  # whole frames queued
        self._control = 0
        self._writing = False  # a writer task exists (it has an item or a close to do)
        self._max_frames = max_frames
        self._max_control = max_control
        self._stuck_timeout_s = stuck_timeout_s
        self._closed = False
        self._done = False  # the writer finished with the socket
        self._done_event: trio.Event | None = None

    @property
    def queued(self) -> int:
        return len(self._queue) if self._queue else 0

    def _enqueue(self, entry: _Entry) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(entry)

    # ---- producers (never block) ----------------------------------------------------------
    def push_frame(self, frame: OutFrame) -> bool:
        """Deliver a frame unless already delivered: straight to the socket when the
        viewer is idle, else queued (dropping the oldest whole frame when full).

        Returns ``True`` when the fast path wrote the whole frame; the caller counts those
        writes in the metrics, once per broadcast rather than once per viewer.
        """
        if frame.seq < self.min_seq or frame.seq <= self.last_seq or self._closed:
            return False
        raw = self._raw
        # One flag for the wire (``WireLock.free``: not held, no trio-websocket write, not
        # closed): this runs once per viewer per frame.
        if raw is not None and raw.wire.free and not self._queue and not self._writing:
            self.last_seq = frame.seq
            if self.deflate:
                wire = frame.zwire or frame.deflated()
                return self._write_now(raw, wire, len(frame.payload), 1, len(frame.wire))
            return self._write_now(raw, frame.wire, len(frame.payload), 1, 0)
        if self.ws.closed is not None:  # closing handshake under way: no more data frames
            self._broken()
            return False
        self.last_seq = frame.seq
        if self.deflate:
            entry = (_FRAME, frame, len(frame.payload), 1, len(frame.wire), len(frame.deflated()))
        else:
            entry = (_FRAME, frame, len(frame.payload), 1, 0, 0)
        self._enqueue(entry)
        self._frames += 1
        if self._frames > self._max_frames:
            self._drop_oldest_frame()
        self._kick()
        return False

    def push_frames(self, frames: Sequence[OutFrame], wire: bytes, plain: int = 0) -> bool:
        """Deliver consecutive frames (``wire``: their wire bytes joined, deflated ones for
        a viewer that agreed to deflate, and ``plain`` then the length of their plain
        wire bytes): with one ``send()`` when the viewer is idle and has none of them
        yet, else one by one as ``push_frame`` does. Returns ``True`` when the fast path
        wrote them all at once."""
        if self._closed:
            return False
        raw = self._raw
        first = frames[0].seq
        if (
            raw is not None
            and raw.wire.free
            and not self._queue
            and not self._writing
            and self.last_seq < first
            and self.min_seq <= first
        ):
            self.last_seq = frames[-1].seq
            payload_bytes = sum(len(f.payload) for f in frames)
            return self._write_now(raw, wire, payload_bytes, len(frames), plain)
        for frame in frames:
            self.push_frame(frame)
        return False

    def _write_now(
        self, raw: RawWriter, wire: bytes, payload_bytes: int, frames: int, plain: int
    ) -> bool:
        """Write ``wire`` (``frames`` whole frames; deflated ones when ``plain``, the
        length of their plain wire bytes, is not 0) now; the fast path's one write. A part
        the kernel did not take goes first, whole, before anything else (the wire is held
        until it is out); a broken socket closes the viewer. ``True``: all written."""
        try:
            sent = raw.sock.send(wire)  # RawWriter.try_send, inlined: the hot loop
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._broken()
            return False
        if sent == len(wire):
            self.fast_writes += frames
            return True
        raw.wire.hold()
        self._m.frame_writes_partial.inc()
        zafter = len(wire) if plain else 0
        self._enqueue((_PARTIAL, memoryview(wire)[sent:], payload_bytes, frames, plain, zafter))
        self._kick()
        return False

    def push_control(self, text: str) -> None:
        """Send an ack/error/notice: straight to the socket when the viewer is idle, else
        queued; a viewer whose control queue overflows is closed."""
        self.push_controls((text,))

    def push_controls(self, texts: Sequence[str]) -> None:
        """Send several control messages, in order; when the viewer is idle they go out
        with one ``send()`` (a batch of acks costs one system call, no task)."""
        if self._closed or not texts:
            return
        if self._can_send_now():
            self._send_now(b"".join([text_frame(t.encode()) for t in texts]))
            return
        for text in texts:
            if self._control >= self._max_control:
                self.close(CLOSE_TOO_SLOW, "too slow: control queue full")
                return
            self._enqueue((_CONTROL, text, 0, 0, 0, 0))
            self._control += 1
        self._kick()

    def push_ping(self) -> None:
        """Send a WebSocket ping (the gateway's liveness check): straight to the socket
        when the viewer is idle (one non-blocking ``send()``, no task), else queued
        behind what is waiting, like a control message (never inside a frame)."""
        if self._closed or self.close_reason is not None:
            return
        raw = self._raw
        # ``_can_send_now`` and ``_send_now``, inlined: the pinger runs this for every
        # silent connection, and an idle gateway's CPU is mostly its pings.
        if (
            raw is not None
            and raw.wire.free
            and not self._queue
            and not self._writing
            and self.ws.closed is None
        ):
            try:
                sent = raw.sock.send(PING_FRAME)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._broken()
                return
            if sent == len(PING_FRAME):
                return
            # What the kernel did not take goes first, whole, before anything else.
            raw.wire.hold()
            self._enqueue((_PARTIAL, memoryview(PING_FRAME)[sent:], 0, 0, 0, 0))
            self._kick()
            return
        self._enqueue((_PING, PING_FRAME, 0, 0, 0, 0))
        self._kick()

    def _can_send_now(self) -> bool:
        """Nothing else is in flight on the socket: raw bytes may go straight out."""
        raw = self._raw
        return (
            raw is not None
            and not self._queue
            and not self._writing
            and raw.idle()
            and self.ws.closed is None
        )

    def _send_now(self, wire: bytes) -> None:
        """Write ``wire`` with one non-blocking ``send()`` (after ``_can_send_now``); what
        the kernel did not take goes first, whole, before anything else (the wire is
        held); a broken socket ends the viewer."""
        assert self._raw is not None
        try:
            sent = self._raw.try_send(wire)
        except OSError:
            self._broken()
            return
        if sent < len(wire):
            self._enqueue((_PARTIAL, memoryview(wire)[sent:], 0, 0, 0, 0))
            self._kick()

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to close the socket with ``code`` after what is queued."""
        if self.close_reason is None:
            self.close_reason = (code, reason)
        self._kick()

    async def wait_closed(self) -> None:
        """Wait until the writer has flushed the queue and closed the socket (call after
        ``close``)."""
        if self._done:
            return
        self._kick()
        if self._done_event is None:
            self._done_event = trio.Event()
        await self._done_event.wait()

    def _kick(self) -> None:
        """Start a writer task unless one is running or the socket is done."""
        if not self._writing and not self._done:
            self._writing = True
            self._spawn(self._write)

    def _drop_oldest_frame(self) -> None:
        assert self._queue is not None
        for entry in self._queue:
            if entry[0] == _FRAME:
                self._queue.remove(entry)
                self._frames -= 1
                self._m.viewer_frames_dropped.inc()
                return

    def _broken(self) -> None:
        self._closed = True
        self._queue = None
        self._frames = self._control = 0
        self._kick()

    # ---- the writer task ---------------------------------------------------------------
    async def _write(self) -> None:
        """Drain the queue to the socket. Returns when the queue is empty (a later push
        starts a new writer) or, having closed the socket, when the viewer is done."""
        try:
            if not await self._drain():
                return
        except Exception as exc:
            # The writer's boundary: it runs in the gateway's nursery, so nothing may
            # leave it. This viewer is done; every other goes on.
            self._m.connection_errors.labels("writer").inc()
            log.warning("writer of a viewer in %s failed: %r", self.room, exc)
            self._closed = True
            self._queue = None
            self._release_wire()
            # The socket may be what failed: nothing more to do if closing fails too.
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await self.ws.aclose(CLOSE_INTERNAL, "internal error")
        finally:
            self._writing = False
        self._done = True
        if self._done_event is not None:
            self._done_event.set()
        if self.on_done is not None:
            self.on_done()

    async def _drain(self) -> bool:
        """Write what is queued; ``False`` when idle again, ``True`` when the socket is
        done (closed as asked, stuck, or broken)."""
        ws = self.ws
        try:
            while not self._closed:
                queue = self._queue
                if not queue:
                    if self.close_reason is not None:
                        break
                    self._queue = None  # an empty deque still holds a 64-slot block
                    return False
                batch = self._take(queue)
                started = time.monotonic()
                with trio.move_on_after(self._stuck_timeout_s) as scope:
                    await self._send(batch)
                if scope.cancelled_caught:
                    self.close_reason = (CLOSE_TOO_SLOW, "too slow")
                    self._closed = True
                    self._queue = None
                    self._release_wire()
                    with trio.move_on_after(1):
                        await ws.aclose(CLOSE_TOO_SLOW, "too slow")
                    return True
                frames = sum(entry[3] for entry in batch)
                if frames:
                    self._m.frame_writes.inc(frames)
                    self._m.bytes_out.inc(sum(entry[2] for entry in batch))
                    if self.deflate:
                        self._m.deflate_fanout.labels("before").inc(sum(e[4] for e in batch))
                        self._m.deflate_fanout.labels("after").inc(sum(e[5] for e in batch))
                    write = self._m.latency.labels("write")
                    for _ in range(frames):
                        write.observe(time.monotonic() - started)
            self._closed = True
            self._queue = None
            self._release_wire()  # a partly written frame left behind: let the close out
            if self.close_reason is not None:
                code, reason = self.close_reason
                with trio.move_on_after(2):
                    await ws.aclose(code, reason)
        except (ConnectionClosed, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self._closed = True
            self._queue = None
            self._release_wire()
        return True

    def _release_wire(self) -> None:
        if self._raw is not None:
            self._raw.release()

    def _take(self, queue: deque[_Entry]) -> list[_Entry]:
        """The next items to write at once: with raw writes, everything queued (up to
        ``WRITE_BATCH_BYTES``), so a burst of acks costs one ``send()``; else one item."""
        batch: list[_Entry] = []
        size = 0
        limit = WRITE_BATCH_BYTES if self._raw is not None else 0
        while queue:
            entry = queue.popleft()
            batch.append(entry)
            kind, item = entry[0], entry[1]
            if kind == _FRAME:
                self._frames -= 1
            elif kind == _CONTROL:
                self._control -= 1
            size += len(item.payload) if isinstance(item, OutFrame) else len(item)
            if size >= limit:
                break
        return batch

    async def _send(self, batch: list[_Entry]) -> None:
        raw = self._raw
        if raw is None:
            for kind, item, *_ in batch:
                if isinstance(item, OutFrame):
                    await self.ws.send_message(item.payload.decode())
                elif kind == _PING:
                    await self.ws.ping()  # (a random payload: trio-websocket keys pings by it)
                else:
                    assert isinstance(item, str)  # only the fast path leaves partial frames
                    await self.ws.send_message(item)
            return
        if self.ws.closed is not None and batch[0][0] != _PARTIAL:
            # closing handshake under way: no more messages (as ``send_message`` does)
            raise trio.ClosedResourceError
        # Control messages are framed here like frames are (``text_frame`` is what wsproto
        # writes for a text message on a connection without extensions; with deflate
        # agreed, an uncompressed message, RSV1 unset, is valid too).
        deflate = self.deflate
        parts = [
            (item.deflated() if deflate else item.wire)
            if isinstance(item, OutFrame)
            else text_frame(item.encode())
            if isinstance(item, str)
            else item
            for _, item, *_ in batch
        ]
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if raw.held:  # the batch starts with the rest of a partly written frame
            await raw.send_held(data)
        else:
            await raw.send_all(data)
