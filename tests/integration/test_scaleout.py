"""Many workers: rooms spread to a fair share each, and rebalance when workers come and go,
with every comment still in exactly one frame."""

from __future__ import annotations

import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.store import Store
from danmaku.system import System
from danmaku.worker import BroadcastWorker
from tests.client import RunningWorker, connect, label, start_system, token


async def test_rooms_spread_over_workers_and_rebalance(
    nursery: trio.Nursery, settings: Settings
) -> None:
    gw: System = await start_system(nursery, settings, ("gateway",))
    assert gw.ws_port
    store = Store(settings.redis_url, Metrics(process=False))
    rooms = [f"room{i}" for i in range(30)]
    workers: dict[str, RunningWorker] = {}

    async def start(name: str) -> None:
        worker = BroadcastWorker(store.frames, settings, Metrics(process=False), worker_id=name)
        workers[name] = RunningWorker(nursery, worker)

    def holdings() -> dict[str, int]:
        return {name: len(w.worker.rooms) for name, w in workers.items()}

    async def settle(expect_max: int) -> None:
        with trio.move_on_after(15):
            while True:
                held = [set(w.worker.rooms) for w in workers.values()]
                union = set().union(*held)
                overlap = sum(len(h) for h in held) - len(union)
                if union == set(rooms) and overlap == 0 and max(map(len, held)) <= expect_max:
                    return
                await trio.sleep(0.1)
        raise AssertionError(f"not settled: {holdings()}, {len(union)} rooms held")

    async with trio.open_nursery() as n:
        sender = await connect(n, gw.ws_port, "room0", tok=token("u"))
        del sender
        senders = {r: await connect(n, gw.ws_port, r, tok=token("u")) for r in rooms}
        watchers = {r: await connect(n, gw.ws_port, r) for r in rooms[:5]}
        acked: dict[str, list[str]] = {r: [] for r in rooms}

        async def say(k: int) -> None:
            for r in rooms:
                reply = await senders[r].comment(f"{r} {label(k)}", nonce=f"{k}")
                acked[r].append(reply["id"])

        for name in ("a", "b", "c"):
            await start(name)
        await say(0)
        await settle(expect_max=11)  # 30 rooms / 3 workers + slack
        assert sum(holdings().values()) == 30

        workers.pop("c").stop()  # graceful: leases released, others take over at once
        await say(1)
        await settle(expect_max=17)

        await start("d")
        await say(2)
        await settle(expect_max=11)
        assert holdings()["d"] >= 8

        await say(3)
        for r, w in watchers.items():
            await w.wait_for(lambda c, r=r: set(acked[r]) <= set(c.item_ids()), timeout=15)
            assert w.item_ids() == acked[r], "lost, repeated or reordered across rebalancing"
        n.cancel_scope.cancel()
    for w in workers.values():
        w.stop()
    store.close()
