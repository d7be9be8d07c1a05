"""``Gateway``: the WebSocket service viewers connect to.

``ws://HOST:PORT/ws?room=ROOM[&token=T][&since=SEQ[&epoch=E]]``. Per connection: handshake
checks (path, per-IP caps, room name, token), ``welcome``, optional replay of frames after
``since`` from the room's history (or a ``resume_failed`` notice and a fresh start:
``rules.resume``), then live frames; comments from senders are validated
and handed to the ``IngestBatcher``. Each connection is a task in the server's nursery;
nothing a client sends can raise out of it.

Start with ``await nursery.start(gateway.run)`` (returns the bound port); ``drain()``
closes viewers with 1013 and flushes pending comments before cancellation.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import resource
import secrets
import ssl
import time
from functools import partial
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from danmaku import auth, protocol
from danmaku.auth import User
from danmaku.config import Settings
from danmaku.gateway.deflate import FrameDeflater, ServerDeflate, negotiate
from danmaku.gateway.door import Conn, Door
from danmaku.gateway.fastpath import (
    accept,
    install_frame_budget,
    install_inbound,
    install_protocol_error_close,
    install_wait_first_receive,
    offered_extensions,
    slim_connection,
)
from danmaku.gateway.handshake import Handshake, Refusal, parse_target
from danmaku.gateway.hub import DENSITY, FrameFeed, Hub, RoomHubs
from danmaku.gateway.ingest import IngestBatcher, Submission
from danmaku.gateway.listener import PacedListener, open_reuseport_listeners
from danmaku.gateway.liveness import TICK_S, Liveness, Peer
from danmaku.gateway.poller import ReadPoller
from danmaku.gateway.presence import Presence
from danmaku.gateway.viewer import OutFrame, Viewer
from danmaku.gcfreeze import FreezeOnGrowth
from danmaku.metrics import Metrics
from danmaku.rules import guests, ipbans, resume
from danmaku.rules.admission import IpAdmission
from danmaku.rules.bans import banned_fields
from danmaku.rules.clientip import parse_trusted
from danmaku.rules.normalize import normalize
from danmaku.rules.ratelimit import TokenBucket
from danmaku.store import Ingest, IngestLimits, StoreError, door_key
from danmaku.store.interfaces import GatewayStore
from danmaku.supervise import LoopHealth, supervise
from danmaku.verifier import KeysUnavailable, KeyUnknown, TokenVerifier

log = logging.getLogger(__name__)

MAX_INFLIGHT = 32  # comments one connection may have waiting for their ack
REPLAY_CHUNK = 200


def _header(request: WebSocketRequest, name: bytes) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


FD_HEADROOM = 256  # descriptors kept for Redis, the web app, logs and the listeners


def connection_cap(setting: int) -> int:
    """The total connection cap of a gateway: ``setting``, or with 0, what the process's
    open-file limit leaves after ``FD_HEADROOM`` (0 = no cap where there is no limit)."""
    if setting > 0:
        return setting
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(1, soft - FD_HEADROOM)


def parse_origins(raw: str) -> set[str]:
    """``"https://a.example, http://b:8080/"`` -> ``{"https://a.example", "http://b:8080"}``."""
    return {o.strip().rstrip("/").lower() for o in raw.split(",") if o.strip()}


class _Inbox(Peer):
    """One connection's incoming side: its viewer, flood bucket, liveness (``Peer``:
    when it was last heard, its ping interval) and, once the gateway decided to close
    it, why."""

    __slots__ = ("conn", "ended", "flood", "viewer")

    def __init__(self, viewer: Viewer, flood: TokenBucket, conn: Conn | None = None) -> None:
        super().__init__()
        self.viewer = viewer
        self.flood = flood
        self.conn = conn  # the door's view of the connection (its stage, for errors)
        self.ended: str | None = None


class Gateway:
    def __init__(
        self,
        store: GatewayStore,
        settings: Settings,
        metrics: Metrics,
        *,
        gateway_id: str | None = None,
        rng: random.Random | None = None,
        health: LoopHealth | None = None,
    ) -> None:
        self.store = store
        self.health = health or LoopHealth(metrics)
        self.settings = settings
        self.metrics = metrics
        self.gateway_id = gateway_id or f"g-{secrets.token_hex(4)}"
        # Frames compressed once per gateway for permessage-deflate viewers (deflate.py).
        self.deflater = FrameDeflater(settings.deflate_min_bytes, on_encode=self._encoded)
        self.hubs = RoomHubs(
            store,
            metrics,
            settings.ingest_ceiling,
            settings.guests,
            self.deflater if settings.deflate else None,
        )
        self.feed = FrameFeed(self.hubs, store, metrics)
        limits = IngestLimits.from_settings(settings)
        self.ingest = IngestBatcher(
            store, metrics, limits, settings.ingest_queue, settings.ingest_linger_ms / 1000
        )
        self.ingest.ban_reason = self._ban_reason
        self.rng = rng or random.Random()
        # HS256 with the secret, and the platform's RS256/ES256 keys (verifier.py).
        self.verifier = TokenVerifier(settings, metrics)
        self.admission = IpAdmission(
            settings.max_conns_per_ip,
            settings.max_sessions_per_ip_per_min,
            max_total=connection_cap(settings.max_connections),
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
        # Pings to silent connections and dead ones closed (liveness.py); None: off.
        self.liveness: Liveness[_Inbox] | None = (
            Liveness(settings.ping_min_s, settings.ping_max_s, min(TICK_S, settings.ping_min_s / 2))
            if settings.ping_min_s > 0
            else None
        )
        # Viewers and offered rates out, room-wide figures and settings back (presence.py).
        self.presence = Presence(
            self.hubs,
            store,
            settings,
            metrics,
            self.gateway_id,
            self._viewers,
            # Connections out of full GC walks as their number grows (see gcfreeze).
            FreezeOnGrowth() if settings.gc_freeze else None,
        )

    # ---- lifecycle ------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. ``task_status.started(port)`` once listening."""
        s = self.settings
        install_protocol_error_close()
        install_frame_budget()
        health = self.health
        ssl_context = None
        if s.tls_cert:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(s.tls_cert, s.tls_key or None)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Each background loop restarts on its own after a failure (supervise).
            for name, service in (
                ("frame_feed", self.feed.run),
                ("ingest", self.ingest.run),
                ("read_poller", self.poller.run),
            ):
                await nursery.start(partial(supervise, name, service, health, service=True))
            nursery.start_soon(supervise, "presence", self.presence.run, health)
            if self.liveness is not None:
                nursery.start_soon(supervise, "pinger", self._ping_loop, health)
            # Listeners wrapped: handshake storms are spread out at the door (PacedListener).
            if s.reuse_port:
                # One of `--processes N` children: the port is shared (SO_REUSEPORT).
                tcp = await open_reuseport_listeners(s.ws_port, s.ws_host)
            else:
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
            door = Door(
                self._handle,
                self.admission,
                self.metrics,
                max_message_bytes=s.max_message_bytes,
                connect_timeout_s=s.connect_timeout_s,
                trusted=parse_trusted(s.trusted_proxies),
                proxy_header=s.proxy_header.lower(),
            )
            await nursery.start(
                partial(trio.serve_listeners, door.serve, paced, handler_nursery=nursery)
            )
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

    async def _ping_loop(self) -> None:
        """A few times a second: ping the connections silent for their interval, close
        those that left two pings in a row unanswered (1001, counted as ``dead``). One
        task for all connections; a ping is one non-blocking write when the viewer is
        idle (``Viewer.push_ping``)."""
        liveness = self.liveness
        assert liveness is not None
        pings = self.metrics.pings_sent
        while True:
            await trio.sleep(liveness.tick_s)
            silent, dead = liveness.sweep(trio.current_time())
            for inbox in silent:
                inbox.viewer.push_ping()
            for inbox in dead:
                if inbox.ended is None:
                    inbox.ended = "dead"
                    inbox.viewer.close(protocol.CLOSE_GOING_AWAY, "no answer to pings")
            if silent:
                pings.inc(len(silent))

    def _encoded(self, payload_bytes: int, wire_bytes: int) -> None:
        """A frame variant was compressed (``FrameDeflater``): once per gateway."""
        self.metrics.deflate_encodes.inc()

    # ---- a connection ---------------------------------------------------------------
    async def _handle(self, request: WebSocketRequest, conn: Conn) -> None:
        """One connection whose upgrade request has been read, inside the door's error
        boundary (``door.py``): refusals are answered here, anything unexpected there."""
        m = self.metrics
        asked = self._screen(request)
        if isinstance(asked, Refusal) and asked.status:
            m.handshakes_rejected.labels(asked.code).inc()
            await request.reject(asked.status, body=asked.message.encode())
            return
        try:
            # A storm of handshakes must not starve the broadcast loop: trio runs every
            # runnable task once per round, so a few thousand handshakes in flight would
            # delay frames by their whole round. Bounding them keeps rounds short.
            async with self._handshake_slots:
                checked = await self._check(asked)
                # permessage-deflate when offered (and on): what the handshake agrees to
                # is exactly the offer ``negotiate`` picked (ServerDeflate.accept).
                agreed = (
                    negotiate(offered_extensions(request))
                    if self.settings.deflate and not isinstance(checked, Refusal)
                    else None
                )
                extensions = (
                    [ServerDeflate(agreed, self.settings.max_message_bytes)] if agreed else None
                )
                conn.ws = ws = await accept(request, extensions)
                if isinstance(checked, Refusal):
                    await self._refuse(ws, checked)
                    return
                slim_connection(ws, request)
            conn.stage = "session"
            assert isinstance(asked, Handshake)  # a refused target returned above
            await self._session(ws, asked, checked, conn, deflate=agreed is not None)
        except ConnectionClosed:
            pass

    def _screen(self, request: WebSocketRequest) -> Handshake | Refusal:
        """The checks before the upgrade (draining, target, Origin): what the client
        asks for, or a refusal with its HTTP status."""
        if self.draining:
            return Refusal("draining", "draining", 503)
        asked = parse_target(request.path)
        if isinstance(asked, Refusal) and asked.status:
            return asked
        origin = _header(request, b"origin")
        if origin is not None and not self.origin_allowed(origin):
            return Refusal("origin", "origin not allowed", 403)
        return asked

    async def _check(self, asked: Handshake | Refusal) -> User | Refusal | None:
        """The checks after the upgrade, answered with an ``error`` message (browsers
        cannot read a refused upgrade): the target's own refusal, or the token's. A
        platform token of a key not cached yet waits for one JWKS fetch (bounded by
        ``DANMAKU_JWKS_TIMEOUT_S``); keys that cannot be fetched: ``unavailable``."""
        if isinstance(asked, Refusal):
            return asked
        if not asked.token:
            return None
        try:
            return await self.verifier.verify_async(asked.token, room=asked.room)
        except KeysUnavailable as exc:
            return Refusal("unavailable", str(exc))
        except auth.TokenError as exc:
            return Refusal("unauthorized", str(exc))

    async def _refuse(self, ws: WebSocketConnection, refusal: Refusal) -> None:
        """Tell an accepted client why it cannot stay, then close: 1013 (try again) for
        what may pass later (keys unavailable), 1008 (policy) for the rest."""
        self.metrics.handshakes_rejected.labels(refusal.code).inc()
        await ws.send_message(protocol.error(protocol.ProtocolError(refusal.code, refusal.message)))
        code = protocol.CLOSE_TRY_AGAIN if refusal.code == "unavailable" else protocol.CLOSE_POLICY
        await ws.aclose(code, refusal.message[:120])

    async def _session(
        self,
        ws: WebSocketConnection,
        asked: Handshake,
        user: User | None,
        conn: Conn | None,
        *,
        deflate: bool = False,
    ) -> None:
        """An accepted connection from ``welcome`` to its close. Storage trouble on the
        way in (the room's state, a resume read) ends it with an ``unavailable`` error
        and 1013, which players retry; it never propagates."""
        s, m = self.settings, self.metrics
        room, since = asked.room, asked.since
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
            deflate=deflate,
        )
        viewer.level = DENSITY.index_for(asked.density)
        inbox = _Inbox(viewer, TokenBucket(s.max_msgs_per_s, s.max_msgs_burst), conn)
        if s.max_msgs_per_s > 0 or self.liveness is not None:
            # Pings, pongs and message fragments spend the same budget as messages, and
            # count as signs of life.
            ws._danmaku_charge = partial(self._charge, inbox)  # type: ignore[attr-defined]
        try:
            hub = await self.hubs.hub(room)
            if user is not None and user.is_staff:
                # Moderation's role ranks need to know who is staff here (cheap, idempotent).
                await self.store.note_role(room, user.uid, user.role, everywhere=user.rooms is None)
        except StoreError:
            await _unavailable(ws)
            return
        if user is not None:
            # The room's staff list as of now; later changes come from Presence.apply_staff (no
            # await from here to joining _viewers, so none is missed).
            viewer.user = user = auth.in_room(user, hub.staff.get(user.uid))
            refusal = self._admit(hub, user)
            if refusal is not None:
                await self._refuse(ws, refusal)
                return
            if conn is not None:
                hub.seen_ips[user.uid] = conn.peer  # written out by the presence round
            if user.is_staff and self._nursery is not None:
                self._nursery.start_soon(self._note_nick, room, user)
        if conn is not None:
            viewer.ip_keys = ipbans.candidates(conn.peer)
        m.connections_opened.labels("user" if user else "anonymous").inc()
        m.connections_open.inc()
        self._viewers.add(viewer)
        if self.liveness is not None:
            self.liveness.add(inbox, trio.current_time())
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
                        DENSITY.levels,
                        hub.epoch,
                    )
                )
                pin = hub.pin
                if pin and (not pin.get("until") or pin["until"] > time.time() * 1000):
                    viewer.push_control(protocol.notice("pin", pin=pin))
                try:
                    await self._attach(viewer, hub, since, asked.epoch)
                except StoreError:
                    # A resume read during a failover: the player reconnects with since=.
                    viewer.push_control(_UNAVAILABLE)
                    viewer.close(protocol.CLOSE_TRY_AGAIN, "storage unavailable")
                    inbox.ended = "unavailable"
                else:
                    if s.fast_path:
                        # Plain text messages go to _on_message straight from the reader
                        # task, as they are parsed; the rest still via get_message.
                        inbound = install_inbound(
                            ws,
                            partial(self._on_message, inbox),
                            s.max_message_bytes,
                            partial(self._on_pong, inbox),
                            inflate=deflate,
                        )
                        install_wait_first_receive(ws, self.poller, inbound)
                    reason = await self._read_loop(ws, viewer, inbox)
                    viewer.close(protocol.CLOSE_NORMAL, "")
            await viewer.wait_closed()  # what is queued is written, then the close frame
            reason = inbox.ended or reason
        finally:
            if self.liveness is not None:
                self.liveness.forget(inbox)
            self.hubs.leave(viewer)
            self._viewers.discard(viewer)
            if self.draining and not self._viewers:
                self._all_gone.set()
            m.connections_open.dec()
            if viewer.close_reason and viewer.close_reason[0] == protocol.CLOSE_TOO_SLOW:
                reason = "too_slow"
            elif (
                reason != "unavailable"
                and viewer.close_reason
                and viewer.close_reason[0] == protocol.CLOSE_TRY_AGAIN
            ):
                reason = "draining"
            m.connections_closed.labels(reason).inc()

    async def _attach(self, viewer: Viewer, hub: Hub, since: int | None, epoch: str) -> None:
        """Replay frames after ``since`` from history, then join live with no gap; or,
        when that cannot be done (a stale ``epoch``, frames gone from history, a
        ``since`` beyond the room), say so in a ``resume_failed`` notice and join live
        (``rules.resume``).

        Frames are replayed only up to the hub's live position; the loop re-checks it
        after every await, and joining happens with no await after the last check, so
        the replay and the live feed meet exactly.
        """
        start = resume.plan(since, epoch, hub.epoch, hub.last_seq)
        if start.check:
            # Beyond this gateway's last frame: is it lagging, or is the client ahead of
            # the room itself? Planned again with the hub's position after the await.
            room_seq, room_epoch = await self.store.room_position(hub.room)
            start = resume.plan(since, epoch, room_epoch, hub.last_seq, room_seq)
        if since is None:
            hub.join(viewer)
            return
        if not start.replay:
            if start.failed is not None:
                viewer.push_control(self._resume_failed(hub, since, start.failed))
            viewer.min_seq = start.min_seq
            self.metrics.resumes.labels(start.outcome).inc()
            hub.join(viewer)
            return
        cursor, outcome = since, "replayed"
        while cursor < hub.last_seq:
            upto = hub.last_seq
            frames = await self.store.frames_after(
                hub.room, cursor, min(REPLAY_CHUNK, upto - cursor)
            )
            if not frames or frames[0].seq != cursor + 1:
                # Frames after the cursor left history: no partial replay across a hole,
                # a fresh start at the live edge (nothing below it will be sent).
                self.metrics.resume_gaps.inc()
                outcome = "gap"
                viewer.push_control(
                    self._resume_failed(
                        hub, since, "gap", missing_from=cursor + 1, missing_to=hub.last_seq
                    )
                )
                cursor = hub.last_seq
                break
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
        viewer.min_seq = cursor + 1
        self.metrics.resumes.labels(outcome).inc()
        hub.join(viewer)

    @staticmethod
    def _resume_failed(hub: Hub, since: int, reason: str, **extra: int) -> str:
        """The ``resume_failed`` notice: why, and where the fresh start begins (``seq``:
        live frames follow it; ``epoch``: the room's history epoch now)."""
        return protocol.notice(
            "resume_failed",
            code="resume_failed",
            reason=reason,
            message="history not recovered",
            since=since,
            seq=hub.last_seq,
            epoch=hub.epoch,
            **extra,
        )

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

    def _charge(self, inbox: _Inbox, event: object) -> bool:
        """A control frame or message fragment arrived (``install_frame_budget``): spend
        one message of the connection's budget, and it is a sign of life. ``False``: over
        budget, the connection is closing and the frame is not answered."""
        if self.liveness is not None:
            inbox.heard = self.liveness.now
        return inbox.ended is None and not self._flooded(inbox)

    def _on_pong(self, inbox: _Inbox) -> None:
        """A pong parsed by ``FastInbound``: a sign of life. The answer to the gateway's
        own ping is free; any other spends one message of the connection's budget, as a
        pong through wsproto does (``_charge``)."""
        if self.liveness is not None:
            answer = inbox.heard < inbox.pinged  # a ping of ours is waiting for it
            inbox.heard = self.liveness.now
            if answer:
                return
        if inbox.ended is None:
            self._flooded(inbox)

    def _flooded(self, inbox: _Inbox) -> bool:
        """Spend one message of the connection's budget; when it is spent, say so to the
        client, close with 1008 and return ``True``."""
        s = self.settings
        # time.monotonic: trio.current_time costs 5x as much, and this runs per message.
        if s.max_msgs_per_s <= 0 or inbox.flood.take(time.monotonic()) <= 0:
            return False
        viewer = inbox.viewer
        viewer.push_control(
            protocol.error(
                protocol.ProtocolError(
                    "flood", f"over {s.max_msgs_per_s:g} messages per second: closing"
                )
            )
        )
        viewer.close(protocol.CLOSE_POLICY, "flood")
        inbox.ended = "flood"
        return True

    def _on_message(self, inbox: _Inbox, raw: str | bytes) -> None:
        """One client message, from ``_read_loop`` or straight from the reader task
        (``FastInbound``). Synchronous: never waits, never raises for what a client sends.
        Sets ``inbox.ended`` when the connection is to close."""
        try:
            if self.liveness is not None:
                inbox.heard = self.liveness.now  # anything heard is a sign of life
            if inbox.ended is not None or self._flooded(inbox):
                return  # closing (flood): what was already in the socket is ignored
            m, viewer = self.metrics, inbox.viewer
            if isinstance(raw, bytes):
                m.comments_rejected.labels("bad_request").inc()
                viewer.push_control(
                    protocol.error(
                        protocol.ProtocolError(
                            "bad_request", "send JSON in text messages, not binary"
                        )
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
            elif isinstance(msg, protocol.AuthRequest):
                reply = self._reauth(viewer, msg.token)
                if reply is not None:
                    viewer.push_control(reply)
            else:
                m.comments_received.inc()
                err = self._accept_comment(viewer, msg)
                if err is not None:
                    m.comments_rejected.labels(err.code).inc()
                    viewer.push_control(protocol.error(err))
        except Exception:
            # A bug on this connection's intake path: the door's boundary ends the
            # connection (1011); the stage says where it was.
            if inbox.conn is not None:
                inbox.conn.stage = "ingest"
            raise

    def _reauth(self, viewer: Viewer, token: str) -> str | None:
        """An ``auth`` message: a fresh token for the connection's user (or a first one
        for an anonymous viewer). Answered with a notice ``auth`` or an ``unauthorized``
        error; a connection never changes its user. ``None``: the token needs a JWKS
        fetch first, and a task answers after it (this path never waits)."""
        try:
            user = self.verifier.verify(token, room=viewer.room)
        except KeyUnknown:
            if self._nursery is None:
                return protocol.error(protocol.ProtocolError("unavailable", "try again"))
            self._nursery.start_soon(self._reauth_later, viewer, token)
            return None
        except auth.TokenError as exc:
            return protocol.error(protocol.ProtocolError("unauthorized", str(exc)))
        return self._reauthed(viewer, user)

    async def _reauth_later(self, viewer: Viewer, token: str) -> None:
        """``_reauth`` after the platform's keys were fetched (a task of the gateway's
        nursery: nothing may leave it)."""
        try:
            user = await self.verifier.verify_async(token, room=viewer.room)
            reply = self._reauthed(viewer, user)
        except KeysUnavailable as exc:
            reply = protocol.error(protocol.ProtocolError("unavailable", str(exc)))
        except auth.TokenError as exc:
            reply = protocol.error(protocol.ProtocolError("unauthorized", str(exc)))
        except Exception as exc:
            log.warning("re-authenticating a connection in %s failed: %r", viewer.room, exc)
            return
        viewer.push_control(reply)

    def _reauthed(self, viewer: Viewer, user: User) -> str:
        """The connection takes ``user`` (verified); the answer to send."""
        if viewer.user is not None and user.uid != viewer.user.uid:
            return protocol.error(
                protocol.ProtocolError("unauthorized", "a connection keeps its user: reconnect")
            )
        token_staff = user.is_staff
        hub = self.hubs.hubs.get(viewer.room)
        if hub is not None:
            user = auth.in_room(user, hub.staff.get(user.uid))
            refusal = self._admit(hub, user)
            if refusal is not None:  # the connection keeps what it had
                return protocol.error(protocol.ProtocolError(refusal.code, refusal.message))
        anonymous = viewer.user is None
        viewer.user = user
        if anonymous and hub is not None:
            hub.identified(viewer)  # counted as a user from now on
        if token_staff and self._nursery is not None:
            self._nursery.start_soon(self._note_role, viewer.room, user)
        if user.is_staff and self._nursery is not None:
            self._nursery.start_soon(self._note_nick, viewer.room, user)
        return protocol.notice("auth", user=user.public(), expires=int(user.expires))

    def _admit(self, hub: Hub, user: User) -> Refusal | None:
        """The room's identity rules at the handshake (issue 19): a guest where guests
        are off, a nick that mimics a staff member's. ``None``: welcome."""
        if not guests.may_enter(hub.guests, user):
            self.metrics.identity_refusals.labels("guests_off").inc()
            return Refusal("login_required", "guests cannot enter this room: log in")
        if not user.is_staff:
            staff_nick = hub.staff_nicks.mimics(user.nick, user.uid)
            if staff_nick is not None:
                self.metrics.identity_refusals.labels("nick_taken").inc()
                return Refusal(
                    "nick_taken",
                    f"the nickname {user.nick!r} looks like the staff member {staff_nick!r} "
                    "of this room: choose another",
                )
        return None

    def _ban_reason(self, room: str, uid: str) -> str:
        hub = self.hubs.hubs.get(room)
        return hub.ban_reasons.reason(uid) if hub is not None else ""

    async def _note_nick(self, room: str, user: User) -> None:
        """Record the nick a staff member uses in a room (guests may not mimic it); a
        task of the gateway's nursery: nothing may leave it."""
        try:
            await self.store.note_staff_nick(room, user.uid, user.nick)
        except Exception as exc:
            log.warning("recording the nick of %s in %s failed: %r", user.uid, room, exc)

    async def _note_role(self, room: str, user: User) -> None:
        """Record a staff role seen on a connection (a task of the gateway's nursery:
        nothing may leave it; the web API records roles too, so a miss is harmless)."""
        try:
            role = user.token_role or user.role  # the token's, not the staff list's
            await self.store.note_role(room, user.uid, role, everywhere=user.rooms is None)
        except Exception as exc:
            log.warning("recording the role of %s in %s failed: %r", user.uid, room, exc)

    def _current_user(self, viewer: Viewer) -> User | None:
        """The connection's user as of now: staff rights end with the token that gave
        them (the connection stays, as a viewer, and is told once to send ``auth``)."""
        user = viewer.user
        if user is not None and user.is_staff and 0 < user.expires < time.time():
            viewer.user = user = dataclasses.replace(
                user, role="viewer", highlight=False, token_role=None
            )
            viewer.push_control(
                protocol.notice(
                    "token_expired",
                    message="your token expired: staff rights are off until you send "
                    "a fresh one in an auth message",
                )
            )
        return user

    def _accept_comment(
        self, viewer: Viewer, req: protocol.CommentRequest
    ) -> protocol.ProtocolError | None:
        user = self._current_user(viewer)
        if user is None:
            return protocol.ProtocolError(
                "unauthorized", "sending needs a token; anonymous viewers can only watch", req.nonce
            )
        hub = self.hubs.hubs.get(viewer.room)
        # Only guests, and rooms with IP bans, pay for the identity checks.
        if hub is not None and (user.guest or len(hub.ip_bans)) and not user.is_staff:
            refused = self._identity_refusal(hub, viewer, user, req.nonce)
            if refused is not None:
                return refused
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
        fields = {
            "uid": user.uid,
            "nick": user.nick,
            "text": req.text,
            "color": req.color,
            "mode": req.mode,
            "ts": int(time.time() * 1000),
            "prio": prio,
        }
        if prio == protocol.PRIO_STAFF:
            # Players show a badge; moderation checks who may delete it (role ranks).
            fields["role"] = user.role
        payload = orjson.dumps(fields)
        key: str | None = None  # normalize(req.text): made once, only when needed
        if hub is not None:
            if not user.is_staff and len(hub.words):
                key = normalize(req.text)
                if hub.words.match(req.text, key) is not None:
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
        # Held for review: the content half of "suspicious" (the door decides the rest).
        suspect = (
            hub is not None
            and prio == protocol.PRIO_ORDINARY
            and hub.review_mode != 0.0
            and hub.review.suspicious(req.text, key)
        )
        ingest = Ingest(
            user.uid,
            req.nonce,
            payload,
            door_key(normalize(req.text) if key is None else key),
            user.is_staff,
            prio == protocol.PRIO_HIGHLIGHT,
            suspect,
        )
        sub = Submission(viewer, viewer.room, req.nonce, ingest, time.monotonic())
        if not self.ingest.submit(sub):
            return protocol.ProtocolError(
                "overloaded", "gateway ingest queue full", req.nonce, 1000
            )
        return None

    def _identity_refusal(
        self, hub: Hub, viewer: Viewer, user: User, nonce: str
    ) -> protocol.ProtocolError | None:
        """A non-staff comment the room's identity rules refuse (issue 19): a guest's
        where guests only watch, or one from a banned address or prefix (the room's IP
        bans as of the last presence round: no Redis round trip per comment)."""
        if user.guest and not guests.may_comment(hub.guests, user):
            self.metrics.identity_refusals.labels("login_required").inc()
            return protocol.ProtocolError(
                "login_required", "guests cannot comment in this room: log in", nonce
            )
        if viewer.ip_keys and len(hub.ip_bans):
            now = time.time()
            ban = hub.ip_bans.match(viewer.ip_keys, now)
            if ban is not None:
                self.metrics.identity_refusals.labels("ip_banned").inc()
                wait = int((ban.until - now) * 1000) if ban.until else 0
                return protocol.ProtocolError(
                    "banned",
                    "your network is banned from this room",
                    nonce,
                    wait,
                    extra=banned_fields(ban.until, ban.reason),
                )
        return None


_UNAVAILABLE = protocol.error(
    protocol.ProtocolError("unavailable", "storage unavailable: reconnect with since=")
)


async def _unavailable(ws: WebSocketConnection) -> None:
    """Tell an accepted client that storage is unreachable and close with 1013 (players
    reconnect after a moment)."""
    await ws.send_message(_UNAVAILABLE)
    await ws.aclose(protocol.CLOSE_TRY_AGAIN, "storage unavailable")
