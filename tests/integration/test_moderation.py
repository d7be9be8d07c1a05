"""The moderation API end to end: roles, and every action reaching gateways and players."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from danmaku.config import Settings
from danmaku.system import System
from tests.client import connect, http, label, start_system, token


class Api:
    def __init__(self, system: System, tok: str | None) -> None:
        self.base = f"http://127.0.0.1:{system.web_port}/api"
        self.tok = tok

    async def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        reply = await http(self.base + path, method, json_body=body, token=self.tok)
        return reply.status, reply.json()


MOD = token("mod1", role="moderator", room="mod")
STREAMER = token("star", role="streamer")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/rooms/mod/bans", {"uid": "x"}),
        ("GET", "/rooms/mod/bans", None),
        ("DELETE", "/rooms/mod/bans/x", None),
        ("DELETE", "/rooms/mod/comments/1-0", None),
        ("GET", "/rooms/mod/comments", None),
        ("PATCH", "/rooms/mod/settings", {"slow_mode_s": 3}),
        ("GET", "/rooms/mod/words", None),
        ("PATCH", "/rooms/mod/words", {"add": ["x"]}),
        ("PUT", "/rooms/mod/highlights/x", None),
        ("GET", "/rooms/mod/highlights", None),
        ("PUT", "/rooms/mod/pin", {"text": "hi"}),
        ("GET", "/rooms/mod/pin", None),
        ("DELETE", "/rooms/mod/pin", None),
        ("POST", "/rooms/mod/notices", {"text": "hi"}),
        ("GET", "/rooms/mod/audit", None),
    ],
)
async def test_every_action_needs_a_staff_token_for_the_room(
    system: System, method: str, path: str, body: Any
) -> None:
    for tok, expected in [
        (None, 401),
        (MOD + "x", 401),
        (token("v"), 403),
        (token("m2", role="moderator", room="other"), 403),
        (token("m3", role="moderator", room=["x", "y"]), 403),
    ]:
        status, _ = await Api(system, tok)(method, path, body)
        assert status == expected, (tok, status, _)
    for ok in (MOD, token("m4", role="moderator", room=["x", "mod"])):
        status, _ = await Api(system, ok)(method, path, body)
        assert status in (200, 204, 404), status  # 404: the ban/comment to remove is not there


async def test_ban_closes_connections_on_another_gateway_and_blocks_sends(
    nursery: trio.Nursery, settings: Settings
) -> None:
    web: System = await start_system(nursery, settings, ("web", "worker"))
    gw: System = await start_system(nursery, settings, ("gateway",))
    assert gw.ws_port
    api = Api(web, MOD)
    async with trio.open_nursery() as n:
        troll = await connect(n, gw.ws_port, "mod", tok=token("troll"))
        assert (await troll.comment("first", nonce="1"))["type"] == "ack"
        status, body = await api("POST", "/rooms/mod/bans", {"uid": "troll", "duration_s": 60})
        assert status == 200 and body["until"] > 0
        await troll.wait_for(lambda c: c.closed is not None, timeout=5)
        assert troll.closed is not None and troll.closed[0] == 1008
        assert troll.of_type("error")[-1]["code"] == "banned"
        again = await connect(n, gw.ws_port, "mod", tok=token("troll"))
        refused = await again.comment("second", nonce="2")
        assert refused["code"] == "banned" and 55_000 < refused["retry_after_ms"] <= 60_000
        status, bans = await api("GET", "/rooms/mod/bans")
        assert [b["uid"] for b in bans] == ["troll"]
        assert (await api("DELETE", "/rooms/mod/bans/troll"))[0] == 204
        assert (await again.comment("third", nonce="3"))["type"] == "ack"
        status, log = await api("GET", "/rooms/mod/audit")
        assert [e["action"] for e in log][:2] == ["unban", "ban"]
        assert log[1]["by"] == "moderator:mod1" and log[1]["target"] == "troll"
        n.cancel_scope.cancel()


async def test_delete_retracts_a_comment_a_viewer_already_has(system: System) -> None:
    assert system.ws_port
    api = Api(system, MOD)
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "mod")
        sender = await connect(n, system.ws_port, "mod", tok=token("u"))
        bad = await sender.comment("something rude", nonce="r")
        await viewer.wait_for(lambda c: bad["id"] in c.item_ids())
        assert (await api("DELETE", f"/rooms/mod/comments/{bad['id']}"))[0] == 204
        await viewer.wait_for(lambda c: any(bad["id"] in f.get("retract", []) for f in c.frames))
        assert (await api("DELETE", f"/rooms/mod/comments/{bad['id']}"))[0] == 404
        _, page = await api("GET", "/rooms/mod/comments")
        assert bad["id"] not in [i["id"] for i in page["items"]]
        # A late joiner resuming from 0 gets the comment and then its retraction.
        late = await connect(n, system.ws_port, "mod", since=0)
        await late.wait_for(lambda c: any(bad["id"] in f.get("retract", []) for f in c.frames))
        n.cancel_scope.cancel()


async def test_blocked_words_with_normalisation_tricks(system: System) -> None:
    assert system.ws_port
    api = Api(system, MOD)
    status, words = await api("PATCH", "/rooms/mod/words", {"add": ["spam", "广告"]})
    assert status == 200 and words["room"] == ["spam", "广告"]
    await trio.sleep(0.7)  # gateways pick word changes up within a presence round
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "mod", tok=token("u"))
        for k, text in enumerate(["SPAM", "s p a m", "ｓｐａｍ", "sppaaam", "看广\u200b告"]):
            reply = await c.comment(text, nonce=f"b{k}")
            assert reply["code"] == "blocked", text
        assert (await c.comment("a fine comment", nonce="ok"))["type"] == "ack"
        mod = await connect(n, system.ws_port, "mod", tok=MOD)
        assert (await mod.comment("spam is bad", nonce="m"))["type"] == "ack"  # staff exempt
        await api("PATCH", "/rooms/mod/words", {"remove": ["spam"]})
        await trio.sleep(0.7)
        assert (await c.comment("spam again", nonce="again"))["type"] == "ack"
        n.cancel_scope.cancel()


async def test_wildcard_regex_and_leet_entries_and_refused_ones(system: System) -> None:
    """Issue 19: entries a filter cannot use are a 422 saying why, and nothing is stored;
    wildcard, re: and leet entries block end to end (review words share the check)."""
    assert system.ws_port
    api = Api(system, token("modw", role="moderator", room="words"))
    for bad, why in [
        ("*", "letters"),
        ("re:(a+)+", "quantifier inside a repeated group"),
        ("re:(a)\\1", "backreferences"),
        ("re:(?<=a)b", "lookarounds"),
        ("re:" + "x" * 101, "at most"),  # the field's length cap (re: + 100) answers first
        ("free *coin", "one word"),
    ]:
        status, reply = await api("PATCH", "/rooms/words/words", {"add": ["ok", bad]})
        assert status == 422, (bad, reply)
        assert why in reply["detail"][0]["msg"], (bad, reply)
        status, reply = await api("PATCH", "/rooms/words/review-words", {"add": [bad]})
        assert status == 422, (bad, reply)
    assert (await api("GET", "/rooms/words/words"))[1]["room"] == []
    entries = ["f*ck", "re:free\\s+mon[e3]y", "a$$", "hell"]
    status, words = await api("PATCH", "/rooms/words/words", {"add": entries})
    assert status == 200 and sorted(words["room"]) == sorted(entries)
    await trio.sleep(0.7)  # gateways pick word changes up within a presence round
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "words", tok=token("u"))
        for k, text in enumerate(["FUUUCK off", "get free   money", "A S S", "h3ll yeah"]):
            assert (await c.comment(text, nonce=f"b{k}"))["code"] == "blocked", text
        for k, text in enumerate(["it was fun", "hello everyone", "classic, as expected"]):
            assert (await c.comment(text, nonce=f"ok{k}"))["type"] == "ack", text
        n.cancel_scope.cancel()


async def test_global_words_need_admin_and_apply_everywhere(system: System) -> None:
    assert system.ws_port
    assert (await Api(system, MOD)("PATCH", "/words", {"add": ["evil"]}))[0] == 403
    admin = Api(system, token("root", role="admin"))
    assert (await admin("PATCH", "/words", {"add": ["evil"]}))[0] == 200
    await trio.sleep(0.7)
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "anywhere", tok=token("u"))
        assert (await c.comment("so EVIL", nonce="e"))["code"] == "blocked"
        n.cancel_scope.cancel()


async def test_slow_mode_mute_pin_notice_and_highlight(system: System) -> None:
    assert system.ws_port
    api = Api(system, STREAMER)
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "mod")
        fan = await connect(n, system.ws_port, "mod", tok=token("fan"))
        status, current = await api("PATCH", "/rooms/mod/settings", {"slow_mode_s": 10})
        assert status == 200 and current["slow_mode_s"] == 10
        _, info = await Api(system, None)("GET", "/rooms/mod")
        assert info["settings"] == {"slow_mode_s": 10}
        assert info["effective"]["slow_mode_s"] == 10
        assert info["effective"]["budget"] == system.settings.display_budget
        await viewer.wait_for(lambda c: any(m.get("event") == "settings" for m in c.messages))
        assert (await fan.comment("one", nonce="1"))["type"] == "ack"
        assert (await fan.comment("two", nonce="2"))["code"] == "slow_mode"
        await api("PATCH", "/rooms/mod/settings", {"slow_mode_s": None, "mute": True})
        assert (await fan.comment("three", nonce="3"))["code"] == "muted"
        assert (await api("PUT", "/rooms/mod/highlights/fan"))[0] == 204
        assert (await api("GET", "/rooms/mod/highlights")) == (200, ["fan"])
        # Highlighted viewers may speak in a muted room, and their items get tier 1.
        await trio.sleep(0.1)
        ok = await fan.comment("paid!", nonce="4")
        assert ok["type"] == "ack"
        await api("PATCH", "/rooms/mod/settings", {"mute": False})

        assert (await api("GET", "/rooms/mod/pin")) == (200, None)
        status, _pin = await api("PUT", "/rooms/mod/pin", {"text": "welcome all", "duration_s": 60})
        assert status == 200
        assert (await api("GET", "/rooms/mod/pin"))[1]["text"] == "welcome all"
        await viewer.wait_for(lambda c: any(m.get("event") == "pin" for m in c.messages))
        late = await connect(n, system.ws_port, "mod")
        await late.wait_for(lambda c: any(m.get("event") == "pin" for m in c.messages))
        pinned = next(m for m in late.messages if m.get("event") == "pin")
        assert pinned["pin"]["text"] == "welcome all"
        assert (await api("POST", "/rooms/mod/notices", {"text": "break in 5"}))[0] == 204
        await viewer.wait_for(
            lambda c: any(
                m.get("event") == "room_notice" and m["text"] == "break in 5" for m in c.messages
            )
        )
        n.cancel_scope.cancel()


async def test_recent_comments_are_unsampled_paged_and_filtered(system: System) -> None:
    assert system.ws_port
    api = Api(system, MOD)
    async with trio.open_nursery() as n:
        a = await connect(n, system.ws_port, "mod", tok=token("alice"))
        b = await connect(n, system.ws_port, "mod", tok=token("bob"))
        for k in range(30):
            await a.comment(f"alice {label(k)}", nonce=f"a{k}")
            await b.comment(f"bob {label(k)}", nonce=f"b{k}")
        status, page = await api("GET", "/rooms/mod/comments?limit=25")
        assert status == 200 and len(page["items"]) == 25 and page["next"]
        status, rest = await api("GET", f"/rooms/mod/comments?limit=100&before={page['next']}")
        texts = [i["text"] for i in page["items"] + rest["items"]]
        assert len(texts) == 60 == len(set(texts)) and rest["next"] is None
        assert texts[0] == "bob two-nine"  # newest first
        _, bobs = await api("GET", "/rooms/mod/comments?uid=bob&q=NINE&limit=50")
        assert {i["text"] for i in bobs["items"]} == {"bob nine", "bob one-nine", "bob two-nine"}
        n.cancel_scope.cancel()


async def test_live_feed_gives_every_comment_once_in_order(system: System) -> None:
    assert system.ws_port
    api = Api(system, MOD)
    status, start = await api("GET", "/rooms/mod/feed")
    assert status == 200 and start["items"] == []
    cursor = start["next"]
    async with trio.open_nursery() as n:
        senders = [await connect(n, system.ws_port, "mod", tok=token(f"s{i}")) for i in range(3)]
        sent: list[str] = []
        got: list[str] = []
        for k in range(40):
            reply = await senders[k % 3].comment(f"feed {label(k)}", nonce=f"{k}")
            sent.append(reply["id"])
            if k % 7 == 0:  # poll while comments keep coming
                _, page = await api("GET", f"/rooms/mod/feed?after={cursor}&limit=5")
                got += [i["id"] for i in page["items"]]
                cursor = page["next"]
        while True:
            _, page = await api("GET", f"/rooms/mod/feed?after={cursor}&limit=5")
            if not page["items"]:
                break
            got += [i["id"] for i in page["items"]]
            cursor = page["next"]
        assert got == sent
        status, info = await Api(system, None)("GET", "/rooms/mod")
        assert status == 200 and {"shed_per_s", "latency_p99_ms", "settings"} <= set(info)
        n.cancel_scope.cancel()
