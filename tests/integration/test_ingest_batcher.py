"""``IngestBatcher`` against a real Redis: its queue never exceeds its cap (a full queue
answers ``overloaded`` at once), and what it took is stored and acked, by ``run`` or by
a shutdown ``flush``."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import redis
import trio

from danmaku.gateway.ingest import LINGER_FROM_PER_S, IngestBatcher, Submission
from danmaku.gateway.viewer import Viewer
from danmaku.metrics import Metrics
from danmaku.store import Ingest, IngestLimits, Store, door_key
from tests.client import stored_ids


class Acks(Viewer):
    """The viewer side the batcher uses: ``inflight`` and ``push_controls`` (no socket)."""

    def __init__(self) -> None:
        self.inflight = 0
        self.texts: list[dict[str, object]] = []

    def push_controls(self, texts: Sequence[str]) -> None:
        self.texts += [orjson.loads(t) for t in texts]


def _sub(viewer: Viewer, i: int) -> Submission:
    payload = orjson.dumps({"uid": "u", "nick": "u", "text": f"c{i}", "ts": 0})
    return Submission(
        viewer, "batched", f"n{i}", Ingest("u", f"n{i}", payload, door_key(f"{i}")), 0.0
    )


def _batcher(redis_url: str) -> tuple[IngestBatcher, Store, Metrics]:
    metrics = Metrics(process=False)
    store = Store(redis_url, metrics)
    return (
        IngestBatcher(store.intake, metrics, IngestLimits(1e6, 1e6, 30.0), capacity=3),
        store,
        metrics,
    )


async def test_a_full_queue_refuses_and_never_grows(redis_url: str) -> None:
    batcher, store, metrics = _batcher(redis_url)
    viewer = Acks()
    try:
        taken = [batcher.submit(_sub(viewer, i)) for i in range(5)]
        assert taken == [True, True, True, False, False]
        assert batcher.pending() == 3 == viewer.inflight
        assert metrics.registry.get_sample_value("danmaku_ingest_queue_comments") == 3
        async with trio.open_nursery() as n:
            await n.start(batcher.run)
            with trio.fail_after(10):
                while len(viewer.texts) < 3:
                    await trio.sleep(0.01)
            assert batcher.submit(_sub(viewer, 5))  # room again
            with trio.fail_after(10):
                while len(viewer.texts) < 4:
                    await trio.sleep(0.01)
            n.cancel_scope.cancel()
        assert [t["type"] for t in viewer.texts] == ["ack"] * 4
        assert [t["nonce"] for t in viewer.texts] == ["n0", "n1", "n2", "n5"]
        assert batcher.pending() == 0 == viewer.inflight
        assert len(stored_ids(redis.Redis.from_url(redis_url), "batched")) == 4
    finally:
        store.close()


async def test_flush_stores_what_is_queued(redis_url: str) -> None:
    batcher, store, _ = _batcher(redis_url)
    viewer = Acks()
    try:
        for i in range(3):
            assert batcher.submit(_sub(viewer, 100 + i))
        await batcher.flush(timeout_s=10)
        assert [t["type"] for t in viewer.texts] == ["ack"] * 3
        assert batcher.pending() == 0
    finally:
        store.close()


async def test_a_linger_gathers_comments_arriving_one_by_one_into_one_batch(
    redis_url: str,
) -> None:
    metrics = Metrics(process=False)
    store = Store(redis_url, metrics)
    limits = IngestLimits(1e6, 1e6, 30.0)
    viewer = Acks()

    def batches() -> tuple[float | None, float | None]:
        get = metrics.registry.get_sample_value
        return get("danmaku_ingest_batch_comments_count"), get("danmaku_ingest_batch_comments_sum")

    rounds = [
        (0.0, 0.0, (5.0, 5.0)),  # no linger: five round trips of one
        (0.3, 0.0, (6.0, 10.0)),  # 0.3 s: one round trip of five
        (0.3, LINGER_FROM_PER_S, (11.0, 15.0)),  # not before 1,000/s were seen: five of one
    ]
    try:
        for round_, (linger_s, from_per_s, expected) in enumerate(rounds):
            batcher = IngestBatcher(
                store.intake, metrics, limits, linger_s=linger_s, linger_from_per_s=from_per_s
            )
            async with trio.open_nursery() as n:
                await n.start(batcher.run)
                for i in range(5):  # one by one, 20 ms apart
                    assert batcher.submit(_sub(viewer, 200 + 10 * round_ + i))
                    await trio.sleep(0.02)
                with trio.fail_after(10):
                    while batcher.pending() or viewer.inflight:
                        await trio.sleep(0.01)
                n.cancel_scope.cancel()
            assert batches() == expected
        assert [t["type"] for t in viewer.texts] == ["ack"] * 15
    finally:
        store.close()


def test_the_linger_follows_the_rate_of_the_last_second(redis_url: str) -> None:
    metrics = Metrics(process=False)
    store = Store(redis_url, metrics)
    batcher = IngestBatcher(store.intake, metrics, IngestLimits(), 5000, linger_s=0.002)
    viewer = Acks()

    def take(count: int) -> None:
        for i in range(count):
            assert batcher.submit(_sub(viewer, i))
        while batcher.pending():
            batcher._take()

    try:
        assert not batcher._lingers(100.0)  # nothing seen yet
        take(1500)
        assert not batcher._lingers(100.5)  # the second is not over
        assert batcher._lingers(101.0)  # 1,500 comments/s: linger
        take(300)
        assert batcher._lingers(101.9)
        assert not batcher._lingers(103.0)  # 150/s over the last two seconds: no more
    finally:
        store.close()
