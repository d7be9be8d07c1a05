"""``IngestBatcher``: accepted comments go to Redis in pipelined batches.

Connections submit without waiting (``submit`` never blocks: a full queue answers
``overloaded``). One task takes everything queued, appends it with one pipeline (one Lua
call per room: idempotent per user and nonce) and acks each comment with the id Redis
gave it. Batches form by themselves: while one round trip is in flight the next batch
accumulates, so there is no fixed delay at low load and one hop per batch at high load.

An ack is sent only after the comment is stored: an acknowledged comment is durable and
will appear in exactly one frame. If Redis fails, each waiting comment gets
``unavailable`` (the client resends with the same nonce; nothing is duplicated).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from danmaku import protocol
from danmaku.gateway.viewer import Viewer
from danmaku.metrics import Metrics, observe_many
from danmaku.rules.bans import banned_fields, until_from_retry
from danmaku.store import Ingest, IngestLimits, StoreError
from danmaku.store.interfaces import IngestStore

log = logging.getLogger(__name__)
MAX_BATCH = 2000
LINGER_FROM_PER_S = 1000.0  # the ingest linger applies from this rate (comments/s) on


REFUSALS = {
    "duplicate": "you just sent the same text",
    "slow_mode": "slow mode: wait before sending again",
    "rate_limited": "too many comments: wait before sending again",
    "banned": "you are banned from this room",
    "muted": "the room is muted: only moderators and highlighted viewers can send",
    "review_full": "the room's review queue is full: try again later",
}


def _no_reason(room: str, uid: str) -> str:
    return ""


@dataclass(slots=True)
class Submission:
    viewer: Viewer
    room: str
    nonce: str
    ingest: Ingest
    received: float  # time.monotonic() at receipt


class IngestBatcher:
    def __init__(
        self,
        store: IngestStore,
        metrics: Metrics,
        limits: IngestLimits,
        capacity: int = 10_000,
        linger_s: float = 0.0,
        linger_from_per_s: float = LINGER_FROM_PER_S,
    ) -> None:
        self.store = store
        # Comments arriving one by one (scattered senders) made batches of 1-3: the thread
        # hop, the pipeline and the Lua call per batch then cost more than the comments
        # (measured: docs/benchmarks.md). Waiting a moment first gathers more per trip,
        # but only at rates where that matters: at 200 comments/s the round trips cost 1%
        # of a core, and the wait would only add latency (and, near a tick's end, a tick).
        self._linger = linger_s
        self._linger_from = linger_from_per_s
        self._rate = 0.0  # comments/s taken, over the last whole second
        self._counted = 0
        self._count_since = -math.inf
        self.metrics = metrics
        self.limits = limits
        # The reason of a uid's ban in a room (the gateway's hubs know them): ``banned``
        # errors carry it with the ban's end (rules.bans).
        self.ban_reason: Callable[[str, str], str] = _no_reason
        # A deque and a parking lot, not a memory channel: one append per comment, and
        # the task is woken only when it waits (measured: 0.11 us a submit, 0.23 us with
        # a memory channel's send_nowait).
        self._queue: deque[Submission] = deque()
        self._capacity = capacity
        self._waiting = trio.lowlevel.ParkingLot()
        # Read when scraped, not counted per comment (a gauge's inc takes a lock).
        metrics.ingest_queue.set_function(self.pending)

    def submit(self, sub: Submission) -> bool:
        """Queue a comment for storage; ``False`` when the queue is full (overloaded)."""
        if len(self._queue) >= self._capacity:
            return False
        self._queue.append(sub)
        if self._waiting:
            self._waiting.unpark()
        sub.viewer.inflight += 1
        return True

    def pending(self) -> int:
        return len(self._queue)

    def _take(self) -> list[Submission]:
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
        self._counted += len(batch)
        return batch

    def _lingers(self, now: float) -> bool:
        """Whether to wait for more before the next round trip: the rate is high enough."""
        if now - self._count_since >= 1.0:  # (at first, -inf: the rate comes out 0)
            self._rate = self._counted / (now - self._count_since)
            self._counted, self._count_since = 0, now
        return self._linger > 0 and self._rate >= self._linger_from

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Store batches until cancelled. On cancel, the batch in flight finishes first."""
        task_status.started()
        while True:
            if not self._queue:
                await self._waiting.park()
            if len(self._queue) < MAX_BATCH and self._lingers(trio.current_time()):
                await trio.sleep(self._linger)
            batch = self._take()  # empty only if a flush took them meanwhile
            if batch:
                # Shielded: a half-stored batch must still be acked (or failed) correctly.
                with trio.CancelScope(shield=True):
                    await self._store(batch)

    async def flush(self, timeout_s: float) -> None:
        """Store everything queued now (graceful shutdown). Bounded by ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            while batch := self._take():
                await self._store(batch)

    async def _store(self, batch: list[Submission]) -> None:
        m = self.metrics
        m.ingest_batch.observe(len(batch))
        by_room: dict[str, list[Submission]] = defaultdict(list)
        for sub in batch:
            by_room[sub.room].append(sub)
        try:
            with trio.fail_after(10):
                outcomes = await self.store.append_comments(
                    {room: [s.ingest for s in subs] for room, subs in by_room.items()},
                    self.limits,
                )
        except (StoreError, trio.TooSlowError) as exc:
            log.warning("ingest batch of %d failed: %s", len(batch), exc)
            for sub in batch:
                sub.viewer.inflight -= 1
                m.comments_rejected.labels("unavailable").inc()
                sub.viewer.push_control(
                    protocol.error(
                        protocol.ProtocolError(
                            "unavailable", "storage unavailable, resend", sub.nonce, 1000
                        )
                    )
                )
            return
        now = time.monotonic()
        waited: list[float] = []  # receipt -> stored, per accepted comment
        replies: dict[Viewer, list[str]] = {}  # one write per viewer for the whole batch
        accepted = resent = held = 0
        for room, subs in by_room.items():
            for sub, out in zip(subs, outcomes[room], strict=True):
                sub.viewer.inflight -= 1
                texts = replies.get(sub.viewer)
                if texts is None:
                    texts = replies[sub.viewer] = []
                if out.id is None:
                    code = out.code or "bad_request"
                    m.comments_rejected.labels(code).inc()
                    extra = None
                    if code == "banned":
                        until = until_from_retry(out.retry_after_ms, int(time.time() * 1000))
                        extra = banned_fields(until, self.ban_reason(room, sub.ingest.uid))
                    err = protocol.ProtocolError(
                        code,
                        REFUSALS.get(code, code),
                        sub.nonce,
                        out.retry_after_ms or None,
                        extra=extra,
                    )
                    texts.append(protocol.error(err))
                    continue
                if out.resent:
                    resent += 1
                elif out.held:
                    held += 1
                else:
                    accepted += 1
                    waited.append(now - sub.received)
                texts.append(protocol.ack(sub.nonce, out.id, "held" if out.held else None))
        m.comments_accepted.inc(accepted)
        m.comments_held.inc(held)
        observe_many(m.latency.labels("ingest"), waited)
        m.comments_duplicate_nonce.inc(resent)
        for viewer, texts in replies.items():
            viewer.push_controls(texts)
