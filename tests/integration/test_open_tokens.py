"""Tokens on open connections: staff rights end with the staff token, and an ``auth``
message brings a fresh one (or a first one to an anonymous viewer) without reconnecting."""

from __future__ import annotations

import time

import trio

from danmaku import auth
from danmaku.system import System
from tests.client import connect, token
from tests.conftest import SECRET


def _prio_of(client_messages: list[dict], text: str) -> int | None:
    for m in client_messages:
        for item in m.get("items", ()) if m["type"] == "frame" else ():
            if item["text"] == text:
                return int(item["prio"])
    return None


async def test_staff_rights_end_with_the_token_and_come_back_with_auth(system: System) -> None:
    assert system.ws_port
    short = token("mod1", "moderator", ttl_s=2)
    expires = auth.verify(SECRET, short).expires
    async with trio.open_nursery() as n:
        mod = await connect(n, system.ws_port, "tok", tok=short)
        assert (await mod.comment("while staff", "a"))["type"] == "ack"
        await mod.wait_for(lambda c: _prio_of(c.messages, "while staff") is not None)
        assert _prio_of(mod.messages, "while staff") == 2
        await trio.sleep(max(0.0, expires - time.time()) + 0.2)
        assert (await mod.comment("after expiry", "b"))["type"] == "ack"  # still a viewer
        await mod.wait_for(lambda c: _prio_of(c.messages, "after expiry") is not None)
        assert _prio_of(mod.messages, "after expiry") == 0
        assert [m["event"] for m in mod.of_type("notice")].count("token_expired") == 1
        await mod.send(type="auth", token=token("mod1", "moderator"))
        await mod.wait_for(lambda c: any(m["event"] == "auth" for m in c.of_type("notice")))
        assert (await mod.comment("refreshed", "c"))["type"] == "ack"
        await mod.wait_for(lambda c: _prio_of(c.messages, "refreshed") is not None)
        assert _prio_of(mod.messages, "refreshed") == 2
        n.cancel_scope.cancel()


async def test_auth_cannot_change_the_user_but_can_log_in_an_anonymous_viewer(
    system: System,
) -> None:
    assert system.ws_port
    async with trio.open_nursery() as n:
        anon = await connect(n, system.ws_port, "tok2")
        assert (await anon.comment("no token", "a"))["code"] == "unauthorized"
        await anon.send(type="auth", token=token("guest7"))
        await anon.wait_for(lambda c: any(m["event"] == "auth" for m in c.of_type("notice")))
        assert (await anon.comment("logged in", "b"))["type"] == "ack"
        await anon.send(type="auth", token=token("someone-else"))
        await anon.wait_for(lambda c: bool(c.of_type("error")[1:]))
        assert anon.of_type("error")[-1]["code"] == "unauthorized"
        await anon.send(type="auth", token="not.a.token")
        await anon.wait_for(lambda c: bool(c.of_type("error")[2:]))
        assert anon.closed is None  # refused, still watching
        assert (await anon.comment("still me", "c"))["type"] == "ack"
        n.cancel_scope.cancel()
