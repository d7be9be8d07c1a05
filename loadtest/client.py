"""The lean load client: viewer and sender coroutines and the per-process counters.

A viewer connects, then drains messages until the run ends. Most viewers only count:
a frame costs a prefix check, a ``seq`` slice and a substring count of ``"id":`` (the
server's compact JSON writes that only as an item key, since quotes inside strings are
escaped). Sampled viewers parse each frame and record latency = receive time minus the
send time the sender wrote into the comment text (same host clock: loopback only).
Senders hold one connection each with their own token, send at a scheduled rate,
keep at most ``max_inflight`` comments unacked (skipping, and counting, when behind)
and count acks and errors by code. Every loop ends when the run's cancel scope does.

Counters are indexed by *stage*: 0 = connecting/idle, 1..N = the scenario's phases,
N+1 = settle. ``Counters`` is merged across processes by the coordinator.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from loadtest.stats import Latency, Tally

CONNECT_TIMEOUT_S = 10.0
FRAME_PREFIX = '{"type":"frame"'
TEXT_TAG = "lt"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class StageCounters:
    """What one process saw during one stage; every field merges by addition."""

    frames: int = 0  # frame messages received by any connection (viewers and senders)
    items: int = 0  # items in those frames: deliveries
    bytes: int = 0  # characters of every message received (ASCII: bytes)
    viewer_frames: int = 0  # frames received by viewer connections only
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    skipped: int = 0  # sends skipped: max_inflight unacked comments
    seq_gaps: int = 0  # frames missing between consecutive seqs seen by one viewer
    duplicates: int = 0  # frames seen twice by one viewer
    latency: Latency = field(default_factory=Latency)
    ack_latency: Latency = field(default_factory=Latency)

    def merge(self, other: StageCounters) -> None:
        for name in _INT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency.merge(other.latency)
        self.ack_latency.merge(other.ack_latency)

    def encode(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in _INT_FIELDS}
        out["latency"] = self.latency.encode()
        out["ack_latency"] = self.ack_latency.encode()
        return out

    @classmethod
    def decode(cls, data: dict[str, Any]) -> StageCounters:
        sc = cls(**{name: data[name] for name in _INT_FIELDS})
        sc.latency = Latency.decode(data["latency"])
        sc.ack_latency = Latency.decode(data["ack_latency"])
        return sc


_INT_FIELDS = (
    "frames",
    "items",
    "bytes",
    "viewer_frames",
    "sent",
    "acked",
    "rejected",
    "skipped",
    "seq_gaps",
    "duplicates",
)


class Counters:
    """Per-stage counters plus run-wide tallies of one process (or a merge of several).

    ``errors``: unexpected things by kind (connect failures, server ``error`` codes,
    unexpected closes); ``closes``: every close by code; ``frame_dropped``: the
    ``dropped`` field of distinct frames seen by sampled viewers, keyed ``room:seq``.
    """

    def __init__(self, stages: int) -> None:
        self.stages = [StageCounters() for _ in range(stages)]
        self.errors = Tally()
        self.closes = Tally()
        self.frame_dropped: dict[str, int] = {}
        self.stage = 0
        self.connected = 0
        self.connected_peak = 0
        self.attempted = 0  # connection attempts finished (either way)
        self.interval = Latency()  # latency since the last progress report

    @property
    def now(self) -> StageCounters:
        return self.stages[self.stage]

    def connect(self) -> None:
        self.connected += 1
        self.connected_peak = max(self.connected_peak, self.connected)

    def total(self) -> StageCounters:
        out = StageCounters()
        for s in self.stages:
            out.merge(s)
        return out

    def encode(self) -> dict[str, Any]:
        return {
            "stages": [s.encode() for s in self.stages],
            "errors": dict(self.errors),
            "closes": dict(self.closes),
            "frame_dropped": self.frame_dropped,
            "connected": self.connected,
            "connected_peak": self.connected_peak,
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Counters:
        c = cls(len(data["stages"]))
        c.stages = [StageCounters.decode(s) for s in data["stages"]]
        c.errors.merge(data["errors"])
        c.closes.merge(data["closes"])
        c.frame_dropped = dict(data["frame_dropped"])
        c.connected = data["connected"]
        c.connected_peak = data["connected_peak"]
        return c

    def merge(self, other: Counters) -> None:
        for mine, theirs in zip(self.stages, other.stages, strict=True):
            mine.merge(theirs)
        self.errors.merge(other.errors)
        self.closes.merge(other.closes)
        self.frame_dropped.update(other.frame_dropped)
        self.connected += other.connected
        self.connected_peak += other.connected_peak


def comment_text(uid: str, k: int, send_ms: int, size: int) -> str:
    """A comment text carrying its send time, unique per (sender, k) even after spam
    normalisation (a random tail), padded to ``size`` characters."""
    head = f"{TEXT_TAG} {send_ms} {uid}-{k} "
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(max(size - len(head), 6)))
    return head + tail


def send_ms_of(text: str) -> int | None:
    """The send time written by ``comment_text``; None for other texts."""
    if not text.startswith(TEXT_TAG + " "):
        return None
    stamp = text[3:].split(" ", 1)[0]
    return int(stamp) if stamp.isdigit() else None


def frame_seq(msg: str) -> int:
    """The ``seq`` of a compact frame message without parsing it (-1 if absent)."""
    at = msg.find('"seq":')
    if at < 0:
        return -1
    end = msg.find(",", at)
    try:
        return int(msg[at + 6 : end])
    except ValueError:
        return -1


@dataclass
class ConnSpec:
    """One connection to open: room, optional token (senders), whether it parses frames."""

    url: str
    room: str
    token: str | None = None
    sampled: bool = False
    slow_from: float | None = None  # trio time: stop reading ...
    slow_until: float | None = None  # ... until here
    reconnect_at: float | None = None  # trio time: drop and resume with since
    scope: trio.CancelScope | None = None  # the current connection's read scope

    def set_reconnect(self, at: float) -> None:
        """Drop and resume at trio time ``at`` (applies to a connection already open)."""
        self.reconnect_at = at
        if self.scope is not None:
            self.scope.deadline = at


async def open_conn(nursery: trio.Nursery, c: Counters, url: str) -> WebSocketConnection | None:
    """Connect within ``CONNECT_TIMEOUT_S``; failures are counted in ``c.errors``."""
    try:
        return await _open(nursery, c, url)
    finally:
        c.attempted += 1


async def _open(nursery: trio.Nursery, c: Counters, url: str) -> WebSocketConnection | None:
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            ws = await connect_websocket_url(
                nursery, url, message_queue_size=4, receive_buffer_size=65536
            )
    except trio.TooSlowError:
        c.errors.add("connect_timeout")
        return None
    except ConnectionRejected as exc:
        c.errors.add(f"connect_http_{exc.status_code}")
        return None
    except (HandshakeError, OSError) as exc:
        c.errors.add(f"connect_{type(exc).__name__}")
        return None
    c.connect()
    return ws


class Conn:
    """A viewer or sender connection's receive side (see the module docstring)."""

    def __init__(self, spec: ConnSpec, c: Counters, is_viewer: bool) -> None:
        self.spec = spec
        self.c = c
        self.is_viewer = is_viewer
        self.last_seq = -1
        self.ws: WebSocketConnection | None = None
        self.inflight: dict[str, float] = {}  # nonce -> send time (senders)
        self.closing = False

    def on_message(self, msg: str) -> None:
        c = self.c
        st = c.stages[c.stage]
        st.bytes += len(msg)
        if msg.startswith(FRAME_PREFIX):
            st.frames += 1
            if self.is_viewer:
                st.viewer_frames += 1
                seq = frame_seq(msg)
                if self.last_seq >= 0 and seq >= 0:
                    if seq <= self.last_seq:
                        st.duplicates += 1
                    elif seq > self.last_seq + 1:
                        st.seq_gaps += seq - self.last_seq - 1
                if seq > self.last_seq:
                    self.last_seq = seq
            if self.spec.sampled:
                self._parse_frame(msg, st)
            else:
                st.items += msg.count('"id":')
            return
        self._control(orjson.loads(msg), st)

    def _parse_frame(self, msg: str, st: StageCounters) -> None:
        frame = orjson.loads(msg)
        items = frame.get("items") or []
        st.items += len(items)
        now_ms = time.time() * 1000.0
        for item in items:
            sent = send_ms_of(str(item.get("text", "")))
            if sent is not None:
                st.latency.record(now_ms - sent)
                self.c.interval.record(now_ms - sent)
        if frame.get("dropped"):
            self.c.frame_dropped[f"{frame.get('room')}:{frame.get('seq')}"] = int(frame["dropped"])

    def _control(self, msg: dict[str, Any], st: StageCounters) -> None:
        kind = msg.get("type")
        if kind == "welcome":
            if self.last_seq < 0 and isinstance(msg.get("seq"), int):
                self.last_seq = msg["seq"]
        elif kind == "ack":
            sent_at = self.inflight.pop(str(msg.get("nonce")), None)
            st.acked += 1
            if sent_at is not None:
                st.ack_latency.record((time.monotonic() - sent_at) * 1000.0)
        elif kind == "error":
            self.inflight.pop(str(msg.get("nonce")), None)
            st.rejected += 1
            self.c.errors.add(f"error_{msg.get('code')}")
        elif kind == "notice" and msg.get("event") == "resume_failed":
            self.c.errors.add("resume_failed")

    async def read_until_closed(self, ws: WebSocketConnection) -> None:
        """Drain ``ws``; pauses while the spec says this viewer is slow."""
        spec = self.spec
        try:
            while True:
                if spec.slow_from is not None and spec.slow_until is not None:
                    now = trio.current_time()
                    if spec.slow_from <= now < spec.slow_until:
                        await trio.sleep_until(spec.slow_until)
                self.on_message(str(await ws.get_message()))
        except ConnectionClosed as exc:
            self.c.connected -= 1
            code = exc.reason.code if exc.reason else 1006
            self.c.closes.add(str(code))
            if not self.closing:
                expected = code == 4000 and spec.slow_from is not None
                if not expected:
                    self.c.errors.add(f"closed_{code}")


def url_for(base: str, room: str, token: str | None = None, since: int | None = None) -> str:
    url = f"{base}?room={room}"
    if token:
        url += f"&token={token}"
    if since is not None and since >= 0:
        url += f"&since={since}"
    return url


async def run_viewer(
    nursery: trio.Nursery, spec: ConnSpec, c: Counters, connect_at: float, registry: list[Conn]
) -> None:
    """One viewer: connect at ``connect_at`` (trio time), drain, and when the spec says so
    drop the connection once and resume with ``since`` = the last seq seen. Returns when
    the connection is gone; the run's cancel scope ends it otherwise."""
    await trio.sleep_until(connect_at)
    conn = Conn(spec, c, is_viewer=True)
    registry.append(conn)
    since: int | None = None
    while True:
        ws = await open_conn(nursery, c, url_for(spec.url, spec.room, since=since))
        if ws is None:
            return
        conn.ws = ws
        with trio.move_on_at(spec.reconnect_at or float("inf")) as scope:
            spec.scope = scope
            await conn.read_until_closed(ws)
        spec.scope = None
        if not scope.cancelled_caught:
            return
        conn.closing = True
        with trio.move_on_after(2):
            await ws.aclose()
        c.connected -= 1
        c.closes.add("1000")
        spec.reconnect_at = None
        conn.closing = False
        since = conn.last_seq


RateFn = Callable[[float], "float | None"]


@dataclass
class SenderPlan:
    """A sender's identity and pacing: ``offset`` staggers senders within an interval."""

    uid: str
    offset: float
    max_inflight: int
    text_bytes: int


async def run_sender(
    nursery: trio.Nursery,
    spec: ConnSpec,
    plan: SenderPlan,
    c: Counters,
    wait_start: Callable[[], Awaitable[tuple[float, RateFn]]],
    registry: list[Conn],
) -> None:
    """Connect (at once), wait for ``wait_start()`` to give the start time (trio clock)
    and the rate function, then send comments at ``rate_at(now)`` per second until it
    returns None. The connection stays open afterwards (its reader keeps counting
    frames like a viewer's) until the run closes it."""
    conn = Conn(spec, c, is_viewer=False)
    registry.append(conn)
    ws = await open_conn(nursery, c, url_for(spec.url, spec.room, token=spec.token))
    if ws is None:
        return
    conn.ws = ws
    nursery.start_soon(conn.read_until_closed, ws)
    start, rate_at = await wait_start()
    k = 0
    next_t = start + plan.offset
    while True:
        await trio.sleep_until(next_t)
        now = trio.current_time()
        rate = rate_at(now)
        if rate is None or ws.closed is not None:
            return
        if rate <= 0:
            next_t = now + 0.05
            continue
        if now - next_t > 1.0:  # fell far behind (a stall): resynchronise, do not burst
            next_t = now
        next_t += 1.0 / rate
        stage = c.stages[c.stage]
        if len(conn.inflight) >= plan.max_inflight:
            stage.skipped += 1
            continue
        k += 1
        nonce = f"{plan.uid}-{k}"
        text = comment_text(plan.uid, k, int(time.time() * 1000), plan.text_bytes)
        conn.inflight[nonce] = time.monotonic()
        stage.sent += 1
        try:
            await ws.send_message(
                orjson.dumps({"type": "comment", "text": text, "nonce": nonce}).decode()
            )
        except ConnectionClosed:
            return


async def close_all(registry: list[Conn], timeout_s: float = 3.0) -> None:
    """Close every open connection (1000) concurrently, within ``timeout_s``."""

    async def close(conn: Conn) -> None:
        ws = conn.ws
        if ws is not None and ws.closed is None:
            conn.closing = True
            await ws.aclose()

    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            for conn in registry:
                nursery.start_soon(close, conn)
