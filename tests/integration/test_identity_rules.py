"""Identity rules end to end (issue 19), against a real app, gateways and Redis: the
room's guest policy, IP and prefix bans (across gateways), ban reasons, nicks that
mimic staff, and notices signed by nick and role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from danmaku import auth
from danmaku.config import Settings
from danmaku.system import System
from tests.client import Client, connect, http, start_system, token
from tests.conftest import SECRET
from tests.integration.test_moderation import Api

ROOM = "idr"
MOD = token("mod1", role="moderator", room=ROOM)


def guest(uid: str = "g_abcdefghijkl", nick: str = "Visitor") -> str:
    return auth.mint(SECRET, uid=uid, nick=nick, guest=True)


async def session(system: System, body: dict[str, Any]) -> tuple[int, Any]:
    reply = await http(f"http://127.0.0.1:{system.web_port}/api/session", "POST", json_body=body)
    return reply.status, reply.json()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Retry ``check`` until it holds (settings reach gateways in a presence round)."""
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.1)


def refused_with(client: Client, code: str, counter: list[int]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        counter[0] += 1
        reply = await client.comment(f"try {counter[0]}", nonce=f"n{counter[0]}")
        return reply.get("code") == code

    return check


def refused_at_handshake(
    nursery: trio.Nursery, port: int, tok: str, errors: list[dict[str, Any]]
) -> Callable[[], Awaitable[bool]]:
    """Connects with ``tok``: whether the gateway refused it (its errors into ``errors``)."""

    async def check() -> bool:
        client = await connect(nursery, port, ROOM, tok=tok)
        await client.wait_for(lambda c: c.closed is not None or bool(c.of_type("welcome")))
        errors.extend(client.of_type("error"))
        if client.closed is None:
            await client.ws.aclose()
            return False
        assert client.closed[0] == 1008
        return True

    return check


def accepted(client: Client, counter: list[int]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        counter[0] += 1
        reply = await client.comment(f"again {counter[0]}", nonce=f"a{counter[0]}")
        return reply["type"] == "ack"

    return check


async def test_guests_watch_then_off(nursery: trio.Nursery, system: System) -> None:
    assert system.ws_port
    api = Api(system, MOD)
    visitor = await connect(nursery, system.ws_port, ROOM, tok=guest())
    member = await connect(nursery, system.ws_port, ROOM, tok=token("member"))
    mod = await connect(nursery, system.ws_port, ROOM, tok=MOD)
    assert (await visitor.comment("hello", "h1"))["type"] == "ack"

    status, body = await api("PATCH", f"/rooms/{ROOM}/settings", {"guests": "watch"})
    assert status == 200 and body["guests"] == "watch"
    room = (await http(f"http://127.0.0.1:{system.web_port}/api/rooms/{ROOM}")).json()
    assert room["settings"]["guests"] == "watch" and room["effective"]["guests"] == "watch"
    await visitor.wait_for(lambda c: any(m.get("event") == "settings" for m in c.of_type("notice")))
    assert visitor.of_type("notice")[-1]["changes"] == {"guests": "watch"}
    tries = [0]
    await eventually(refused_with(visitor, "login_required", tries))
    assert "log in" in visitor.of_type("error")[-1]["message"]
    assert (await member.comment("members still talk", "m1"))["type"] == "ack"
    assert (await mod.comment("staff too", "s1"))["type"] == "ack"
    assert visitor.closed is None  # guests still watch

    # A guest session for the room is still given (guests watch); with off it is not.
    assert (await session(system, {"nick": "New", "room": ROOM}))[0] == 200
    assert (await api("PATCH", f"/rooms/{ROOM}/settings", {"guests": "off"}))[0] == 200
    status, body = await session(system, {"nick": "New", "room": ROOM})
    assert status == 403 and "guests are off" in body["detail"]
    # A guest token (got for another room, or before) is refused at the handshake.
    errors: list[dict[str, Any]] = []
    await eventually(refused_at_handshake(nursery, system.ws_port, guest("g_zyxwvutsrqpo"), errors))
    assert errors[-1]["code"] == "login_required"
    # Logged-in users and anonymous viewers come in.
    assert (await connect(nursery, system.ws_port, ROOM, tok=token("m2"))).of_type("welcome")
    assert (await connect(nursery, system.ws_port, ROOM)).of_type("welcome")
    # Reset to the default: guests comment again.
    assert (await api("PATCH", f"/rooms/{ROOM}/settings", {"guests": None}))[0] == 200
    await eventually(accepted(visitor, tries))


async def test_ip_bans_hold_across_gateways_and_at_the_session(
    nursery: trio.Nursery, settings: Settings
) -> None:
    web = await start_system(nursery, settings, ("web", "worker", "gateway"))
    other = await start_system(nursery, settings, ("gateway",))
    assert web.ws_port and other.ws_port
    api = Api(web, MOD)
    here = await connect(nursery, web.ws_port, ROOM, tok=token("v1"))
    there = await connect(nursery, other.ws_port, ROOM, tok=token("v2"))
    staff = await connect(nursery, other.ws_port, ROOM, tok=MOD)
    assert (await there.comment("before", "b0"))["type"] == "ack"

    status, ban = await api(
        "POST",
        f"/rooms/{ROOM}/ip-bans",
        {"ip": "127.0.0.0/24", "duration_s": 600, "reason": "raid"},
    )
    assert status == 200 and ban["network"] == "127.0.0.0/24" and ban["uid"] is None
    tries = [0]
    await eventually(refused_with(there, "banned", tries))
    err = there.of_type("error")[-1]
    assert err["reason"] == "raid" and err["until"] == int(ban["until"] * 1000)
    assert 0 < err["retry_after_ms"] <= 600_000
    await eventually(refused_with(here, "banned", tries))
    assert (await staff.comment("staff are not held", "s1"))["type"] == "ack"
    status, body = await session(web, {"nick": "Evader", "room": ROOM})
    assert status == 403 and body["detail"]["code"] == "banned"
    assert body["detail"]["reason"] == "raid"
    assert (await session(web, {"nick": "Elsewhere", "room": "other-room"}))[0] == 200

    doc = (await http(f"http://127.0.0.1:{web.web_port}/openapi.json")).json()
    assert {"/api/rooms/{room}/ip-bans", "/api/rooms/{room}/ip-bans/{ban_id}"} <= set(doc["paths"])
    status, listed = await api("GET", f"/rooms/{ROOM}/ip-bans")
    assert [b["id"] for b in listed] == [ban["id"]]
    assert (await api("DELETE", f"/rooms/{ROOM}/ip-bans/{ban['id']}"))[0] == 204
    assert (await api("DELETE", f"/rooms/{ROOM}/ip-bans/{ban['id']}"))[0] == 404
    await eventually(accepted(there, tries))
    await eventually(accepted(here, tries))

    # Derived from a user's last address: the ban shows the user, never the address.
    status, derived = await api(
        "POST", f"/rooms/{ROOM}/ip-bans", {"uid": "v2", "scope": "address", "duration_s": 60}
    )
    assert status == 200 and derived["network"] is None and derived["uid"] == "v2"
    await eventually(refused_with(there, "banned", tries))
    status, _ = await api("POST", f"/rooms/{ROOM}/ip-bans", {"uid": "nobody"})
    assert status == 404
    status, _ = await api("POST", f"/rooms/{ROOM}/ip-bans", {"ip": "10.0.0.0/8"})
    assert status == 422
    status, log = await api("GET", f"/rooms/{ROOM}/audit")
    actions = [e["action"] for e in log]
    assert actions[:3] == ["ip_ban", "ip_unban", "ip_ban"]
    assert "127.0.0" not in str(log)  # the audit names bans by id or user


async def test_ban_reasons_reach_the_viewer_the_list_and_the_audit(
    nursery: trio.Nursery, system: System
) -> None:
    assert system.ws_port
    api = Api(system, MOD)
    troll = await connect(nursery, system.ws_port, ROOM, tok=token("troll"))
    status, ban = await api(
        "POST",
        f"/rooms/{ROOM}/bans",
        {"uid": "troll", "duration_s": 600, "reason": "spam", "close": False},
    )
    assert status == 200 and ban["reason"] == "spam"
    await troll.wait_for(lambda c: bool(c.of_type("error")))
    told = troll.of_type("error")[0]  # unprompted
    assert told["code"] == "banned" and told["reason"] == "spam"
    assert told["until"] == int(ban["until"] * 1000)
    reply = await troll.comment("let me talk", "t1")
    assert reply["code"] == "banned" and reply["reason"] == "spam"
    assert abs(reply["until"] - told["until"]) <= 1000
    status, bans = await api("GET", f"/rooms/{ROOM}/bans")
    assert bans == [{"uid": "troll", "until": ban["until"], "reason": "spam"}]
    status, log = await api("GET", f"/rooms/{ROOM}/audit")
    assert log[0]["action"] == "ban" and log[0]["detail"]["reason"] == "spam"
    # A permanent ban: until is null.
    await api("POST", f"/rooms/{ROOM}/bans", {"uid": "troll", "close": False})
    reply = await troll.comment("still?", "t2")
    assert reply["code"] == "banned" and reply["until"] is None and "reason" not in reply
    status, _ = await api("POST", f"/rooms/{ROOM}/bans", {"uid": "x", "reason": "r" * 201})
    assert status == 422


async def test_nicks_that_mimic_staff_are_refused(nursery: trio.Nursery, system: System) -> None:
    assert system.ws_port
    star = auth.mint(SECRET, uid="star", nick="StreamerMax", role="streamer", room=ROOM)
    await connect(nursery, system.ws_port, ROOM, tok=star)
    fakes = ["StreamerMax", "ЅtrеamеrMax", "STREAMERMAX", "Strearner\u200bMax", "StreamerMax\u202e"]

    async def all_refused() -> bool:
        answers = [await session(system, {"nick": fake, "room": ROOM}) for fake in fakes]
        return all(status == 409 for status, _ in answers)

    await eventually(all_refused)
    status, body = await session(system, {"nick": "ЅtrеamеrMax", "room": ROOM})
    assert "looks like the staff member 'StreamerMax'" in body["detail"]
    # Other names pass, cleaned of invisible and bidi characters.
    status, body = await session(system, {"nick": "Max\u202e Fan\u200b", "room": ROOM})
    assert status == 200 and body["user"]["nick"] == "Max Fan"
    # A token's nick (a guest's from before, or a platform viewer's) at the handshake,
    # once the gateway has the staff nick (its next presence round).
    impostor = auth.mint(SECRET, uid="imp", nick="Streamer\u041cax")  # Cyrillic capital M
    refusals: list[dict[str, Any]] = []
    await eventually(refused_at_handshake(nursery, system.ws_port, impostor, refusals))
    assert refusals[-1]["code"] == "nick_taken"
    # The streamer keeps its own name on another connection.
    assert (await connect(nursery, system.ws_port, ROOM, tok=star)).of_type("welcome")


async def test_room_notices_are_signed_by_nick_and_role(
    nursery: trio.Nursery, system: System
) -> None:
    assert system.ws_port
    viewer = await connect(nursery, system.ws_port, ROOM)
    mod = auth.mint(SECRET, uid="mod1", nick="Mo", role="moderator", room=ROOM)
    assert (await Api(system, mod)("POST", f"/rooms/{ROOM}/notices", {"text": "be nice"}))[0] == 204
    await viewer.wait_for(lambda c: any(m.get("event") == "room_notice" for m in c.messages))
    notice = next(m for m in viewer.messages if m.get("event") == "room_notice")
    assert (notice["by"], notice["role"], notice["text"]) == ("Mo", "moderator", "be nice")


async def test_shield_mode_makes_guests_watch(nursery: trio.Nursery, system: System) -> None:
    """Shield mode (store/review.py) writes the guests policy as the settings API does,
    so the gateway enforces it: a guest is refused while shield is on, and comments again
    once it is off."""
    assert system.ws_port
    room = "shield-guests"
    api = Api(system, token("mod2", role="moderator", room=room))
    visitor = await connect(nursery, system.ws_port, room, tok=guest())
    assert (await visitor.comment("before", "b1"))["type"] == "ack"
    assert (await api("PUT", f"/rooms/{room}/shield"))[0] == 200
    tries = [0]
    await eventually(refused_with(visitor, "login_required", tries))
    assert (await api("DELETE", f"/rooms/{room}/shield"))[0] == 200
    await eventually(accepted(visitor, tries))
