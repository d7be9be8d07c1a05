"""``WebhookService``: reads room events from what the store records and POSTs them,
signed and batched, to every registered URL.

Off the hot path: the gateway and the worker do nothing for webhooks; this service reads
the rooms' comment and audit streams after its own cursors (``Store.webhook_read``), a
few times a second, and one process of the deployment delivers (a Redis lease; the
others stand by). Per URL: a bounded outbox (``DANMAKU_WEBHOOK_QUEUE``; full: the oldest
events are dropped, counted as ``overflow``) and one sender task, so a slow or dead
receiver delays only its own events. A batch is retried with backoff (0.5 s doubling to
60 s) up to ``DANMAKU_WEBHOOK_MAX_ATTEMPTS`` times, then dropped (``failed``).

At least once: the cursors in Redis move only past events every URL is done with, so a
crash or a lease takeover re-reads and redelivers what was not finished, under the same
event ids. Order: per URL, events go out in the order read (per room: comments in
stream order, audit events in audit order; the two streams of a room are interleaved
per read, not by time).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from typing import Any

import httpx
import orjson
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules import webhooks as rules
from danmaku.rules.webhooks import Outbox
from danmaku.store import StoreError
from danmaku.store.platform import Platform
from danmaku.store.records import split_entry
from danmaku.store.webhook_endpoints import WebhookEndpoints
from danmaku.supervise import Backoff, LoopHealth, supervise

log = logging.getLogger(__name__)

LEASE_POLLS = 20  # the lease lasts this many polls (renewed every poll), 1 s at least
ROOMS_WINDOW_MS = 3_600_000  # rooms active this recently are read (dm:rooms keeps 1 h)
ROOMS_MAX = 1000  # rooms read per poll, the most recently active first
READ_COUNT = 500  # stream entries per room and stream per poll
PRUNE_EVERY = 1200  # polls between prunes of idle rooms' cursors (10 min by default)
ENDPOINT_HEADER = "X-Danmaku-Endpoint"  # which endpoint (id) a request is for


class WebhookService:
    """Delivers room events to ``settings.webhook_urls`` and to the endpoints registered
    through the API (``Store.webhook_endpoints``, read again every poll: added and
    removed ones take effect without a restart). ``run`` is a trio service."""

    def __init__(
        self,
        store: Platform,
        registered: WebhookEndpoints,
        settings: Settings,
        metrics: Metrics,
        *,
        health: LoopHealth | None = None,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.registered = registered  # endpoints registered through the API
        self.settings = settings
        self.metrics = metrics
        self.health = health or LoopHealth(metrics)
        self.holder = holder or f"wh-{secrets.token_hex(4)}"
        urls = [u.strip() for u in settings.webhook_urls.split(",") if u.strip()]
        self.static = [
            rules.Endpoint(f"env-{i}", url, settings.webhook_secret) for i, url in enumerate(urls)
        ]
        self.endpoints: dict[str, rules.Endpoint] = {}
        self.outboxes: dict[str, Outbox] = {}
        self._wake: dict[str, trio.Event] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._client: httpx.AsyncClient | None = None
        self._nursery: trio.Nursery | None = None
        self.n = 0  # events numbered as read
        self.cursors: dict[str, str] = {}  # where this process has read to
        self._checkpoints: deque[tuple[int, str, str]] = deque()  # (n, cursor name, id)
        self.leader = False
        self._polls = 0

    @property
    def urls(self) -> list[str]:
        """Where events go now (configured and registered)."""
        return [e.url for e in self.endpoints.values()]

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        timeout = httpx.Timeout(self.settings.webhook_timeout_s)
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            trio.open_nursery() as nursery,
        ):
            self._client, self._nursery = client, nursery
            self.reconcile([])  # the configured URLs, at once
            await nursery.start(supervise, "webhooks", self._reader, self.health, Backoff(cap=5.0))
            task_status.started()

    def reconcile(self, registered: list[dict[str, Any]]) -> None:
        """Make the senders match the configured URLs plus ``registered`` (the store's
        entries): a new endpoint gets an outbox (it owes nothing read before) and a
        sender; a removed one's sender is cancelled and its queue dropped."""
        want = {e.id: e for e in self.static}
        for entry in registered:
            ep = _endpoint(entry, self.settings.webhook_secret)
            if ep is not None:
                want[ep.id] = ep
        for eid in [e for e in self.endpoints if e not in want or want[e] != self.endpoints[e]]:
            self._scopes.pop(eid).cancel()
            del self.endpoints[eid], self.outboxes[eid], self._wake[eid]
        for eid, ep in want.items():
            if eid in self.endpoints or self._nursery is None or self._client is None:
                continue
            box = Outbox.new(self.settings.webhook_queue)
            box.last = self.n  # nothing read so far is owed to it
            self.endpoints[eid], self.outboxes[eid] = ep, box
            self._wake[eid] = trio.Event()
            self._scopes[eid] = scope = trio.CancelScope()
            send = _bind(self._sender, self._client, ep)
            self._nursery.start_soon(_scoped, scope, send, self.health)
        self._gauge()

    # ---- reading ------------------------------------------------------------------------
    async def _reader(self) -> None:
        poll_s = self.settings.webhook_poll_ms / 1000
        while True:
            try:
                # Every poll, before reading: an endpoint gets what is read after it is seen.
                self.reconcile(await self.registered.all())
                lease_ms = max(1000, LEASE_POLLS * self.settings.webhook_poll_ms)
                if not self.endpoints:  # nobody to deliver to: read nothing, hold nothing
                    self.leader = False
                elif await self.store.webhook_lease(self.holder, lease_ms):
                    if not self.leader:  # (again) the delivering process: start from Redis
                        self.cursors.clear()
                        self._checkpoints.clear()
                        self.leader = True
                    await self.poll()
                else:
                    self.leader = False
            except StoreError as exc:
                log.warning("webhooks: Redis failed: %s", exc)
            await trio.sleep(poll_s)

    async def poll(self) -> int:
        """Read new events into the outboxes and commit what every URL is done with;
        return how many events were queued."""
        since = int(time.time() * 1000) - ROOMS_WINDOW_MS
        got = await self.store.webhook_read(since, ROOMS_MAX, READ_COUNT, self.cursors)
        queued = 0
        for room, (entries, audit) in got.items():
            for entry_id, data in entries:
                queued += self._push(rules.comment_events(room, split_entry(entry_id, data)))
                self._read(f"{room}:in", entry_id)
            for entry_id, fields in audit:
                event = rules.audit_event(room, entry_id, fields)
                queued += self._push([event] if event is not None else [])
                self._read(f"{room}:audit", entry_id)
        self._gauge()
        await self._commit()
        self._polls += 1
        if self._polls % PRUNE_EVERY == 0:  # rooms idle past the window: cursors go
            await self.store.webhook_prune(since)
            pending = {name for _, name, _ in self._checkpoints}
            read = {f"{room}:{kind}" for room in got for kind in ("in", "audit")}
            for name in [n for n in self.cursors if n not in read and n not in pending]:
                del self.cursors[name]
        return queued

    def _push(self, events: list[dict[str, Any]]) -> int:
        for event in events:
            self.n += 1
            for eid, box in self.outboxes.items():
                if not self.endpoints[eid].wants(event):
                    box.pass_over(self.n)
                    continue
                dropped = box.push(self.n, event)
                if dropped:
                    self.metrics.webhook_events.labels("overflow").inc(dropped)
                self._wake[eid].set()
        return len(events)

    def _read(self, name: str, entry_id: str) -> None:
        self.cursors[name] = entry_id
        self._checkpoints.append((self.n, name, entry_id))

    async def _commit(self) -> None:
        done = min((box.done for box in self.outboxes.values()), default=self.n)
        upto: dict[str, str] = {}
        while self._checkpoints and self._checkpoints[0][0] <= done:
            _, name, entry_id = self._checkpoints.popleft()
            upto[name] = entry_id
        await self.store.webhook_commit(upto)

    def _gauge(self) -> None:
        self.metrics.webhook_queued.set(sum(len(b.queue) for b in self.outboxes.values()))
        self.metrics.webhook_endpoints.set(len(self.endpoints))

    # ---- delivering ---------------------------------------------------------------------
    async def _sender(self, client: httpx.AsyncClient, ep: rules.Endpoint) -> None:
        box = self.outboxes[ep.id]
        url = ep.url
        while True:
            if self.endpoints.get(ep.id) is not ep:  # removed: its scope is cancelled
                await trio.sleep_forever()
            batch = box.batch(self.settings.webhook_batch)
            if not batch:
                self._wake[ep.id] = trio.Event()
                with trio.move_on_after(1.0):
                    await self._wake[ep.id].wait()
                continue
            body = orjson.dumps({"events": [event for _, event in batch]})
            attempt = 0
            while True:
                attempt += 1
                if await self._post(client, ep, body):
                    self.metrics.webhook_events.labels("delivered").inc(len(batch))
                    break
                if attempt >= self.settings.webhook_max_attempts:
                    log.warning(
                        "webhooks: %s: dropped %d events after %d tries", url, len(batch), attempt
                    )
                    self.metrics.webhook_events.labels("failed").inc(len(batch))
                    break
                await trio.sleep(rules.backoff_s(attempt))
            box.finish(batch[-1][0])
            self._gauge()

    async def _post(self, client: httpx.AsyncClient, ep: rules.Endpoint, body: bytes) -> bool:
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "danmaku-webhooks",
            rules.TIMESTAMP_HEADER: str(ts),
            rules.SIGNATURE_HEADER: rules.sign(ep.secret, ts, body),
            ENDPOINT_HEADER: ep.id,
        }
        try:
            reply = await client.post(ep.url, content=body, headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            log.info("webhooks: %s: %r", ep.url, exc)
            self.metrics.webhook_requests.labels("failed").inc()
            return False
        ok = 200 <= reply.status_code < 300
        self.metrics.webhook_requests.labels("ok" if ok else "failed").inc()
        return ok


def _endpoint(entry: dict[str, Any], fallback_secret: str) -> rules.Endpoint | None:
    """A registered endpoint from its stored entry (``None``: not one any more, e.g. a
    URL that no longer passes the check)."""
    url, eid = entry.get("url"), entry.get("id")
    if not isinstance(url, str) or not isinstance(eid, str) or rules.url_problem(url):
        return None
    secret = entry.get("secret") or fallback_secret
    events = entry.get("events") or []
    if not secret or not isinstance(secret, str) or not isinstance(events, list):
        return None
    created = entry.get("created_ms")
    return rules.Endpoint(
        eid, url, secret, frozenset(map(str, events)), int(created) if created else 1
    )


async def _scoped(scope: trio.CancelScope, send: Any, health: LoopHealth) -> None:
    """One endpoint's sender, supervised, until its scope is cancelled (removed)."""
    with scope:
        await supervise("webhook_send", send, health, Backoff(cap=5.0))


def _bind(fn: Any, *args: Any) -> Any:
    async def loop() -> None:
        await fn(*args)

    return loop
