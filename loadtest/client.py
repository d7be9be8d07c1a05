"""The lean load client: viewer and sender coroutines and the per-process counters.

Connections use the lean WebSocket client of ``loadtest.wire`` (read in the viewer's
own task: no reader task or queue per connection). A viewer connects, then drains
messages until the run ends. Most viewers only count:
a frame costs a prefix check, a ``seq`` slice and a substring count of ``"id":`` (the
server's compact JSON writes that only as an item key, since quotes inside strings are
escaped). Sampled viewers parse each frame and record latency = receive time minus the
send time the sender wrote into the comment text (same host clock: loopback only).
Senders hold one connection each with their own token and send on the scenario's
schedule (``Scenario.due_time``: comment ``n`` of the run is sent by sender
``n mod senders`` at its due time). A sender that wakes late sends what is due at once
(catch-up), unless it is more than ``MAX_LAG_S`` late: those are counted as ``late``
and not sent, so a stalled loop never turns into a burst the server's per-user limit
would reject. At most ``max_inflight`` comments stay unacked (further ones are
``skipped``). Sends are counted in the stage of their due time; acks (``shed`` ones
apart: the server acks a comment it sheds at the door with an id ``shed-...``) and
errors when they arrive. Every loop ends when the run's cancel scope does.

Counters are indexed by *stage*: 0 = connecting/idle, 1..N = the scenario's phases,
N+1 = settle. ``Counters`` is merged across processes by the coordinator.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from loadtest.stats import Latency, Tally
from loadtest.wire import ABNORMAL, Closed, HandshakeFailed, WebSocket

CONNECT_TIMEOUT_S = 10.0
MAX_LAG_S = 1.0  # a sender this late for a due comment does not send it (``late``)
SHED_PREFIX = "shed-"  # ack id of a comment the server shed at the door
CLOSE_TOO_SLOW = 4000  # the server's close code for a viewer that stopped reading
FRAME_PREFIX = '{"type":"frame"'
TEXT_TAG = "lt"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class StageCounters:
    """What one process saw during one stage; every field merges by addition."""

    frames: int = 0  # frame messages received by any connection (viewers and senders)
    items: int = 0  # items in those frames: deliveries
    viewer_items: int = 0  # deliveries to viewer connections only
    bytes: int = 0  # characters of every message received (ASCII: bytes)
    viewer_bytes: int = 0  # of those, received by viewer connections
    viewer_frames: int = 0  # frames received by viewer connections only
    sent: int = 0  # by the stage of the comment's due time
    acked: int = 0
    shed: int = 0  # acks of comments the server shed at the door (in ``acked`` too)
    rejected: int = 0
    skipped: int = 0  # sends skipped: max_inflight unacked comments
    late: int = 0  # sends not made: the sender woke more than MAX_LAG_S after the due time
    seq_gaps: int = 0  # frames missing between consecutive seqs seen by one viewer
    duplicates: int = 0  # frames seen twice by one viewer
    viewer_seconds: float = 0.0  # viewers connected x seconds (per-viewer rates)
    latency: Latency = field(default_factory=Latency)
    ack_latency: Latency = field(default_factory=Latency)

    def merge(self, other: StageCounters) -> None:
        for name in _INT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.viewer_seconds += other.viewer_seconds
        self.latency.merge(other.latency)
        self.ack_latency.merge(other.ack_latency)

    def encode(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in _INT_FIELDS}
        out["viewer_seconds"] = self.viewer_seconds
        out["latency"] = self.latency.encode()
        out["ack_latency"] = self.ack_latency.encode()
        return out

    @classmethod
    def decode(cls, data: dict[str, Any]) -> StageCounters:
        sc = cls(**{name: data.get(name, 0) for name in _INT_FIELDS})
        sc.viewer_seconds = data.get("viewer_seconds", 0.0)
        sc.latency = Latency.decode(data["latency"])
        sc.ack_latency = Latency.decode(data["ack_latency"])
        return sc


_INT_FIELDS = (
    "frames",
    "items",
    "viewer_items",
    "bytes",
    "viewer_bytes",
    "viewer_frames",
    "sent",
    "acked",
    "shed",
    "rejected",
    "skipped",
    "late",
    "seq_gaps",
    "duplicates",
)


@dataclass
class ProcStats:
    """One load process: what it runs, and per stage its CPU seconds, wall seconds and
    event-loop lag (how late a 50 ms timer fires: a saturated loop delays every
    receive, so its viewers' latency includes client-side delay)."""

    proc: int
    role: str  # "viewers", "senders" or "viewers+senders"
    viewers: int
    senders: int
    cpu_s: list[float]
    wall_s: list[float]
    lag: list[Latency]

    @classmethod
    def new(cls, proc: int, role: str, viewers: int, senders: int, stages: int) -> ProcStats:
        return cls(
            proc,
            role,
            viewers,
            senders,
            [0.0] * stages,
            [0.0] * stages,
            [Latency() for _ in range(stages)],
        )

    def encode(self) -> dict[str, Any]:
        return {
            "proc": self.proc,
            "role": self.role,
            "viewers": self.viewers,
            "senders": self.senders,
            "cpu_s": list(self.cpu_s),
            "wall_s": list(self.wall_s),
            "lag": [lat.encode() for lat in self.lag],
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> ProcStats:
        return cls(
            data["proc"],
            data["role"],
            data["viewers"],
            data["senders"],
            list(data["cpu_s"]),
            list(data["wall_s"]),
            [Latency.decode(x) for x in data["lag"]],
        )

    def cpu_pct(self, stages: range) -> float | None:
        """CPU of this process over ``stages`` in % of one core."""
        wall = sum(self.wall_s[i] for i in stages)
        return round(100 * sum(self.cpu_s[i] for i in stages) / wall, 1) if wall > 0 else None


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
        self.viewers_open = 0  # viewer connections open now (senders not included)
        self.attempted = 0  # connection attempts finished (either way)
        self.interval = Latency()  # latency since the last progress report
        self.procs: dict[int, ProcStats] = {}  # by process index

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
            "procs": [p.encode() for p in self.procs.values()],
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
        for raw in data.get("procs", []):
            ps = ProcStats.decode(raw)
            c.procs[ps.proc] = ps
        return c

    def merge(self, other: Counters) -> None:
        for mine, theirs in zip(self.stages, other.stages, strict=True):
            mine.merge(theirs)
        self.errors.merge(other.errors)
        self.closes.merge(other.closes)
        self.frame_dropped.update(other.frame_dropped)
        self.connected += other.connected
        self.connected_peak += other.connected_peak
        self.procs.update(other.procs)


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
    #: asked for the URL before every connection attempt (room-affine routing: the web
    #: app's answer for ``room``); ``None``: ``url``
    resolve: Callable[[str], Awaitable[str]] | None = None

    async def base_url(self) -> str:
        """Where the next connection attempt goes."""
        return self.url if self.resolve is None else await self.resolve(self.room)

    def set_reconnect(self, at: float) -> None:
        """Drop and resume at trio time ``at`` (applies to a connection already open)."""
        self.reconnect_at = at
        if self.scope is not None:
            self.scope.deadline = at


@asynccontextmanager
async def connection(c: Counters, url: str) -> AsyncIterator[WebSocket | None]:
    """Connect within ``CONNECT_TIMEOUT_S`` (None on failure, counted in ``c.errors``);
    the socket is closed when the block ends. An attempt that times out is closed too,
    never left to complete later as a connection nobody reads."""
    try:
        ws = await _open(c, url)
    finally:
        c.attempted += 1
    try:
        yield ws
    finally:
        if ws is not None:
            await ws.abort()


async def _open(c: Counters, url: str) -> WebSocket | None:
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            ws = await WebSocket.connect(url)
    except trio.TooSlowError:
        c.errors.add("connect_timeout")
        return None
    except HandshakeFailed as exc:
        c.errors.add(f"connect_http_{exc.status}" if exc.status else "connect_HandshakeError")
        return None
    except (OSError, trio.BrokenResourceError) as exc:
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
        self.epoch = ""  # the room's history epoch (welcome): a resume sends it back
        self.ws: WebSocket | None = None
        self.inflight: dict[str, float] = {}  # nonce -> send time (senders)
        self.closing = False

    def on_message(self, msg: str) -> None:
        c = self.c
        st = c.stages[c.stage]
        st.bytes += len(msg)
        if self.is_viewer:
            st.viewer_bytes += len(msg)
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
            items = self._parse_frame(msg, st) if self.spec.sampled else msg.count('"id":')
            st.items += items
            if self.is_viewer:
                st.viewer_items += items
            return
        self._control(orjson.loads(msg), st)

    def _parse_frame(self, msg: str, st: StageCounters) -> int:
        """Record the latency of every item; returns the number of items."""
        frame = orjson.loads(msg)
        items = frame.get("items") or []
        now_ms = time.time() * 1000.0
        for item in items:
            sent = send_ms_of(str(item.get("text", "")))
            if sent is not None:
                st.latency.record(now_ms - sent)
                self.c.interval.record(now_ms - sent)
        if frame.get("dropped"):
            self.c.frame_dropped[f"{frame.get('room')}:{frame.get('seq')}"] = int(frame["dropped"])
        return len(items)

    def _control(self, msg: dict[str, Any], st: StageCounters) -> None:
        kind = msg.get("type")
        if kind == "welcome":
            if self.last_seq < 0 and isinstance(msg.get("seq"), int):
                self.last_seq = msg["seq"]
            if isinstance(msg.get("epoch"), str):
                self.epoch = msg["epoch"]
        elif kind == "ack":
            sent_at = self.inflight.pop(str(msg.get("nonce")), None)
            st.acked += 1
            if str(msg.get("id", "")).startswith(SHED_PREFIX):
                st.shed += 1
            if sent_at is not None:
                st.ack_latency.record((time.monotonic() - sent_at) * 1000.0)
        elif kind == "error":
            self.inflight.pop(str(msg.get("nonce")), None)
            st.rejected += 1
            self.c.errors.add(f"error_{msg.get('code')}")
        elif kind == "notice" and msg.get("event") == "resume_failed":
            self.c.errors.add("resume_failed")

    async def read_until_closed(self, ws: WebSocket) -> None:
        """Drain ``ws``; pauses while the spec says this viewer is slow."""
        spec = self.spec
        try:
            while True:
                if spec.slow_from is not None and spec.slow_until is not None:
                    now = trio.current_time()
                    if spec.slow_from <= now < spec.slow_until:
                        await trio.sleep_until(spec.slow_until)
                self.on_message(str(await ws.get_message()))
        except Closed as exc:
            self.c.connected -= 1
            code = exc.code
            self.c.closes.add(str(code))
            if not self.closing:
                # The server drops a viewer that stalls (4000), or just ends the TCP
                # connection when even its close frame cannot get into the full socket.
                stalled = spec.slow_from is not None and trio.current_time() >= spec.slow_from
                expected = stalled and code in (CLOSE_TOO_SLOW, ABNORMAL)
                if not expected:
                    self.c.errors.add(f"closed_{code}")


def url_for(
    base: str, room: str, token: str | None = None, since: int | None = None, epoch: str = ""
) -> str:
    url = f"{base}?room={room}"
    if token:
        url += f"&token={token}"
    if since is not None and since >= 0:
        url += f"&since={since}"
        if epoch:
            url += f"&epoch={epoch}"
    return url


async def run_viewer(spec: ConnSpec, c: Counters, connect_at: float, registry: list[Conn]) -> None:
    """One viewer: connect at ``connect_at`` (trio time), drain, and when the spec says so
    drop the connection once and resume with ``since`` = the last seq seen. Returns when
    the connection is gone; the run's cancel scope ends it otherwise."""
    await trio.sleep_until(connect_at)
    conn = Conn(spec, c, is_viewer=True)
    registry.append(conn)
    since: int | None = None
    while True:
        url = url_for(await spec.base_url(), spec.room, since=since, epoch=conn.epoch)
        async with connection(c, url) as ws:
            if ws is None:
                return
            conn.ws = ws
            c.viewers_open += 1
            try:
                with trio.move_on_at(spec.reconnect_at or float("inf")) as scope:
                    spec.scope = scope
                    await conn.read_until_closed(ws)
            finally:
                c.viewers_open -= 1
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


DueFn = Callable[[int], "tuple[float, int] | None"]


@dataclass(frozen=True)
class SenderPlan:
    """A sender's identity and its share of the schedule: comments ``index``,
    ``index + stride``, ... of the run (``stride`` = the number of senders)."""

    uid: str
    index: int
    stride: int
    max_inflight: int
    text_bytes: int
    max_lag_s: float = MAX_LAG_S


async def run_sender(
    spec: ConnSpec,
    plan: SenderPlan,
    c: Counters,
    wait_start: Callable[[], Awaitable[DueFn]],
    registry: list[Conn],
) -> None:
    """Connect (at once), wait for ``wait_start()`` to give the schedule (``due(n)``:
    trio time and stage of the run's comment ``n``, None past the last phase), then
    send this sender's comments at their due times (see the module docstring). The
    connection stays open afterwards (its reader keeps counting frames like a
    viewer's) until the run closes it."""
    conn = Conn(spec, c, is_viewer=False)
    registry.append(conn)
    base = await spec.base_url()
    async with connection(c, url_for(base, spec.room, token=spec.token)) as ws:
        if ws is None:
            return
        conn.ws = ws
        async with trio.open_nursery() as tasks:
            tasks.start_soon(conn.read_until_closed, ws)
            await _send_loop(ws, conn, plan, c, await wait_start())


async def _send_loop(ws: WebSocket, conn: Conn, plan: SenderPlan, c: Counters, due: DueFn) -> None:
    n, k = plan.index, 0
    while True:
        slot = due(n)
        if slot is None:
            return
        at, stage_index = slot
        n += plan.stride
        await trio.sleep_until(at)  # a checkpoint even when already due: catch-up
        if ws.closed is not None:
            return
        stage = c.stages[stage_index]
        if trio.current_time() - at > plan.max_lag_s:
            stage.late += 1
            continue
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
        except Closed:
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
