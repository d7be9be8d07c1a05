"""Hostile or broken client input: clear errors, the connection survives, nothing leaks."""

from __future__ import annotations

import trio
from trio_websocket import open_websocket_url

from danmaku.system import System
from tests.client import connect, token


async def test_bad_messages_get_error_codes_and_the_connection_stays_open(
    system: System,
) -> None:
    assert system.ws_port
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "bad", tok=token("u"))
        cases = [
            ("{not json", "bad_request"),
            ("[1, 2]", "bad_request"),
            ('{"type": "dance", "nonce": "a1"}', "unknown_type"),
            ('{"nonce": "a2"}', "bad_request"),
            ('{"type": "comment", "nonce": "a3"}', "bad_request"),
            ('{"type": "comment", "text": "hi"}', "bad_request"),
            ('{"type": "comment", "text": "   ", "nonce": "a5"}', "empty"),
            ('{"type": "comment", "text": "' + "x" * 101 + '", "nonce": "a6"}', "too_long"),
            # 100 characters but over 300 UTF-8 bytes (4-byte emoji).
            ('{"type": "comment", "text": "' + "😀" * 80 + '", "nonce": "a7"}', "too_long"),
            ('{"type": "comment", "text": "hi", "nonce": "a8", "color": "red"}', "bad_request"),
            ('{"type": "comment", "text": "hi", "nonce": "a9", "mode": "spin"}', "bad_request"),
            ('{"type": "comment", "text": "hi", "nonce": 5}', "bad_request"),
            ('{"type": "comment", "text": ["hi"], "nonce": "b1"}', "bad_request"),
        ]
        for raw, code in cases:
            before = len(c.of_type("error"))
            await c.ws.send_message(raw)
            await c.wait_for(lambda cl, b=before: len(cl.of_type("error")) > b)
            err = c.of_type("error")[-1]
            assert err["code"] == code, (raw, err)
            assert err["message"]
        ok = await c.comment("still here", nonce="ok")
        assert ok["type"] == "ack"
        n.cancel_scope.cancel()


async def test_oversized_message_closes_1009(system: System) -> None:
    assert system.ws_port
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "big", tok=token("u"))
        await c.ws.send_message('{"type": "comment", "text": "' + "x" * 10_000 + '"}')
        await c.wait_for(lambda cl: cl.closed is not None)
        assert c.closed is not None and c.closed[0] == 1009
        n.cancel_scope.cancel()


async def test_handshake_refusals(system: System) -> None:
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        bad_room = await connect(n, port, "no%20spaces")
        await bad_room.wait_for(lambda c: c.closed is not None)
        assert bad_room.of_type("error")[0]["code"] == "bad_room"
        assert bad_room.closed is not None and bad_room.closed[0] == 1008

        forged = await connect(n, port, "r", tok=token("u") + "x")
        await forged.wait_for(lambda c: c.closed is not None)
        assert forged.of_type("error")[0]["code"] == "unauthorized"
        assert forged.closed is not None and forged.closed[0] == 1008

        other_room = await connect(n, port, "r", tok=token("u", room="elsewhere"))
        await other_room.wait_for(lambda c: c.closed is not None)
        assert other_room.closed is not None and other_room.closed[0] == 1008

        expired = await connect(n, port, "r", tok=token("u", ttl_s=-10))
        await expired.wait_for(lambda c: c.closed is not None)
        assert "expired" in expired.of_type("error")[0]["message"]

        bad_since = await connect(n, port, "r&since=abc")
        await bad_since.wait_for(lambda c: c.closed is not None)
        assert bad_since.of_type("error")[0]["code"] == "bad_request"
        n.cancel_scope.cancel()


async def test_wrong_path_is_rejected(system: System) -> None:
    from trio_websocket import ConnectionRejected

    try:
        async with open_websocket_url(f"ws://127.0.0.1:{system.ws_port}/other?room=r"):
            raise AssertionError("connected to a wrong path")
    except ConnectionRejected as exc:
        assert exc.status_code == 404
