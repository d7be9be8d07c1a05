"""What a broadcast worker keeps of each room it holds (``HeldRoom``): its lease, its
merger and smoother (the room's display budget), and the figures of its online report;
how a room taken over starts (``take``), and what the online round applies and reports
(``apply_online``, ``report``)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from danmaku.config import Settings
from danmaku.rules.items import Item
from danmaku.rules.merge import RoomMerger, Selector
from danmaku.rules.sampling import BudgetMeter, FrameSampler, Selection
from danmaku.rules.smoothing import Smoother
from danmaku.store import Lease

# A room is read in a tick only if it was "hot" (comments stored, moderation change) this
# recently, or still has work: idle rooms cost nothing per tick. The window also covers
# clock skew between gateway and worker hosts (scores are the gateway's clock).
HOT_WINDOW_S = 2.0
ONLINE_EVERY_S = 1.0
# The longest a room's comments may wait for a frame (its ``max_wait_s``, at most this):
# how far back a worker taking a room over looks for comments already shown.
MAX_WAIT_CAP_S = 5.0


def sampling_selector(
    sampler: FrameSampler, meter: BudgetMeter | None = None, backlog_s: float = math.inf
) -> Selector:
    """Adapt the spike-control sampler to the merger's selector interface. With a
    ``meter``, priority items waiting for a frame are capped at ``backlog_s`` seconds of
    the room's display budget (``FrameSampler.select``'s ``max_carry``)."""

    def select(items: list[Item], budget: int) -> Selection:
        cap = None
        if meter is not None and math.isfinite(backlog_s):
            cap = math.ceil(max(0.0, meter.per_second) * backlog_s)
        return sampler.select(items, budget, max_carry=cap)

    return select


@dataclass
class HeldRoom:
    lease: Lease
    merger: RoomMerger
    smoother: Smoother  # the room's display budget per second: pacing, queue, sampling
    last_active: float  # trio time of the last comment (or of taking the room)
    online: int = 0
    latencies: list[float] = field(default_factory=list)  # ms, items shown since the report
    catching_up: bool = True  # read every tick until a read finds nothing (takeover backlog)
    last_comments: float = float("-inf")  # trio time of the last read that found comments
    comments_in: int = 0  # since the last stats report
    shown: int = 0
    dropped: int = 0
    stats_live: bool = False  # its last stats report was not all zeros

    def busy_now(self, now: float) -> bool:
        """Read this tick whatever the hot set says: a takeover backlog, comments
        waiting (priority carry), or comments found within the last half of the hot
        window (the room is surely still in the hot set, moderation changes included,
        since the read returns those too)."""
        return (
            self.catching_up
            or self.merger.has_work()
            or now - self.last_comments < HOT_WINDOW_S / 2
        )

    def apply_online(
        self,
        online: int,
        room_settings: dict[str, float],
        highlighted: set[str],
        conf: Settings,
    ) -> None:
        """The online round's news: viewers, the uids granted the highlighted tier, and
        the room's moderator-set settings over the server's defaults."""
        self.online = online
        self.merger.highlighted = highlighted
        sm = self.smoother
        sm.per_second = room_settings.get("budget", conf.display_budget)
        sm.window_s = room_settings.get("smooth_window_s", conf.smooth_window_s)
        wait = room_settings.get("max_wait_s", conf.max_wait_s)
        sm.max_wait_s = min(wait, max(conf.max_wait_s, MAX_WAIT_CAP_S))

    def report(self) -> dict[str, float]:
        """The room's live figures since the last report (then counted afresh)."""
        stats = {
            "comments_per_s": self.comments_in / ONLINE_EVERY_S,
            "shown_per_s": self.shown / ONLINE_EVERY_S,
            "dropped_per_s": self.dropped / ONLINE_EVERY_S,
            "latency_p99_ms": _p99(self.latencies),
        }
        # One report of zeros after the last busy one, then none: the figures expire.
        self.stats_live = bool(self.comments_in or self.shown or self.dropped)
        self.comments_in = self.shown = self.dropped = 0
        self.latencies = []
        return stats


def take(lease: Lease, conf: Settings, rng: random.Random, seen: set[str], now: float) -> HeldRoom:
    """A room whose lease was just taken: its merger from the lease's position, with
    the ids its last frames showed (``seen``: skipped when read again)."""
    sampler = FrameSampler(random.Random(rng.random()))
    smoother = Smoother(
        sampler,
        conf.display_budget,
        tick_s=conf.tick_s,
        window_s=conf.smooth_window_s,
        max_wait_s=conf.max_wait_s,
        backlog_s=conf.priority_backlog_s,
    )
    merger = RoomMerger(lease.room, lease.seq, lease.cursor, smoother=smoother)
    merger.seen = seen
    return HeldRoom(lease, merger, smoother, last_active=now)


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])
