"""Resume with an epoch against real gateways, workers and Redis (one server, and a
Redis Cluster): the same epoch resumes with no gap; a room whose history was reset
tells a client with the old epoch so (``resume_failed``, ``reason`` ``epoch``) and
starts it fresh even where its ``since`` falls inside the new numbering; a ``since``
beyond the room or behind its history is told too; clients without ``epoch`` resume as
before; the epoch holds across gateways and a worker failover."""

from __future__ import annotations

import re

import redis
import trio

from danmaku.config import Settings
from danmaku.dev.localcluster import LocalCluster
from danmaku.metrics import Metrics
from danmaku.store import Store
from danmaku.system import System
from danmaku.worker import BroadcastWorker
from tests.client import Client, RunningWorker, connect, label, start_system, token
from tests.integration.test_cluster import cluster, cluster_settings  # noqa: F401 (fixtures)

EPOCH = re.compile(r"[A-Za-z0-9_-]{1,32}")


def welcome(client: Client) -> dict[str, object]:
    return client.of_type("welcome")[0]


def resume_failed(client: Client) -> list[dict[str, object]]:
    return [m for m in client.of_type("notice") if m["event"] == "resume_failed"]


async def told(client: Client) -> dict[str, object]:
    """The one ``resume_failed`` notice the client gets (it follows the welcome)."""
    await client.wait_for(lambda c: bool(resume_failed(c)))
    [notice] = resume_failed(client)
    return notice


async def shown(sender: Client, watcher: Client, count: int, prefix: str) -> list[str]:
    """Send ``count`` comments, one frame's worth at a time; their ids once shown."""
    ids = []
    for k in range(count):
        reply = await sender.comment(f"{prefix} {label(k)}", nonce=f"{prefix}{k}")
        assert reply["type"] == "ack"
        ids.append(reply["id"])
        await watcher.wait_for(lambda c, i=reply["id"]: i in c.item_ids())
    return ids


def reset(url: str, room: str) -> int:
    """Delete every key of the room (its history, meta, comments...): a reset room."""
    client = redis.Redis.from_url(url)
    try:
        names = list(client.scan_iter(match=f"dm:{{{room}}}:*", count=1000))
        return int(client.delete(*names)) if names else 0
    finally:
        client.close()


async def test_same_epoch_resumes_without_gaps_on_every_gateway(
    nursery: trio.Nursery, system: System, settings: Settings
) -> None:
    port = system.ws_port
    assert port
    other = await start_system(nursery, settings, ("gateway",))
    assert other.ws_port
    async with trio.open_nursery() as n:
        sender = await connect(n, port, "same", tok=token("s"))
        watcher = await connect(n, port, "same")
        epoch = welcome(watcher)["epoch"]
        assert isinstance(epoch, str) and EPOCH.fullmatch(epoch)
        ids = await shown(sender, watcher, 8, "a")
        middle = watcher.frames[len(watcher.frames) // 2]["seq"]
        before = {i["id"] for f in watcher.frames if f["seq"] <= middle for i in f["items"]}
        later = await shown(sender, watcher, 4, "b")
        # Resumed on the other gateway: same room, same epoch, every frame after since.
        resumed = await connect(n, other.ws_port, "same", since=middle, epoch=epoch)
        assert welcome(resumed)["epoch"] == epoch
        await resumed.wait_for(lambda c: set(later) <= set(c.item_ids()))
        got = resumed.item_ids()
        assert len(got) == len(set(got))
        assert set(got) == (set(ids) | set(later)) - before
        seqs = [f["seq"] for f in resumed.frames]
        assert seqs == list(range(middle + 1, middle + 1 + len(seqs)))
        assert not resume_failed(resumed)
        n.cancel_scope.cancel()
    assert system.metrics.resumes.labels("epoch")._value.get() == 0


async def test_reset_room_with_old_epoch_gets_notice_and_a_fresh_start(
    system: System, settings: Settings
) -> None:
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        sender = await connect(n, port, "reset", tok=token("s"))
        watcher = await connect(n, port, "reset")
        old_epoch = welcome(watcher)["epoch"]
        assert isinstance(old_epoch, str)
        await shown(sender, watcher, 5, "old")
        since = watcher.frames[1]["seq"]  # a position the new numbering will pass
        assert reset(settings.redis_url, "reset") > 0
        # The gateway sees the new epoch at its next presence round and closes the
        # room's connections, so that they resume and are told.
        await watcher.wait_for(lambda c: c.closed is not None)
        assert watcher.closed is not None and watcher.closed[0] == 1013
        assert system.metrics.room_resets._value.get() >= 1
        sender = await connect(n, port, "reset", tok=token("s2"))
        fresh_watcher = await connect(n, port, "reset")
        new_epoch = welcome(fresh_watcher)["epoch"]
        assert new_epoch != old_epoch
        await shown(sender, fresh_watcher, 6, "new")
        top = fresh_watcher.frames[-1]["seq"]
        assert top > since + 1, "the old since must fall inside the new numbering"
        resumed = await connect(n, port, "reset", since=since, epoch=old_epoch)
        assert welcome(resumed)["epoch"] == new_epoch
        notice = await told(resumed)
        assert notice["reason"] == "epoch" and notice["message"] == "history not recovered"
        assert notice["epoch"] == new_epoch and notice["since"] == since
        last = await sender.comment("after the reset", nonce="after")
        await resumed.wait_for(lambda c: last["id"] in c.item_ids())
        # A fresh start: nothing of the new numbering at or below the notice's seq was
        # passed off as what followed the client's old position.
        seqs = [f["seq"] for f in resumed.frames]
        assert seqs and seqs[0] == notice["seq"] + 1
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        n.cancel_scope.cancel()
    assert system.metrics.resumes.labels("epoch")._value.get() == 1


async def test_a_since_beyond_the_room_is_told_not_skipped(system: System) -> None:
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        sender = await connect(n, port, "ahead", tok=token("s"))
        watcher = await connect(n, port, "ahead")
        await shown(sender, watcher, 3, "a")
        top = watcher.frames[-1]["seq"]
        epoch = welcome(watcher)["epoch"]
        # A few frames beyond the room (the old guess let up to 1000 pass silently).
        for kw in ({"epoch": epoch}, {}):
            resumed = await connect(n, port, "ahead", since=top + 5, **kw)  # type: ignore[arg-type]
            notice = await told(resumed)
            assert notice["reason"] == "ahead" and top <= notice["seq"] < top + 5
            nonce = f"next{len(kw)}"
            nxt = await sender.comment("next", nonce=nonce)
            await resumed.wait_for(lambda c, i=nxt["id"]: i in c.item_ids())
            assert resumed.frames[0]["seq"] <= top + 5  # shown, not skipped as seen
        n.cancel_scope.cancel()


async def test_a_gap_beyond_history_is_told_then_fresh(system: System) -> None:
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        sender = await connect(n, port, "gap", tok=token("s"))
        watcher = await connect(n, port, "gap")
        await shown(sender, watcher, 12, "g")
        await trio.to_thread.run_sync(
            lambda: system.store.core.r.xtrim("dm:{gap}:frames", maxlen=4, approximate=False)
        )
        epoch = welcome(watcher)["epoch"]
        resumed = await connect(n, port, "gap", since=1, epoch=epoch)
        notice = await told(resumed)
        assert notice["reason"] == "gap" and notice["missing_from"] == 2
        assert notice["missing_to"] == notice["seq"]
        last = await sender.comment("after", nonce="after")
        await resumed.wait_for(lambda c: last["id"] in c.item_ids())
        assert resumed.frames[0]["seq"] == notice["seq"] + 1  # no partial replay
        n.cancel_scope.cancel()


async def test_clients_without_epoch_resume_as_before(system: System) -> None:
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        sender = await connect(n, port, "plain", tok=token("s"))
        watcher = await connect(n, port, "plain")
        await shown(sender, watcher, 6, "p")
        middle = watcher.frames[2]["seq"]
        resumed = await connect(n, port, "plain", since=middle)
        later = await shown(sender, resumed, 2, "q")
        assert not resume_failed(resumed)
        seqs = [f["seq"] for f in resumed.frames]
        assert seqs == list(range(middle + 1, middle + 1 + len(seqs)))
        assert set(later) <= set(resumed.item_ids())
        # Live from the top, as always: since = the last frame.
        top = watcher.frames[-1]["seq"]
        at_top = await connect(n, port, "plain", since=top)
        assert not resume_failed(at_top)
        n.cancel_scope.cancel()


async def test_epoch_holds_across_a_worker_failover(
    nursery: trio.Nursery, settings: Settings
) -> None:
    sys: System = await start_system(nursery, settings, ("web", "gateway"))
    port = sys.ws_port
    assert port
    metrics = Metrics(process=False)
    store = Store(settings.redis_url, metrics)
    async with trio.open_nursery() as n:
        watcher = await connect(n, port, "fail")
        sender = await connect(n, port, "fail", tok=token("s"))
        epoch = welcome(watcher)["epoch"]
        first = RunningWorker(n, BroadcastWorker(store.frames, settings, metrics, worker_id="one"))
        await shown(sender, watcher, 4, "one")
        first.crash()  # the lease is not given back, as with SIGKILL
        n.start_soon(BroadcastWorker(store.frames, settings, metrics, worker_id="two").run)
        await shown(sender, watcher, 4, "two")
        assert metrics.leases.labels("takeover")._value.get() >= 1
        since = watcher.frames[1]["seq"]
        resumed = await connect(n, port, "fail", since=since, epoch=epoch)
        assert welcome(resumed)["epoch"] == epoch
        await resumed.wait_for(lambda c: c.frames and c.frames[-1]["seq"] >= since + 6)
        assert not resume_failed(resumed)
        seqs = [f["seq"] for f in resumed.frames]
        assert seqs == list(range(since + 1, since + 1 + len(seqs)))
        n.cancel_scope.cancel()
    store.close()


async def test_epoch_resume_and_reset_on_a_cluster(
    nursery: trio.Nursery,
    cluster: LocalCluster,  # noqa: F811
    cluster_settings: Settings,  # noqa: F811
) -> None:
    system = await start_system(nursery, cluster_settings)
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        sender = await connect(n, port, "clu", tok=token("s"))
        watcher = await connect(n, port, "clu")
        epoch = welcome(watcher)["epoch"]
        await shown(sender, watcher, 4, "c")
        since = watcher.frames[0]["seq"]
        resumed = await connect(n, port, "clu", since=since, epoch=epoch)
        await resumed.wait_for(lambda c: len(c.frames) == len(watcher.frames) - 1)
        assert not resume_failed(resumed)
        # Reset on the room's shard: the old epoch is told, even inside the new numbering.
        with cluster.client(cluster.master_port("dm:{clu}:meta")) as node:
            names = list(node.scan_iter(match="dm:{clu}:*", count=1000))
            assert node.delete(*names) > 0
        await watcher.wait_for(lambda c: c.closed is not None)
        sender = await connect(n, port, "clu", tok=token("s2"))
        fresh = await connect(n, port, "clu")
        await shown(sender, fresh, 3, "d")
        again = await connect(n, port, "clu", since=since, epoch=epoch)
        notice = await told(again)
        assert notice["reason"] == "epoch" and welcome(again)["epoch"] != epoch
        n.cancel_scope.cancel()


async def test_a_room_without_frames_keeps_its_epoch_only_while_looked_at(
    system: System,
) -> None:
    """Room names that never get a comment leave nothing for good (a flood of names
    must not grow Redis); the first frame keeps the room's epoch for good."""
    port = system.ws_port
    assert port
    r = system.store.core.r
    async with trio.open_nursery() as n:
        watcher = await connect(n, port, "quiet")
        epoch = welcome(watcher)["epoch"]
        ttl = await trio.to_thread.run_sync(r.pttl, "dm:{quiet}:meta")
        assert 0 < ttl <= 60_000
        sender = await connect(n, port, "quiet", tok=token("s"))
        await shown(sender, watcher, 1, "first")
        assert await trio.to_thread.run_sync(r.pttl, "dm:{quiet}:meta") == -1  # no expiry
        again = await connect(n, port, "quiet", since=0, epoch=epoch)  # type: ignore[arg-type]
        await again.wait_for(lambda c: bool(c.frames))
        assert welcome(again)["epoch"] == epoch and not resume_failed(again)
        n.cancel_scope.cancel()
