"""The identity API (issue 19): IP and prefix bans, and what ``POST /api/session``
checks for a room (guest policy, IP bans, nicks that mimic staff).

IP bans (``/api/rooms/{room}/ip-bans``, staff tokens as for the moderation API): a ban
names an address, a /24 (IPv4) or /64 (IPv6) prefix, given as an IP or derived from a
user's last address in the room (the one the gateway saw it connect from, kept a day),
for a duration (at most 30 days: addresses change hands) and with a reason. Bans are
listed and lifted by an id that does not reveal the address; a ban derived from a user
shows that user, not the address. Gateways read a room's bans when its ``ipbans_v``
changes (within a presence round, 0.5 s) and check every non-staff comment against
them in memory. Limits: see docs/operations.md ("IP bans").
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field, model_validator

from danmaku import auth, protocol
from danmaku.auth import User
from danmaku.rules import guests, ipbans, nicks
from danmaku.rules.bans import MAX_REASON, banned_fields
from danmaku.rules.ipbans import IpBan
from danmaku.store import Store
from danmaku.web.moderation import Staff, guarded, who

RoomName = Annotated[str, Path(pattern=protocol.ROOM_RE.pattern, description="room name")]
MAX_IP_BAN_S = 30 * 86400


class IpBanIn(BaseModel):
    """Exactly one of ``ip`` and ``uid``."""

    ip: str | None = Field(
        default=None,
        max_length=64,
        description="an address (203.0.113.7, 2001:db8::1) or a /24 or /64 network",
    )
    uid: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:@-]{1,64}$",
        description="ban the address this user last connected to the room from",
    )
    scope: Literal["address", "prefix"] = Field(
        default="prefix",
        description="with uid: the address itself, or its /24 (IPv4) or /64 (IPv6) prefix",
    )
    duration_s: int = Field(default=86400, ge=60, le=MAX_IP_BAN_S, description="ban length")
    reason: str = Field(default="", max_length=MAX_REASON)

    @model_validator(mode="after")
    def _one_target(self) -> IpBanIn:
        if (self.ip is None) == (self.uid is None):
            raise ValueError("give either ip or uid")
        return self


class IpBanOut(BaseModel):
    id: str = Field(description="lift with DELETE /ip-bans/{id}")
    network: str | None = Field(description="the banned network; null when derived from a uid")
    uid: str | None = Field(description="the user whose address it was derived from")
    until: float = Field(description="epoch seconds")
    reason: str
    by: str


def ban_out(ban: IpBan) -> IpBanOut:
    return IpBanOut(
        id=ban.id,
        network=None if ban.uid else ban.network,
        uid=ban.uid or None,
        until=ban.until,
        reason=ban.reason,
        by=ban.by,
    )


async def session_refusal(
    store: Store, room: str, ip: str, nick: str, uid: str, default_policy: str
) -> None:
    """Raise the ``HTTPException`` a guest session for ``room`` gets (guests off: 403,
    IP banned: 403 with ``until``/``reason``, a nick mimicking staff: 409), if any."""
    code, ban, staff = await guarded(store.identity.session_checks(room, ipbans.candidates(ip)))
    if guests.policy(code, default_policy) == "off":
        raise HTTPException(403, "guests are off in this room: log in to watch and comment")
    if ban is not None:
        fields = banned_fields(ban.until, ban.reason)
        raise HTTPException(
            403, {"code": "banned", "message": "your network is banned from this room"} | fields
        )
    mimicked = nicks.StaffNicks(staff).mimics(nick, uid)
    if mimicked is not None:
        raise HTTPException(
            409,
            f"the nickname {nick!r} looks like the staff member {mimicked!r} of this room: "
            "choose another",
        )


def create_router(store: Store) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["moderation"])

    @router.post(
        "/rooms/{room}/ip-bans",
        response_model=IpBanOut,
        summary="Ban an address or its /24 (/64) prefix for a while",
    )
    async def ip_ban(room: RoomName, body: IpBanIn, user: Staff) -> IpBanOut:
        derived = ""
        if body.uid is not None:
            _refuse_staff_target(user, await guarded(store.moderation.role_in(room, body.uid)))
            ip = await guarded(store.identity.last_ip(room, body.uid))
            if ip is None:
                raise HTTPException(
                    404, "no address known for this user in this room (in the last day)"
                )
            try:
                network = ipbans.network_of(ip) if body.scope == "address" else ipbans.prefix_of(ip)
            except ValueError as exc:
                raise HTTPException(409, "the user's address is not an IP address") from exc
            derived = body.uid
        else:
            try:
                network = ipbans.network_of(body.ip or "")
            except ValueError as exc:
                raise HTTPException(422, f"ip: {exc}") from exc
        ban = IpBan(
            network=network,
            until=time.time() + body.duration_s,
            reason=body.reason,
            by=who(user),
            uid=derived,
            ts=int(time.time() * 1000),
        )
        await guarded(store.identity.ip_ban(room, ban))
        return ban_out(ban)

    @router.get("/rooms/{room}/ip-bans", response_model=list[IpBanOut], summary="IP bans in force")
    async def list_ip_bans(room: RoomName, user: Staff) -> list[IpBanOut]:
        bans = await guarded(store.identity.ip_bans(room))
        return [ban_out(b) for b in sorted(bans.values(), key=lambda b: -b.ts)]

    @router.delete("/rooms/{room}/ip-bans/{ban_id}", status_code=204, summary="Lift an IP ban")
    async def lift_ip_ban(
        room: RoomName,
        ban_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
        user: Staff,
    ) -> None:
        if await guarded(store.identity.lift_ip_ban(room, ban_id, by=who(user))) is None:
            raise HTTPException(404, "no such IP ban")

    return router


def _refuse_staff_target(user: User, target_role: str) -> None:
    if not auth.may_act_on(user.role, target_role):
        raise HTTPException(403, f"a {user.role} cannot ban the address of a {target_role}")
