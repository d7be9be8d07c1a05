"""The role hierarchy in the moderation API (admin > streamer > moderator > viewer),
against a real app, gateway and Redis."""

from __future__ import annotations

from typing import Any

import trio

from danmaku.system import System
from tests.client import connect, http, token

ROOM = "rk"
MOD = token("mod1", role="moderator", room=ROOM)
MOD2 = token("mod2", role="moderator", room=ROOM)
STAR = token("star", role="streamer", room=ROOM)
ADMIN = token("root", role="admin")
ROOM_ADMIN = token("local", role="admin", room=ROOM)


class Api:
    def __init__(self, system: System, tok: str) -> None:
        self.base = f"http://127.0.0.1:{system.web_port}/api"
        self.tok = tok

    async def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        reply = await http(self.base + path, method, json_body=body, token=self.tok)
        return reply.status, reply.json()

    async def seen(self) -> None:
        """Act once in the room (a read), so the system knows this user's role."""
        assert (await self("GET", f"/rooms/{ROOM}/bans"))[0] == 200


async def banned(system: System) -> list[str]:
    _, bans = await Api(system, ADMIN)("GET", f"/rooms/{ROOM}/bans")
    return [b["uid"] for b in bans]


async def test_a_moderator_cannot_ban_or_time_out_the_streamer_an_admin_or_a_moderator(
    system: System,
) -> None:
    mod = Api(system, MOD)
    for tok, uid, role in [
        (STAR, "star", "streamer"),
        (ADMIN, "root", "admin"),
        (MOD2, "mod2", "moderator"),
        (ROOM_ADMIN, "local", "admin"),
    ]:
        await Api(system, tok).seen()
        for body in ({"uid": uid}, {"uid": uid, "duration_s": 60}):
            status, reply = await mod("POST", f"/rooms/{ROOM}/bans", body)
            assert status == 403, (uid, status, reply)
            article = "an" if role == "admin" else "a"
            assert reply["detail"].startswith(
                f"a moderator cannot ban or time out {article} {role}"
            )
    assert (await mod("POST", f"/rooms/{ROOM}/bans", {"uid": "mod1"}))[0] == 403  # nor self
    assert await banned(system) == []
    assert (await mod("POST", f"/rooms/{ROOM}/bans", {"uid": "troll"}))[0] == 200
    assert await banned(system) == ["troll"]


async def test_a_banned_streamer_keeps_its_connection_when_a_moderator_tries(
    system: System,
) -> None:
    """The reported attack: a moderator banning (and kicking) the room's streamer."""
    assert system.ws_port
    await Api(system, STAR).seen()
    async with trio.open_nursery() as n:
        star = await connect(n, system.ws_port, ROOM, tok=STAR)
        body = {"uid": "star", "close": True}
        assert (await Api(system, MOD)("POST", f"/rooms/{ROOM}/bans", body))[0] == 403
        assert (await star.comment("still here", nonce="s"))["type"] == "ack"
        assert star.closed is None
        n.cancel_scope.cancel()


async def test_a_streamer_can_ban_a_moderator_but_not_an_admin_and_an_admin_anyone(
    system: System,
) -> None:
    for tok in (MOD, ADMIN, STAR):
        await Api(system, tok).seen()
    star, admin = Api(system, STAR), Api(system, ADMIN)
    assert (await star("POST", f"/rooms/{ROOM}/bans", {"uid": "mod1", "duration_s": 30}))[0] == 200
    status, reply = await star("POST", f"/rooms/{ROOM}/bans", {"uid": "root"})
    assert status == 403 and "a streamer cannot ban or time out an admin" in reply["detail"]
    for uid in ("star", "root", "mod2"):
        assert (await admin("POST", f"/rooms/{ROOM}/bans", {"uid": uid}))[0] == 200, uid
    assert await banned(system) == ["mod1", "mod2", "root", "star"]


async def test_a_ban_can_be_lifted_or_changed_only_by_its_setters_rank_or_above(
    system: System,
) -> None:
    mod, mod2, star, admin = (Api(system, t) for t in (MOD, MOD2, STAR, ADMIN))
    assert (await star("POST", f"/rooms/{ROOM}/bans", {"uid": "troll"}))[0] == 200
    status, reply = await mod("DELETE", f"/rooms/{ROOM}/bans/troll")
    assert status == 403 and "set by a streamer" in reply["detail"]
    # Overwriting it with a one-second timeout would lift it too.
    body = {"uid": "troll", "duration_s": 1}
    assert (await mod("POST", f"/rooms/{ROOM}/bans", body))[0] == 403
    assert await banned(system) == ["troll"]
    assert (await admin("DELETE", f"/rooms/{ROOM}/bans/troll"))[0] == 204
    # A ban set by a moderator: another moderator may lift it.
    assert (await mod("POST", f"/rooms/{ROOM}/bans", {"uid": "pest"}))[0] == 200
    assert (await mod2("DELETE", f"/rooms/{ROOM}/bans/pest"))[0] == 204
    assert (await mod2("DELETE", f"/rooms/{ROOM}/bans/pest"))[0] == 404
    assert await banned(system) == []


async def test_a_moderator_cannot_delete_the_comments_of_staff(system: System) -> None:
    assert system.ws_port
    mod, star, admin = Api(system, MOD), Api(system, STAR), Api(system, ADMIN)
    await Api(system, MOD2).seen()
    async with trio.open_nursery() as n:
        ids = {}
        # The streamer never used the API: its comments' staff priority is enough.
        for name, tok in [("star", STAR), ("mod2", MOD2), ("mod1", MOD), ("fan", token("fan"))]:
            sender = await connect(n, system.ws_port, ROOM, tok=tok)
            ids[name] = (await sender.comment(f"hello from {name}", nonce=name))["id"]
        for name in ("star", "mod2"):
            status, reply = await mod("DELETE", f"/rooms/{ROOM}/comments/{ids[name]}")
            assert status == 403 and "cannot delete the comments of" in reply["detail"], name
        for name in ("mod1", "fan"):  # one's own, and a viewer's
            assert (await mod("DELETE", f"/rooms/{ROOM}/comments/{ids[name]}"))[0] == 204
        assert (await star("DELETE", f"/rooms/{ROOM}/comments/{ids['mod2']}"))[0] == 204
        assert (await admin("DELETE", f"/rooms/{ROOM}/comments/{ids['star']}"))[0] == 204
        _, page = await admin("GET", f"/rooms/{ROOM}/comments")
        assert page["items"] == []
        n.cancel_scope.cancel()


async def test_a_room_scoped_admin_cannot_change_global_words(system: System) -> None:
    local = Api(system, ROOM_ADMIN)
    status, reply = await local("PATCH", "/words", {"add": ["evil"]})
    assert status == 403 and "global" in reply["detail"]
    assert (await local("PATCH", f"/rooms/{ROOM}/words", {"add": ["evil"]}))[0] == 200
    status, words = await Api(system, ADMIN)("PATCH", "/words", {"add": ["worse"]})
    assert (status, words) == (200, {"global": ["worse"]})


async def test_note_role_keeps_the_highest_role_and_global_tokens_count_everywhere(
    system: System,
) -> None:
    store = system.store
    assert store is not None
    assert await store.moderation.role_in("a", "u") == "viewer"
    await store.moderation.note_role("a", "u", "streamer")
    await store.moderation.note_role("a", "u", "moderator")  # lower: does not demote
    await store.moderation.note_role("a", "u", "viewer")
    assert await store.moderation.role_in("a", "u") == "streamer"
    assert await store.moderation.role_in("b", "u") == "viewer"  # room-scoped: that room only
    await store.moderation.note_role("a", "g", "moderator", everywhere=True)
    assert await store.moderation.role_in("b", "g") == "moderator"
