"""The broadcast worker's error boundaries and costs, against a real Redis and real
sockets: a failing room does not stop the others, a bad stored comment is skipped, a
failing loop restarts, every room with comments is served however many there are, and a
room without comments costs a tick nothing."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import orjson
import pytest
import redis
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.store import Store, keys
from danmaku.system import System
from danmaku.worker import BroadcastWorker
from tests.client import Client, RunningWorker, connect, label, start_system, token


def value(counter: object) -> float:
    return float(counter._value.get())  # type: ignore[attr-defined]


async def say(sender: Client, texts: list[str], prefix: str) -> list[str]:
    ids = []
    for k, text in enumerate(texts):
        reply = await sender.comment(text, nonce=f"{prefix}{k}")
        assert reply["type"] == "ack", reply
        ids.append(str(reply["id"]))
    return ids


def _corrupt_cursor(r: redis.Redis) -> None:
    r.hset(keys.meta("bad"), mapping={"seq": 0, "cursor": "not-an-id"})


def _repair_cursor(r: redis.Redis) -> None:
    r.hset(keys.meta("bad"), "cursor", "0-0")


def _clobber_frames(r: redis.Redis) -> None:
    r.set(keys.frames("bad"), "not a stream")  # the COMMIT script's XADD: WRONGTYPE


def _repair_frames(r: redis.Redis) -> None:
    r.delete(keys.frames("bad"))


@pytest.mark.parametrize(
    ("stage", "corrupt", "repair"),
    [("read", _corrupt_cursor, _repair_cursor), ("commit", _clobber_frames, _repair_frames)],
)
async def test_a_failing_room_is_released_and_retried_while_the_others_go_on(
    nursery: trio.Nursery,
    settings: Settings,
    stage: str,
    corrupt: Callable[[redis.Redis], None],
    repair: Callable[[redis.Redis], None],
) -> None:
    """A room whose reads fail (its stored cursor is corrupt: the XREAD is refused) or
    whose commits fail (its frame stream clobbered: the script's XADD is refused) is
    released and retried after a backoff; the other rooms' frames never stop, in the
    same ticks and pipelines; once the fault is gone the room gets its frames."""
    system: System = await start_system(nursery, settings)
    assert system.ws_port and system.worker
    r = redis.Redis.from_url(settings.redis_url)
    corrupt(r)
    errors = system.metrics.room_errors.labels(stage)
    async with trio.open_nursery() as n:
        rooms = ["good1", "bad", "good2"]
        viewers = {room: await connect(n, system.ws_port, room) for room in rooms}
        senders = {room: await connect(n, system.ws_port, room, tok=token("u")) for room in rooms}
        bad_ids = await say(senders["bad"], ["poisoned"], "b")
        with trio.fail_after(10):
            while value(errors) < 2:  # taken, failed, retried after its backoff, failed
                await trio.sleep(0.05)
        for k in range(3):  # meanwhile every other room's comments reach its viewers
            for room in ("good1", "good2"):
                ids = await say(senders[room], [f"{room} {label(k)}"], f"g{k}")
                await viewers[room].wait_for(lambda c, ids=ids: set(ids) <= set(c.item_ids()))
        assert not viewers["bad"].frames
        assert system.worker.health.failing() == {}, "no loop failed: only the room"
        repair(r)
        more = await say(senders["bad"], ["after the repair"], "c")
        await viewers["bad"].wait_for(
            lambda c: set(bad_ids + more) <= set(c.item_ids()), timeout=20
        )
        n.cancel_scope.cancel()
    r.close()


async def test_a_bad_stored_comment_is_skipped_and_the_room_keeps_running(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Entries written straight into a room's stream, packed as the door packs them,
    holding payloads that are no comment: they are skipped and counted; the good comment
    packed among them and every later comment reach the viewers."""
    r = redis.Redis.from_url(settings.redis_url)
    good = orjson.dumps({"uid": "raw", "nick": "raw", "text": "among the poison", "ts": 1})
    deep = b'{"uid": "raw", "text": "deep", "extra": ' + b"[" * 300 + b"]" * 300 + b"}"
    packed = b"\n".join([b"[1, 2]", good, b'{"uid": 5, "text": "x"}', b"{broken", deep])
    r.xadd(keys.comments("poison"), {"x": b"no d field"}, id="1000-0")
    r.xadd(keys.comments("poison"), {"d": packed}, id="1000-1")  # ids 1000-1 .. 1000-5
    system: System = await start_system(nursery, settings)
    assert system.ws_port
    invalid = system.metrics.comments_invalid
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "poison", since=0)
        sender = await connect(n, system.ws_port, "poison", tok=token("u"))
        ids = await say(sender, [f"later {label(k)}" for k in range(5)], "p")
        await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()))
        assert sorted(viewer.item_ids()) == sorted(["1000-2", "1000-5", *ids])
        deep_item = next(i for f in viewer.frames for i in f["items"] if i["id"] == "1000-5")
        assert "extra" not in deep_item and deep_item["ts"] == 1000  # the id's time
        assert value(invalid) == 4  # the entry without "d", [1, 2], uid 5, {broken
        assert value(system.metrics.room_errors.labels("merge")) == 0
        assert value(system.metrics.room_errors.labels("read")) == 0
        n.cancel_scope.cancel()
    r.close()


async def test_a_failing_loop_restarts_and_shows_in_health(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Any exception in a loop (here from a broken clock, a dependency the worker takes)
    restarts that loop after a backoff; the worker keeps running, /readyz's LoopHealth
    names the loop, and frames flow again once the fault is gone."""
    gw: System = await start_system(nursery, settings, ("gateway",))
    assert gw.ws_port
    broken = False

    def clock() -> float:
        return math.nan if broken else time.time()

    store = Store(settings.redis_url, Metrics(process=False))
    metrics = Metrics(process=False)
    worker = BroadcastWorker(store.frames, settings, metrics, worker_id="w", clock=clock)
    running = RunningWorker(nursery, worker)
    async with trio.open_nursery() as n:
        viewer = await connect(n, gw.ws_port, "loops")
        sender = await connect(n, gw.ws_port, "loops", tok=token("u"))
        other = await connect(n, gw.ws_port, "other", tok=token("u"))
        first = await say(sender, ["before"], "a")
        await say(other, ["before"], "a")
        await viewer.wait_for(lambda c: set(first) <= set(c.item_ids()))
        await trio.sleep(1.5)  # both rooms quiet: a tick asks the hot set (and the clock)
        broken = True
        with trio.fail_after(10):
            while not {"tick", "discover"} <= set(worker.health.failing()):
                await trio.sleep(0.05)
        assert "ValueError" in worker.health.failing()["tick"]
        assert value(metrics.loop_restarts.labels("tick")) >= 1
        broken = False
        later = await say(sender, ["after"], "c")
        await viewer.wait_for(lambda c: set(later) <= set(c.item_ids()), timeout=15)
        n.cancel_scope.cancel()
    running.stop()
    store.close()


async def test_a_new_room_is_served_whatever_the_number_of_active_rooms(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Over 10,000 rooms active before it (written straight into the hot and room sets)
    cannot keep a new room from its frames: discovery takes the most recently active
    rooms first and scans all of them in pages."""
    r = redis.Redis.from_url(settings.redis_url)
    stale_ms = int(time.time() * 1000) - 10_000  # active (within room_idle_s), not new
    names = {f"stale{i}": stale_ms + i % 1000 for i in range(10_500)}
    r.zadd(keys.HOT, names)
    r.zadd(keys.ROOMS, names)
    system: System = await start_system(nursery, settings)
    assert system.ws_port
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "newcomer")
        sender = await connect(n, system.ws_port, "newcomer", tok=token("u"))
        started = trio.current_time()
        ids = await say(sender, ["hello"], "n")
        await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()), timeout=5)
        print(f"\nnew room's first frame after {trio.current_time() - started:.2f}s")
        n.cancel_scope.cancel()
    r.close()


async def test_discovery_pages_cover_every_active_room_in_bounded_steps(
    settings: Settings,
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    now_ms = int(time.time() * 1000)
    names = {f"room{i}": now_ms - 5_000 - i for i in range(12_000)}
    names |= {f"gone{i}": now_ms - 600_000 for i in range(500)}  # not active any more
    r.zadd(keys.HOT, names)
    store = Store(settings.redis_url, Metrics(process=False))
    try:
        seen: set[str] = set()
        cursor, steps = 0, 0
        while True:
            page = await store.frames.active_rooms(now_ms - 60_000, now_ms - 5_009, cursor, 500)
            assert page.total == 12_000
            assert page.recent == [f"room{i}" for i in range(10)]  # newest first
            assert len(page.page) <= 4 * 500  # a page, not the set
            seen |= set(page.page)
            cursor, steps = page.cursor, steps + 1
            if cursor == 0:
                break
        assert seen == {f"room{i}" for i in range(12_000)}
        assert steps >= 12_000 / (4 * 500)
    finally:
        store.close()
        r.close()


async def test_rooms_with_viewers_and_no_comments_cost_the_worker_nothing(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Viewers alone make no work for the worker: it holds no such room and reads none.
    A room that had comments is read by ticks only while it is busy; once quiet, ticks
    read it no more (and it is released after room_idle_s)."""
    s = settings.replace(room_idle_s=6.0)
    system: System = await start_system(nursery, s)
    assert system.ws_port and system.worker
    worker = system.worker
    tick_reads = system.metrics.room_reads.labels("tick")
    online_reads = system.metrics.room_reads.labels("online")
    async with trio.open_nursery() as n:
        for i in range(100):
            await connect(n, system.ws_port, f"watch{i}")
        await trio.sleep(3.0)  # presence rounds, discovery rounds, ticks
        assert worker.rooms == {}
        assert value(tick_reads) == 0 and value(online_reads) == 0
        # Comments in ten rooms: held and read while busy, then not read at all.
        for i in range(10):
            sender = await connect(n, system.ws_port, f"watch{i}", tok=token("u"))
            await say(sender, ["hi"], f"s{i}")
        with trio.fail_after(10):
            while len(worker.rooms) < 10:
                await trio.sleep(0.05)
        await trio.sleep(2.5)  # past the hot window: quiet now
        quiet = value(tick_reads)
        assert quiet > 0
        await trio.sleep(1.0)  # 20 ticks of 50 ms
        assert value(tick_reads) == quiet, "a quiet room was read by a tick"
        assert len(worker.rooms) == 10
        with trio.fail_after(10):  # released after room_idle_s without comments
            while worker.rooms:
                await trio.sleep(0.1)
        n.cancel_scope.cancel()
