"""Graceful shutdown: viewers are told to come back (1013), comments and leases are kept."""

from __future__ import annotations

import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.store import Store
from danmaku.system import System
from tests.client import connect, start_system, token


async def test_shutdown_drains_viewers_with_1013_and_releases_leases(settings: Settings) -> None:
    store = Store(settings.redis_url, Metrics(process=False))
    async with trio.open_nursery() as outer:
        system: System = await start_system(outer, settings)
        assert system.ws_port and system.worker
        async with trio.open_nursery() as n:
            viewer = await connect(n, system.ws_port, "bye")
            sender = await connect(n, system.ws_port, "bye", tok=token("u"))
            ack = await sender.comment("last words", nonce="n")
            await viewer.wait_for(lambda c: ack["id"] in c.item_ids())
            assert "bye" in system.worker.rooms
            await system.shutdown()
            await viewer.wait_for(lambda c: c.closed is not None)
            await sender.wait_for(lambda c: c.closed is not None)
            assert viewer.closed is not None and viewer.closed[0] == 1013
            n.cancel_scope.cancel()
    # The lease was given back: another worker may take the room at once.
    taken = await store.frames.acquire(["bye"], "next-worker", 1000)
    assert [lease.room for lease in taken] == ["bye"] and taken[0].seq >= 1
    store.close()
