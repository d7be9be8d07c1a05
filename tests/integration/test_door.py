"""The room's door (``scripts.INGEST``) driven through ``Store.append_comments`` against a
real Redis: resends, duplicates, buckets within one batch, bans, and what it keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import trio

from danmaku.metrics import Metrics
from danmaku.store import Ingest, IngestLimits, Outcome, Store, keys
from danmaku.store.scripts import NONCE_RING

ROOM = "door"
OPEN = IngestLimits(rate_per_s=1000.0, burst=1000.0, duplicate_window_s=0.0)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    s = Store(redis_url, Metrics(process=False), nonce_ttl_s=300)
    yield s
    s.close()


def c(uid: str, nonce: str, text: str | None = None, *, exempt: bool = False) -> Ingest:
    text = text if text is not None else nonce
    return Ingest(uid, nonce, f'{{"t":"{text}"}}'.encode(), f"h-{text}", exempt=exempt)


async def send(store: Store, *comments: Ingest, limits: IngestLimits = OPEN) -> list[Outcome]:
    return (await store.append_comments({ROOM: list(comments)}, limits))[ROOM]


async def test_a_resend_gets_the_same_id_even_after_newer_comments(store: Store) -> None:
    (first,) = await send(store, c("u", "n1"))
    later = await send(store, c("u", "n2"), c("u", "n3"))
    assert first.id and all(o.id and not o.resent for o in later)
    (again,) = await send(store, c("u", "n1"))
    assert (again.id, again.resent) == (first.id, True)
    (other_user,) = await send(store, c("v", "n1"))  # nonces are per user
    assert other_user.id != first.id and not other_user.resent


async def test_resends_are_recognised_among_the_last_nonces_and_the_list_is_bounded(
    store: Store, redis_url: str
) -> None:
    total = 10 * NONCE_RING
    outcomes = []
    for first in range(0, total, 50):
        batch = (c("m", f"k{i}", exempt=True) for i in range(first, min(total, first + 50)))
        outcomes += await send(store, *batch)
    assert len({o.id for o in outcomes}) == total
    recent = total - NONCE_RING
    (kept,) = await send(store, c("m", f"k{recent}", exempt=True))
    assert (kept.id, kept.resent) == (outcomes[recent].id, True)
    (oldest,) = await send(store, c("m", "k0", exempt=True))
    assert not oldest.resent  # long gone from the list: a new comment
    r = redis.Redis.from_url(redis_url)
    assert r.hstrlen(keys.user(ROOM, "m"), "n") <= 2048 + 100  # trimmed past 2 KB
    r.close()


async def test_nonces_expire_after_the_ttl(redis_url: str) -> None:
    store = Store(redis_url, Metrics(process=False), nonce_ttl_s=1)
    try:
        (first,) = await send(store, c("u", "n"))
        await trio.sleep(1.1)
        (again,) = await send(store, c("u", "n"))
        assert again.id != first.id and not again.resent
    finally:
        store.close()


async def test_duplicates_within_the_window_even_when_alternating(store: Store) -> None:
    limits = IngestLimits(rate_per_s=1000.0, burst=1000.0, duplicate_window_s=30.0)
    a, b, a2 = await send(
        store, c("u", "1", "A"), c("u", "2", "B"), c("u", "3", "A"), limits=limits
    )
    assert a.id and b.id and a2.code == "duplicate" and 29_000 < a2.retry_after_ms <= 30_000
    (again,) = await send(store, c("u", "4", "B"), limits=limits)  # a later batch too
    assert again.code == "duplicate"
    (other,) = await send(store, c("w", "5", "A"), limits=limits)  # per user
    assert other.id


async def test_one_users_bucket_is_charged_across_a_batch(store: Store) -> None:
    limits = IngestLimits(rate_per_s=0.01, burst=3.0, duplicate_window_s=0.0)
    outcomes = await send(store, *(c("u", f"b{i}") for i in range(5)), c("v", "x"), limits=limits)
    assert [o.code for o in outcomes] == [None, None, None, "rate_limited", "rate_limited", None]
    assert outcomes[3].retry_after_ms > 0
    (staff,) = await send(store, c("u", "s", exempt=True), limits=limits)  # staff: no bucket
    assert staff.id


async def test_bans_are_read_for_the_whole_batch(store: Store, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.hset(keys.bans(ROOM), mapping={"bad": "0", "later": "9999999999"})
    r.close()
    outcomes = await send(store, c("ok", "1"), c("bad", "2"), c("later", "3"), c("ok2", "4"))
    assert [o.code for o in outcomes] == [None, "banned", "banned", None]
    assert outcomes[1].retry_after_ms == 0 and outcomes[2].retry_after_ms > 0


async def test_one_key_per_user_and_it_expires(store: Store, redis_url: str) -> None:
    limits = IngestLimits(rate_per_s=1000.0, burst=1000.0, duplicate_window_s=30.0)
    for k in range(10):
        await send(store, *(c(f"u{i}", f"{k}", f"t{k}") for i in range(10)), limits=limits)
    r = redis.Redis.from_url(redis_url)
    user_keys = list(r.scan_iter(match=f"dm:{{{ROOM}}}:*"))
    assert sorted(k for k in user_keys if b":u:" in k) == sorted(
        keys.user(ROOM, f"u{i}").encode() for i in range(10)
    )
    assert len(user_keys) == 10 + 1  # and the comment stream
    assert 0 < r.pttl(keys.user(ROOM, "u0")) <= 301_000
    r.close()
