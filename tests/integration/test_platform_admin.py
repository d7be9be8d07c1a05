"""Issue 24's last pieces against a real system (real Redis, real HTTP, real local
webhook receivers): a room's own paid tier table, webhook endpoints registered over the
server API and picked up without a restart, automatic recording while a room is live
(with its broadcast webhooks), and the replay offset (a video delay, a link's `t`)."""

from __future__ import annotations

import json
from typing import Any

import trio

from danmaku.config import Settings
from danmaku.rules import webhooks as rules
from danmaku.rules.autorecord import AUTO_BY
from tests.client import connect, http, start_system, token
from tests.integration.test_server_api import KEY, SERVER, ServerApi, paid, up
from tests.integration.test_webhooks import Receiver, wait_until

ROOM_TABLE = [
    {"name": "bronze", "min": 1, "color": "#aa7744", "pin_s": 0},
    {"name": "gold", "min": 50, "color": "#ffd700", "pin_s": 60},
    {"name": "silver", "min": 10, "color": "#c0c0c0", "pin_s": 0},  # given out of order
]


async def test_a_room_has_its_own_tier_table_and_falls_back_to_the_global_one(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await up(nursery, settings)
    api = ServerApi(system)
    status, got = await api("GET", "/rooms/shop/tiers")
    assert status == 200 and got["own"] is False and got["tiers"][-1]["name"] == "red"
    # Who may set prices: the server API, the room's streamer, an admin; not a moderator.
    for tok, want in [
        (None, 401),
        (token("v", role="viewer"), 403),
        (token("m", role="moderator", room="shop"), 403),
        (token("s", role="streamer", room="other"), 403),  # another room's streamer
        (token("s", role="streamer", room="shop"), 200),
        (SERVER, 200),
        (KEY, 200),
    ]:
        status, _ = await ServerApi(system, tok)("PUT", "/rooms/shop/tiers", {"tiers": ROOM_TABLE})
        assert status == want, (tok, status, _)
    status, got = await api("GET", "/rooms/shop/tiers")
    assert got["own"] is True
    assert [(t["name"], t["level"]) for t in got["tiers"]] == [
        ("bronze", 0),
        ("silver", 1),
        ("gold", 2),
    ]
    # What is not a table is refused, saying why; the room's table stays.
    bad_tables: list[Any] = [
        [],
        [{"name": "a", "min": 1, "color": "red", "pin_s": 0}],
        [{"name": "a", "min": 1, "color": "#ffffff", "pin_s": 86_401}],
        [{"name": "a", "min": -1, "color": "#ffffff"}],
        [{"name": "a b", "min": 1, "color": "#ffffff"}],
        [{"name": "a", "min": 1, "color": "#ffffff"}, {"name": "a", "min": 2, "color": "#000000"}],
        [{"name": "a", "min": 1, "color": "#ffffff"}, {"name": "b", "min": 1, "color": "#000000"}],
        [{"name": f"t{i}", "min": i, "color": "#ffffff"} for i in range(33)],
    ]
    for rows in bad_tables:
        status, body = await api("PUT", "/rooms/shop/tiers", {"tiers": rows})
        assert status == 422, (rows, status)
        assert body["detail"]
    # Publishing uses the room's table; another room keeps the global one.
    assert system.ws_port
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "shop")
        status, mid = await api("POST", "/rooms/shop/messages", paid("t1", 20))
        assert status == 201 and mid["tier"]["name"] == "silver" and mid["tier"]["level"] == 1
        status, top = await api("POST", "/rooms/shop/messages", paid("t2", 75))
        assert top["tier"] == {"name": "gold", "level": 2, "color": "#ffd700", "pin_s": 60}
        await viewer.wait_for(lambda c: top["comment_id"] in c.item_ids())
        items = {it["id"]: it for f in viewer.frames for it in f["items"]}
        assert items[top["comment_id"]]["tier"]["name"] == "gold"
        assert items[top["comment_id"]]["color"] == "#ffd700"
        # The gold tier pins (60 s): the room's table decides that too.
        await viewer.wait_for(
            lambda c: any(
                m.get("event") == "pin" and m["pin"]["id"] == top["comment_id"]
                for m in c.of_type("notice")
            )
        )
        n.cancel_scope.cancel()
    status, elsewhere = await api("POST", "/rooms/plain/messages", paid("t3", 20))
    assert elsewhere["tier"]["name"] == "orange"  # the global table
    # In a batch too, per room.
    batch = {"messages": [paid("b1", 20, room="shop"), paid("b2", 20, room="plain")]}
    status, results = await api("POST", "/messages", batch)
    assert status == 200 and [r["tier"]["name"] for r in results] == ["silver", "orange"]
    # Back to the global table.
    status, got = await api("DELETE", "/rooms/shop/tiers")
    assert status == 200 and got["own"] is False
    status, after = await api("POST", "/rooms/shop/messages", paid("t4", 20))
    assert after["tier"]["name"] == "orange"
    # In the OpenAPI document, with the webhook admin API.
    paths = (await http(f"http://127.0.0.1:{system.web_port}/openapi.json")).json()["paths"]
    assert {"get", "put", "delete"} <= set(paths["/api/rooms/{room}/tiers"])
    assert {"get", "post"} <= set(paths["/api/webhooks"])
    assert "delete" in paths["/api/webhooks/{endpoint_id}"]
    # Audited, like every change of a room.
    mod = token("mod", role="moderator")
    reply = await http(f"{api.base}/rooms/shop/audit", token=mod)
    actions = [e["action"] for e in reply.json()]
    assert "tiers" in actions and "tiers_reset" in actions


async def test_webhook_endpoints_registered_over_the_api_are_delivered_without_a_restart(
    nursery: trio.Nursery, settings: Settings
) -> None:
    everything, bans_only, later = Receiver(), Receiver(), Receiver()
    try:
        s = settings.replace(api_keys=KEY, webhook_poll_ms=50, webhook_endpoints_max=2)
        system = await start_system(nursery, s)
        api = ServerApi(system)
        # Only the server API: a user token of any role is refused.
        for tok in (token("a", role="admin"), token("v")):
            status, _ = await ServerApi(system, tok)("GET", "/webhooks")
            assert status == 403
        status, _ = await ServerApi(system, None)("POST", "/webhooks", {"url": everything.url})
        assert status == 401
        # Bad URLs are refused, saying why.
        for url in (
            "ftp://example.com/hook",
            "http:///no-host",
            "https://user:pw@example.com/hook",
            "http://example.com/a b",
            "javascript:alert(1)",
            "/relative",
        ):
            status, body = await api("POST", "/webhooks", {"url": url})
            assert status == 422, (url, status, body)
        status, body = await api("POST", "/webhooks", {"url": everything.url, "events": ["nope"]})
        assert status == 422
        # Register: the secret is generated and answered once.
        status, one = await api("POST", "/webhooks", {"url": everything.url})
        assert status == 201 and one["secret"] and one["id"].startswith("wh_")
        mine = "my-own-secret-0123456789"
        status, two = await api(
            "POST",
            "/webhooks",
            {"url": bans_only.url, "events": ["user.banned"], "secret": mine},
        )
        assert status == 201 and two["secret"] == mine and two["events"] == ["user.banned"]
        # Bounded: the third is refused with its code.
        status, full = await api("POST", "/webhooks", {"url": later.url})
        assert status == 409 and full["detail"]["code"] == "too_many_webhooks"
        status, listed = await api("GET", "/webhooks")
        assert [e["id"] for e in listed] == [one["id"], two["id"]]
        assert all(e["secret"] is None for e in listed)  # never listed
        # Events flow to both, each its own kind, signed with its own secret.
        assert system.ws_port
        mod = token("mod", role="moderator")
        async with trio.open_nursery() as n:
            sender = await connect(n, system.ws_port, "reg", tok=token("alice"))
            cid = (await sender.comment("hello hooks", nonce="h1"))["id"]
            ban = {"uid": "troll", "reason": "spam"}
            reply = await http(f"{api.base}/rooms/reg/bans", "POST", json_body=ban, token=mod)
            assert reply.status == 200
            report = {"comment_id": cid, "reason": "spam"}
            reply = await http(
                f"{api.base}/rooms/reg/reports", "POST", json_body=report, token=token("dave")
            )
            assert reply.status == 202, reply.body
            n.cancel_scope.cancel()
        await wait_until(lambda: any(e["type"] == "user.banned" for e in bans_only.delivered()))
        await wait_until(
            lambda: (
                {("comment.accepted", cid), ("user.banned", "troll")}
                <= {
                    (e["type"], e["data"].get("id") or e["data"].get("uid"))
                    for e in everything.delivered()
                }
            )
        )
        assert {e["type"] for e in bans_only.delivered()} == {"user.banned"}
        # A report filed by a viewer is an event too (report.filed).
        await wait_until(lambda: any(e["type"] == "report.filed" for e in everything.delivered()))
        filed = next(e for e in everything.delivered() if e["type"] == "report.filed")
        assert filed["data"]["target"] == cid and filed["data"]["by"] == "dave"
        assert filed["data"]["reason"] == "spam" and filed["data"]["uid"] == "alice"
        for receiver, secret, ep in ((everything, one["secret"], one), (bans_only, mine, two)):
            for _, headers, body in receiver.requests:
                ts, sig = headers[rules.TIMESTAMP_HEADER], headers[rules.SIGNATURE_HEADER]
                assert rules.verify(secret, ts, body, sig)
                assert headers["X-Danmaku-Endpoint"] == ep["id"]
        # Delete one: it gets nothing more, and a new one fits in its place and gets
        # only what is recorded from its registration on.
        status, _ = await api("DELETE", f"/webhooks/{one['id']}")
        assert status == 204
        status, _ = await api("DELETE", f"/webhooks/{one['id']}")
        assert status == 404
        status, three = await api("POST", "/webhooks", {"url": later.url})
        assert status == 201
        await trio.sleep(0.5)  # the registry is read again every few polls
        seen_before = len(everything.delivered())
        async with trio.open_nursery() as n:
            sender = await connect(n, system.ws_port, "reg", tok=token("bob"))
            new_id = (await sender.comment("after the change", nonce="h2"))["id"]
            n.cancel_scope.cancel()
        await wait_until(lambda: new_id in [e["data"].get("id") for e in later.delivered()])
        assert cid not in [e["data"].get("id") for e in later.delivered()]  # from before it
        assert len(everything.delivered()) == seen_before
        for _, headers, body in later.requests:
            ts, sig = headers[rules.TIMESTAMP_HEADER], headers[rules.SIGNATURE_HEADER]
            assert rules.verify(three["secret"], ts, body, sig)
    finally:
        for r in (everything, bans_only, later):
            r.close()


async def test_a_room_with_auto_record_records_while_live_and_the_webhooks_say_so(
    nursery: trio.Nursery, settings: Settings
) -> None:
    hook = Receiver()
    try:
        s = settings.replace(
            api_keys=KEY,
            webhook_poll_ms=50,
            auto_record_poll_ms=100,
            auto_record_idle_s=1,
        )
        system = await start_system(nursery, s)
        api = ServerApi(system)
        status, _ = await api("POST", "/webhooks", {"url": hook.url, "secret": "s" * 16})
        assert status == 201
        mod = token("mod", role="moderator")
        patch = {"auto_record": True}
        reply = await http(f"{api.base}/rooms/auto/settings", "PATCH", json_body=patch, token=mod)
        assert reply.status == 200, reply.body
        # Another room with viewers but without the setting is never recorded.
        assert system.ws_port
        async with trio.open_nursery() as n:
            await connect(n, system.ws_port, "manual")
            viewer = await connect(n, system.ws_port, "auto")
            sender = await connect(n, system.ws_port, "auto", tok=token("carol"))

            async def on_air() -> list[dict[str, Any]]:
                return (await http(f"{api.base}/rooms/auto/broadcasts")).json()

            with trio.fail_after(15):
                while not (got := await on_air()):
                    await trio.sleep(0.1)
            bc = got[0]
            assert bc["by"] == AUTO_BY and bc["end"] is None and "auto" in bc["title"]
            cid = (await sender.comment("recorded by itself", nonce="r1"))["id"]
            await viewer.wait_for(lambda c: cid in c.item_ids())
            # Viewers are told (the notice players link the replay from, once it ends).
            told = [m for m in viewer.of_type("notice") if m.get("event") == "broadcast"]
            assert told and told[0]["state"] == "started" and told[0]["id"] == bc["id"]
            n.cancel_scope.cancel()
        # Nobody left: after the idle time the recording ends by itself.
        with trio.fail_after(15):
            while (await http(f"{api.base}/rooms/auto/broadcasts/{bc['id']}")).json()[
                "end"
            ] is None:
                await trio.sleep(0.1)
        reply = await http(f"{api.base}/rooms/auto/broadcasts/{bc['id']}/danmaku?format=json")
        assert [c["id"] for c in reply.json()["comments"]] == [cid]
        assert (await http(f"{api.base}/rooms/manual/broadcasts")).json() == []
        counted = system.metrics.auto_recordings
        assert counted.labels("start")._value.get() == 1
        assert counted.labels("end")._value.get() == 1
        await wait_until(
            lambda: (
                {"broadcast.started", "broadcast.ended"}
                <= {e["type"] for e in hook.delivered() if e["room"] == "auto"}
            )
        )
        started = [e for e in hook.delivered() if e["type"] == "broadcast.started"]
        assert started[0]["data"]["id"] == bc["id"] and started[0]["data"]["by"] == AUTO_BY
        # A broadcast started by hand is never ended by the recorder, however idle.
        bc2 = (
            await http(
                f"{api.base}/rooms/auto/broadcasts", "POST", json_body={"title": "show"}, token=KEY
            )
        ).json()
        await trio.sleep(2.5)  # idle time 1 s, polls every 0.1 s
        meta = (await http(f"{api.base}/rooms/auto/broadcasts/{bc2['id']}")).json()
        assert meta["end"] is None
    finally:
        hook.close()


async def test_the_replay_offset_aligns_comments_and_t_starts_at_a_moment(
    nursery: trio.Nursery, settings: Settings, redis_url: str
) -> None:
    import redis as redis_py

    system = await up(nursery, settings)
    api = ServerApi(system)
    mod = token("mod", role="moderator")
    patch = {"replay_offset_s": 2.5}
    reply = await http(f"{api.base}/rooms/vod/settings", "PATCH", json_body=patch, token=mod)
    assert reply.status == 200
    status, bc = await api("POST", "/rooms/vod/broadcasts", {"title": "vod"})
    assert status == 200 and bc["delay_ms"] == 2500
    # A recording with known offsets (as the worker's commit writes them).
    plain = redis_py.Redis.from_url(redis_url)
    try:
        for i, offset in enumerate((1000, 3000, 5000, 95_000)):
            item = {"uid": f"u{i}", "nick": "n", "text": f"at {offset}", "offset_ms": offset}
            plain.xadd(f"dm:{{vod}}:rec:{bc['id']}", {"d": json.dumps(item)}, id=f"{1000 + i}-0")
    finally:
        plain.close()
    base = f"{api.base}/rooms/vod/broadcasts/{bc['id']}/danmaku"
    whole = (await http(f"{base}?format=json")).json()
    assert [c["offset_ms"] for c in whole["comments"]] == [0, 500, 2500, 92_500]
    assert whole["broadcast"]["delay_ms"] == 2500
    # A link to a moment: only comments from 90 s on (aligned time), with their own ETag.
    moment = await http(f"{base}?format=json&t=90")
    assert [c["offset_ms"] for c in moment.json()["comments"]] == [92_500]
    assert moment.json()["count"] == 1
    assert moment.headers["etag"] != (await http(f"{base}?format=json")).headers["etag"]
    xml = (await http(f"{base}?format=xml&t=90")).body.decode()
    assert xml.count("<d p=") == 1 and '<d p="92.500,' in xml
    assert (await http(f"{base}?t=-1")).status == 422
