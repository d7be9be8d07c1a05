"""Who a gateway's connections are, and what the room's identity rules let them do
(issue 19): the ``auth`` message (a fresh token on an open connection, answered at
once, or after one JWKS fetch by a task), the handshake's admission (guests, nicks that
mimic staff), a staff token's expiry mid-connection, the refusals of a comment by guest
policy or IP ban, and the notes a gateway keeps of staff it sees (roles, nicks).

All synchronous except the notes and the late re-auth, which run as tasks of the
gateway's nursery (``GatewayState.spawn``) and never raise out of it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from danmaku import auth, protocol
from danmaku.auth import User
from danmaku.gateway.handshake import Refusal
from danmaku.gateway.hub import Hub, RoomHubs
from danmaku.gateway.state import GatewayState
from danmaku.gateway.viewer import Viewer
from danmaku.metrics import Metrics
from danmaku.rules import guests
from danmaku.rules.bans import banned_fields
from danmaku.store.interfaces import FeedStore
from danmaku.verifier import KeysUnavailable, KeyUnknown, TokenVerifier

log = logging.getLogger(__name__)


class IdentityGate:
    """The identity checks of one gateway. ``hubs``: the rooms served here (their
    staff lists, guest policies, staff nicks, IP bans and ban reasons as of the last
    presence round); ``store``: where the notes go."""

    def __init__(
        self,
        hubs: RoomHubs,
        store: FeedStore,
        verifier: TokenVerifier,
        metrics: Metrics,
        state: GatewayState,
    ) -> None:
        self.hubs = hubs
        self.store = store
        self.verifier = verifier
        self.metrics = metrics
        self.state = state

    def reauth(self, viewer: Viewer, token: str) -> str | None:
        """An ``auth`` message: a fresh token for the connection's user (or a first one
        for an anonymous viewer). Answered with a notice ``auth`` or an ``unauthorized``
        error; a connection never changes its user. ``None``: the token needs a JWKS
        fetch first, and a task answers after it (this path never waits)."""
        try:
            user = self.verifier.verify(token, room=viewer.room)
        except KeyUnknown:
            if not self.state.spawn(self._reauth_later, viewer, token):
                return protocol.error(protocol.ProtocolError("unavailable", "try again"))
            return None
        except auth.TokenError as exc:
            return protocol.error(protocol.ProtocolError("unauthorized", str(exc)))
        return self.reauthed(viewer, user)

    async def _reauth_later(self, viewer: Viewer, token: str) -> None:
        """``_reauth`` after the platform's keys were fetched (a task of the gateway's
        nursery: nothing may leave it)."""
        try:
            user = await self.verifier.verify_async(token, room=viewer.room)
            reply = self.reauthed(viewer, user)
        except KeysUnavailable as exc:
            reply = protocol.error(protocol.ProtocolError("unavailable", str(exc)))
        except auth.TokenError as exc:
            reply = protocol.error(protocol.ProtocolError("unauthorized", str(exc)))
        except Exception as exc:
            log.warning("re-authenticating a connection in %s failed: %r", viewer.room, exc)
            return
        viewer.push_control(reply)

    def reauthed(self, viewer: Viewer, user: User) -> str:
        """The connection takes ``user`` (verified); the answer to send."""
        if viewer.user is not None and user.uid != viewer.user.uid:
            return protocol.error(
                protocol.ProtocolError("unauthorized", "a connection keeps its user: reconnect")
            )
        token_staff = user.is_staff
        hub = self.hubs.hubs.get(viewer.room)
        if hub is not None:
            user = auth.in_room(user, hub.staff.get(user.uid))
            refusal = self.admit(hub, user)
            if refusal is not None:  # the connection keeps what it had
                return protocol.error(protocol.ProtocolError(refusal.code, refusal.message))
        anonymous = viewer.user is None
        viewer.user = user
        if anonymous and hub is not None:
            hub.identified(viewer)  # counted as a user from now on
        if token_staff:
            self.state.spawn(self._note_role, viewer.room, user)
        if user.is_staff:
            self.state.spawn(self.note_nick, viewer.room, user)
        return protocol.notice("auth", user=user.public(), expires=int(user.expires))

    def admit(self, hub: Hub, user: User) -> Refusal | None:
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

    def ban_reason(self, room: str, uid: str) -> str:
        """What a banned user was told (``IngestBatcher.ban_reason``): the room's ban
        reasons as of the last presence round."""
        hub = self.hubs.hubs.get(room)
        return hub.ban_reasons.reason(uid) if hub is not None else ""

    async def note_nick(self, room: str, user: User) -> None:
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

    def current_user(self, viewer: Viewer) -> User | None:
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

    def refusal(
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
