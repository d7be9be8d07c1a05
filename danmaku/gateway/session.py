"""A gateway connection from its upgrade request to its close: the handshake (the
checks before the upgrade, the token after it, permessage-deflate agreed, a refusal
told in an ``error`` message), the session (``welcome``, the pin, joining the room's
hub, the reader loop, the accounting of why it closed) and the resume (frames after
``since`` replayed from the room's history, or a ``resume_failed`` notice:
``rules.resume``).

Runs inside the door's error boundary (``door.py``): nothing a client sends raises out
of a connection; storage trouble on the way in ends it with ``unavailable`` and 1013.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from danmaku import auth, protocol
from danmaku.auth import User
from danmaku.config import Settings
from danmaku.gateway.deflate import ServerDeflate, negotiate
from danmaku.gateway.door import Conn
from danmaku.gateway.fastpath import (
    accept,
    install_inbound,
    install_wait_first_receive,
    offered_extensions,
    slim_connection,
)
from danmaku.gateway.handshake import Handshake, Refusal, parse_target
from danmaku.gateway.hub import DENSITY, Hub, RoomHubs
from danmaku.gateway.identity import IdentityGate
from danmaku.gateway.intake import CommentIntake, Inbox
from danmaku.gateway.liveness import Liveness
from danmaku.gateway.poller import ReadPoller
from danmaku.gateway.state import GatewayState
from danmaku.gateway.viewer import OutFrame, Viewer
from danmaku.metrics import Metrics
from danmaku.rules import ipbans, resume
from danmaku.rules.ratelimit import TokenBucket
from danmaku.store import StoreError
from danmaku.store.interfaces import FeedStore
from danmaku.verifier import KeysUnavailable, TokenVerifier

REPLAY_CHUNK = 200


def _header(request: WebSocketRequest, name: bytes) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class Sessions:
    """The connections of one gateway. ``origin_allowed``: the gateway's Origin check;
    ``charge`` and ``on_pong``: a control frame or a pong heard (the gateway's liveness
    and message budget); ``store``: the room's position and history for a resume."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        hubs: RoomHubs,
        store: FeedStore,
        verifier: TokenVerifier,
        identity: IdentityGate,
        intake: CommentIntake,
        state: GatewayState,
        *,
        poller: ReadPoller,
        liveness: Liveness[Inbox] | None,
        origin_allowed: Callable[[str], bool],
        charge: Callable[[Inbox, object], bool],
        on_pong: Callable[[Inbox], None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.hubs = hubs
        self.store = store
        self.verifier = verifier
        self.identity = identity
        self.intake = intake
        self.state = state
        self.poller = poller
        self.liveness = liveness
        self.origin_allowed = origin_allowed
        self.charge = charge
        self.on_pong = on_pong
        self.handshake_slots = trio.CapacityLimiter(max(1, settings.max_handshakes))

    async def handle(self, request: WebSocketRequest, conn: Conn) -> None:
        """One connection whose upgrade request has been read, inside the door's error
        boundary (``door.py``): refusals are answered here, anything unexpected there."""
        m = self.metrics
        asked = self.screen(request)
        if isinstance(asked, Refusal) and asked.status:
            m.handshakes_rejected.labels(asked.code).inc()
            await request.reject(asked.status, body=asked.message.encode())
            return
        try:
            # A storm of handshakes must not starve the broadcast loop: trio runs every
            # runnable task once per round, so a few thousand handshakes in flight would
            # delay frames by their whole round. Bounding them keeps rounds short.
            async with self.handshake_slots:
                checked = await self.check(asked)
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
                    await self.refuse(ws, checked)
                    return
                slim_connection(ws, request)
            conn.stage = "session"
            assert isinstance(asked, Handshake)  # a refused target returned above
            await self.session(ws, asked, checked, conn, deflate=agreed is not None)
        except ConnectionClosed:
            pass

    def screen(self, request: WebSocketRequest) -> Handshake | Refusal:
        """The checks before the upgrade (draining, target, Origin): what the client
        asks for, or a refusal with its HTTP status."""
        if self.state.draining:
            return Refusal("draining", "draining", 503)
        asked = parse_target(request.path)
        if isinstance(asked, Refusal) and asked.status:
            return asked
        origin = _header(request, b"origin")
        if origin is not None and not self.origin_allowed(origin):
            return Refusal("origin", "origin not allowed", 403)
        return asked

    async def check(self, asked: Handshake | Refusal) -> User | Refusal | None:
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

    async def refuse(self, ws: WebSocketConnection, refusal: Refusal) -> None:
        """Tell an accepted client why it cannot stay, then close: 1013 (try again) for
        what may pass later (keys unavailable), 1008 (policy) for the rest."""
        self.metrics.handshakes_rejected.labels(refusal.code).inc()
        await ws.send_message(protocol.error(protocol.ProtocolError(refusal.code, refusal.message)))
        code = protocol.CLOSE_TRY_AGAIN if refusal.code == "unavailable" else protocol.CLOSE_POLICY
        await ws.aclose(code, refusal.message[:120])

    async def session(
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
        nursery = self.state.nursery
        assert nursery is not None
        viewer = Viewer(
            ws,
            room,
            user,
            m,
            spawn=nursery.start_soon,
            max_frames=s.viewer_queue_frames,
            max_control=s.viewer_queue_control,
            stuck_timeout_s=s.slow_viewer_timeout_s,
            fast=bool(s.fast_path),
            deflate=deflate,
        )
        viewer.level = DENSITY.index_for(asked.density)
        inbox = Inbox(viewer, TokenBucket(s.max_msgs_per_s, s.max_msgs_burst), conn)
        if s.max_msgs_per_s > 0 or self.liveness is not None:
            # Pings, pongs and message fragments spend the same budget as messages, and
            # count as signs of life.
            ws._danmaku_charge = partial(self.charge, inbox)  # type: ignore[attr-defined]
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
            refusal = self.identity.admit(hub, user)
            if refusal is not None:
                await self.refuse(ws, refusal)
                return
            if conn is not None:
                hub.seen_ips[user.uid] = conn.peer  # written out by the presence round
            if user.is_staff:
                self.state.spawn(self.identity.note_nick, room, user)
        if conn is not None:
            viewer.ip_keys = ipbans.candidates(conn.peer)
        m.connections_opened.labels("user" if user else "anonymous").inc()
        m.connections_open.inc()
        self.state.viewers.add(viewer)
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
                    await self.attach(viewer, hub, since, asked.epoch)
                except StoreError:
                    # A resume read during a failover: the player reconnects with since=.
                    viewer.push_control(_UNAVAILABLE)
                    viewer.close(protocol.CLOSE_TRY_AGAIN, "storage unavailable")
                    inbox.ended = "unavailable"
                else:
                    if s.fast_path:
                        # Plain text messages go to on_message straight from the reader
                        # task, as they are parsed; the rest still via get_message.
                        inbound = install_inbound(
                            ws,
                            partial(self.intake.on_message, inbox),
                            s.max_message_bytes,
                            partial(self.on_pong, inbox),
                            inflate=deflate,
                        )
                        install_wait_first_receive(ws, self.poller, inbound)
                    reason = await self.read_loop(ws, viewer, inbox)
                    viewer.close(protocol.CLOSE_NORMAL, "")
            await viewer.wait_closed()  # what is queued is written, then the close frame
            reason = inbox.ended or reason
        finally:
            if self.liveness is not None:
                self.liveness.forget(inbox)
            self.hubs.leave(viewer)
            self.state.viewers.discard(viewer)
            if self.state.draining and not self.state.viewers:
                self.state.all_gone.set()
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

    async def attach(self, viewer: Viewer, hub: Hub, since: int | None, epoch: str) -> None:
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
                viewer.push_control(self.resume_failed(hub, since, start.failed))
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
                    self.resume_failed(
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
    def resume_failed(hub: Hub, since: int, reason: str, **extra: int) -> str:
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

    async def read_loop(self, ws: WebSocketConnection, viewer: Viewer, inbox: Inbox) -> str:
        """Handle the client messages wsproto delivers (all of them, unless ``FastInbound``
        takes the plain text ones) until the socket closes; returns the close reason."""
        while inbox.ended is None:
            try:
                raw = await ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason else 1006
                return "too_big" if code == protocol.CLOSE_TOO_BIG else "client"
            self.intake.on_message(inbox, raw)
        return inbox.ended


_UNAVAILABLE = protocol.error(
    protocol.ProtocolError("unavailable", "storage unavailable: reconnect with since=")
)


async def _unavailable(ws: WebSocketConnection) -> None:
    """Tell an accepted client that storage is unreachable and close with 1013 (players
    reconnect after a moment)."""
    await ws.send_message(_UNAVAILABLE)
    await ws.aclose(protocol.CLOSE_TRY_AGAIN, "storage unavailable")
