"""Reading a room's history when the door packs comments per stream entry: pages and
the live feed start and stop inside entries, and a deleted comment (a mark: its entry
keeps it) is skipped by every reader, the worker included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from danmaku.metrics import Metrics
from danmaku.rules.merge import RoomMerger
from danmaku.store import Ingest, IngestLimits, Store, door_key, keys
from danmaku.store.scripts import ENTRY_MAX

ROOM = "packed"
OPEN = IngestLimits(rate_per_s=1000.0, burst=1000.0, duplicate_window_s=0.0)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    s = Store(redis_url, Metrics(process=False))
    yield s
    s.close()


async def fill(store: Store, count: int) -> list[str]:
    """``count`` comments in one batch (entries of ENTRY_MAX); their ids, oldest first."""
    batch = [
        Ingest(f"u{i % 3}", f"n{i}", b'{"uid":"u%d","text":"c%d"}' % (i % 3, i), door_key(f"{i}"))
        for i in range(count)
    ]
    out = (await store.intake.append_comments({ROOM: batch}, OPEN))[ROOM]
    ids = [o.id for o in out]
    assert all(ids)
    return [str(i) for i in ids]


async def test_pages_start_inside_an_entry_and_cover_every_comment_once(store: Store) -> None:
    ids = await fill(store, 2 * ENTRY_MAX + 5)
    seen: list[str] = []
    before: str | None = None
    while True:
        page, before = await store.moderation.recent_comments(ROOM, before=before, limit=7)
        seen += [i["id"] for i in page]
        if before is None:
            break
    assert seen == ids[::-1]
    middle = ids[ENTRY_MAX + 3]
    page, _ = await store.moderation.recent_comments(ROOM, before=middle, limit=2)
    assert [i["id"] for i in page] == [ids[ENTRY_MAX + 2], ids[ENTRY_MAX + 1]]
    only, _ = await store.moderation.recent_comments(ROOM, before=None, limit=100, uid="u1")
    assert [i["id"] for i in only] == [ids[k] for k in range(len(ids)) if k % 3 == 1][::-1]


async def test_a_scan_bound_counts_comments_not_entries(store: Store) -> None:
    ids = await fill(store, 3 * ENTRY_MAX)
    page, cursor = await store.moderation.recent_comments(ROOM, before=None, limit=100, scan_max=20)
    assert [i["id"] for i in page] == ids[::-1][:20] and cursor == ids[-20]
    rest, cursor = await store.moderation.recent_comments(
        ROOM, before=cursor, limit=100, scan_max=100
    )
    assert [i["id"] for i in rest] == ids[::-1][20:] and cursor is None


async def test_the_live_feed_resumes_inside_an_entry(store: Store) -> None:
    _, start = await store.moderation.comments_after(ROOM, "$", 10)
    assert start == "0-0"
    ids = await fill(store, ENTRY_MAX + 4)
    got: list[str] = []
    cursor = start
    while True:
        page, cursor = await store.moderation.comments_after(ROOM, cursor, 5)
        if not page:
            break
        assert len(page) <= 5
        got += [i["id"] for i in page]
    assert got == ids and cursor == ids[-1]
    assert (await store.moderation.comments_after(ROOM, "$", 10))[1] == ids[-1]


async def test_a_deleted_comment_inside_an_entry_is_gone_for_every_reader(
    store: Store, redis_url: str
) -> None:
    ids = await fill(store, ENTRY_MAX + 2)
    victim = ids[5]
    assert await store.moderation.delete_comment(ROOM, victim, by="mod")
    assert not await store.moderation.delete_comment(ROOM, victim, by="mod")  # already gone
    assert not await store.moderation.delete_comment(ROOM, "1-0", by="mod")  # never there
    assert not await store.moderation.delete_comment(ROOM, "not-an-id", by="mod")
    page, _ = await store.moderation.recent_comments(ROOM, before=None, limit=100)
    assert victim not in [i["id"] for i in page] and len(page) == len(ids) - 1
    feed, _ = await store.moderation.comments_after(ROOM, "0-0", 100)
    assert [i["id"] for i in feed] == [i for i in ids if i != victim]
    assert (await store.rooms.room_info(ROOM))["comments_stored"] == len(ids) - 1
    # The worker reads whole entries, and drops what was deleted before any frame.
    tick_read = await store.frames.read_comments({ROOM: "0-0"}, 100)
    read, retracts, deleted = tick_read.comments, tick_read.retracts, tick_read.deleted
    assert [c.id for c in read[ROOM]] == ids and deleted[ROOM] == {victim}
    assert retracts[ROOM] == [victim]
    merger = RoomMerger(ROOM, 0, "0-0")
    merger.add((c.id, c.payload) for c in read[ROOM])
    merger.drop(deleted[ROOM])
    draft = merger.build(0.0)
    assert draft is not None and draft.cursor == ids[-1]
    assert [i["id"] for i in draft.items] == [i for i in ids if i != victim]
    r = redis.Redis.from_url(redis_url)
    assert r.zscore(keys.deleted(ROOM), victim) == int(victim.split("-")[0])
    r.close()
