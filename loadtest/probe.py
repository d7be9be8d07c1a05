"""What the server side looks like at one instant: CPU, RSS and its /metrics counters.

``LocalProbe`` reads ``/proc`` for the ``danmaku up`` process and its embedded Redis
(exact CPU of each process) and the machine's busy CPU (``/proc/stat``: on a shared
machine, what else ran during a phase); ``RemoteProbe`` reads the server's own process metrics
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``) from /metrics, which
cover the process that serves /metrics (with ``danmaku up``, the whole server). Both
scrape /metrics for the danmaku counters. A failed scrape yields empty metrics and is
counted, never raised.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field

import trio

from loadtest import procstat
from loadtest.stats import metric_total, parse_prometheus

# The server counters a report carries (deltas), by the short key the report uses.
COUNTERS: dict[str, str] = {
    "frame_writes": "danmaku_frame_writes_total",
    "bytes_out": "danmaku_bytes_out_total",
    "frames_built": "danmaku_frames_built_total",
    "frames_read": "danmaku_gateway_frames_total",  # frames the gateway read from Redis
    "comments_received": "danmaku_comments_received_total",
    "comments_accepted": "danmaku_comments_accepted_total",
    "comments_rejected": "danmaku_comments_rejected_total",
    "comments_shed": "danmaku_comments_shed_total",
    "items_dropped": "danmaku_items_dropped_total",
    "items_folded": "danmaku_items_folded_total",
    "viewer_frames_dropped": "danmaku_viewer_frames_dropped_total",
    "frames_replayed": "danmaku_frames_replayed_total",
    "resume_gaps": "danmaku_resume_gaps_total",
    "connections_opened": "danmaku_connections_opened_total",
    "connections_closed": "danmaku_connections_closed_total",
    "handshakes_rejected": "danmaku_handshakes_rejected_total",
    "gc_pause_s": "danmaku_gc_pause_seconds_sum",  # the event loop stopped for GC
    "gc_collections": "danmaku_gc_pause_seconds_count",
}


@dataclass
class ServerSample:
    """One reading. ``cpu_s``/``rss_bytes`` of the server process; Redis ones when local."""

    at: float  # time.time()
    cpu_s: float | None = None
    rss_bytes: int | None = None
    redis_cpu_s: float | None = None
    redis_rss_bytes: int | None = None
    host_busy_s: float | None = None  # the whole machine's busy CPU seconds (local runs)
    metrics: dict[str, float] = field(default_factory=dict)

    def counter(self, key: str) -> float:
        return metric_total(self.metrics, COUNTERS[key])


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """GET a Prometheus text endpoint; ``{}`` on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return parse_prometheus(resp.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return {}


class Probe:
    """Reads ``ServerSample``s; subclasses fill CPU/RSS."""

    def __init__(self, metrics_url: str) -> None:
        self.metrics_url = metrics_url
        self.scrape_failures = 0
        self.source = "metrics"

    async def sample(self) -> ServerSample:
        metrics = await trio.to_thread.run_sync(scrape, self.metrics_url)
        if not metrics:
            self.scrape_failures += 1
        s = ServerSample(at=time.time(), metrics=metrics)
        self.fill(s)
        return s

    def fill(self, s: ServerSample) -> None:
        if s.metrics:
            s.cpu_s = metric_total(s.metrics, "process_cpu_seconds_total")
            s.rss_bytes = int(metric_total(s.metrics, "process_resident_memory_bytes"))


class LocalProbe(Probe):
    """Exact CPU/RSS of a local server process and of its Redis child from /proc."""

    def __init__(self, metrics_url: str, pid: int, redis_pid: int | None) -> None:
        super().__init__(metrics_url)
        self.pid = pid
        self.redis_pid = redis_pid
        self.source = "proc"

    def fill(self, s: ServerSample) -> None:
        s.host_busy_s = procstat.host_busy_s()
        own = procstat.sample(self.pid)
        if own:
            s.cpu_s, s.rss_bytes = own.cpu_s, own.rss_bytes
        if self.redis_pid:
            red = procstat.sample(self.redis_pid)
            if red:
                s.redis_cpu_s, s.redis_rss_bytes = red.cpu_s, red.rss_bytes


def delta(a: ServerSample, b: ServerSample) -> dict[str, float | None]:
    """Server figures between two samples: CPU seconds, counter deltas (report keys)."""
    out: dict[str, float | None] = {
        "wall_s": round(b.at - a.at, 3),
        "cpu_s": _sub(b.cpu_s, a.cpu_s),
        "redis_cpu_s": _sub(b.redis_cpu_s, a.redis_cpu_s),
        "host_cpu_s": _sub(b.host_busy_s, a.host_busy_s),
    }
    for key in COUNTERS:
        out[key] = b.counter(key) - a.counter(key) if a.metrics and b.metrics else None
    return out


def _sub(b: float | None, a: float | None) -> float | None:
    return round(b - a, 3) if a is not None and b is not None else None
