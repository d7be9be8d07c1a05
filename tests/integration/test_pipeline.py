"""End to end through real sockets and a real Redis: gateway -> stream -> worker -> frames."""

from __future__ import annotations

import redis
import trio

from danmaku.config import Settings
from danmaku.system import System
from tests.client import Client, connect, label, token


async def test_every_comment_reaches_every_viewer_of_its_room_once_in_order(
    system: System,
) -> None:
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        viewers = {
            "alpha": [await connect(n, port, "alpha") for _ in range(50)],
            "beta": [await connect(n, port, "beta") for _ in range(5)],
        }
        senders = {
            "alpha": [await connect(n, port, "alpha", tok=token(f"a{i}")) for i in range(3)],
            "beta": [await connect(n, port, "beta", tok=token(f"b{i}")) for i in range(2)],
        }
        sent: dict[str, dict[str, list[str]]] = {"alpha": {}, "beta": {}}

        async def send_all(room: str, idx: int, client: Client) -> None:
            ids = sent[room].setdefault(f"{room}{idx}", [])
            for k in range(20):
                reply = await client.comment(
                    f"{room} {label(idx)} says {label(k)}", nonce=f"{idx}-{k}"
                )
                assert reply["type"] == "ack", reply
                ids.append(reply["id"])

        async with trio.open_nursery() as senders_n:
            for room, clients in senders.items():
                for i, c in enumerate(clients):
                    senders_n.start_soon(send_all, room, i, c)

        for room, clients in viewers.items():
            expected = {i for ids in sent[room].values() for i in ids}
            assert len(expected) == 20 * len(senders[room])
            for v in clients + senders[room]:
                await v.wait_for(lambda c, e=expected: e <= set(c.item_ids()))
                got = v.item_ids()
                assert len(got) == len(set(got)), "an item arrived twice"
                assert set(got) == expected, "an item from another room arrived"
                for ids in sent[room].values():  # each sender's comments in send order
                    assert [i for i in got if i in set(ids)] == ids
                seqs = [f["seq"] for f in v.frames]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq not consecutive"
                assert all(f["room"] == room for f in v.frames)
        n.cancel_scope.cancel()


async def test_frame_items_carry_the_contract_fields(system: System) -> None:
    assert system.ws_port
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "fields")
        sender = await connect(n, system.ws_port, "fields", tok=token("u1"))
        welcome = sender.of_type("welcome")[0]
        assert welcome["user"] == {"uid": "u1", "nick": "nick-u1", "role": "viewer"}
        assert welcome["tick_ms"] == 50 and welcome["seq"] == 0
        # the density levels a player may offer come from the server, and each is served
        assert welcome["densities"] and max(welcome["densities"]) == 1.0
        for level in sorted(welcome["densities"]):  # ending at 1.0: all items below
            await viewer.send(type="density", value=level)
            await viewer.wait_for(
                lambda c, lv=level: any(n.get("value") == lv for n in c.of_type("notice"))
            )
        ack = await sender.comment("弹幕 hello", nonce="n1", color="#FF0000", mode="top")
        await viewer.wait_for(lambda c: bool(c.frames))
        frame = viewer.frames[0]
        assert set(frame) >= {"type", "room", "seq", "ts", "items", "dropped", "online"}
        item = frame["items"][0]
        assert item["id"] == ack["id"]
        assert (
            item["uid"],
            item["nick"],
            item["text"],
            item["color"],
            item["mode"],
            item["prio"],
        ) == ("u1", "nick-u1", "弹幕 hello", "#ff0000", "top", 0)
        assert isinstance(item["ts"], int)
        n.cancel_scope.cancel()


async def test_anonymous_viewer_cannot_send(system: System) -> None:
    assert system.ws_port
    async with trio.open_nursery() as n:
        anon = await connect(n, system.ws_port, "r1")
        assert anon.of_type("welcome")[0]["user"] is None
        reply = await anon.comment("hi", nonce="x")
        assert reply["type"] == "error" and reply["code"] == "unauthorized"
        n.cancel_scope.cancel()


async def test_an_emptied_script_cache_is_refilled_without_losing_a_comment(
    system: System, settings: Settings
) -> None:
    """Scripts run by SHA; after SCRIPT FLUSH (as after a restart or a failover to a
    replica) the store loads them again and re-sends only the calls that failed."""
    assert system.ws_port
    r = redis.Redis.from_url(settings.redis_url)
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "flush")
        sender = await connect(n, system.ws_port, "flush", tok=token("u"))
        ids = [(await sender.comment(f"a {label(k)}", nonce=f"a{k}"))["id"] for k in range(3)]
        r.script_flush()
        for k in range(3):
            reply = await sender.comment(f"b {label(k)}", nonce=f"b{k}")
            assert reply["type"] == "ack", reply
            ids.append(reply["id"])
        await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()))
        assert viewer.item_ids() == ids
        n.cancel_scope.cancel()
    r.close()
