"""Identity state in Redis (issue 19): IP bans, the address each user last came from,
and the nicks staff members use in a room. A component of ``Store``
(``store.identity``). Gateways read IP bans and staff nicks in their presence round when
the room's ``ipbans_v`` / ``nicks_v`` changed, never per comment.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from danmaku.rules.ipbans import IpBan, ban_id, longest
from danmaku.store import keys
from danmaku.store.core import StoreCore
from danmaku.store.journal import audit
from danmaku.store.records import _s

LAST_IP_TTL_S = 86_400  # an address older than a day says little about who is there now


def parse_ip_bans(raw: Mapping[Any, Any], now: float) -> dict[str, IpBan]:
    """network -> ban, of a stored hash: bans in force only, malformed ones left out."""
    out = {}
    for network, value in raw.items():
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        ban = IpBan.from_json(_s(network), data)
        if ban is not None and ban.in_force(now):
            out[ban.network] = ban
    return out


def parse_nicks(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_s(uid): _s(nick) for uid, nick in raw.items()}


def parse_ban_reasons(raw: Mapping[Any, Any]) -> dict[str, tuple[float, str]]:
    """uid -> (until, reason) of a stored ``ban_reasons`` hash (malformed left out)."""
    out = {}
    for uid, value in raw.items():
        try:
            data = orjson.loads(value)
            out[_s(uid)] = (float(data.get("until", 0)), str(data.get("reason", "")))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            continue
    return out


class Identity:
    """IP bans, the address each user last came from, staff nicks, and what a guest
    session needs checked (``session_checks``)."""

    def __init__(self, core: StoreCore) -> None:
        self._r = core.r
        self._call = core.call

    # ---- IP bans ---------------------------------------------------------------------
    async def ip_ban(self, room: str, ban: IpBan) -> None:
        """Set (or overwrite) the ban on ``ban.network``, bump ``ipbans_v``, audit it
        (target: the ban id, or the uid it was derived from; never the address)."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            # The entry before the version: a gateway reading the new version reads it.
            pipe.hset(keys.ip_bans(room), ban.network, orjson.dumps(ban.to_json()))
            pipe.hincrby(keys.settings(room), "ipbans_v", 1)
            detail = {"id": ban.id, "until": ban.until, "reason": ban.reason, "uid": ban.uid}
            audit(pipe, room, ban.by, "ip_ban", ban.uid or ban.id, detail)
            pipe.execute()

        await self._call("ip_bans", run)

    async def ip_bans(self, room: str) -> dict[str, IpBan]:
        """The room's IP bans in force (expired entries are removed)."""
        raw: Any = await self._call("ip_bans", lambda: self._r.hgetall(keys.ip_bans(room)))
        now = time.time()
        live = parse_ip_bans(raw, now)
        stale = [k for k in raw if _s(k) not in live]
        if stale:
            await self._call("ip_bans", lambda: self._r.hdel(keys.ip_bans(room), *stale))
        return live

    async def lift_ip_ban(self, room: str, ident: str, *, by: str) -> IpBan | None:
        """Lift the ban with id ``ident`` (``rules.ipbans.ban_id``); the ban lifted, or
        ``None`` when there is none in force."""
        for network, ban in (await self.ip_bans(room)).items():
            if ban_id(network) != ident:
                continue

            target = ban.uid or ident

            def run(network: str = network, target: str = target) -> None:
                pipe = self._r.pipeline(transaction=False)
                pipe.hdel(keys.ip_bans(room), network)
                pipe.hincrby(keys.settings(room), "ipbans_v", 1)
                audit(pipe, room, by, "ip_unban", target, {"id": ident})
                pipe.execute()

            await self._call("ip_bans", run)
            return ban
        return None

    async def note_ips(self, seen: Mapping[str, Mapping[str, str]]) -> None:
        """Remember the address each user connected from: room -> {uid: ip}. One
        pipeline (the gateway's presence round gathers them)."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            for room, users in seen.items():
                for uid, ip in users.items():
                    pipe.set(keys.last_ip(room, uid), ip, ex=LAST_IP_TTL_S)
            pipe.execute()

        await self._call("note_ips", run)

    async def last_ip(self, room: str, uid: str) -> str | None:
        raw = await self._call("note_ips", lambda: self._r.get(keys.last_ip(room, uid)))
        return _s(raw) if raw is not None else None

    # ---- staff nicks -----------------------------------------------------------------
    async def note_staff_nick(self, room: str, uid: str, nick: str) -> None:
        """Remember the nick a staff member uses in the room; bump ``nicks_v`` only
        when it is new or changed (staff connect often, rename seldom)."""

        def run() -> None:
            if self._r.hget(keys.staff_nicks(room), uid) == nick.encode():
                return
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(keys.staff_nicks(room), uid, nick)
            pipe.hincrby(keys.settings(room), "nicks_v", 1)
            pipe.execute()

        await self._call("staff_nicks", run)

    async def staff_nicks(self, room: str) -> dict[str, str]:
        raw: Any = await self._call("staff_nicks", lambda: self._r.hgetall(keys.staff_nicks(room)))
        return parse_nicks(raw)

    # ---- what POST /api/session checks -------------------------------------------------
    async def session_checks(
        self, room: str, ip_keys: Sequence[str]
    ) -> tuple[float | None, IpBan | None, dict[str, str]]:
        """For a guest session in ``room`` from an address whose ``candidates`` are
        ``ip_keys``: the room's stored ``guests`` code (``None``: unset), the IP ban in
        force on the address (the longest), and the staff nicks. One round trip."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(keys.settings(room), "guests")
            pipe.hgetall(keys.staff_nicks(room))
            if ip_keys:
                pipe.hmget(keys.ip_bans(room), list(ip_keys))
            return pipe.execute()

        guests, nicks, *bans = await self._call("session_checks", run)
        found: IpBan | None = None
        if ip_keys:
            raw = {k: v for k, v in zip(ip_keys, bans[0], strict=True) if v is not None}
            found = longest(parse_ip_bans(raw, time.time()).values())
        try:
            code = float(guests) if guests is not None else None
        except ValueError:
            code = None
        return code, found, parse_nicks(nicks)

    async def ban_reasons(self, room: str) -> dict[str, tuple[float, str]]:
        """uid -> (until, reason) of the room's bans (as set; expired ones may remain
        until ``bans`` tidies them)."""
        raw: Any = await self._call("bans", lambda: self._r.hgetall(keys.ban_reasons(room)))
        return parse_ban_reasons(raw)
