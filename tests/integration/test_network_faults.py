"""Network faults between danmaku processes and Redis, simulated on loopback with a TCP
proxy (tests/faultproxy.py): links cut and stalled under traffic."""

from __future__ import annotations

from functools import partial

import redis
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.system import System, run_system
from tests.client import connect, label, start_system, token
from tests.faultproxy import FaultProxy
from tests.integration.test_failures import frames_items


def redis_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def test_gateway_link_cut_or_stalled_catches_up_by_seq(
    nursery: trio.Nursery, settings: Settings
) -> None:
    proxy = FaultProxy(redis_port(settings.redis_url))
    port = await nursery.start(proxy.run)
    core: System = await start_system(nursery, settings, ("gateway", "worker"))
    behind = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0")
    edge: System = await start_system(nursery, behind, ("gateway",))
    assert core.ws_port and edge.ws_port
    async with trio.open_nursery() as n:
        viewer = await connect(n, edge.ws_port, "blip")
        sender = await connect(n, core.ws_port, "blip", tok=token("u"))
        ids: list[str] = []

        async def send(prefix: str) -> None:
            for k in range(5):
                ids.append(
                    (await sender.comment(f"{prefix} {label(k)}", nonce=prefix + str(k)))["id"]
                )

        await send("a")
        await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()))
        proxy.cut()  # Redis drops the gateway's connections (e.g. output buffer limit)
        await send("b")
        proxy.pause()  # then the link stalls for a while
        await send("c")
        await trio.sleep(1.5)
        proxy.resume()
        await send("d")
        await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()), timeout=15)
        assert viewer.item_ids() == ids, "a comment missing, repeated or out of order"
        seqs = [f["seq"] for f in viewer.frames]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap in seqs {seqs}"
        assert not viewer.of_type("notice") or all(
            m.get("kind") != "resume_failed" for m in viewer.of_type("notice")
        )
        assert viewer.closed is None
        assert proxy.connections > 1, "the gateway never reconnected"
        n.cancel_scope.cancel()


async def test_worker_stalled_past_its_lease_commits_nothing_late(
    nursery: trio.Nursery, settings: Settings
) -> None:
    s = settings.replace(lease_ms=1000)
    proxy = FaultProxy(redis_port(s.redis_url))
    port = await nursery.start(proxy.run)
    gateway: System = await start_system(nursery, s, ("gateway",))
    assert gateway.ws_port
    stalled_metrics = Metrics(process=False)
    await nursery.start(
        partial(
            run_system,
            s.replace(redis_url=f"redis://127.0.0.1:{port}/0", instance_id="stalled"),
            ("worker",),
            metrics=stalled_metrics,
        )
    )
    room = "partition"
    r = redis.Redis.from_url(s.redis_url)
    async with trio.open_nursery() as n:
        sender = await connect(n, gateway.ws_port, room, tok=token("u"))
        acked: list[str] = []
        stop = trio.Event()

        async def load() -> None:
            k = 0
            while not stop.is_set():
                reply = await sender.comment(f"x {label(k)}", nonce=f"{k}")
                if reply["type"] == "ack":
                    acked.append(reply["id"])
                k += 1
                await trio.sleep(0.05)

        n.start_soon(load)
        with trio.fail_after(10):
            while not (r.get(f"dm:{{{room}}}:lease") or b"").startswith(b"stalled:"):
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        proxy.pause()  # the worker's link stalls mid-whatever it was doing
        await n.start(
            partial(
                run_system,
                s.replace(instance_id="healthy"),
                ("worker",),
                metrics=Metrics(process=False),
            )
        )
        with trio.fail_after(10):
            while not (r.get(f"dm:{{{room}}}:lease") or b"").startswith(b"healthy:"):
                await trio.sleep(0.05)
        await trio.sleep(1.0)
        proxy.resume()  # the stalled worker's late writes now reach Redis
        await trio.sleep(1.5)
        stop.set()
        await trio.sleep(1.0)
        # The stalled worker found out (lease lost or late commit refused) and let go.
        assert stalled_metrics.registry.get_sample_value("danmaku_worker_rooms") == 0
        assert (r.get(f"dm:{{{room}}}:lease") or b"").startswith(b"healthy:")
        n.cancel_scope.cancel()
    ids, seqs = frames_items(r, room)
    r.close()
    assert seqs == list(range(1, len(seqs) + 1)), "seq gap or repeat"
    assert len(ids) == len(set(ids)), "a comment in two frames"
    assert set(acked) <= set(ids), "acknowledged comments lost"
    late = stalled_metrics.registry.get_sample_value(
        "danmaku_frame_commit_conflicts_total", {"reason": "lease_lost"}
    )
    print(
        f"\nstalled worker: {len(acked)} acked, all in one frame each; late commits refused: {late}"
    )
