"""What an idle viewer costs the gateway (issue 6): no writer task, no queue, no
handshake state once its welcome is written; and everything still flows when it wakes."""

from __future__ import annotations

import orjson
import trio
from wsproto.connection import Connection

from danmaku.gateway.inbound import FastInbound
from danmaku.system import System
from loadtest.wire import WebSocket
from tests.client import connect, label, token


async def _all_idle(system: System, count: int) -> None:
    gateway = system.gateway
    assert gateway is not None
    with trio.fail_after(10):
        while not (
            len(gateway._viewers) == count
            and all(v.queued == 0 and not v._writing for v in gateway._viewers)
        ):
            await trio.sleep(0.01)


async def test_an_idle_viewer_holds_no_writer_queue_or_handshake(system: System) -> None:
    assert system.ws_port and system.gateway
    async with trio.open_nursery() as n:
        viewers = [await connect(n, system.ws_port, "idle") for _ in range(3)]
        await _all_idle(system, 3)
        for viewer in system.gateway._viewers:
            assert viewer._queue is None  # the welcome's queue was given back
            inbound = viewer.ws._wsproto
            # The h11 handshake is gone; messages are parsed by FastInbound over wsproto.
            assert isinstance(inbound, FastInbound) and isinstance(inbound._conn, Connection)
        # Waking up: a sender's acks and the room's frames still reach everyone.
        sender = await connect(n, system.ws_port, "idle", tok=token("u"))
        acks = [await sender.comment(f"wake {label(k)}", nonce=f"{k}") for k in range(5)]
        ids = {a["id"] for a in acks}
        for viewer in viewers:
            await viewer.wait_for(lambda c: ids <= set(c.item_ids()))
        assert sum(v.ws._wsproto.fast_messages for v in system.gateway._viewers) == 5
        await _all_idle(system, 4)  # writers ended again once their queues were empty
        n.cancel_scope.cancel()


async def test_a_burst_of_acks_arrives_whole_and_in_order(system: System) -> None:
    """Acks queued together are written with one send(): each is still its own message."""
    assert system.ws_port
    async with trio.open_nursery() as n:
        sender = await connect(n, system.ws_port, "burst", tok=token("b"))
        nonces = [f"n{k}" for k in range(20)]
        async with trio.open_nursery() as burst:
            for k, nonce in enumerate(nonces):
                burst.start_soon(sender.comment, f"burst {label(k)}", nonce)
        acked = [m["nonce"] for m in sender.messages if m.get("type") == "ack"]
        assert sorted(acked) == sorted(nonces)
        n.cancel_scope.cancel()


async def test_lean_client_reads_a_welcome_sent_with_the_handshake(system: System) -> None:
    """The load generator's client (``loadtest.wire``) handles frames that arrive in the
    same read as the 101 response (an idle viewer gets nothing else to wake it up)."""
    assert system.ws_port
    with trio.fail_after(10):
        for _ in range(20):
            ws = await WebSocket.connect(f"ws://127.0.0.1:{system.ws_port}/ws?room=lean")
            welcome = orjson.loads(await ws.get_message())
            assert welcome["type"] == "welcome"
            await ws.aclose()
