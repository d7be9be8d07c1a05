"""Signed user tokens (JWT): who a connection is and what it may do. This system signs
HS256 with its secret; ``decode`` also checks a platform's RS256/ES256 tokens with a key
``danmaku.verifier`` picks.

A token carries ``sub`` (user id), ``nick``, ``role`` and optionally ``room`` (a room
name, or a list of them: the token is then valid in those rooms only; a moderator of
listed rooms) and ``hl`` (highlighted sender). Pure functions; the
secret is passed in. ``verify`` never raises anything but ``TokenError``.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from danmaku.rules.nicks import NickError
from danmaku.rules.nicks import clean as clean_nick

ROLES = ("viewer", "moderator", "streamer", "admin")
STAFF_ROLES = frozenset({"moderator", "streamer", "admin"})
# The role hierarchy: a higher rank may act on a lower one (guests are viewers).
RANK = {"viewer": 0, "moderator": 1, "streamer": 2, "admin": 3}
_UID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
ALGORITHM = "HS256"


class TokenError(Exception):
    """The token is missing a claim, badly signed, expired or for another room."""


@dataclass(frozen=True)
class User:
    uid: str
    nick: str
    role: str = "viewer"
    room: str | None = None
    highlight: bool = False
    rooms: tuple[str, ...] | None = None  # the rooms the token is limited to (None: all)
    expires: float = 0.0  # the token's exp (epoch seconds; 0: not from a token)
    # The role the token itself carries, when a room's staff list changed ``role`` (see
    # ``in_room``); ``None``: ``role`` is the token's.
    token_role: str | None = None
    # A guest of ``POST /api/session`` (its token says so, or its uid is a guest uid):
    # what a room's ``guests`` setting holds back (rules/guests.py).
    guest: bool = False

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    def allowed_in(self, room: str) -> bool:
        return self.rooms is None or room in self.rooms

    def public(self) -> dict[str, Any]:
        """The user as the protocol shows it (welcome.user)."""
        return {"uid": self.uid, "nick": self.nick, "role": self.role}


def mint(
    secret: str,
    *,
    uid: str,
    nick: str,
    role: str = "viewer",
    room: str | Sequence[str] | None = None,
    ttl_s: int = 86_400,
    highlight: bool = False,
    now: float | None = None,
    guest: bool = False,
) -> str:
    """Return a signed token. Raises ``ValueError`` for an unknown role or a bad uid."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not _UID_RE.fullmatch(uid):
        raise ValueError("user id must be 1-64 of [A-Za-z0-9_.:@-]")
    if not secret:
        raise ValueError("empty secret")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": uid,
        "nick": nick,
        "role": role,
        "iat": issued,
        "exp": issued + int(ttl_s),
    }
    if isinstance(room, str) and room:
        claims["room"] = room
    elif room:
        claims["room"] = list(room)
    if highlight:
        claims["hl"] = True
    if guest:
        claims["guest"] = True
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


MAX_TOKEN_CHARS = 4096  # a platform's RS256 token with its claims is longer than ours


def verify(secret: str, token: str, *, room: str | None = None) -> User:
    """Check signature, expiry and room claim; return the user. Raises ``TokenError``."""
    return decode(token, secret, (ALGORITHM,), room=room)


def decode(
    token: str,
    key: Any,
    algorithms: Sequence[str],
    *,
    room: str | None = None,
    issuer: str = "",
    audience: str = "",
) -> User:
    """Check ``token``'s signature with ``key`` (one of ``algorithms``), its expiry, its
    ``iss``/``aud`` where given (a token naming an audience is refused when none is
    expected), and its room claim; return the user. Raises ``TokenError`` only."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("token too long")
    required = ["sub", "exp"] + (["iss"] if issuer else []) + (["aud"] if audience else [])
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            issuer=issuer or None,
            audience=audience or None,
            options={"require": required},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("bad token: wrong issuer (iss)") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("bad token: wrong audience (aud)") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"bad token: {exc}") from exc
    return user_from_claims(claims, room)


def user_from_claims(claims: dict[str, Any], room: str | None = None) -> User:
    """The user a verified token's claims describe (``nick``, or a platform's ``name``).
    Raises ``TokenError`` for a bad ``sub``, nick, role or room claim."""
    uid = claims.get("sub")
    nick = claims.get("nick", claims.get("name", ""))
    role = claims.get("role", "viewer")
    if not isinstance(uid, str) or not _UID_RE.fullmatch(uid):
        raise TokenError("bad token: sub")
    if not isinstance(nick, str) or role not in ROLES:
        raise TokenError("bad token: nick/role")
    try:  # a platform's nick is cleaned as a session's is (no bidi or invisible tricks)
        nick = clean_nick(nick, 64) if nick else ""
    except NickError:
        nick = ""
    token_room = claims.get("room")
    rooms: tuple[str, ...] | None = None
    if isinstance(token_room, str):
        rooms = (token_room,)
    elif isinstance(token_room, list) and all(isinstance(r, str) for r in token_room):
        rooms = tuple(token_room)
    elif token_room is not None:
        raise TokenError("bad token: room")
    if rooms is not None and room is not None and room not in rooms:
        raise TokenError("token is for another room")
    exp = claims.get("exp")
    return User(
        uid=uid,
        nick=nick[:64],
        role=role,
        room=rooms[0] if rooms and len(rooms) == 1 else None,
        rooms=rooms,
        highlight=bool(claims.get("hl", False)),
        expires=float(exp) if isinstance(exp, int | float) else 0.0,
        guest=claims.get("guest") is True or bool(_GUEST_RE.fullmatch(uid)),
    )


def rank(role: str) -> int:
    """The role's place in the hierarchy (unknown roles rank as viewers)."""
    return RANK.get(role, 0)


def role_of_rank(value: int) -> str:
    """The role with this rank (out of range: the nearest one)."""
    return ROLES[max(0, min(value, len(ROLES) - 1))]


def may_act_on(actor: str, target: str) -> bool:
    """May a user of role ``actor`` ban, time out or delete the comments of a user of
    role ``target``? Only of a lower role; an admin may act on anyone."""
    return actor == "admin" or rank(actor) > rank(target)


def may_lift(actor: str, setter: str) -> bool:
    """May a user of role ``actor`` lift (or overwrite) a ban set by role ``setter``?
    Only a ban set by the same or a lower role; an admin may lift any."""
    return actor == "admin" or rank(actor) >= rank(setter)


# ---- a room's staff list ----------------------------------------------------------------
# A room's streamer (or an admin) appoints and removes room staff (``Store.set_staff``).
# An entry is a grant ("moderator", or "streamer" granted by an admin) or a revocation.
REVOKED = "revoked"
GRANTABLE = ("moderator", "streamer")
STAFF_ENTRIES = (*GRANTABLE, REVOKED)
# Roles the platform signs that a room's list cannot take away: the room's own streamer
# and admins are the platform's to appoint (revoke their tokens, or let them expire).
IRREVOCABLE = frozenset({"streamer", "admin"})


def effective_role(token_role: str, listed: str | None) -> str:
    """The role a user acts with in a room: ``token_role`` (what the user's token says)
    under the room's staff-list entry ``listed`` (a role in ``GRANTABLE``, ``REVOKED``,
    or ``None`` when the user is not on the list).

    A grant raises the role to the granted one (never lowers it: a streamer token listed
    as a moderator stays a streamer); a revocation takes a moderator token down to a
    viewer; streamer and admin tokens are never revoked (``IRREVOCABLE``). An unknown
    entry counts as no entry, an unknown token role as a viewer's.
    """
    role = token_role if token_role in RANK else "viewer"
    if listed == REVOKED:
        return role if role in IRREVOCABLE else "viewer"
    if listed in GRANTABLE and rank(listed) > rank(role):
        return listed
    return role


def in_room(user: User, listed: str | None) -> User:
    """``user`` as it acts in a room whose staff list says ``listed`` about it (see
    ``effective_role``); the token's own role is kept in ``token_role``, so applying a
    later entry starts from the token again, never from an earlier entry."""
    base = user.token_role or user.role
    role = effective_role(base, listed)
    token_role = None if role == base else base
    if role == user.role and token_role == user.token_role:
        return user
    return dataclasses.replace(user, role=role, token_role=token_role)


def may_appoint(actor: str, role: str) -> bool:
    """May a user acting as ``actor`` in a room grant ``role`` on its staff list? A
    streamer or an admin only, and only a role below its own (an admin any grantable)."""
    if role not in GRANTABLE or rank(actor) < rank("streamer"):
        return False
    return actor == "admin" or rank(role) < rank(actor)


def guest_uid() -> str:
    """A fresh random id for a guest session."""
    return "g_" + secrets.token_urlsafe(9)


DEVICE_AUDIENCE = "danmaku:device"  # a device ticket is never a user token, and back
_GUEST_RE = re.compile(r"g_[A-Za-z0-9_-]{12}")


def device_ticket(secret: str, uid: str, *, now: float | None = None) -> str:
    """A signed ticket binding a browser (a device cookie) to its guest uid."""
    issued = int(time.time() if now is None else now)
    return jwt.encode({"dev": uid, "aud": DEVICE_AUDIENCE, "iat": issued}, secret, ALGORITHM)


def device_uid(secret: str, ticket: str | None) -> str | None:
    """The guest uid a device ticket names, or ``None`` for a missing, forged or
    malformed one (never raises). Tickets do not expire: the cookie's age bounds them."""
    if not ticket or len(ticket) > 512:
        return None
    try:
        claims = jwt.decode(ticket, secret, algorithms=[ALGORITHM], audience=DEVICE_AUDIENCE)
    except jwt.PyJWTError:
        return None
    uid = claims.get("dev")
    return uid if isinstance(uid, str) and _GUEST_RE.fullmatch(uid) else None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# ---- the platform's backend (server API) ----------------------------------------------
# A server token is not a user token: it carries its own audience, so ``verify`` (which
# names none) refuses it, and ``verify_server`` refuses every user token. A browser's
# token can never reach the server API, nor a server token a room as a viewer.
SERVER_AUDIENCE = "danmaku:server"
SERVER_ROLE = "server"


def mint_server(secret: str, *, uid: str, ttl_s: int = 86_400, now: float | None = None) -> str:
    """A signed token for the server API (``danmaku token --role server``); ``uid``
    names the backend (what publishes are audited and rate-limited as)."""
    if not _UID_RE.fullmatch(uid):
        raise ValueError("user id must be 1-64 of [A-Za-z0-9_.:@-]")
    if not secret:
        raise ValueError("empty secret")
    issued = int(time.time() if now is None else now)
    claims = {"sub": uid, "role": SERVER_ROLE, "aud": SERVER_AUDIENCE, "iat": issued}
    claims["exp"] = issued + int(ttl_s)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_server(secret: str, token: str) -> str:
    """The backend's uid of a valid server token; ``TokenError`` for anything else
    (a user token, a bad signature, an expired token)."""
    if len(token) > 2048:
        raise TokenError("token too long")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=SERVER_AUDIENCE,
            options={"require": ["sub", "exp", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"not a server token: {exc}") from exc
    uid = claims.get("sub")
    if claims.get("role") != SERVER_ROLE or not isinstance(uid, str) or not _UID_RE.fullmatch(uid):
        raise TokenError("not a server token")
    return uid
