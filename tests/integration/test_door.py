"""The room's door (``scripts.INGEST``) driven through ``store.intake.append_comments`` against a
real Redis: resends, duplicates, buckets within one batch, bans, and what it keeps."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import AsyncIterator

import pytest
import redis
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules.ratelimit import DoorBuckets
from danmaku.store import Ingest, IngestLimits, Outcome, Store, door_key, keys
from danmaku.store.records import id_key, split_entry
from danmaku.store.scripts import ENTRY_MAX, NONCE_RING

ROOM = "door"
OPEN = IngestLimits(rate_per_s=1000.0, burst=1000.0, duplicate_window_s=0.0, staff_rate_per_s=0.0)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    s = Store(redis_url, Metrics(process=False), nonce_ttl_s=300)
    yield s
    s.close()


def c(uid: str, nonce: str, text: str | None = None, *, exempt: bool = False) -> Ingest:
    text = text if text is not None else nonce
    return Ingest(uid, nonce, f'{{"t":"{text}"}}'.encode(), door_key(text), exempt=exempt)


async def send(store: Store, *comments: Ingest, limits: IngestLimits = OPEN) -> list[Outcome]:
    return (await store.intake.append_comments({ROOM: list(comments)}, limits))[ROOM]


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
    state = r.hget(keys.users(ROOM), "m")  # header, then 18 bytes per nonce kept
    assert len(state) == 26 + 18 * NONCE_RING  # staff: no duplicate list
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
    (staff,) = await send(store, c("u", "s", exempt=True), limits=limits)  # staff: own bucket
    assert staff.id


async def test_bans_are_read_for_the_whole_batch(store: Store, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.hset(keys.bans(ROOM), mapping={"bad": "0", "later": "9999999999"})
    r.close()
    outcomes = await send(store, c("ok", "1"), c("bad", "2"), c("later", "3"), c("ok2", "4"))
    assert [o.code for o in outcomes] == [None, "banned", "banned", None]
    assert outcomes[1].retry_after_ms == 0 and outcomes[2].retry_after_ms > 0


async def test_one_field_per_user_and_the_generations_expire(store: Store, redis_url: str) -> None:
    limits = IngestLimits(rate_per_s=1000.0, burst=1000.0, duplicate_window_s=30.0)
    for k in range(10):
        await send(store, *(c(f"u{i}", f"{k}", f"t{k}") for i in range(10)), limits=limits)
    r = redis.Redis.from_url(redis_url)
    assert sorted(r.hkeys(keys.users(ROOM))) == sorted(f"u{i}".encode() for i in range(10))
    room_keys = {k.decode() for k in r.scan_iter(match=f"dm:{{{ROOM}}}:*")}
    # ... and the record of when each user first spoke (held for review), which expires
    firsts = keys.first_comments(ROOM)
    assert room_keys == {keys.comments(ROOM), keys.users(ROOM), keys.door(ROOM), firsts}
    assert sorted(r.hkeys(firsts)) == sorted(f"u{i}".encode() for i in range(10))
    assert 0 < r.pttl(firsts) <= limits.first_chat_keep_s * 1000
    assert 0 < r.pttl(keys.users(ROOM)) <= 2 * 301_000
    assert r.hget(keys.door(ROOM), "n") == b"100"
    r.close()


async def test_a_new_generation_keeps_what_users_did_in_the_last_one(redis_url: str) -> None:
    """Past keep_ms (here max(1/2 s bucket, 1 s window, 1 s nonce TTL) + 1 s = 2 s) the
    users hash becomes the old generation: what a user did just before still counts, and
    the generation before that is dropped."""
    store = Store(redis_url, Metrics(process=False), nonce_ttl_s=1)
    limits = IngestLimits(rate_per_s=2.0, burst=1.0, duplicate_window_s=1.0)
    r = redis.Redis.from_url(redis_url)
    try:
        assert (await send(store, c("g", "n1", "a"), limits=limits))[0].id  # gen starts
        await trio.sleep(1.5)
        (kept,) = await send(store, c("g", "n2", "b"), limits=limits)
        assert kept.id
        await trio.sleep(0.7)
        assert (await send(store, c("h", "x1", "x"), limits=limits))[0].id  # a new gen
        assert r.hexists(keys.users_old(ROOM), "g") and not r.hexists(keys.users(ROOM), "g")
        again, dup = await send(store, c("g", "n2", "b"), c("g", "n3", "b"), limits=limits)
        assert (again.id, again.resent) == (kept.id, True)
        assert dup.code == "duplicate"
        await trio.sleep(2.1)
        assert (await send(store, c("h", "x2", "y"), limits=limits))[0].id  # and another
        assert not r.hexists(keys.users_old(ROOM), "g") and not r.hexists(keys.users(ROOM), "g")
        assert r.hexists(keys.users_old(ROOM), "h") and r.hexists(keys.users(ROOM), "h")
    finally:
        r.close()
        store.close()


async def test_kept_comments_are_packed_and_their_ids_follow_in_order(
    store: Store, redis_url: str
) -> None:
    first = await send(store, *(c(f"p{i}", f"n{i}") for i in range(40)))
    second = await send(store, *(c(f"p{i}", f"m{i}") for i in range(3)))
    ids = [o.id for o in first + second]
    assert all(ids) and len(set(ids)) == 43
    assert sorted(ids, key=lambda i: id_key(str(i))) == ids  # minted in order
    r = redis.Redis.from_url(redis_url)
    entries = r.xrange(keys.comments(ROOM))
    assert [len(f[b"d"].split(b"\n")) for _, f in entries] == [ENTRY_MAX, ENTRY_MAX, 8, 3]
    read = [cid for e, f in entries for cid, _ in split_entry(e.decode(), f[b"d"])]
    assert read == ids
    payloads = [p for e, f in entries for _, p in split_entry(e.decode(), f[b"d"])]
    assert payloads[0] == b'{"t":"n0"}' and payloads[-1] == b'{"t":"m2"}'
    r.close()


async def test_a_stream_written_one_comment_per_entry_goes_on_after_its_last_id(
    store: Store, redis_url: str
) -> None:
    """A stream from before packing (no door hash): new ids follow its last entry."""
    r = redis.Redis.from_url(redis_url)
    far = int(time.time() * 1000) + 60_000  # ahead of Redis' clock: ids must follow it
    r.xadd(keys.comments(ROOM), {"d": b'{"t":"old"}'}, id=f"{far}-5")
    (new,) = await send(store, c("o", "n1"))
    assert new.id == f"{far}-6"
    assert r.hget(keys.door(ROOM), "n") == b"2"
    r.close()


async def test_a_resend_and_a_duplicate_within_one_batch(store: Store) -> None:
    limits = IngestLimits(rate_per_s=1000.0, burst=1000.0, duplicate_window_s=30.0)
    first, resend, dup, other = await send(
        store,
        c("b", "n1", "x"),
        c("b", "n1", "x"),
        c("b", "n2", "x"),
        c("b", "n3", "y"),
        limits=limits,
    )
    assert first.id and (resend.id, resend.resent) == (first.id, True)
    assert dup.code == "duplicate" and 29_000 < (dup.retry_after_ms or 0) <= 30_000
    assert other.id and not other.resent
    (later,) = await send(store, c("b", "n4", "x"), limits=limits)  # and from the state
    assert later.code == "duplicate"


# ---- staff limits -------------------------------------------------------------------------
async def test_staff_have_a_generous_bucket_of_their_own(store: Store) -> None:
    limits = IngestLimits(0.01, 3.0, 0.0, staff_rate_per_s=0.01, staff_burst=5.0)
    as_staff = await send(store, *(c("m", f"s{i}", exempt=True) for i in range(7)), limits=limits)
    assert [o.code for o in as_staff] == [None] * 5 + ["rate_limited"] * 2
    assert all(o.retry_after_ms > 0 for o in as_staff[5:])
    # The same user's ordinary bucket is untouched by what they sent as staff.
    as_viewer = await send(store, *(c("m", f"v{i}") for i in range(4)), limits=limits)
    assert [o.code for o in as_viewer] == [None] * 3 + ["rate_limited"]
    (other,) = await send(store, c("m2", "x", exempt=True), limits=limits)  # per user
    assert other.id


async def test_the_default_staff_limit_refills_at_its_rate(store: Store) -> None:
    d = Settings()
    limits = IngestLimits.from_settings(d)
    assert (limits.staff_rate_per_s, limits.staff_burst) == (10.0, 20.0)
    flood = await send(store, *(c("mod", f"f{i}", exempt=True) for i in range(25)), limits=limits)
    assert [o.code for o in flood] == [None] * 20 + ["rate_limited"] * 5
    assert all(0 < o.retry_after_ms <= 100 for o in flood[20:])
    await trio.sleep(0.25)  # 10/s: two more tokens, not three
    later = await send(store, *(c("mod", f"g{i}", exempt=True) for i in range(3)), limits=limits)
    assert [o.code for o in later] == [None, None, "rate_limited"]


async def test_staff_rate_zero_means_unlimited(store: Store) -> None:
    limits = IngestLimits(0.01, 1.0, 0.0, staff_rate_per_s=0.0, staff_burst=0.0)
    outcomes = await send(store, *(c("s", f"n{i}", exempt=True) for i in range(50)), limits=limits)
    assert all(o.id for o in outcomes)


_rooms = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=12),
        min_size=1,
        max_size=4,
    ),
    burst=st.integers(0, 4),
    staff_burst=st.integers(0, 6),
    staff_rate=st.sampled_from([0.0, 0.01]),
)
def test_the_door_keeps_the_buckets_as_the_model_says(
    redis_url: str,
    batches: list[list[tuple[str, bool]]],
    burst: int,
    staff_burst: int,
    staff_rate: float,
) -> None:
    """Conformance: the Lua door and ``DoorBuckets`` agree on every comment of random
    batches of staff and ordinary comments. The rates are so low that the seconds a run
    takes refill no whole token, so the model runs at one instant."""
    room = f"conf{next(_rooms)}"
    limits = IngestLimits(0.01, burst, 0.0, staff_rate_per_s=staff_rate, staff_burst=staff_burst)
    model = DoorBuckets(0.01, burst, staff_rate, staff_burst)

    async def run() -> None:
        store = Store(redis_url, Metrics(process=False))
        try:
            for k, batch in enumerate(batches):
                comments = [
                    c(uid, f"{k}-{j}", exempt=staff) for j, (uid, staff) in enumerate(batch)
                ]
                got = (await store.intake.append_comments({room: comments}, limits))[room]
                for (uid, staff), outcome in zip(batch, got, strict=True):
                    wait = model.take(uid, staff, 0.0)
                    if wait == 0.0:
                        assert outcome.id and outcome.code is None
                    else:
                        assert outcome.code == "rate_limited"
                        want = 3_600_000 if math.isinf(wait) else wait * 1000
                        assert want - 5_000 <= outcome.retry_after_ms <= want
        finally:
            store.close()

    trio.run(run)
