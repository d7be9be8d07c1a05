"""``Gateway``: the WebSocket service viewers connect to.

``ws://HOST:PORT/ws?room=ROOM[&token=T][&since=SEQ]``. Per connection: handshake checks
(path, per-IP caps, room name, token), ``welcome``, optional replay of frames after
``since`` from the room's history, then live frames; comments from senders are validated
and handed to the ``IngestBatcher``. Each connection is a task in the server's nursery;
nothing a client sends can raise out of it.

Start with ``await nursery.start(gateway.run)`` (returns the bound port); ``drain()``
closes viewers with 1013 and flushes pending comments before cancellation.
"""

from __future__ import annotations

import logging
import random
import secrets
import ssl
import time
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from danmaku import auth, protocol
from danmaku.auth import User
from danmaku.config import Settings
from danmaku.gateway.fastpath import (
    install_inbound,
    install_protocol_error_close,
    install_wait_first_receive,
    slim_connection,
)
from danmaku.gateway.hub import DENSITY, FrameFeed, Hub, RoomHubs
from danmaku.gateway.ingest import IngestBatcher, Submission
from danmaku.gateway.listener import PacedListener
from danmaku.gateway.poller import ReadPoller
from danmaku.gateway.viewer import OutFrame, Viewer
from danmaku.gcfreeze import FreezeOnGrowth
from danmaku.metrics import Metrics
from danmaku.rules.admission import IpAdmission
from danmaku.rules.normalize import normalize
from danmaku.rules.ratelimit import TokenBucket
from danmaku.rules.wordfilter import WordFilter
from danmaku.store import Ingest, IngestLimits, Store, StoreError, door_key

log = logging.getLogger(__name__)

PRESENCE_EVERY_S = 0.5  # also how fast the ingest ceiling reacts to a spike
MAX_INFLIGHT = 32  # comments one connection may have waiting for their ack
REPLAY_CHUNK = 200


def _header(request: WebSocketRequest, name: bytes) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _remote_ip(request: WebSocketRequest) -> str:
    remote = request.remote
    return str(getattr(remote, "address", remote))


def parse_origins(raw: str) -> set[str]:
    """``"https://a.example, http://b:8080/"`` -> ``{"https://a.example", "http://b:8080"}``."""
    return {o.strip().rstrip("/").lower() for o in raw.split(",") if o.strip()}


class _Inbox:
    """One connection's incoming side: its viewer, flood bucket and, once the gateway
    decided to close it, why."""

    __slots__ = ("ended", "flood", "viewer")

    def __init__(self, viewer: Viewer, flood: TokenBucket) -> None:
        self.viewer = viewer
        self.flood = flood
        self.ended: str | None = None


class HandshakeRefused(Exception):
    def __init__(self, code: str, message: str, close: int = protocol.CLOSE_POLICY):
        super().__init__(message)
        self.code, self.message, self.close = code, message, close


class Gateway:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        *,
        gateway_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.gateway_id = gateway_id or f"g-{secrets.token_hex(4)}"
        self.hubs = RoomHubs(store, metrics, settings.ingest_ceiling)
        self.feed = FrameFeed(self.hubs, store, metrics)
        limits = IngestLimits(settings.rate_per_s, settings.rate_burst, settings.duplicate_window_s)
        self.ingest = IngestBatcher(
            store, metrics, limits, settings.ingest_queue, settings.ingest_linger_ms / 1000
        )
        self.rng = rng or random.Random()
        self.admission = IpAdmission(
            settings.max_conns_per_ip, settings.max_sessions_per_ip_per_min
        )
        self.limits = protocol.TextLimits(settings.max_text_chars, settings.max_text_bytes)
        self.draining = False
        # Browser origins allowed to connect; run_system adds the web app's own origin.
        self.allowed_origins = parse_origins(settings.allowed_origins)
        self.port = 0
        self._viewers: set[Viewer] = set()
        self._all_gone = trio.Event()  # set when draining and the last viewer left
        self._handshake_slots = trio.CapacityLimiter(max(1, settings.max_handshakes))
        self._nursery: trio.Nursery | None = None  # where viewers' writer tasks run
        self.poller = ReadPoller()  # reads fast connections' sockets (poller.py)
        # Connections out of full GC walks as their number grows (see gcfreeze).
        self._freezer = FreezeOnGrowth() if settings.gc_freeze else None

    # ---- lifecycle ------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. ``task_status.started(port)`` once listening."""
        s = self.settings
        install_protocol_error_close()
        ssl_context = None
        if s.tls_cert:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(s.tls_cert, s.tls_key or None)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.feed.run)
            await nursery.start(self.ingest.run)
            await nursery.start(self.poller.run)
            nursery.start_soon(self._presence_loop)
            # serve_websocket's own listeners, wrapped: handshake storms are spread out at
            # the door (PacedListener).
            tcp = await trio.open_tcp_listeners(s.ws_port, host=s.ws_host)
            self.port = tcp[0].socket.getsockname()[1]
            listeners: list[Any] = tcp
            if ssl_context is not None:
                listeners = [
                    trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in tcp
                ]
            paced: list[Any] = [
                PacedListener(lst, s.max_accepts_per_s, s.max_accepts_per_s / 10)
                for lst in listeners
            ]
            server = WebSocketServer(
                self._handle,
                paced,
                handler_nursery=nursery,
                max_message_size=s.max_message_bytes,
                message_queue_size=8,
                connect_timeout=s.connect_timeout_s,
                disconnect_timeout=2.0,
            )
            await nursery.start(server.run)
            task_status.started(self.port)

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin.rstrip("/").lower() in self.allowed_origins

    async def drain(self) -> None:
        """Stop taking comments, store what is queued, close viewers with 1013."""
        self.draining = True
        await self.ingest.flush(self.settings.drain_s)
        for viewer in list(self._viewers):
            viewer.close(protocol.CLOSE_TRY_AGAIN, "server draining, reconnect")
        with trio.move_on_after(self.settings.drain_s):
            if self._viewers:
                await self._all_gone.wait()

    async def _presence_loop(self) -> None:
        """Every half second: publish viewers and offered rates per room, and read back
        the room-wide offered rate (ingest ceiling) and room settings."""
        last = trio.current_time()
        while True:
            await trio.sleep(PRESENCE_EVERY_S)
            now = trio.current_time()
            elapsed, last = max(now - last, 1e-3), now
            if self._freezer is not None:
                action = self._freezer.decide(len(self._viewers))
                frozen = self._freezer.apply(action) if action is not None else None
                if frozen is not None:
                    self.metrics.gc_frozen.set(frozen)
            counts = self.hubs.counts()
            if not counts:
                continue
            offered, shed = {}, {}
            for room, hub in self.hubs.hubs.items():
                offered[room] = hub.offered / elapsed
                shed[room] = hub.shed / elapsed
                hub.offered = hub.shed = 0
            try:
                live = await self.store.sync_rooms(self.gateway_id, counts, offered, shed)
            except StoreError as exc:
                log.warning("presence report failed: %s", exc)
                continue
            for room, info in live.items():
                live_hub = self.hubs.hubs.get(room)
                if live_hub is None:
                    continue
                live_hub.ceiling.ceiling = info.settings.get(
                    "ingest_ceiling", self.settings.ingest_ceiling
                )
                live_hub.ceiling.observe(info.offered, trio.current_time())
                version = (info.settings.get("words_v", 0.0), info.global_words_version)
                if version != live_hub.words_version:
                    try:
                        room_words, global_words = await self.store.words(room)
                    except StoreError as exc:
                        log.warning("blocked words of %s: %s", room, exc)
                        continue
                    live_hub.words = WordFilter(room_words + global_words)
                    live_hub.words_version = version

    # ---- a connection ---------------------------------------------------------------
    async def _handle(self, request: WebSocketRequest) -> None:
        m = self.metrics
        ip = _remote_ip(request)
        query = await self._screen(request)
        if query is None:
            return
        refused = self.admission.try_open(ip, time.time())
        if refused is not None:
            m.handshakes_rejected.labels(refused).inc()
            await request.reject(429, body=refused.encode())
            return
        try:
            # A storm of handshakes must not starve the broadcast loop: trio runs every
            # runnable task once per round, so a few thousand handshakes in flight would
            # delay frames by their whole round. Bounding them keeps rounds short.
            async with self._handshake_slots:
                try:
                    room, user, since, density = self._check(parse_qs(query, max_num_fields=8))
                except HandshakeRefused as refusal:
                    m.handshakes_rejected.labels(refusal.code).inc()
                    ws = await request.accept()
                    await ws.send_message(
                        protocol.error(protocol.ProtocolError(refusal.code, refusal.message))
                    )
                    await ws.aclose(refusal.close, refusal.message[:120])
                    return
                ws = await request.accept()
                slim_connection(ws, request)
            await self._session(ws, room, user, since, density)
        except ConnectionClosed:
            pass
        finally:
            self.admission.close(ip)

    async def _screen(self, request: WebSocketRequest) -> str | None:
        """The checks before admission (draining, path, Origin): the query string, or
        ``None`` when the request was refused (and answered)."""
        m = self.metrics
        if self.draining:
            m.handshakes_rejected.labels("draining").inc()
            await request.reject(503, body=b"draining")
            return None
        url = urlsplit(request.path)
        if url.path != "/ws":
            m.handshakes_rejected.labels("not_found").inc()
            await request.reject(404, body=b"not found: connect to /ws?room=ROOM")
            return None
        origin = _header(request, b"origin")
        if origin is not None and not self.origin_allowed(origin):
            m.handshakes_rejected.labels("origin").inc()
            await request.reject(403, body=b"origin not allowed")
            return None
        return url.query

    def _check(self, query: dict[str, list[str]]) -> tuple[str, User | None, int | None, float]:
        room = (query.get("room") or [""])[0]
        if not protocol.valid_room(room):
            raise HandshakeRefused("bad_room", "room must be 1-64 of [A-Za-z0-9_-]")
        user = None
        token = (query.get("token") or [""])[0]
        if token:
            try:
                user = auth.verify(self.settings.secret, token, room=room)
            except auth.TokenError as exc:
                raise HandshakeRefused("unauthorized", str(exc)) from exc
        since = None
        raw_since = (query.get("since") or [""])[0]
        if raw_since:
            if not raw_since.isdigit() or len(raw_since) > 18:
                raise HandshakeRefused("bad_request", "since must be a frame seq (integer)")
            since = int(raw_since)
        density = 1.0
        raw_density = (query.get("density") or [""])[0]
        if raw_density:
            parsed = protocol.parse_density(raw_density[:16])
            if parsed is None:
                raise HandshakeRefused("bad_request", "density must be a number in (0, 1]")
            density = parsed
        return room, user, since, density

    async def _session(
        self,
        ws: WebSocketConnection,
        room: str,
        user: User | None,
        since: int | None,
        density: float = 1.0,
    ) -> None:
        s, m = self.settings, self.metrics
        assert self._nursery is not None
        viewer = Viewer(
            ws,
            room,
            user,
            m,
            spawn=self._nursery.start_soon,
            max_frames=s.viewer_queue_frames,
            max_control=s.viewer_queue_control,
            stuck_timeout_s=s.slow_viewer_timeout_s,
            fast=bool(s.fast_path),
        )
        viewer.level = DENSITY.index_for(density)
        inbox = _Inbox(viewer, TokenBucket(s.max_msgs_per_s, s.max_msgs_burst))
        try:
            hub = await self.hubs.hub(room)
        except StoreError:
            await ws.aclose(protocol.CLOSE_TRY_AGAIN, "storage unavailable")
            return
        m.connections_opened.labels("user" if user else "anonymous").inc()
        m.connections_open.inc()
        self._viewers.add(viewer)
        reason = "client"
        try:
            # No task of its own for writing: the viewer starts a writer only while it has
            # something queued, and cancels ``reading`` when its socket is done.
            with trio.CancelScope() as reading:
                viewer.on_done = reading.cancel
                viewer.push_control(
                    protocol.welcome(
                        room,
                        hub.last_seq,
                        s.tick_ms,
                        user.public() if user else None,
                        hub.online,
                        {"max_text_chars": s.max_text_chars, "max_text_bytes": s.max_text_bytes},
                    )
                )
                pin = hub.pin
                if pin and (not pin.get("until") or pin["until"] > time.time() * 1000):
                    viewer.push_control(protocol.notice("pin", pin=pin))
                await self._attach(viewer, hub, since)
                if s.fast_path:
                    # Plain text messages go to _on_message straight from trio-websocket's
                    # reader task, as they are parsed; the rest still via get_message.
                    inbound = install_inbound(
                        ws, partial(self._on_message, inbox), s.max_message_bytes
                    )
                    install_wait_first_receive(ws, self.poller, inbound)
                reason = await self._read_loop(ws, viewer, inbox)
                viewer.close(protocol.CLOSE_NORMAL, "")
            await viewer.wait_closed()  # what is queued is written, then the close frame
            reason = inbox.ended or reason
        finally:
            self.hubs.leave(viewer)
            self._viewers.discard(viewer)
            if self.draining and not self._viewers:
                self._all_gone.set()
            m.connections_open.dec()
            if viewer.close_reason and viewer.close_reason[0] == protocol.CLOSE_TOO_SLOW:
                reason = "too_slow"
            elif viewer.close_reason and viewer.close_reason[0] == protocol.CLOSE_TRY_AGAIN:
                reason = "draining"
            m.connections_closed.labels(reason).inc()

    async def _attach(self, viewer: Viewer, hub: Hub, since: int | None) -> None:
        """Replay frames after ``since`` from history, then join live with no gap.

        Frames are replayed only up to the hub's live position; the loop re-checks it
        after every await, and joining happens with no await after the last check, so
        the replay and the live feed meet exactly.
        """
        if since is not None and since > hub.last_seq + 1000:
            # A seq from another era of the room (its history was wiped): start live.
            viewer.push_control(
                protocol.notice(
                    "resume_failed", code="resume_failed", since=since, seq=hub.last_seq
                )
            )
            since = None
        if since is None or since >= hub.last_seq:
            # Live only; a client slightly ahead of this gateway gets no repeats.
            viewer.min_seq = since + 1 if since is not None else 0
            hub.viewers.add(viewer)
            return
        cursor = since
        while cursor < hub.last_seq:
            upto = hub.last_seq
            frames = await self.store.frames_after(
                hub.room, cursor, min(REPLAY_CHUNK, upto - cursor)
            )
            if not frames or frames[0].seq != cursor + 1:
                first = frames[0].seq if frames else upto + 1
                self.metrics.resume_gaps.inc()
                viewer.push_control(
                    protocol.notice(
                        "resume_failed",
                        code="resume_failed",
                        since=since,
                        missing_from=cursor + 1,
                        missing_to=first - 1,
                    )
                )
            for frame in frames:
                if frame.seq > upto:
                    break
                out = OutFrame.build(frame.seq, frame.payload)
                if viewer.push_frame(out):
                    self.metrics.frame_writes.inc()
                    self.metrics.frame_writes_fast.inc()
                    self.metrics.bytes_out.inc(len(out.payload))
                self.metrics.frames_replayed.inc()
                cursor = frame.seq
            if not frames:
                cursor = upto
        viewer.min_seq = cursor + 1
        hub.viewers.add(viewer)

    async def _read_loop(self, ws: WebSocketConnection, viewer: Viewer, inbox: _Inbox) -> str:
        """Handle the client messages wsproto delivers (all of them, unless ``FastInbound``
        takes the plain text ones) until the socket closes; returns the close reason."""
        while inbox.ended is None:
            try:
                raw = await ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason else 1006
                return "too_big" if code == protocol.CLOSE_TOO_BIG else "client"
            self._on_message(inbox, raw)
        return inbox.ended

    def _on_message(self, inbox: _Inbox, raw: str | bytes) -> None:
        """One client message, from ``_read_loop`` or straight from the reader task
        (``FastInbound``). Synchronous: never waits, never raises for what a client sends.
        Sets ``inbox.ended`` when the connection is to close."""
        if inbox.ended is not None:
            return  # closing (flood): what was already in the socket is ignored
        m, s, viewer = self.metrics, self.settings, inbox.viewer
        # time.monotonic: trio.current_time costs 5x as much, and this runs per message.
        if s.max_msgs_per_s > 0 and inbox.flood.take(time.monotonic()) > 0:
            viewer.push_control(
                protocol.error(
                    protocol.ProtocolError(
                        "flood", f"over {s.max_msgs_per_s:g} messages per second: closing"
                    )
                )
            )
            viewer.close(protocol.CLOSE_POLICY, "flood")
            inbox.ended = "flood"
            return
        if isinstance(raw, bytes):
            m.comments_rejected.labels("bad_request").inc()
            viewer.push_control(
                protocol.error(
                    protocol.ProtocolError("bad_request", "send JSON in text messages, not binary")
                )
            )
            return
        msg = protocol.parse_client_message(raw, self.limits)
        if isinstance(msg, protocol.ProtocolError):
            if msg.comment:
                m.comments_received.inc()
            m.comments_rejected.labels(msg.code).inc()
            viewer.push_control(protocol.error(msg))
        elif isinstance(msg, protocol.PingRequest):
            viewer.push_control(protocol.pong(msg.nonce))
        elif isinstance(msg, protocol.DensityRequest):
            viewer.level = DENSITY.index_for(msg.value)
            viewer.push_control(protocol.notice("density", value=DENSITY.levels[viewer.level]))
        else:
            m.comments_received.inc()
            err = self._accept_comment(viewer, msg)
            if err is not None:
                m.comments_rejected.labels(err.code).inc()
                viewer.push_control(protocol.error(err))

    def _accept_comment(
        self, viewer: Viewer, req: protocol.CommentRequest
    ) -> protocol.ProtocolError | None:
        user = viewer.user
        if user is None:
            return protocol.ProtocolError(
                "unauthorized", "sending needs a token; anonymous viewers can only watch", req.nonce
            )
        if self.draining:
            return protocol.ProtocolError("overloaded", "server draining", req.nonce, 1000)
        if viewer.inflight >= MAX_INFLIGHT:
            return protocol.ProtocolError(
                "overloaded", "too many comments waiting for acks", req.nonce, 500
            )
        prio = (
            protocol.PRIO_STAFF
            if user.is_staff
            else protocol.PRIO_HIGHLIGHT
            if user.highlight
            else protocol.PRIO_ORDINARY
        )
        payload = orjson.dumps(
            {
                "uid": user.uid,
                "nick": user.nick,
                "text": req.text,
                "color": req.color,
                "mode": req.mode,
                "ts": int(time.time() * 1000),
                "prio": prio,
            }
        )
        hub = self.hubs.hubs.get(viewer.room)
        key: str | None = None  # normalize(req.text): made once, only when needed
        if hub is not None:
            if not user.is_staff and len(hub.words):
                key = normalize(req.text)
                if hub.words.match_normalized(key) is not None:
                    return protocol.ProtocolError(
                        "blocked", "your comment contains a blocked word", req.nonce
                    )
            hub.offered += 1
            if not hub.ceiling.admit(prio, self.rng):
                # Shed at the door (the room runs far past what frames can show): the
                # sender still gets an ack and sees its comment; Redis never sees it.
                self.metrics.comments_shed.inc()
                hub.shed += 1
                viewer.push_control(protocol.ack(req.nonce, f"shed-{secrets.token_hex(6)}"))
                return None
        ingest = Ingest(
            user.uid,
            req.nonce,
            payload,
            door_key(normalize(req.text) if key is None else key),
            user.is_staff,
            prio == protocol.PRIO_HIGHLIGHT,
        )
        sub = Submission(viewer, viewer.room, req.nonce, ingest, time.monotonic())
        if not self.ingest.submit(sub):
            return protocol.ProtocolError(
                "overloaded", "gateway ingest queue full", req.nonce, 1000
            )
        return None
