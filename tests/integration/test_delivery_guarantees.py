"""Resume with since, idempotent resends, and worker takeover: no gap, no duplicate."""

from __future__ import annotations

import orjson
import redis
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.store import Store
from danmaku.system import System
from danmaku.worker import BroadcastWorker
from tests.client import RunningWorker, connect, label, start_system, token


async def test_resume_with_since_has_no_gap_or_duplicate(system: System) -> None:
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        sender = await connect(n, port, "resume", tok=token("s"))
        watcher = await connect(n, port, "resume")
        ids = [(await sender.comment(f"c {label(k)}", nonce=f"k{k}"))["id"] for k in range(10)]
        await watcher.wait_for(lambda c: set(ids) <= set(c.item_ids()))
        middle = watcher.frames[len(watcher.frames) // 2]["seq"]
        before = [i for f in watcher.frames if f["seq"] <= middle for i in f["items"]]
        later = [(await sender.comment(f"d {label(k)}", nonce=f"d{k}"))["id"] for k in range(5)]
        resumed = await connect(n, port, "resume", since=middle)
        await resumed.wait_for(lambda c: set(later) <= set(c.item_ids()))
        got = resumed.item_ids()
        assert len(got) == len(set(got))
        assert set(got) == (set(ids) | set(later)) - {i["id"] for i in before}
        seqs = [f["seq"] for f in resumed.frames]
        assert seqs == list(range(middle + 1, middle + 1 + len(seqs)))
        assert not resumed.of_type("notice")
        n.cancel_scope.cancel()


async def test_resume_beyond_history_says_so_then_goes_live(system: System, settings) -> None:
    port = system.ws_port
    assert port
    system.store.frames._frames_history = 5  # keep only a few frames (approximate trim off below)
    async with trio.open_nursery() as n:
        sender = await connect(n, port, "old", tok=token("s"))
        watcher = await connect(n, port, "old")
        for k in range(40):
            await sender.comment(f"c {label(k)}", nonce=f"k{k}")
            await watcher.wait_for(lambda c, k=k: len(c.item_ids()) == k + 1)
        # Trim exactly so history starts well after seq 1.
        await trio.to_thread.run_sync(
            lambda: system.store.core.r.xtrim("dm:{old}:frames", maxlen=5, approximate=False)
        )
        resumed = await connect(n, port, "old", since=1)
        await resumed.wait_for(lambda c: bool(c.of_type("notice")))
        notice = resumed.of_type("notice")[0]
        assert notice["event"] == "resume_failed" and notice["missing_from"] == 2
        last = await sender.comment("after", nonce="after")
        await resumed.wait_for(lambda c: last["id"] in c.item_ids())
        seqs = [f["seq"] for f in resumed.frames]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        n.cancel_scope.cancel()


async def test_resend_with_same_nonce_is_stored_and_shown_once(system: System) -> None:
    port = system.ws_port
    assert port
    async with trio.open_nursery() as n:
        watcher = await connect(n, port, "nonce")
        first = await connect(n, port, "nonce", tok=token("u"))
        a = await first.comment("only once", nonce="same")
        # The client lost the ack and reconnects (maybe elsewhere): resends the same nonce.
        second = await connect(n, port, "nonce", tok=token("u"))
        b = await second.comment("only once", nonce="same")
        assert a["type"] == b["type"] == "ack" and a["id"] == b["id"]
        marker = await second.comment("marker", nonce="m")
        await watcher.wait_for(lambda c: marker["id"] in c.item_ids())
        texts = [i["text"] for f in watcher.frames for i in f["items"]]
        assert texts.count("only once") == 1
        # A different user with the same nonce is a different comment.
        other = await connect(n, port, "nonce", tok=token("v"))
        c = await other.comment("only once", nonce="same")
        assert c["id"] != a["id"]
        n.cancel_scope.cancel()


async def test_worker_killed_mid_stream_loses_and_repeats_nothing(
    nursery: trio.Nursery, settings
) -> None:

    sys: System = await start_system(nursery, settings, ("web", "gateway"))
    port = sys.ws_port
    assert port
    metrics = Metrics(process=False)
    store = Store(settings.redis_url, metrics)
    acked: list[str] = []
    async with trio.open_nursery() as n:
        watcher = await connect(n, port, "takeover")
        sender = await connect(n, port, "takeover", tok=token("s"))

        async def send(count: int, prefix: str) -> None:
            for k in range(count):
                reply = await sender.comment(f"{prefix} {label(k)}", nonce=f"{prefix}{k}")
                assert reply["type"] == "ack"
                acked.append(reply["id"])
                await trio.sleep(0.005)

        for round_ in range(3):
            running = RunningWorker(
                n, BroadcastWorker(store.frames, settings, metrics, worker_id=f"w{round_}")
            )
            await send(30, f"r{round_}-")
            await trio.sleep(0.03)
            running.crash()  # the lease is not given back, as with SIGKILL
        final = BroadcastWorker(store.frames, settings, metrics, worker_id="final")
        n.start_soon(final.run)
        await watcher.wait_for(lambda c: set(acked) <= set(c.item_ids()), timeout=20)
        got = watcher.item_ids()
        assert sorted(got) == sorted(acked), "lost or repeated comments"
        assert got == acked, "order changed"
        seqs = [f["seq"] for f in watcher.frames]
        assert seqs == list(range(1, len(seqs) + 1))
        assert metrics.leases.labels("takeover")._value.get() >= 1
        n.cancel_scope.cancel()
    store.close()


async def test_a_frame_whose_notice_was_lost_still_arrives(
    nursery: trio.Nursery, settings: Settings
) -> None:
    # Gateway only: the test plays a worker that committed a frame and died before it
    # named the room in the gateway's notice stream. The feed reads the quiet room anyway.
    settings = settings.replace(feed_sweep_s=0.5)
    gw: System = await start_system(nursery, settings, ("gateway",))
    assert gw.ws_port and gw.gateway
    feed = gw.gateway.feed
    r = redis.Redis.from_url(settings.redis_url)
    async with trio.open_nursery() as n:
        viewer = await connect(n, gw.ws_port, "quiet")
        with trio.fail_after(10):  # past the first polls of a room new to the gateway
            while "quiet" not in feed.schedule.local or feed.schedule.fresh:
                await trio.sleep(0.05)
        item = {"id": "1-0", "uid": "u", "nick": "n", "text": "unannounced", "color": "#ffffff"}
        item |= {"mode": "scroll", "ts": 1, "prio": 2}
        frame = {"type": "frame", "room": "quiet", "seq": 1, "ts": 1, "items": [item]}
        frame |= {"dropped": 0, "online": 1}
        r.xadd("dm:{quiet}:frames", {"d": orjson.dumps(frame)}, id="1-0")
        await viewer.wait_for(lambda c: c.item_ids() == ["1-0"], timeout=5)
        assert gw.metrics.feed_swept.labels("missed")._value.get() == 1
        n.cancel_scope.cancel()
    r.close()


async def test_a_notice_brings_its_rooms_frames_in_the_same_wait(redis_url: str) -> None:
    # The feed's wait reads the named rooms it serves as soon as the notice arrives
    # (one trip through the event loop per wake); rooms it does not serve are named only.
    store = Store(redis_url, Metrics(process=False))
    r = redis.Redis.from_url(redis_url)
    try:
        position = await store.notices.open("f1", 10_000)
        for room in ("served", "elsewhere"):
            r.xadd(f"dm:{{{room}}}:frames", {"d": b'{"seq":1}'}, id="1-0")
            r.xadd(f"dm:{{{room}}}:frames", {"d": b'{"seq":2}'}, id="2-0")
        r.xadd("dm:{served}:ctl", {"e": b'{"type":"pin"}'})
        r.xadd("dm:gw:{f1}:notices", {"r": "served,elsewhere"})
        after, named, frames, controls = await store.feed.wait_notices(
            "f1", position, 1000, {"served": (1, "0-0")}.get
        )
        assert after != position and named == ["served", "elsewhere"]
        assert [(f.room, f.seq) for f in frames] == [("served", 2)]  # after the cursor only
        assert [(c.room, c.event) for c in controls] == [("served", {"type": "pin"})]
        # Nothing new: the wait times out empty.
        assert await store.feed.wait_notices("f1", after, 100, {"served": (2, "0-0")}.get) == (
            after,
            [],
            [],
            [],
        )
    finally:
        r.close()
        store.close()


async def test_comments_waiting_for_the_budget_survive_a_worker_crash_once_each(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Issue 21: with a 40/s budget, 30 comments at once wait in the worker's queue and
    are released 4 per frame. The worker dies (its lease left to expire) while most still
    wait; the next one re-reads them from the committed cursor and skips what the frames
    already showed: every comment shown exactly once, none dropped, seqs consecutive."""
    s = settings.replace(display_budget=40.0)
    sys: System = await start_system(nursery, s, ("web", "gateway"))
    assert sys.ws_port
    metrics = Metrics(process=False)
    store = Store(s.redis_url, metrics)
    async with trio.open_nursery() as n:
        watcher = await connect(n, sys.ws_port, "waiting")
        senders = [await connect(n, sys.ws_port, "waiting", tok=token(f"u{i}")) for i in range(30)]
        running = RunningWorker(n, BroadcastWorker(store.frames, s, metrics, worker_id="first"))
        replies: list[dict[str, object]] = []

        async def shout(i: int) -> None:
            replies.append(await senders[i].comment(f"wait {label(i)}", nonce="w"))

        async with trio.open_nursery() as burst:
            for i in range(30):
                burst.start_soon(shout, i)
        acked = {str(r["id"]) for r in replies if r["type"] == "ack"}
        assert len(acked) == 30
        await watcher.wait_for(lambda c: len(c.item_ids()) >= 4)
        running.crash()  # the lease is not given back, as with SIGKILL
        assert len(watcher.item_ids()) < 30, "the crash came while comments waited"
        n.start_soon(BroadcastWorker(store.frames, s, metrics, worker_id="next").run)
        await watcher.wait_for(lambda c: acked <= set(c.item_ids()), timeout=20)
        await trio.sleep(0.3)  # nothing more may come: no repeat after the last one
        got = watcher.item_ids()
        assert sorted(got) == sorted(acked), "lost or repeated comments"
        assert sum(f["dropped"] for f in watcher.frames) == 0
        seqs = [f["seq"] for f in watcher.frames]
        assert seqs == list(range(1, len(seqs) + 1))
        assert metrics.leases.labels("takeover")._value.get() >= 1
        n.cancel_scope.cancel()
    store.close()
