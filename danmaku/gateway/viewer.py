"""``Viewer``: one WebSocket connection's outgoing side.

Two bounded queues with stated overflow policies:

* frames: at most ``max_frames``; when full the *oldest* frame is dropped (counted), so a
  slow viewer loses frames, never the room's time (the next frame's ``seq`` jump tells
  the client);
* control (acks, errors, notices): at most ``max_control``; when full the viewer is
  closed, because losing an ack would make a client resend forever.

Frames are pushed by the room's hub without awaiting (one broadcast loop serves every
viewer); a per-viewer writer task drains the queues. A write blocked for longer than
``stuck_timeout_s`` closes the viewer with ``CLOSE_TOO_SLOW`` (4000).
"""

from __future__ import annotations

import time
from collections import deque

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from danmaku.auth import User
from danmaku.metrics import Metrics
from danmaku.protocol import CLOSE_TOO_SLOW


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
    ) -> None:
        self.ws = ws
        self.room = room
        self.user = user
        self.min_seq = 0  # frames below this were already delivered (resume)
        self.last_seq = 0  # last frame queued
        self.inflight = 0  # comments submitted, not yet acked
        self.level = 0  # density level index (hub.DENSITY): 0 = every item
        self.close_reason: tuple[int, str] | None = None
        self._m = metrics
        self._frames: deque[tuple[str, int]] = deque()  # (text, UTF-8 size)
        self._control: deque[str] = deque()
        self._max_frames = max_frames
        self._max_control = max_control
        self._stuck_timeout_s = stuck_timeout_s
        self._wake = trio.Event()
        self._closed = False

    # ---- producers (never block) ----------------------------------------------------------
    def push_frame(self, seq: int, text: str, nbytes: int) -> None:
        """Queue a frame (``nbytes``: its UTF-8 size, computed once by the caller) unless
        already delivered; drop the oldest when full."""
        if seq < self.min_seq or seq <= self.last_seq or self._closed:
            return
        self.last_seq = seq
        self._frames.append((text, nbytes))
        if len(self._frames) > self._max_frames:
            self._frames.popleft()
            self._m.viewer_frames_dropped.inc()
        self._wake.set()

    def push_control(self, text: str) -> None:
        """Queue an ack/error/notice; a viewer whose control queue overflows is closed."""
        if self._closed:
            return
        if len(self._control) >= self._max_control:
            self.close(CLOSE_TOO_SLOW, "too slow: control queue full")
            return
        self._control.append(text)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to close the socket with ``code`` after what is queued."""
        if self.close_reason is None:
            self.close_reason = (code, reason)
        self._wake.set()

    # ---- the writer task ---------------------------------------------------------------
    async def write_loop(self) -> None:
        """Drain the queues to the socket until closed. Returns when the viewer is done."""
        ws = self.ws
        try:
            while True:
                if not self._control and not self._frames:
                    if self.close_reason is not None:
                        break
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                if self._control:
                    msg, nbytes = self._control.popleft(), 0
                else:
                    msg, nbytes = self._frames.popleft()
                started = time.monotonic()
                with trio.move_on_after(self._stuck_timeout_s) as scope:
                    await ws.send_message(msg)
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
            code, reason = self.close_reason or (1000, "")
            with trio.move_on_after(2):
                await ws.aclose(code, reason)
        except ConnectionClosed:
            self._closed = True
