"""What a gateway does with what its connections send: each message parsed and
answered (``on_message``, synchronous: never waits, never raises for what a client
sends), the connection's message budget (``flooded``: over it, the connection closes
with 1008), and a comment's way to the ``IngestBatcher`` (``accept_comment``: who may
send, the room's identity rules, blocked words, the room's ingest ceiling, held for
review or not).

This is the hot path of comment intake: it runs once per message on the reader task,
so it reads the room's state as of the last presence round and never touches Redis.
"""

from __future__ import annotations

import random
import secrets
import time

import orjson

from danmaku import protocol
from danmaku.config import Settings
from danmaku.gateway.door import Conn
from danmaku.gateway.hub import DENSITY, RoomHubs
from danmaku.gateway.identity import IdentityGate
from danmaku.gateway.ingest import IngestBatcher, Submission
from danmaku.gateway.liveness import Liveness, Peer
from danmaku.gateway.state import GatewayState
from danmaku.gateway.viewer import Viewer
from danmaku.metrics import Metrics
from danmaku.rules.normalize import normalize
from danmaku.rules.ratelimit import TokenBucket
from danmaku.store import Ingest, door_key

MAX_INFLIGHT = 32  # comments one connection may have waiting for their ack


class Inbox(Peer):
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


class CommentIntake:
    """The message side of a gateway's connections. ``batcher``: where accepted
    comments go; ``identity``: the room's identity rules and the ``auth`` message;
    ``liveness``: anything heard is a sign of life (``None``: pings off)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        hubs: RoomHubs,
        batcher: IngestBatcher,
        identity: IdentityGate,
        state: GatewayState,
        liveness: Liveness[Inbox] | None,
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.hubs = hubs
        self.batcher = batcher
        self.identity = identity
        self.state = state
        self.liveness = liveness
        self.rng = rng
        self.limits = protocol.TextLimits(settings.max_text_chars, settings.max_text_bytes)

    def on_message(self, inbox: Inbox, raw: str | bytes) -> None:
        """One client message, from ``Sessions.read_loop`` or straight from the reader task
        (``FastInbound``). Synchronous: never waits, never raises for what a client sends.
        Sets ``inbox.ended`` when the connection is to close."""
        try:
            if self.liveness is not None:
                inbox.heard = self.liveness.now  # anything heard is a sign of life
            if inbox.ended is not None or self.flooded(inbox):
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
                reply = self.identity.reauth(viewer, msg.token)
                if reply is not None:
                    viewer.push_control(reply)
            else:
                m.comments_received.inc()
                err = self.accept_comment(viewer, msg)
                if err is not None:
                    m.comments_rejected.labels(err.code).inc()
                    viewer.push_control(protocol.error(err))
        except Exception:
            # A bug on this connection's intake path: the door's boundary ends the
            # connection (1011); the stage says where it was.
            if inbox.conn is not None:
                inbox.conn.stage = "ingest"
            raise

    def flooded(self, inbox: Inbox) -> bool:
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

    def accept_comment(
        self, viewer: Viewer, req: protocol.CommentRequest
    ) -> protocol.ProtocolError | None:
        user = self.identity.current_user(viewer)
        if user is None:
            return protocol.ProtocolError(
                "unauthorized", "sending needs a token; anonymous viewers can only watch", req.nonce
            )
        hub = self.hubs.hubs.get(viewer.room)
        # Only guests, and rooms with IP bans, pay for the identity checks.
        if hub is not None and (user.guest or len(hub.ip_bans)) and not user.is_staff:
            refused = self.identity.refusal(hub, viewer, user, req.nonce)
            if refused is not None:
                return refused
        if self.state.draining:
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
        if not self.batcher.submit(sub):
            return protocol.ProtocolError(
                "overloaded", "gateway ingest queue full", req.nonce, 1000
            )
        return None
