"""Redis Cluster: connect from a cluster URL and run pipelines (Lua scripts included)
across shards.

redis-py's ``RedisCluster`` finds the shards and routes single commands, but its cluster
pipeline refuses ``EVALSHA``, and danmaku's hot path is pipelined Lua (ingest, leases,
commits). ``RoutedPipeline`` keeps redis-py's pipeline API: commands and scripts are
queued as usual; ``execute()`` groups them by the master that holds each command's hash
slot, runs one plain pipeline per master (in the order queued, so commands on one room
keep their order; masters are visited in the order of their first queued command, so a
command queued after all of another shard's commands runs after them) and puts the
replies back in order. Each Lua script touches one room's
keys, which share the ``{room}`` hash tag, so each runs whole on one shard.

Redirections: a ``MOVED`` reply (a slot changed hands, e.g. after a failover) refreshes
the slot map and re-sends only the commands that were redirected; ``TRYAGAIN``,
``CLUSTERDOWN`` and ``ASK`` (a slot being resharded) are retried with a short backoff, a
few times, then surface as errors. ``ASK`` is not followed with ``ASKING``: a script's
keys (one room's) are split between two nodes while its slot moves, which Redis answers
with ``TRYAGAIN`` anyway, so waiting for the slot to settle is what works. A node that
cannot be reached refreshes the slot map and raises ``ConnectionError``: commands on
other nodes may have run, exactly as when a single Redis drops mid-pipeline, which the
idempotent scripts make safe to retry.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
REDIRECTS = 5  # rounds of MOVED/TRYAGAIN/CLUSTERDOWN handling before giving up
_BACKOFF_S = 0.05


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def connect(url: str, **options: Any) -> RoutedCluster:
    """A cluster client from ``redis+cluster://[user:password@]host:port[,host:port...]``
    (``rediss+cluster://`` for TLS). The listed nodes are seeds: the client discovers the
    rest. Connects lazily; raises ``ValueError`` for a malformed URL."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a cluster URL: {url!r} (want redis+cluster://host:port,...)")
    auth, _, hosts = parts.netloc.rpartition("@")
    seeds = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"cluster URL {url!r}: seed {item!r} is not host:port")
        seeds.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
    user, _, password = auth.partition(":") if auth else ("", "", "")
    return RoutedCluster(
        startup_nodes=seeds,
        username=unquote(user) or None,
        password=unquote(password) or None,
        ssl=SCHEMES[parts.scheme],
        **options,
    )


def command_key(args: tuple[Any, ...]) -> Any:
    """The key whose slot decides where a queued command runs (``None``: any node).

    Covers the commands danmaku pipelines: key-first commands, ``EVALSHA``/``EVAL``
    (first key after ``numkeys``) and ``XREAD`` (first stream after ``STREAMS``); a
    multi-key command's keys share one hash tag by construction (see ``keys``)."""
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:8]]
    name = words[0].upper()
    if name in ("EVALSHA", "EVAL"):
        return args[3] if int(args[2]) > 0 else None
    if name == "XREAD":
        return args[[w.upper() for w in words].index("STREAMS") + 1]
    return args[1] if len(args) > 1 else None


class RoutedPipeline(redis.client.Pipeline):
    """A non-transactional pipeline over a cluster. Queue commands (and scripts with
    ``script(keys=..., args=..., client=pipe)``) as on a plain redis-py pipeline; call
    ``execute()`` once. Not thread-safe (like redis-py's); build one per batch."""

    def __init__(self, cluster: RedisCluster) -> None:
        # The pool is never used: execute() sends through the nodes' own clients.
        super().__init__(None, {}, transaction=False, shard_hint=None)  # type: ignore[arg-type]
        self._cluster = cluster

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, scripts = self.command_stack, set(self.scripts)
        self.reset()
        results: list[Any] = [None] * len(stack)
        todo = list(range(len(stack)))
        for attempt in range(REDIRECTS):
            retry: list[int] = []
            moved = False
            try:
                groups = self._by_node(stack, todo)
            except SlotNotCoveredError:
                self._refresh()  # a master is gone and no replica took over (yet)
                raise
            for node, idxs in groups.items():
                pipe = self._cluster.get_redis_connection(node).pipeline(transaction=False)
                pipe.scripts.update(scripts)
                for i in idxs:
                    args, options = stack[i]
                    pipe.execute_command(*args, **options)  # type: ignore[no-untyped-call]
                try:
                    replies = pipe.execute(raise_on_error=False)
                except (redis.ConnectionError, redis.TimeoutError):
                    self._refresh()
                    raise
                for i, reply in zip(idxs, replies, strict=True):
                    results[i] = reply
                    if isinstance(reply, (MovedError, AskError, TryAgainError, ClusterDownError)):
                        retry.append(i)
                        moved = moved or isinstance(reply, MovedError)
            if not retry:
                break
            if moved:
                self._refresh()
            else:
                time.sleep(_BACKOFF_S * 2**attempt)
            todo = retry
        if raise_on_error:
            for i, reply in enumerate(results):
                if isinstance(reply, ResponseError):
                    self.annotate_exception(reply, i + 1, stack[i][0])  # type: ignore[no-untyped-call]
                    raise reply
        return results

    def _by_node(
        self, stack: list[tuple[tuple[Any, ...], Any]], todo: list[int]
    ) -> dict[ClusterNode, list[int]]:
        nodes = self._cluster.nodes_manager
        groups: dict[ClusterNode, list[int]] = defaultdict(list)
        for i in todo:
            key = command_key(stack[i][0])
            if key is None:
                node = self._cluster.get_random_node()  # type: ignore[no-untyped-call]
            else:
                raw = key if isinstance(key, bytes) else str(key).encode()
                node = nodes.get_node_from_slot(key_slot(raw))
            groups[node].append(i)
        return groups

    def _refresh(self) -> None:
        # On failure the next call tries again; the caller sees its own error.
        with contextlib.suppress(redis.RedisError):
            self._cluster.nodes_manager.initialize()


class RoutedCluster(RedisCluster):
    """``RedisCluster`` whose ``pipeline()`` is a ``RoutedPipeline`` (scripts allowed)."""

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        if transaction:
            raise ValueError("danmaku's cluster pipelines are not transactions")
        return RoutedPipeline(self)

    def ping_masters(self) -> bool:
        """PING every master; on failure refresh the slot map (so a promoted replica is
        found) and raise."""
        try:
            return bool(self.ping(target_nodes=RedisCluster.PRIMARIES))
        except (redis.ConnectionError, redis.TimeoutError):
            with contextlib.suppress(redis.RedisError):
                self.nodes_manager.initialize()
            raise
