"""``Store``: every Redis command of danmaku, as trio-friendly async methods.

redis-py's client is blocking, so each method runs one *pipeline* in a worker thread
(``trio.to_thread.run_sync``): a thread hop costs ~0.1 ms, so callers batch (one hop per
batch of comments, per tick of a worker), never one per comment. Blocking reads use their
own connection pool, short BLOCK timeouts and ``abandon_on_cancel`` so cancellation is
prompt. RESP2 is pinned on purpose: replies have the same shape on Redis 6.2 and 7.x
and with or without hiredis.

Cancellation: a cancelled *write* (ingest, commit) may or may not have reached Redis;
callers treat it like a crash, which the Lua scripts make safe (idempotent nonces,
fenced commits). Errors from Redis surface as ``StoreError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import orjson
import redis
import trio
from redis.exceptions import NoScriptError, RedisClusterException

from danmaku.config import DEFAULTS
from danmaku.metrics import Metrics
from danmaku.rules.headcount import LocalViewers
from danmaku.startup import mask_url
from danmaku.store import cluster, keys, platform, presence, scripts
from danmaku.store.autorecord import AutoRecordOps
from danmaku.store.gateways import Gateways
from danmaku.store.identity import (
    IdentityOps,
    parse_ban_reasons,
    parse_ip_bans,
    parse_nicks,
)
from danmaku.store.moderation import ModerationOps, staff_roles
from danmaku.store.notices import Notices
from danmaku.store.platform import PlatformOps
from danmaku.store.records import (
    CommittedFrame,
    ControlEvent,
    Ingest,
    IngestLimits,
    Outcome,
    RoomLive,
    RoomState,
    StoreError,
    _decode_room_settings,
    _decode_settings,
    _s,
    _sum_fresh,
    door_key,
)
from danmaku.store.replay import ReplayOps
from danmaku.store.review import ReviewOps
from danmaku.store.room_tiers import RoomTiers
from danmaku.store.webhook_endpoints import WebhookEndpoints
from danmaku.store.worker_ops import WorkerOps, queue_script, room_fault

T = TypeVar("T")


class Store(WorkerOps, ReplayOps, ReviewOps, ModerationOps, IdentityOps, PlatformOps):
    """Async facade over one Redis or a Redis Cluster (``redis+cluster://`` URL, see
    ``cluster``). Thread-safe; share one per process.

    Close with ``close()`` (idempotent) when the process is done with Redis.
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        frames_history: int = DEFAULTS.frames_history,
        stream_maxlen: int = DEFAULTS.stream_maxlen,
        nonce_ttl_s: int = DEFAULTS.nonce_ttl_s,
        max_threads: int = 16,
        replay_retention_s: int = 30 * 86400,
        notice_holders_cache_ms: int = DEFAULTS.notice_holders_cache_ms,
    ) -> None:
        self.url = url
        self._m = metrics
        self._frames_history = frames_history
        self._stream_maxlen = stream_maxlen
        self._nonce_ttl_s = nonce_ttl_s
        self._replay_retention_s = replay_retention_s
        common: dict[str, Any] = {"protocol": 2, "decode_responses": False, "socket_timeout": 10}
        self.cluster = cluster.is_cluster_url(url)
        self._r: redis.Redis
        if self.cluster:
            try:
                # Same command API as a plain client (pipelines included): typed as one.
                self._r = cast(redis.Redis, cluster.connect(url, **common))
            except (redis.RedisError, RedisClusterException) as exc:
                raise StoreError(f"Redis Cluster at {mask_url(url)}: {exc}") from exc
            self._rb = self._r  # the one blocking read (wait_notices) is on one key
        else:
            self._r = redis.Redis.from_url(url, **common)
            # The blocking read (wait_notices) gets its own pool so it never starves writes.
            self._rb = redis.Redis.from_url(url, **common)
        self._limiter = trio.CapacityLimiter(max_threads)
        self._ingest = self._r.register_script(scripts.INGEST)
        self._acquire = self._r.register_script(scripts.ACQUIRE)
        self._renew = self._r.register_script(scripts.RENEW)
        self._release = self._r.register_script(scripts.RELEASE)
        self._commit = self._r.register_script(scripts.COMMIT)
        self._online = self._r.register_script(presence.ONLINE)
        self._epoch = self._r.register_script(presence.EPOCH)
        self._publish = self._r.register_script(platform.PUBLISH)  # server API (issue 24)
        self._pin_paid = self._r.register_script(platform.PIN_PAID)
        self.room_tiers = RoomTiers(self._r, self._call, metrics)  # issue 24: per-room tiers
        self.webhook_endpoints = WebhookEndpoints(self._r, self._call, metrics)  # issue 24
        self.autorecord = AutoRecordOps(self._r, self._call, metrics)  # issue 24
        self._scripts = (
            self._ingest,
            self._acquire,
            self._renew,
            self._release,
            self._commit,
            self._online,
            self._epoch,
            self._publish,
            self._pin_paid,
        )
        # The gateway registry and room-affine routing's reads (issue 25).
        self.gateways = Gateways(self._r, self._call, metrics)
        # Notices of news to the gateways that hold a room (issue 25).
        self.notices = Notices(
            self._r, self._call, metrics, rb=self._rb, holders_cache_ms=notice_holders_cache_ms
        )

    # ---- bridge -----------------------------------------------------------------------
    async def _call(self, op: str, fn: Callable[[], T], *, abandon: bool = False) -> T:
        start = time.perf_counter()
        try:
            result = await trio.to_thread.run_sync(
                fn, limiter=self._limiter, abandon_on_cancel=abandon
            )
        except (redis.RedisError, RedisClusterException) as exc:
            self._m.redis_errors.labels(op).inc()
            raise StoreError(f"{op}: {exc}") from exc
        self._m.redis_latency.labels(op).observe(time.perf_counter() - start)
        return result

    def _execute_scripted(self, pipe: Any, *, raise_on_error: bool = True) -> list[Any]:
        """Execute a pipeline holding ``EVALSHA`` calls (``queue_script``). Scripts the
        server lacks (first use, a restart, a failover to a replica) are loaded and just
        those calls sent again; unlike redis-py's registered scripts this costs no
        ``SCRIPT EXISTS`` round trip per pipeline. Raises the first error reply, or with
        ``raise_on_error=False`` returns error replies in place (as exceptions)."""
        stack = list(pipe.command_stack)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            for script in self._scripts:
                self._r.script_load(script.script)  # every master, on a cluster
            again = self._r.pipeline(transaction=False)
            for i in missing:
                args, options = stack[i]
                again.execute_command(*args, **options)  # type: ignore[no-untyped-call]
            for i, reply in zip(missing, again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    def close(self) -> None:
        """Drop all connections. Idempotent."""
        self._r.close()
        self._rb.close()

    async def ping(self) -> bool:
        """Redis answers; on a cluster, every master does (one down: not ready until a
        replica has taken over)."""
        ping = cast(cluster.RoutedCluster, self._r).ping_masters if self.cluster else self._r.ping
        return bool(await self._call("ping", ping))

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until Redis answers PING; raise ``StoreError`` after ``timeout_s``."""
        last: StoreError | None = None
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    await self.ping()
                    return
                except StoreError as exc:
                    last = exc
                    await trio.sleep(0.1)
        why = f" ({last})" if last is not None else ""
        raise StoreError(f"Redis at {mask_url(self.url)} did not answer within {timeout_s}s{why}")

    # ---- gateway: ingest ----------------------------------------------------------------
    async def append_comments(
        self,
        batch: Mapping[str, Sequence[Ingest]],
        limits: IngestLimits,
        *,
        clock_ms: int | None = None,
    ) -> dict[str, list[Outcome]]:
        """Admit and append comments per room in one pipeline (one Lua call per room).

        Returns, per room and in order, each comment's ``Outcome`` (see ``scripts.INGEST``:
        stored, resent, or refused by duplicate/slow mode/rate limit; staff (``exempt``)
        only by their own, more generous bucket, ``limits.staff_rate_per_s``). Also marks
        the rooms active for worker discovery. ``clock_ms``: the door's clock for this
        call instead of Redis ``TIME`` (for the conformance suite; serving never sets it:
        every gateway must read the one clock of the room's shard).
        """
        now_ms = int(time.time() * 1000)
        clock = "" if clock_ms is None else str(clock_ms)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for room, comments in batch.items():
                ks = [
                    keys.comments(room),
                    keys.settings(room),
                    keys.bans(room),
                    keys.highlights(room),
                    keys.users(room),
                    keys.users_old(room),
                    keys.door(room),
                    keys.staff_buckets(room),
                    keys.first_comments(room),
                    keys.held(room),
                    keys.review_queue(room),
                ]
                args: list[Any] = [
                    self._stream_maxlen,
                    self._nonce_ttl_s,
                    limits.rate_per_s,
                    limits.burst,
                    limits.duplicate_window_s,
                    limits.staff_rate_per_s,
                    limits.staff_burst,
                    limits.first_chat_min,
                    limits.review_queue_max,
                    limits.review_ttl_s,
                    limits.first_chat_keep_s,
                    clock,
                ]
                for c in comments:
                    flags = "s" if c.exempt else "h" if c.highlight else "r" if c.suspect else "-"
                    if len(c.text_hash) != 8:  # the door's slots are 8 bytes wide
                        raise ValueError(f"text_hash must be door_key(...), not {c.text_hash!r}")
                    args += [c.uid, c.payload, flags, door_key(c.nonce), c.text_hash]
                queue_script(pipe, self._ingest, ks, args)
            pipe.zadd(keys.ROOMS, {room: now_ms for room in batch})
            pipe.zadd(keys.HOT, {room: now_ms for room in batch})
            return self._execute_scripted(pipe)

        replies = await self._call("append_comments", run)
        out: dict[str, list[Outcome]] = {}
        for room, reply in zip(batch, replies, strict=False):
            out[room] = [Outcome.parse(_s(x)) for x in reply]
        return out

    # ---- gateway: presence and frames -----------------------------------------------------
    async def sync_rooms(
        self,
        gateway_id: str,
        counts: Mapping[str, LocalViewers | None],
        offered: Mapping[str, float],
        shed: Mapping[str, float] | None = None,
    ) -> dict[str, RoomLive]:
        """Publish this gateway's viewers (``rules.headcount``; ``None``: none left) and
        offered comment rate per room; read back the room-wide offered rate, the room
        settings and the room's last seq and history epoch (``presence.EPOCH``: given one
        if it has none; a changed epoch tells the gateway the room was reset). Rooms
        with viewers are marked active.
        """
        now_ms = int(time.time() * 1000)
        rooms = list(counts)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            active = {}
            for room in rooms:
                report = counts[room]
                presence.queue_report(pipe, room, gateway_id, report, now_ms)
                if report is not None and report.conns > 0:
                    active[room] = now_ms
                rate = offered.get(room, 0.0)
                pipe.hset(keys.offered(room), gateway_id, f"{rate:.3f}:{now_ms}")
                pipe.pexpire(keys.offered(room), 60_000)
                shed_rate = (shed or {}).get(room, 0.0)
                pipe.hset(keys.shed(room), gateway_id, f"{shed_rate:.3f}:{now_ms}")
                pipe.pexpire(keys.shed(room), 60_000)
            if active:
                pipe.zadd(keys.ROOMS, active)
            for room in rooms:
                pipe.hgetall(keys.offered(room))
                pipe.hgetall(keys.settings(room))
                presence.queue_epoch(pipe, self._epoch, room)
            pipe.get(keys.GLOBAL_WORDS_VERSION)
            return self._execute_scripted(pipe)

        replies = await self._call("sync_rooms", run)
        global_v = int(replies[-1] or 0)
        tail = replies[len(replies) - 1 - 3 * len(rooms) : -1]
        out = {}
        for i, room in enumerate(rooms):
            seq, epoch = presence.parse_epoch(tail[3 * i + 2])
            out[room] = RoomLive(
                offered=_sum_fresh(tail[3 * i], now_ms),
                settings=_decode_settings(tail[3 * i + 1]),
                global_words_version=global_v,
                seq=seq,
                epoch=epoch,
            )
        return out

    async def room_settings(self, room: str) -> dict[str, float | str]:
        """The room's moderator-set settings (only those set; text ones as text)."""
        raw = await self._call("room_settings", lambda: self._r.hgetall(keys.settings(room)))
        return _decode_room_settings(raw)

    async def set_room_settings(self, room: str, values: Mapping[str, float | str | None]) -> None:
        """Set (or with ``None`` clear) room settings; workers and gateways see them
        within a second. A string is kept as text (``records.TEXT_SETTINGS``)."""

        def run() -> None:
            pipe = self._r.pipeline(transaction=False)
            for name, value in values.items():
                if value is None:
                    pipe.hdel(keys.settings(room), name)
                elif isinstance(value, str):
                    pipe.hset(keys.settings(room), name, value)
                else:
                    pipe.hset(keys.settings(room), name, repr(float(value)))
            pipe.execute()

        await self._call("set_room_settings", run)

    async def room_state(self, room: str) -> RoomState:
        """What a gateway needs to start serving a room: latest seq and its history
        epoch (given one if the room has none), online viewers, the control stream
        position, the pin."""
        now_ms = int(time.time() * 1000)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            presence.queue_epoch(pipe, self._epoch, room)
            presence.queue_online(pipe, self._online, room, now_ms)
            pipe.xrevrange(keys.control(room), "+", "-", count=1)
            pipe.get(keys.pin(room))
            pipe.hget(keys.settings(room), "words_v")
            pipe.get(keys.GLOBAL_WORDS_VERSION)
            pipe.smembers(keys.words(room))
            pipe.smembers(keys.GLOBAL_WORDS)
            # The version before the list (set_staff writes them the other way round).
            pipe.hget(keys.settings(room), "staff_v")
            pipe.hgetall(keys.staff_list(room))
            # identity (issue 19): versions before what they version, as above
            pipe.hmget(keys.settings(room), ["guests", "ipbans_v", "nicks_v"])
            pipe.hgetall(keys.ip_bans(room))
            pipe.hgetall(keys.staff_nicks(room))
            pipe.hgetall(keys.ban_reasons(room))
            return self._execute_scripted(pipe)

        position, online, ctl, pin, wv, gwv, words, gwords, sv, staff, *identity = await self._call(
            "room_state", run
        )
        seq, epoch = presence.parse_epoch(position)
        (guests, ipv, nv), ip_bans, nicks, reasons = identity
        return RoomState(
            seq=seq,
            epoch=epoch,
            online=presence.parse_online(online).online,
            control_id=_s(ctl[0][0]) if ctl else "0-0",
            pin=orjson.loads(pin) if pin else None,
            words_version=(float(wv or 0), int(gwv or 0)),
            words=sorted({_s(w) for w in words} | {_s(w) for w in gwords}),
            staff_version=float(sv or 0),
            staff=staff_roles(staff),
            guests=_decode_settings({"guests": guests}).get("guests") if guests else None,
            ip_bans_version=float(ipv or 0),
            ip_bans=parse_ip_bans(ip_bans, time.time()),
            nicks_version=float(nv or 0),
            staff_nicks=parse_nicks(nicks),
            ban_reasons=parse_ban_reasons(reasons),
        )

    async def room_position(self, room: str) -> tuple[int, str]:
        """The room's last committed seq and its history epoch, as of now (given an
        epoch if it has none)."""

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            presence.queue_epoch(pipe, self._epoch, room)
            return self._execute_scripted(pipe)

        return presence.parse_epoch((await self._call("room_position", run))[0])

    async def frames_after(self, room: str, after_seq: int, count: int) -> list[CommittedFrame]:
        """Up to ``count`` committed frames with seq > ``after_seq``, oldest first."""

        def run() -> Any:
            return self._r.xrange(keys.frames(room), f"{after_seq + 1}-0", "+", count=count)

        entries = await self._call("frames_after", run)
        return [CommittedFrame(room, int(_s(i).split("-")[0]), f[b"d"]) for i, f in entries]

    async def wait_notices(
        self,
        feed: str,
        after: str,
        block_ms: int,
        then_read: Callable[[str], tuple[int, str] | None] | None = None,
        count: int = 64,
    ) -> tuple[str, list[str], list[CommittedFrame], list[ControlEvent]]:
        """Wait up to ``block_ms`` for rooms named in ``feed``'s notice stream
        (``store.notices``) after entry ``after``; return the new position, the rooms
        (empty on timeout), and the news of those of them ``then_read`` gives a cursor
        for (room -> (frames after seq, control after id), or ``None``: not read; called
        from the waiting thread, for the named rooms only, so it must only look things
        up): read as ``read_events`` does in the same thread as soon as the notice
        arrives, so a frame reaches its gateway one round trip after its notice, not a
        round trip plus a trip through the event loop (which a busy gateway, e.g. in a
        handshake storm, makes long). The news may be older than the caller's cursors by
        then; callers skip what they already have.

        Cancel-safe: a cancelled wait is abandoned (its thread finishes within block_ms),
        nothing is consumed. One key, so it works the same on a cluster."""

        def run() -> tuple[str, list[str], list[Any]]:
            position, rooms = self.notices.wait_sync(feed, after, block_ms)
            wanted = {}
            if then_read is not None:
                for room in rooms:
                    cursor = then_read(room)
                    if cursor is not None:
                        wanted[room] = cursor
            return position, rooms, self._read_events_sync(wanted, count) if wanted else []

        position, rooms, news = await self._call("wait_notices", run, abandon=True)
        frames, controls = _events(news)
        return position, rooms, frames, controls

    def _read_events_sync(
        self, cursors: Mapping[str, tuple[int | None, str | None]], count: int
    ) -> list[Any]:
        """XREAD each room's frames after seq and control events after id (``None``:
        not that stream), pipelined; the raw entries for ``_events``. A room whose read
        is refused (a clobbered key: WRONGTYPE) is left out and counted in
        ``danmaku_redis_errors_total{op="read_events"}``, so it cannot stall the other
        rooms' frames; a server-wide error reply raises."""
        pipe = self._r.pipeline(transaction=False)
        for room, (seq, control_id) in cursors.items():
            streams: dict[Any, Any] = {}
            if seq is not None:
                streams[keys.frames(room)] = f"{seq}-0"
            if control_id is not None:
                streams[keys.control(room)] = control_id
            pipe.xread(streams, count=count)
        out: list[Any] = []
        for reply in pipe.execute(raise_on_error=False):
            if room_fault(reply) is not None:
                self._m.redis_errors.labels("read_events").inc()
            elif reply:
                out.extend(reply)
        return out

    async def read_events(
        self, frames_after: Mapping[str, int], control_after: Mapping[str, str], count: int = 64
    ) -> tuple[list[CommittedFrame], list[ControlEvent]]:
        """Frames newer than ``frames_after[room]`` and control events after
        ``control_after[room]``, without waiting: one read per room (a room's streams
        share a slot), pipelined per shard."""
        cursors = {
            room: (frames_after.get(room), control_after.get(room))
            for room in dict.fromkeys([*frames_after, *control_after])
        }
        if not cursors:
            return [], []
        news = await self._call("read_events", partial(self._read_events_sync, cursors, count))
        return _events(news)

    async def room_info(self, room: str) -> dict[str, Any]:
        """Live figures of a room: last seq, online viewers (distinct users plus
        anonymous connections) and ``connections``, the worker's rates."""
        now_ms = int(time.time() * 1000)

        def run() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(keys.meta(room), "seq")
            presence.queue_online(pipe, self._online, room, now_ms)
            pipe.hgetall(keys.stats(room))
            pipe.hmget(keys.door(room), "n", "avg")
            pipe.xlen(keys.comments(room))
            pipe.hgetall(keys.shed(room))
            pipe.hgetall(keys.settings(room))
            return self._execute_scripted(pipe)

        seq, online, stats, (counted, avg), entries, shed, room_settings = await self._call(
            "room_info", run
        )
        # Counted by the door; once the stream is trimmed, estimated from its entries.
        stored = max(0, int(counted or entries))
        if stored > self._stream_maxlen:
            stored = round(entries * float(avg or 1))
        head = presence.parse_online(online)
        info: dict[str, Any] = {
            "seq": int(seq or 0),
            "online": head.online,
            "connections": head.connections,
            "comments_stored": int(stored),
            "shed_per_s": round(_sum_fresh(shed, now_ms), 3),
            "settings": _decode_room_settings(room_settings),
        }
        for name in ("comments_per_s", "shown_per_s", "dropped_per_s", "latency_p99_ms"):
            info[name] = float(stats.get(name.encode(), 0) or 0)
        return info


def _events(reply: list[Any]) -> tuple[list[CommittedFrame], list[ControlEvent]]:
    """Split an XREAD reply over frames and control streams into frames and events."""
    frames: list[CommittedFrame] = []
    controls: list[ControlEvent] = []
    for key, entries in reply:
        name = _s(key)
        room = keys.room_of(name)
        if name.endswith(":ctl"):
            for entry_id, fields in entries:
                try:
                    event = orjson.loads(fields[b"e"])
                except (KeyError, orjson.JSONDecodeError):
                    continue
                controls.append(ControlEvent(room, _s(entry_id), event))
            continue
        for entry_id, fields in entries:
            frames.append(CommittedFrame(room, int(_s(entry_id).split("-")[0]), fields[b"d"]))
    return frames, controls
