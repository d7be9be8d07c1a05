"""A room's staff list (``/api/rooms/{room}/staff``) against a real app, gateway and
Redis: who may appoint and remove, what a listed or revoked user can do through the API,
and that open connections take the change (a ``role`` notice, then staff or ordinary
comments) within a second."""

from __future__ import annotations

import time
from typing import Any

import trio

from danmaku import auth
from danmaku.config import Settings
from danmaku.system import System
from tests.client import Client, connect, start_system, token
from tests.conftest import SECRET
from tests.integration.test_roles import Api

ROOM = "rk"
OTHER = "elsewhere"
STAR = token("star", role="streamer", room=ROOM)
ADMIN = token("root", role="admin")
MOD = token("mod1", role="moderator", room=ROOM)
FAN = token("fan")  # a plain viewer token, valid in every room
# The spec: a staff-list change reaches open connections within 1 s. The gateway reads
# the list's version each presence round (0.5 s), so a second is two rounds.
WITHIN_S = 1.0


def item(client: Client, text: str) -> dict[str, Any] | None:
    for frame in client.frames:
        for it in frame["items"]:
            if it["text"] == text:
                return dict(it)
    return None


async def shown(client: Client, text: str) -> dict[str, Any]:
    """Send ``text``, wait for its frame item, return it."""
    assert (await client.comment(text, nonce=text.replace(" ", "-")))["type"] == "ack"
    await client.wait_for(lambda c: item(c, text) is not None)
    found = item(client, text)
    assert found is not None
    return found


def role_notices(client: Client) -> list[str]:
    return [m["role"] for m in client.of_type("notice") if m["event"] == "role"]


async def test_a_viewer_appointed_while_connected_is_a_moderator_within_a_second(
    system: System,
) -> None:
    assert system.ws_port
    star, fan = Api(system, STAR), Api(system, FAN)
    async with trio.open_nursery() as n:
        client = await connect(n, system.ws_port, ROOM, tok=FAN)
        before = await shown(client, "just a fan")
        assert before["prio"] == 0 and "role" not in before
        assert (await fan("GET", f"/rooms/{ROOM}/bans"))[0] == 403
        status, entry = await star("PUT", f"/rooms/{ROOM}/staff/fan", {"role": "moderator"})
        assert status == 200, entry
        assert (entry["uid"], entry["role"], entry["by"]) == ("fan", "moderator", "streamer:star")
        await client.wait_for(lambda c: role_notices(c) == ["moderator"], timeout=WITHIN_S)
        notice = next(m for m in client.of_type("notice") if m["event"] == "role")
        assert notice["user"] == {"uid": "fan", "nick": "nick-fan", "role": "moderator"}
        after = await shown(client, "now a moderator")
        assert (after["prio"], after["role"]) == (2, "moderator")
        # The same viewer token now works in the moderation API, in this room only.
        assert (await fan("POST", f"/rooms/{ROOM}/bans", {"uid": "troll"}))[0] == 200
        assert (await fan("GET", f"/rooms/{ROOM}/bans"))[1] == [
            {"uid": "troll", "until": None, "reason": ""}
        ]
        assert (await fan("GET", f"/rooms/{OTHER}/bans"))[0] == 403
        # ... and a connection to another room is an ordinary viewer's.
        there = await connect(n, system.ws_port, OTHER, tok=FAN)
        assert there.of_type("welcome")[0]["user"]["role"] == "viewer"
        assert (await shown(there, "elsewhere I am a fan"))["prio"] == 0
        n.cancel_scope.cancel()


async def test_a_moderator_removed_while_connected_is_ordinary_within_a_second(
    system: System,
) -> None:
    assert system.ws_port
    star, mod = Api(system, STAR), Api(system, MOD)
    async with trio.open_nursery() as n:
        client = await connect(n, system.ws_port, ROOM, tok=MOD)
        assert (await shown(client, "staff words"))["prio"] == 2
        assert (await star("DELETE", f"/rooms/{ROOM}/staff/mod1"))[0] == 204
        await client.wait_for(lambda c: role_notices(c) == ["viewer"], timeout=WITHIN_S)
        after = await shown(client, "ordinary words")
        assert after["prio"] == 0 and "role" not in after
        status, reply = await mod("GET", f"/rooms/{ROOM}/bans")
        assert status == 403 and "revoked" in reply["detail"]
        assert (await mod("POST", f"/rooms/{ROOM}/bans", {"uid": "troll"}))[0] == 403
        # A new connection with the same token is a viewer from the start.
        again = await connect(n, system.ws_port, ROOM, tok=MOD)
        assert again.of_type("welcome")[0]["user"]["role"] == "viewer"
        # Appointed again: staff again, on both connections.
        assert (await star("PUT", f"/rooms/{ROOM}/staff/mod1", {"role": "moderator"}))[0] == 200
        await client.wait_for(lambda c: role_notices(c) == ["viewer", "moderator"])
        await again.wait_for(lambda c: role_notices(c) == ["moderator"])
        assert (await shown(again, "staff again"))["prio"] == 2
        assert (await mod("GET", f"/rooms/{ROOM}/bans"))[0] == 200
        n.cancel_scope.cancel()


async def test_a_revoked_moderators_comments_and_person_are_a_viewers_for_rank_checks(
    system: System,
) -> None:
    assert system.ws_port
    star, other_mod = Api(system, STAR), Api(system, token("mod2", "moderator", room=ROOM))
    async with trio.open_nursery() as n:
        client = await connect(n, system.ws_port, ROOM, tok=MOD)
        old = await shown(client, "said while staff")
        status, reply = await other_mod("DELETE", f"/rooms/{ROOM}/comments/{old['id']}")
        assert status == 403 and "cannot delete the comments of a moderator" in reply["detail"]
        assert (await other_mod("POST", f"/rooms/{ROOM}/bans", {"uid": "mod1"}))[0] == 403
        assert (await star("DELETE", f"/rooms/{ROOM}/staff/mod1"))[0] == 204
        assert (await other_mod("DELETE", f"/rooms/{ROOM}/comments/{old['id']}"))[0] == 204
        body = {"uid": "mod1", "close": False}
        assert (await other_mod("POST", f"/rooms/{ROOM}/bans", body))[0] == 200
        n.cancel_scope.cancel()
    # And the other way round: an appointed viewer token is protected like a moderator.
    assert (await star("PUT", f"/rooms/{ROOM}/staff/fan", {"role": "moderator"}))[0] == 200
    status, reply = await other_mod("POST", f"/rooms/{ROOM}/bans", {"uid": "fan"})
    assert status == 403 and "cannot ban or time out a moderator" in reply["detail"]


async def test_only_the_streamer_or_an_admin_appoints_and_only_below_its_own_rank(
    system: System,
) -> None:
    star, admin, mod = Api(system, STAR), Api(system, ADMIN), Api(system, MOD)
    moderator = {"role": "moderator"}
    for method, body in (("PUT", moderator), ("DELETE", None)):
        status, reply = await mod(method, f"/rooms/{ROOM}/staff/fan", body)
        assert status == 403, (method, reply)
        assert reply["detail"].startswith("a moderator cannot appoint or remove room staff")
    # An appointed moderator (a viewer token on the list) appoints nobody either.
    assert (await star("PUT", f"/rooms/{ROOM}/staff/fan", moderator))[0] == 200
    status, reply = await Api(system, FAN)("PUT", f"/rooms/{ROOM}/staff/pal", moderator)
    assert status == 403 and "cannot appoint or remove" in reply["detail"]
    # A streamer grants moderator, not streamer; an admin grants either.
    status, reply = await star("PUT", f"/rooms/{ROOM}/staff/pal", {"role": "streamer"})
    assert status == 403 and "a streamer cannot grant the streamer role" in reply["detail"]
    assert (await star("PUT", f"/rooms/{ROOM}/staff/pal", {"role": "admin"}))[0] == 422
    assert (await admin("PUT", f"/rooms/{ROOM}/staff/co", {"role": "streamer"}))[0] == 200
    # ... and cannot touch who is at or above its rank: the co-streamer, itself, an admin.
    for uid in ("co", "star"):
        status, reply = await star("DELETE", f"/rooms/{ROOM}/staff/{uid}")
        assert status == 403 and "cannot change the staff role of a streamer" in reply["detail"]
        status, reply = await star("PUT", f"/rooms/{ROOM}/staff/{uid}", moderator)
        assert status == 403, reply
    await admin.seen()
    assert (await star("DELETE", f"/rooms/{ROOM}/staff/root"))[0] == 403
    # The co-streamer acts as a streamer: it may appoint moderators.
    co = Api(system, token("co"))
    assert (await co("PUT", f"/rooms/{ROOM}/staff/pal", moderator))[0] == 200
    # A platform-signed streamer token is not revocable by the list, even by an admin.
    status, reply = await admin("DELETE", f"/rooms/{ROOM}/staff/star")
    assert status == 409 and "cannot revoke" in reply["detail"]
    assert (await admin("DELETE", f"/rooms/{ROOM}/staff/co"))[0] == 204
    assert (await co("GET", f"/rooms/{ROOM}/bans"))[0] == 403
    # What the list holds now, as any staff member reads it.
    status, entries = await mod("GET", f"/rooms/{ROOM}/staff")
    assert status == 200
    assert [(e["uid"], e["role"], e["by"]) for e in entries] == [
        ("co", "revoked", "admin:root"),
        ("fan", "moderator", "streamer:star"),
        ("pal", "moderator", "streamer:co"),
    ]
    assert (await Api(system, token("nobody"))("GET", f"/rooms/{ROOM}/staff"))[0] == 403


async def test_every_change_is_in_the_audit_log(system: System) -> None:
    star = Api(system, STAR)
    assert (await star("PUT", f"/rooms/{ROOM}/staff/fan", {"role": "moderator"}))[0] == 200
    assert (await star("DELETE", f"/rooms/{ROOM}/staff/fan"))[0] == 204
    assert (await star("PUT", f"/rooms/{ROOM}/staff/mod1", {"role": "streamer"}))[0] == 403
    status, log = await star("GET", f"/rooms/{ROOM}/audit")
    assert status == 200
    assert [(e["action"], e["by"], e["target"], e["detail"]) for e in log] == [
        ("staff_revoke", "streamer:star", "fan", {"role": "revoked"}),
        ("staff_grant", "streamer:star", "fan", {"role": "moderator"}),
    ]


async def test_the_list_is_capped(nursery: trio.Nursery, settings: Settings) -> None:
    system = await start_system(nursery, settings.replace(staff_list_max=2))
    star = Api(system, STAR)
    for uid in ("a", "b"):
        assert (await star("PUT", f"/rooms/{ROOM}/staff/{uid}", {"role": "moderator"}))[0] == 200
    status, reply = await star("PUT", f"/rooms/{ROOM}/staff/c", {"role": "moderator"})
    assert status == 409 and "DANMAKU_STAFF_LIST_MAX" in reply["detail"]
    assert (await star("DELETE", f"/rooms/{ROOM}/staff/c"))[0] == 409
    assert (await star("DELETE", f"/rooms/{ROOM}/staff/a"))[0] == 204  # an entry changes
    _, entries = await star("GET", f"/rooms/{ROOM}/staff")
    assert [(e["uid"], e["role"]) for e in entries] == [("a", "revoked"), ("b", "moderator")]
    system.cancel_scope.cancel()


async def test_an_appointment_needs_a_live_token_and_comes_back_with_auth(
    system: System,
) -> None:
    """The list gives rights to whom a token proves; once the token has expired, the
    connection is a viewer's (like an expired staff token) until an ``auth`` message
    brings a fresh one, which is matched against the list again."""
    assert system.ws_port
    star = Api(system, STAR)
    short = token("fan2", ttl_s=2)
    expires = auth.verify(SECRET, short).expires
    assert (await star("PUT", f"/rooms/{ROOM}/staff/fan2", {"role": "moderator"}))[0] == 200
    async with trio.open_nursery() as n:
        client = await connect(n, system.ws_port, ROOM, tok=short)
        assert client.of_type("welcome")[0]["user"]["role"] == "moderator"
        assert (await shown(client, "appointed"))["prio"] == 2
        await trio.sleep(max(0.0, expires - time.time()) + 0.2)
        assert (await shown(client, "token gone"))["prio"] == 0
        notices = [m["event"] for m in client.of_type("notice")]
        assert notices.count("token_expired") == 1
        # A later change of the list does not hand the rights back to an expired token.
        observer = await connect(n, system.ws_port, ROOM, tok=token("other"))
        assert (await star("PUT", f"/rooms/{ROOM}/staff/other", {"role": "moderator"}))[0] == 200
        await observer.wait_for(lambda c: role_notices(c) == ["moderator"])  # applied
        assert (await shown(client, "still expired"))["prio"] == 0
        assert role_notices(client) == []
        await client.send(type="auth", token=token("fan2"))
        await client.wait_for(lambda c: any(m["event"] == "auth" for m in c.of_type("notice")))
        answer = next(m for m in client.of_type("notice") if m["event"] == "auth")
        assert answer["user"]["role"] == "moderator"
        assert (await shown(client, "refreshed"))["prio"] == 2
        n.cancel_scope.cancel()


async def test_a_connection_opened_during_a_change_gets_the_new_role_too(
    system: System,
) -> None:
    """A gateway may still hold the room's previous list when a connection opens right
    after a change: the next presence round corrects it like any open connection."""
    assert system.ws_port
    star = Api(system, STAR)
    async with trio.open_nursery() as n:
        await connect(n, system.ws_port, ROOM)  # the gateway serves the room already
        assert (await star("PUT", f"/rooms/{ROOM}/staff/fan", {"role": "moderator"}))[0] == 200
        client = await connect(n, system.ws_port, ROOM, tok=FAN)

        def role(c: Client) -> str:
            notices = role_notices(c)
            return notices[-1] if notices else str(c.of_type("welcome")[0]["user"]["role"])

        await client.wait_for(lambda c: role(c) == "moderator", timeout=WITHIN_S)
        assert (await shown(client, "right after"))["prio"] == 2
        n.cancel_scope.cancel()
