"""The server API against a real system: who may use it, publishing paid, gift, system
and comment messages into rooms (frames, history, recording, pin), idempotent retries,
batches over many rooms, per-key rate limits, broadcasts and the room directory."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from danmaku import auth
from danmaku.config import Settings
from danmaku.system import System
from tests.client import connect, http, start_system, token
from tests.conftest import SECRET

KEY = "k-0123456789abcdef-platform"
SERVER = auth.mint_server(SECRET, uid="backend")


class ServerApi:
    def __init__(self, system: System, tok: str | None = KEY) -> None:
        self.base = f"http://127.0.0.1:{system.web_port}/api"
        self.tok = tok

    async def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        reply = await http(self.base + path, method, json_body=body, token=self.tok)
        return reply.status, reply.json()


def paid(mid: str, amount: float, **kw: Any) -> dict[str, Any]:
    body = {"id": mid, "kind": "paid", "uid": "fan1", "nick": "Fan", "amount": amount}
    return body | {"currency": "USD", "text": f"paid {mid}"} | kw


async def up(nursery: trio.Nursery, settings: Settings, **kw: Any) -> System:
    s = settings.replace(api_keys=f"{KEY},another-key-0123456789", **kw)
    return await start_system(nursery, s)


async def test_only_api_keys_and_server_tokens_may_publish(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await up(nursery, settings)
    body = {"id": "s1", "kind": "system", "text": "hello"}
    for tok, want in [
        (None, 401),
        ("k-0123456789abcdef-platforX", 401),  # one character off
        (token("admin1", role="admin"), 403),  # a user token, even an admin's
        (token("v1"), 403),
        (KEY, 201),
        ("another-key-0123456789", 201),
        (SERVER, 201),
    ]:
        status, _ = await ServerApi(system, tok)(
            "POST",
            "/rooms/lobby/messages",
            body | {"id": f"s-{want}-{tok is None}-{(tok or '')[-4:]}"},
        )
        assert status == want, (tok, status, _)
    # A server token is no user token: the gateway refuses it as a viewer's.
    assert system.ws_port
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "lobby", tok=SERVER)
        await c.wait_for(lambda c: c.closed is not None or bool(c.of_type("error")))
        n.cancel_scope.cancel()
    assert c.closed is not None and c.closed[0] == 1008  # a bad token, as any other
    assert [m["code"] for m in c.of_type("error")] == ["unauthorized"]


async def test_paid_gift_and_system_messages_reach_frames_history_and_the_pin(
    nursery: trio.Nursery, settings: Settings
) -> None:
    # A tiny display budget: ordinary comments are sampled, paid items never are.
    system = await up(nursery, settings, display_budget=2.0)
    api = ServerApi(system)
    assert system.ws_port
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "show")
        senders = [await connect(n, system.ws_port, "show", tok=token(f"u{i}")) for i in range(8)]
        for i, s in enumerate(senders):
            for k in range(5):
                await s.send(type="comment", text=f"noise {i} {k}", nonce=f"n{i}-{k}")
        status, small = await api("POST", "/rooms/show/messages", paid("p1", 3))
        assert status == 201 and small["status"] == "published"
        assert small["tier"]["name"] == "lightblue" and small["tier"]["pin_s"] == 0
        status, big = await api("POST", "/rooms/show/messages", paid("p2", 120, text="GG!"))
        assert status == 201 and big["tier"]["name"] == "red" and big["tier"]["pin_s"] == 3600
        gift = {"id": "g1", "kind": "gift", "uid": "fan2", "nick": "Gifter"}
        gift["gift"] = {"name": "rocket", "count": 3, "value": 5}
        status, g = await api("POST", "/rooms/show/messages", gift)
        assert status == 201 and g["tier"]["name"] == "yellow"  # 3 x 5 = 15
        status, sysmsg = await api(
            "POST", "/rooms/show/messages", {"id": "a1", "kind": "system", "text": "Stream at 9"}
        )
        assert status == 201
        ids = {small["comment_id"], big["comment_id"], g["comment_id"], sysmsg["comment_id"]}
        await viewer.wait_for(lambda c: ids <= set(c.item_ids()))
        items = {it["id"]: it for f in viewer.frames for it in f["items"]}
        card = items[big["comment_id"]]
        assert card["kind"] == "paid" and card["prio"] == 3 and card["amount"] == 120
        assert card["currency"] == "USD" and card["text"] == "GG!" and card["nick"] == "Fan"
        assert card["tier"] == {"name": "red", "level": 6, "color": "#d00000", "pin_s": 3600}
        assert items[g["comment_id"]]["gift"] == {"name": "rocket", "count": 3, "value": 5}
        assert items[sysmsg["comment_id"]]["kind"] == "system"
        assert items[sysmsg["comment_id"]]["prio"] == 2
        # The red one took the pin (the light blue one has no pin time).
        pins = [m for m in viewer.of_type("notice") if m.get("event") == "pin"]
        assert pins and pins[-1]["pin"]["id"] == big["comment_id"]
        assert pins[-1]["pin"]["tier"]["name"] == "red"
        # ... and a viewer joining later sees it too.
        late = await connect(n, system.ws_port, "show")
        await late.wait_for(lambda c: any(m.get("event") == "pin" for m in c.of_type("notice")))
        n.cancel_scope.cancel()
    # In the room's history, as published.
    mod = token("mod", role="moderator")
    reply = await http(
        f"http://127.0.0.1:{system.web_port}/api/rooms/show/comments?limit=200", token=mod
    )
    history = {c["id"]: c for c in reply.json()["items"]}
    assert history[big["comment_id"]]["kind"] == "paid"


async def test_a_retried_id_never_shows_twice(nursery: trio.Nursery, settings: Settings) -> None:
    system = await up(nursery, settings)
    api = ServerApi(system)
    assert system.ws_port
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "r1")
        first = await api("POST", "/rooms/r1/messages", paid("same", 5))
        again = await api("POST", "/rooms/r1/messages", paid("same", 5))
        assert first[0] == 201 and again[0] == 200
        assert again[1]["status"] == "duplicate"
        assert again[1]["comment_id"] == first[1]["comment_id"]
        # A comment on behalf of a user: the door's nonce ring keeps it once too.
        comment = {"id": "c1", "kind": "comment", "uid": "u9", "nick": "Nine", "text": "hi all"}
        c1 = await api("POST", "/rooms/r1/messages", comment)
        c2 = await api("POST", "/rooms/r1/messages", comment)
        assert c1[0] == 201 and c2[0] == 200 and c1[1]["comment_id"] == c2[1]["comment_id"]
        # A marker after them: once it is shown, the others had their chance.
        marker = await api("POST", "/rooms/r1/messages", paid("marker", 1))
        await viewer.wait_for(lambda c: marker[1]["comment_id"] in c.item_ids())
        shown = viewer.item_ids()
        assert shown.count(first[1]["comment_id"]) == 1
        assert shown.count(c1[1]["comment_id"]) == 1
        n.cancel_scope.cancel()


async def test_comments_on_behalf_of_users_obey_the_door(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await up(nursery, settings)
    api = ServerApi(system)
    mod = token("mod", role="moderator")
    base = f"http://127.0.0.1:{system.web_port}/api/rooms/r2"
    assert (await http(base + "/bans", "POST", json_body={"uid": "troll"}, token=mod)).status == 200
    assert (
        await http(base + "/words", "PATCH", json_body={"add": ["badword"]}, token=mod)
    ).status == 200
    c = {"kind": "comment", "nick": "T"}
    status, body = await api(
        "POST", "/rooms/r2/messages", c | {"id": "b", "uid": "troll", "text": "x"}
    )
    assert status == 409 and body["detail"]["code"] == "banned"
    status, body = await api(
        "POST", "/rooms/r2/messages", c | {"id": "w", "uid": "ok", "text": "a badword"}
    )
    assert status == 409 and body["detail"]["code"] == "blocked"
    # Missing fields for the kind: a clear 422.
    status, body = await api("POST", "/rooms/r2/messages", {"id": "x", "kind": "paid", "uid": "a"})
    assert status == 422 and "needs" in str(body)


async def test_batch_over_many_rooms_and_the_per_key_rate(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await up(nursery, settings, publish_rate_per_s=30.0, publish_batch_max=25)
    api = ServerApi(system)
    rooms = [f"room{i}" for i in range(20)]
    batch = [
        {"room": r, "id": "announce-1", "kind": "system", "text": "Maintenance at 2"} for r in rooms
    ]
    status, results = await api("POST", "/messages", {"messages": batch})
    assert status == 200 and [r["room"] for r in results] == rooms
    assert all(r["status"] == "published" for r in results)
    # Too many in one request.
    status, _ = await api("POST", "/messages", {"messages": batch + batch[:6]})
    assert status == 422
    # Over 30 a second for this key (the same second or the next: either way 429 comes
    # before 60 more are through), with Retry-After; another key is not limited by it.
    seen = []
    for k in range(3):
        more = [b | {"id": f"more-{k}"} for b in batch]
        reply = await http(api.base + "/messages", "POST", json_body={"messages": more}, token=KEY)
        seen.append(reply.status)
        if reply.status == 429:
            assert int(reply.headers["retry-after"]) >= 1
            break
    assert 429 in seen
    other = ServerApi(system, "another-key-0123456789")
    status, _ = await other(
        "POST", "/rooms/room0/messages", {"id": "o", "kind": "system", "text": "hi"}
    )
    assert status == 201


async def test_broadcasts_from_the_server_api_and_the_room_directory(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await up(nursery, settings)
    api = ServerApi(system, SERVER)
    status, bc = await api("POST", "/rooms/live1/broadcasts", {"title": "Show"})
    assert status == 200 and bc["by"] == "server:backend"
    assert system.ws_port
    async with trio.open_nursery() as n:
        viewers = [await connect(n, system.ws_port, "live1") for _ in range(3)]
        await connect(n, system.ws_port, "live2")
        published = await api("POST", "/rooms/live1/messages", paid("rec", 50))
        await viewers[0].wait_for(lambda c: published[1]["comment_id"] in c.item_ids())
        with trio.fail_after(10):
            while True:
                status, page = await api("GET", "/rooms?sort=online&limit=1")
                if status == 200 and page["rooms"] and page["rooms"][0]["online"] == 3:
                    break
                await trio.sleep(0.2)
        top = page["rooms"][0]
        assert top["room"] == "live1" and top["lease_holder"]
        assert page["total"] >= 2 and page["next_offset"] == 1
        status, rest = await api("GET", "/rooms?sort=online&limit=1&offset=1")
        assert rest["rooms"][0]["room"] == "live2"
        n.cancel_scope.cancel()
    status, ended = await api("POST", f"/rooms/live1/broadcasts/{bc['id']}/end")
    assert status == 200 and ended["end"] is not None
    reply = await http(f"{api.base}/rooms/live1/broadcasts/{bc['id']}/danmaku")
    exported = reply.json()
    assert any(c["id"] == published[1]["comment_id"] for c in exported["comments"])
    # Viewers and moderators do not see the directory; admins do.
    assert (await ServerApi(system, token("m", role="moderator"))("GET", "/rooms"))[0] == 403
    assert (await ServerApi(system, token("a", role="admin"))("GET", "/rooms"))[0] == 200
    assert (await ServerApi(system, None)("GET", "/rooms"))[0] == 401


def test_the_token_command_mints_server_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    from danmaku.cli import main

    secret = "s3cret-for-test-0123456789abcdef0123"
    argv = ["token", "--user", "backend", "--nick", "B", "--role", "server", "--ttl", "60"]
    assert main([*argv, "--secret", secret]) == 0
    out = capsys.readouterr().out.strip()
    assert auth.verify_server(secret, out) == "backend"


async def test_the_server_api_is_in_the_openapi_document(
    nursery: trio.Nursery, settings: Settings
) -> None:
    system = await up(nursery, settings)
    doc = (await http(f"http://127.0.0.1:{system.web_port}/openapi.json")).json()
    assert {"/api/rooms/{room}/messages", "/api/messages", "/api/rooms"} <= set(doc["paths"])
    assert "MessageIn" in doc["components"]["schemas"]
