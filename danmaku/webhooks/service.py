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
from danmaku.supervise import Backoff, LoopHealth, supervise

log = logging.getLogger(__name__)

LEASE_POLLS = 20  # the lease lasts this many polls (renewed every poll), 1 s at least
ROOMS_WINDOW_MS = 3_600_000  # rooms active this recently are read (dm:rooms keeps 1 h)
ROOMS_MAX = 1000  # rooms read per poll, the most recently active first
READ_COUNT = 500  # stream entries per room and stream per poll
PRUNE_EVERY = 1200  # polls between prunes of idle rooms' cursors (10 min by default)


class WebhookService:
    """Delivers room events to ``settings.webhook_urls``. ``run`` is a trio service."""

    def __init__(
        self,
        store: Platform,
        settings: Settings,
        metrics: Metrics,
        *,
        health: LoopHealth | None = None,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.health = health or LoopHealth(metrics)
        self.holder = holder or f"wh-{secrets.token_hex(4)}"
        self.urls = [u.strip() for u in settings.webhook_urls.split(",") if u.strip()]
        self.outboxes = {url: Outbox.new(settings.webhook_queue) for url in self.urls}
        self._wake = {url: trio.Event() for url in self.urls}
        self.n = 0  # events numbered as read
        self.cursors: dict[str, str] = {}  # where this process has read to
        self._checkpoints: deque[tuple[int, str, str]] = deque()  # (n, cursor name, id)
        self.leader = False
        self._polls = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        timeout = httpx.Timeout(self.settings.webhook_timeout_s)
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            trio.open_nursery() as nursery,
        ):
            for url in self.urls:
                send = _bind(self._sender, client, url)
                nursery.start_soon(supervise, "webhook_send", send, self.health, Backoff(cap=5.0))
            await nursery.start(supervise, "webhooks", self._reader, self.health, Backoff(cap=5.0))
            task_status.started()

    # ---- reading ------------------------------------------------------------------------
    async def _reader(self) -> None:
        poll_s = self.settings.webhook_poll_ms / 1000
        while True:
            try:
                lease_ms = max(1000, LEASE_POLLS * self.settings.webhook_poll_ms)
                if await self.store.webhook_lease(self.holder, lease_ms):
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
            for url, box in self.outboxes.items():
                dropped = box.push(self.n, event)
                if dropped:
                    self.metrics.webhook_events.labels("overflow").inc(dropped)
                self._wake[url].set()
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

    # ---- delivering ---------------------------------------------------------------------
    async def _sender(self, client: httpx.AsyncClient, url: str) -> None:
        box = self.outboxes[url]
        while True:
            batch = box.batch(self.settings.webhook_batch)
            if not batch:
                self._wake[url] = trio.Event()
                with trio.move_on_after(1.0):
                    await self._wake[url].wait()
                continue
            body = orjson.dumps({"events": [event for _, event in batch]})
            attempt = 0
            while True:
                attempt += 1
                if await self._post(client, url, body):
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

    async def _post(self, client: httpx.AsyncClient, url: str, body: bytes) -> bool:
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "danmaku-webhooks",
            rules.TIMESTAMP_HEADER: str(ts),
            rules.SIGNATURE_HEADER: rules.sign(self.settings.webhook_secret, ts, body),
        }
        try:
            reply = await client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            log.info("webhooks: %s: %r", url, exc)
            self.metrics.webhook_requests.labels("failed").inc()
            return False
        ok = 200 <= reply.status_code < 300
        self.metrics.webhook_requests.labels("ok" if ok else "failed").inc()
        return ok


def _bind(fn: Any, *args: Any) -> Any:
    async def loop() -> None:
        await fn(*args)

    return loop
