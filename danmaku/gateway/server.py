"""``Gateway``: the WebSocket service viewers connect to.

``ws://HOST:PORT/ws?room=ROOM[&token=T][&since=SEQ[&epoch=E]]``. Per connection: handshake
checks (path, per-IP caps, room name, token), ``welcome``, optional replay of frames after
``since`` from the room's history (or a ``resume_failed`` notice and a fresh start:
``rules.resume``), then live frames; comments from senders are validated
and handed to the ``IngestBatcher``. Each connection is a task in the server's nursery;
nothing a client sends can raise out of it.

Start with ``await nursery.start(gateway.run)`` (returns the bound port); ``drain()``
closes viewers with 1013 and flushes pending comments before cancellation.

``Gateway`` is the coordinator: it builds the parts and runs the background loops.
The parts live in files of their own: ``session.py`` (``Sessions``: handshake, session,
resume), ``intake.py`` (``CommentIntake``: messages, flood budget, comments to the
``IngestBatcher``), ``identity.py`` (``IdentityGate``: ``auth``, admission, identity
refusals, staff notes), ``presence.py``, ``hub.py`` (rooms and frames), ``door.py``.
"""

from __future__ import annotations

import random
import resource
import secrets
import ssl
from functools import partial
from typing import Any

import trio

from danmaku import protocol
from danmaku.config import Settings
from danmaku.gateway.announce import Announcer
from danmaku.gateway.deflate import FrameDeflater
from danmaku.gateway.door import Door
from danmaku.gateway.fastpath import install_frame_budget, install_protocol_error_close
from danmaku.gateway.feed import FrameFeed
from danmaku.gateway.hub import RoomHubs
from danmaku.gateway.identity import IdentityGate
from danmaku.gateway.ingest import IngestBatcher
from danmaku.gateway.intake import CommentIntake, Inbox
from danmaku.gateway.listener import PacedListener, open_reuseport_listeners
from danmaku.gateway.liveness import TICK_S, Liveness
from danmaku.gateway.poller import ReadPoller
from danmaku.gateway.presence import Presence
from danmaku.gateway.session import Sessions
from danmaku.gateway.state import GatewayState
from danmaku.gcfreeze import FreezeOnGrowth
from danmaku.metrics import Metrics
from danmaku.rules.admission import IpAdmission
from danmaku.rules.clientip import parse_trusted
from danmaku.store import IngestLimits
from danmaku.store.interfaces import GatewayStore
from danmaku.supervise import LoopHealth, supervise
from danmaku.verifier import TokenVerifier

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
        # Open connections, draining, the nursery: shared by the parts below (state.py).
        self.state = GatewayState()
        self._viewers = self.state.viewers
        # Frames compressed once per gateway for permessage-deflate viewers (deflate.py).
        self.deflater = FrameDeflater(settings.deflate_min_bytes, on_encode=self._encoded)
        self.hubs = RoomHubs(
            store.feed,
            metrics,
            settings.ingest_ceiling,
            settings.guests,
            self.deflater if settings.deflate else None,
        )
        self.feed = FrameFeed.from_settings(self.hubs, store.feed, metrics, settings)
        limits = IngestLimits.from_settings(settings)
        self.ingest = IngestBatcher(
            store.intake, metrics, limits, settings.ingest_queue, settings.ingest_linger_ms / 1000
        )
        self.rng = rng or random.Random()
        # HS256 with the secret, and the platform's RS256/ES256 keys (verifier.py).
        self.verifier = TokenVerifier(settings, metrics)
        self.admission = IpAdmission(
            settings.max_conns_per_ip,
            settings.max_sessions_per_ip_per_min,
            max_total=connection_cap(settings.max_connections),
        )
        # Browser origins allowed to connect; run_system adds the web app's own origin.
        self.allowed_origins = parse_origins(settings.allowed_origins)
        self.port = 0
        self.poller = ReadPoller()  # reads fast connections' sockets (poller.py)
        # Pings to silent connections and dead ones closed (liveness.py); None: off.
        self.liveness: Liveness[Inbox] | None = (
            Liveness(settings.ping_min_s, settings.ping_max_s, min(TICK_S, settings.ping_min_s / 2))
            if settings.ping_min_s > 0
            else None
        )
        # Who connects and what the room's identity rules let them do (identity.py).
        self.identity = IdentityGate(self.hubs, store.feed, self.verifier, metrics, self.state)
        self.ingest.ban_reason = self.identity.ban_reason
        # What connections send: messages, flood budget, comments (intake.py).
        self.intake = CommentIntake(
            settings,
            metrics,
            self.hubs,
            self.ingest,
            self.identity,
            self.state,
            self.liveness,
            self.rng,
        )
        # A connection from its upgrade request to its close (session.py).
        self.sessions = Sessions(
            settings,
            metrics,
            self.hubs,
            store.feed,
            self.verifier,
            self.identity,
            self.intake,
            self.state,
            poller=self.poller,
            liveness=self.liveness,
            origin_allowed=self.origin_allowed,
            charge=self._charge,
            on_pong=self._on_pong,
        )
        # Viewers and offered rates out, room-wide figures and settings back (presence.py).
        self.presence = Presence(
            self.hubs,
            store.feed,
            settings,
            metrics,
            self.gateway_id,
            self._viewers,
            # Connections out of full GC walks as their number grows (see gcfreeze).
            FreezeOnGrowth() if settings.gc_freeze else None,
        )

    @property
    def draining(self) -> bool:
        """Draining: no new connections or comments (``drain``)."""
        return self.state.draining

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
            self.state.nursery = nursery
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
                self.sessions.handle,
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
            # The gateway registry entry, for room-affine routing (announce.py, issue 25).
            nursery.start_soon(supervise, "announce", Announcer.of(self).run, health)
            task_status.started(self.port)

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin.rstrip("/").lower() in self.allowed_origins

    async def drain(self) -> None:
        """Stop taking comments, store what is queued, close viewers with 1013."""
        self.state.draining = True
        await self.ingest.flush(self.settings.drain_s)
        for viewer in list(self._viewers):
            viewer.close(protocol.CLOSE_TRY_AGAIN, "server draining, reconnect")
        with trio.move_on_after(self.settings.drain_s):
            if self._viewers:
                await self.state.all_gone.wait()

    async def _ping_loop(self) -> None:
        """Every liveness tick (1 s): ping the connections silent for their interval, close
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

    def _charge(self, inbox: Inbox, event: object) -> bool:
        """A control frame or message fragment arrived (``install_frame_budget``): spend
        one message of the connection's budget, and it is a sign of life. ``False``: over
        budget, the connection is closing and the frame is not answered."""
        if self.liveness is not None:
            inbox.heard = self.liveness.now
        return inbox.ended is None and not self.intake.flooded(inbox)

    def _on_pong(self, inbox: Inbox) -> None:
        """A pong parsed by ``FastInbound``: a sign of life. The answer to the gateway's
        own ping is free; any other spends one message of the connection's budget, as a
        pong through wsproto does (``_charge``)."""
        if self.liveness is not None:
            answer = inbox.heard < inbox.pinged  # a ping of ours is waiting for it
            inbox.heard = self.liveness.now
            if answer:
                return
        if inbox.ended is None:
            self.intake.flooded(inbox)
