"""``Viewer``: one WebSocket connection's outgoing side.

Frames reach a viewer from the room's broadcast loop without awaiting. The fast path
(``fastpath.RawWriter``) writes a frame's prebuilt bytes straight to the socket when
nothing is queued or in flight for this viewer; otherwise the frame joins one ordered,
bounded queue that a per-viewer writer task drains. Overflow policies:

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

import time
from collections import deque
from dataclasses import dataclass

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from danmaku.auth import User
from danmaku.gateway.fastpath import RawWriter, text_frame
from danmaku.metrics import Metrics
from danmaku.protocol import CLOSE_TOO_SLOW

_FRAME, _PARTIAL, _CONTROL = 0, 1, 2


@dataclass(frozen=True, slots=True)
class OutFrame:
    """A frame ready to send: its JSON payload and its wire bytes, built once per
    gateway and shared by every viewer that gets it."""

    seq: int
    payload: bytes
    wire: bytes

    @classmethod
    def build(cls, seq: int, payload: bytes) -> OutFrame:
        return cls(seq, payload, text_frame(payload))


class Viewer:
    def __init__(
        self,
        ws: WebSocketConnection,
        room: str,
        user: User | None,
        metrics: Metrics,
        *,
        max_frames: int = 64,
        max_control: int = 256,
        stuck_timeout_s: float = 10.0,
        fast: bool = True,
    ) -> None:
        self.ws = ws
        self.room = room
        self.user = user
        self.min_seq = 0  # frames below this were already delivered (resume)
        self.last_seq = 0  # last frame queued or written
        self.inflight = 0  # comments submitted, not yet acked
        self.level = 0  # density level index (hub.DENSITY): 0 = every item
        self.close_reason: tuple[int, str] | None = None
        self.fast_writes = 0  # frames written by the fast path (for tests and metrics)
        self._m = metrics
        self._raw = RawWriter.for_connection(ws) if fast else None
        # One ordered queue: (kind, frame or text or remaining wire bytes)
        self._queue: deque[tuple[int, OutFrame | str | memoryview, int]] = deque()
        self._frames = 0  # whole frames queued
        self._control = 0
        self._writing = False  # the writer task has an item in flight
        self._max_frames = max_frames
        self._max_control = max_control
        self._stuck_timeout_s = stuck_timeout_s
        self._wake = trio.Event()
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---- producers (never block) ----------------------------------------------------------
    def push_frame(self, frame: OutFrame) -> bool:
        """Deliver a frame unless already delivered: straight to the socket when the
        viewer is idle, else queued (dropping the oldest whole frame when full).

        Returns ``True`` when the fast path wrote the whole frame; the caller counts those
        writes in the metrics, once per broadcast rather than once per viewer.
        """
        if frame.seq < self.min_seq or frame.seq <= self.last_seq or self._closed:
            return False
        if self.ws.closed is not None:  # closing handshake under way: no more data frames
            self._broken()
            return False
        self.last_seq = frame.seq
        raw = self._raw
        if raw is not None and not self._queue and not self._writing and raw.idle():
            try:
                sent = raw.try_send(frame.wire)
            except OSError:
                self._broken()
                return False
            if sent == len(frame.wire):
                self.fast_writes += 1
                return True
            # The kernel took part of it: the rest goes first, whole, before anything else.
            self._m.frame_writes_partial.inc()
            self._queue.append((_PARTIAL, memoryview(frame.wire)[sent:], len(frame.payload)))
            self._wake.set()
            return False
        self._queue.append((_FRAME, frame, len(frame.payload)))
        self._frames += 1
        if self._frames > self._max_frames:
            self._drop_oldest_frame()
        self._wake.set()
        return False

    def push_control(self, text: str) -> None:
        """Queue an ack/error/notice; a viewer whose control queue overflows is closed."""
        if self._closed:
            return
        if self._control >= self._max_control:
            self.close(CLOSE_TOO_SLOW, "too slow: control queue full")
            return
        self._queue.append((_CONTROL, text, 0))
        self._control += 1
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to close the socket with ``code`` after what is queued."""
        if self.close_reason is None:
            self.close_reason = (code, reason)
        self._wake.set()

    def _drop_oldest_frame(self) -> None:
        for entry in self._queue:
            if entry[0] == _FRAME:
                self._queue.remove(entry)
                self._frames -= 1
                self._m.viewer_frames_dropped.inc()
                return

    def _broken(self) -> None:
        self._closed = True
        self._queue.clear()
        self._wake.set()

    # ---- the writer task ---------------------------------------------------------------
    async def write_loop(self) -> None:
        """Drain the queue to the socket until closed. Returns when the viewer is done."""
        ws = self.ws
        try:
            while not self._closed:
                if not self._queue:
                    if self.close_reason is not None:
                        break
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                self._writing = True
                kind, item, nbytes = self._queue.popleft()
                if kind == _FRAME:
                    self._frames -= 1
                elif kind == _CONTROL:
                    self._control -= 1
                started = time.monotonic()
                with trio.move_on_after(self._stuck_timeout_s) as scope:
                    await self._send(kind, item)
                self._writing = False
                if scope.cancelled_caught:
                    self.close_reason = (CLOSE_TOO_SLOW, "too slow")
                    self._closed = True
                    with trio.move_on_after(1):
                        await ws.aclose(CLOSE_TOO_SLOW, "too slow")
                    return
                if nbytes:
                    self._m.frame_writes.inc()
                    self._m.bytes_out.inc(nbytes)
                    self._m.latency.labels("write").observe(time.monotonic() - started)
            self._closed = True
            if self.close_reason is not None:
                code, reason = self.close_reason
                with trio.move_on_after(2):
                    await ws.aclose(code, reason)
        except (ConnectionClosed, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self._closed = True

    async def _send(self, kind: int, item: OutFrame | str | memoryview) -> None:
        if isinstance(item, str):
            await self.ws.send_message(item)
        elif isinstance(item, memoryview):
            assert self._raw is not None  # only the fast path leaves partial frames
            await self._raw.send_all(item)
        elif self._raw is not None:
            await self._raw.send_all(item.wire)
        else:
            await self.ws.send_message(item.payload.decode())
