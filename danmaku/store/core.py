"""``StoreCore``: what every store component shares, the Redis clients and the thread
bridge.

redis-py's client is blocking, so each component method runs one *pipeline* in a worker
thread through ``call`` (``trio.to_thread.run_sync``): a thread hop costs ~0.1 ms, so
callers batch (one hop per batch of comments, per tick of a worker), never one per
comment. Blocking reads use their own client (``rb``), short BLOCK timeouts and
``abandon=True`` so cancellation is prompt. RESP2 is pinned on purpose: replies have the
same shape on Redis 6.2 and 7.x and with or without hiredis.

Cancellation: a cancelled *write* (ingest, commit) may or may not have reached Redis;
callers treat it like a crash, which the Lua scripts make safe (idempotent nonces,
fenced commits). Errors from Redis surface as ``StoreError``.

Components (``Intake``, ``Feed``, ``Frames``, ``Moderation``, ...) each take the core,
register their own Lua scripts with ``register`` and keep ``core.r`` / ``core.call`` as
attributes of their own, so a call costs what it cost when ``Store`` was one class.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import redis
import trio
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisClusterException

from danmaku.metrics import Metrics
from danmaku.startup import mask_url
from danmaku.store import cluster
from danmaku.store.records import StoreError

T = TypeVar("T")


class StoreCore:
    """The connections to one Redis or a Redis Cluster (``redis+cluster://`` URL, see
    ``cluster``), the thread bridge and the Lua scripts the components registered.
    Thread-safe; one per process (``Store`` builds it). ``close()`` is idempotent."""

    def __init__(self, url: str, metrics: Metrics, *, max_threads: int = 16) -> None:
        self.url = url
        self.metrics = metrics
        common: dict[str, Any] = {"protocol": 2, "decode_responses": False, "socket_timeout": 10}
        self.cluster = cluster.is_cluster_url(url)
        self.r: redis.Redis
        if self.cluster:
            try:
                # Same command API as a plain client (pipelines included): typed as one.
                self.r = cast(redis.Redis, cluster.connect(url, **common))
            except (redis.RedisError, RedisClusterException) as exc:
                raise StoreError(f"Redis Cluster at {mask_url(url)}: {exc}") from exc
            self.rb = self.r  # the one blocking read (wait_notices) is on one key
        else:
            self.r = redis.Redis.from_url(url, **common)
            # The blocking read (wait_notices) gets its own pool so it never starves writes.
            self.rb = redis.Redis.from_url(url, **common)
        self._limiter = trio.CapacityLimiter(max_threads)
        self._scripts: dict[str, Script] = {}  # sha -> script, loaded again on NOSCRIPT

    def register(self, source: str) -> Script:
        """Register a Lua script (once per source, whichever component asks first); run
        it with ``queue_script`` and ``execute_scripted``."""
        script = self.r.register_script(source)
        return self._scripts.setdefault(script.sha, script)

    # ---- the bridge -------------------------------------------------------------------
    async def call(self, op: str, fn: Callable[[], T], *, abandon: bool = False) -> T:
        """Run ``fn`` (blocking Redis work) in a worker thread; time it as ``op``
        (``metrics.REDIS_OPS``) and turn Redis errors into ``StoreError``. ``abandon``:
        a cancelled call returns at once, its thread finishing on its own (blocking
        reads only)."""
        start = time.perf_counter()
        try:
            result = await trio.to_thread.run_sync(
                fn, limiter=self._limiter, abandon_on_cancel=abandon
            )
        except (redis.RedisError, RedisClusterException) as exc:
            self.metrics.redis_errors.labels(op).inc()
            raise StoreError(f"{op}: {exc}") from exc
        self.metrics.redis_latency.labels(op).observe(time.perf_counter() - start)
        return result

    def execute_scripted(self, pipe: Any, *, raise_on_error: bool = True) -> list[Any]:
        """Execute a pipeline holding ``EVALSHA`` calls (``queue_script``). Scripts the
        server lacks (first use, a restart, a failover to a replica) are loaded and just
        those calls sent again; unlike redis-py's registered scripts this costs no
        ``SCRIPT EXISTS`` round trip per pipeline. Raises the first error reply, or with
        ``raise_on_error=False`` returns error replies in place (as exceptions)."""
        stack = list(pipe.command_stack)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            for script in self._scripts.values():
                self.r.script_load(script.script)  # every master, on a cluster
            again = self.r.pipeline(transaction=False)
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

    # ---- the process's connection ----------------------------------------------------------
    async def ping(self) -> bool:
        """Redis answers; on a cluster, every master does (one down: not ready until a
        replica has taken over)."""
        ping = cast(cluster.RoutedCluster, self.r).ping_masters if self.cluster else self.r.ping
        return bool(await self.call("ping", ping))

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

    def close(self) -> None:
        """Drop all connections. Idempotent."""
        self.r.close()
        self.rb.close()


def queue_script(pipe: Any, script: Script, names: Sequence[Any], args: Sequence[Any]) -> None:
    """Queue ``EVALSHA`` of a registered script with keys ``names`` on ``pipe``; run
    the pipeline with ``StoreCore.execute_scripted`` (which loads scripts the server
    lacks)."""
    pipe.evalsha(script.sha, len(names), *names, *args)
