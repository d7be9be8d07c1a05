"""``AutoRecorder``: starts and ends broadcasts of rooms that set ``auto_record`` (issue
24: "record whenever the room is live"), so their replays exist without anyone pressing
a button. The rule is ``rules.autorecord.decide``; this is its loop.

One process of the deployment records (a Redis lease, like webhooks; the web processes
stand by): every ``DANMAKU_AUTO_RECORD_POLL_MS`` it scans the rooms active in the last
``DANMAKU_AUTO_RECORD_IDLE_S`` (at most ``ROOMS_MAX``, the most recent) and those whose
recording it started, and acts. A broadcast it starts or ends goes through the same
store calls as the console's buttons: audited as ``auto:record``, so the webhooks'
``broadcast.started`` / ``broadcast.ended`` events follow, and recorded by the worker
like any other.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time

import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.rules import autorecord as rules
from danmaku.store import Store, StoreError
from danmaku.supervise import Backoff, LoopHealth, supervise
from danmaku.web.replay import begin

log = logging.getLogger(__name__)

ROOMS_MAX = 1000  # rooms scanned per poll, the most recently active first
LEASE_POLLS = 5  # the lease lasts this many polls (renewed every poll)


class AutoRecorder:
    """``run`` is a trio service; ``poll`` one round (tests call it)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        *,
        health: LoopHealth,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.holder = holder or f"rec-{secrets.token_hex(4)}"

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "autorecord", self._loop, self.health, Backoff(cap=5.0))
            task_status.started()

    async def _loop(self) -> None:
        poll_s = self.settings.auto_record_poll_ms / 1000
        lease_ms = max(1000, LEASE_POLLS * self.settings.auto_record_poll_ms)
        while True:
            try:
                if await self.store.autorecord.lease(self.holder, lease_ms):
                    await self.poll(int(time.time() * 1000))
            except StoreError as exc:
                log.warning("auto-record: Redis failed: %s", exc)
            await trio.sleep(poll_s)

    async def poll(self, now_ms: int) -> dict[str, rules.Action]:
        """One round: what was done, per room. A room's failure (Redis) stops the round;
        the next round decides again from what is stored."""
        idle_ms = self.settings.auto_record_idle_s * 1000
        since = now_ms - idle_ms
        views = await self.store.autorecord.scan(since, ROOMS_MAX, bool(self.settings.auto_record))
        done: dict[str, rules.Action] = {}
        for view in views:
            action = rules.decide(view, now_ms, idle_ms)
            if action == "start":
                title = rules.title(view.room, now_ms)
                meta = await begin(self.store, self.settings, view.room, title, by=rules.AUTO_BY)
                await self.store.autorecord.remember(view.room, str(meta["id"]))
                self.metrics.auto_recordings.labels("start").inc()
                log.info("auto-record: %s: started %s", view.room, meta["id"])
            elif action == "end" and view.ours is not None:
                with contextlib.suppress(KeyError):  # gone (retention): nothing to end
                    await self.store.replay.end_broadcast(view.room, view.ours, by=rules.AUTO_BY)
                await self.store.autorecord.remember(view.room, None)
                self.metrics.auto_recordings.labels("end").inc()
                log.info("auto-record: %s: ended %s", view.room, view.ours)
            elif action == "forget":
                await self.store.autorecord.remember(view.room, None)
            if action is not None:
                done[view.room] = action
        return done
