"""The one object that owns a process's Prometheus registry.

Every service takes a ``Metrics`` in its constructor (tests pass a fresh one, so counts
never leak between tests). Names follow Prometheus conventions: ``danmaku_`` prefix,
base units, ``_total`` counters. No label takes unbounded values: no user or room labels;
``code``, ``reason``, ``tier``, ``stage``, ``op`` and ``role`` are small fixed sets.

A scrape is rendered in Python while the event loop waits for the GIL, so its size is a
cost every process pays at every scrape: no ``_created`` series (Prometheus reads none
of them), and the Redis latency histogram has a child only for the operations the
process has run (its error counter keeps one per operation, so alerts see zeros).
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import (
    gc_collector as _gc,
)
from prometheus_client import (
    platform_collector as _platform,
)
from prometheus_client import (
    process_collector as _process,
)
from prometheus_client.core import CounterMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The fixed label values (each label has a small closed set; see the class docstring).
CLOSE_REASONS = ("client", "too_big", "too_slow", "draining", "flood", "unavailable", "dead")
HANDSHAKE_REJECTIONS = (
    "gone",
    "timeout",
    "server_full",
    "draining",
    "not_found",
    "too_many_connections",
    "too_many_sessions",
    "bad_room",
    "unauthorized",
    "bad_request",
    "origin",
    # identity (issue 19)
    "unavailable",
    "login_required",
    "nick_taken",
)
REDIS_OPS = (
    "acquire",
    # platform integration (issue 24)
    "pin_paid",
    "publish",
    "publish_rate",
    "room_directory",
    "webhook_commit",
    "webhook_lease",
    "webhook_prune",
    "webhook_read",
    # room-affine routing (issue 25)
    "gateway_announce",
    "gateway_list",
    "gateway_remove",
    "room_viewers",
    # issue 24 leftovers: per-room tiers, registered webhook endpoints, auto-record
    "room_tiers",
    "set_room_tiers",
    "webhook_endpoints",
    "set_webhook_endpoints",
    "autorecord_lease",
    "autorecord_scan",
    "active_rooms",
    "announce_settings",
    "append_comments",
    "audit_log",
    "ban",
    "bans",
    "broadcast",
    "broadcasts",
    "change_words",
    "comments_after",
    "commit",
    "delete_comment",
    "end_broadcast",
    "export_head",
    "export_page",
    "frames_after",
    "guest_session",
    "get_pin",
    "highlights",
    "hot_rooms",
    "live_broadcast",
    "online_counts",
    "ping",
    "read_events",
    "post_notice",
    "read_comments",
    "recent_comments",
    "recorded",
    "release",
    "renew",
    "room_info",
    "room_settings",
    "room_state",
    "roles",
    "set_highlight",
    "set_pin",
    "set_room_settings",
    "start_broadcast",
    "sync_rooms",
    "unban",
    "unleased",
    "unrecord",
    "words",
    "worker_gone",
    "worker_heartbeat",
    "write_stats",
    # the room staff list (store/moderation.py)
    "staff",
    "set_staff",
    # held for review, reports, notes, shield (store/review.py, issue 19)
    "held",
    "approve",
    "deny",
    "report",
    "purge",
    "names",
    "notes",
    "shield",
    # identity (store/identity.py)
    "ip_bans",
    "note_ips",
    "staff_nicks",
    "session_checks",
    # resume with an epoch (issue 21)
    "room_position",
    # notices to the gateways that hold a room (issue 25, store/notices.py)
    "wait_notices",
    "notices_hold",
)

# How a resume (since=) ended (danmaku_resumes_total; rules/resume.py).
RESUME_OUTCOMES = ("replayed", "live", "epoch", "gap", "ahead")
# Where in a connection's life an unexpected error ended it (its boundary caught it).
CONNECTION_STAGES = ("accept", "handshake", "session", "reader", "writer", "ingest")
# The supervised background loops of every role (danmaku/supervise.py).
LOOPS = (
    "presence",
    "frame_feed",
    "ingest",
    "read_poller",
    "tick",
    "discover",
    "renew",
    "online",
    "pinger",
    "webhooks",  # the webhook reader (issue 24)
    "webhook_send",  # a webhook URL's sender
    "autorecord",  # the automatic recorder (issue 24)
)
# Where a room's tick failed in its worker (that room only: released, retried after a
# backoff), and the worker loops whose per-room reads are counted.
ROOM_ERROR_STAGES = ("read", "merge", "commit")
ROOM_READ_LOOPS = ("tick", "online")
# What the identity rules refuse (issue 19): a session or handshake where guests are off,
# a guest's comment where guests only watch, an IP ban, a nick that mimics a staff one.
IDENTITY_REFUSALS = ("guests_off", "login_required", "ip_banned", "nick_taken")

# Latency buckets (seconds) sized for a 100 ms tick: fine below 250 ms, coarse above.
_LATENCY = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.35,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)
_REDIS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_ITEMS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)


class Tally:
    """A counter for a path that runs once per message: ``inc`` adds to a plain int (no
    lock: call it from one thread, the event loop's), and the registry reads it when
    scraped, as a Prometheus counter. prometheus_client's ``Counter.inc`` takes a lock
    and checks its labels each time (measured: 0.33 us an inc, against 0.04 us here)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name.removesuffix("_total")
        self._documentation = documentation
        self.value = 0
        registry.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation)
        family.add_metric([], self.value)
        yield family


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, with one lock round per bucket
    touched instead of two per value: for per-comment latencies, observed a batch at a
    time. Uses prometheus_client's ``_upper_bounds``, ``_buckets`` and ``_sum``, held to
    ``observe`` by a test (tests/unit/test_metrics_gc.py). ``histogram`` is a labelled
    child (or an unlabelled histogram)."""
    if not values:
        return
    bounds = histogram._upper_bounds  # ascending, the last +Inf
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value, as observe
    histogram._sum.inc(sum(values))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def _time_gc_pauses(histogram: Histogram) -> None:
    """Observe every collection's duration (``gc.callbacks``; process-wide, so only the
    process's own ``Metrics`` installs it)."""
    started = [0.0]
    by_gen = [histogram.labels(str(g)) for g in range(3)]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            by_gen[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)


class Metrics:
    """All metrics of one process, registered in ``self.registry``.

    ``process`` adds the standard process collector (CPU seconds, RSS, open fds) so
    dashboards can show CPU and memory per process; tests may leave it off.
    """

    def __init__(self, *, process: bool = True) -> None:
        # prometheus_client's switch is process-wide; every Metrics wants it off.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.gc_pause = Histogram(
            "danmaku_gc_pause_seconds",
            "Garbage collection pauses (the whole event loop stops), by generation",
            ["generation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        for generation in ("0", "1", "2"):
            self.gc_pause.labels(generation)
        self.gc_frozen = Gauge(
            "danmaku_gc_frozen_objects",
            "Objects moved out of the collector's reach (DANMAKU_GC_FREEZE), counted at"
            " start-up and when a gateway thaws and refreezes (not at each freeze of a"
            " growing crowd: counting walks every frozen object)",
            registry=r,
        )
        if process:
            _process.ProcessCollector(registry=r)
            _platform.PlatformCollector(registry=r)
            _gc.GCCollector(registry=r)
            _time_gc_pauses(self.gc_pause)

        # --- gateway: connections
        self.connections_open = Gauge(
            "danmaku_connections_open", "WebSocket viewers connected now", registry=r
        )
        self.connections_opened = Counter(
            "danmaku_connections_opened_total",
            "WebSocket viewers accepted",
            ["auth"],
            registry=r,
        )
        self.connections_closed = Counter(
            "danmaku_connections_closed_total",
            "WebSocket viewers gone, by reason",
            ["reason"],
            registry=r,
        )
        self.handshakes_rejected = Counter(
            "danmaku_handshakes_rejected_total",
            "Handshakes refused, by reason",
            ["reason"],
            registry=r,
        )
        self.rooms_local = Gauge(
            "danmaku_gateway_rooms", "Rooms with viewers on this gateway", registry=r
        )
        # --- gateway: comments in
        self.comments_received = Tally(
            "danmaku_comments_received_total", "Comment messages received", registry=r
        )
        self.comments_accepted = Counter(
            "danmaku_comments_accepted_total", "Comments appended to a room stream", registry=r
        )
        self.comments_rejected = Counter(
            "danmaku_comments_rejected_total",
            "Comments refused, by error code",
            ["code"],
            registry=r,
        )
        self.comments_duplicate_nonce = Counter(
            "danmaku_comments_resent_total",
            "Resends of an already stored comment (same user and nonce): acked, not stored",
            registry=r,
        )
        self.comments_shed = Counter(
            "danmaku_comments_shed_total",
            "Ordinary comments shed by the room ingest ceiling",
            registry=r,
        )
        self.ingest_batch = Histogram(
            "danmaku_ingest_batch_comments",
            "Comments per Redis ingest batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.ingest_queue = Gauge(
            "danmaku_ingest_queue_comments",
            "Comments waiting for the next ingest batch",
            registry=r,
        )
        # --- gateway: frames out
        self.frames_received = Counter(
            "danmaku_gateway_frames_total", "Frames the gateway received from Redis", registry=r
        )
        self.frame_writes = Counter(
            "danmaku_frame_writes_total", "Frames written to viewer sockets", registry=r
        )
        self.frame_writes_fast = Counter(
            "danmaku_frame_writes_fast_total",
            "Frames written by the fast path (prebuilt bytes, one non-blocking send)",
            registry=r,
        )
        self.frame_writes_partial = Counter(
            "danmaku_frame_writes_partial_total",
            "Fast-path sends the kernel took only part of (the rest queued, written first)",
            registry=r,
        )
        self.frame_runs = Counter(
            "danmaku_frame_runs_total",
            "Broadcasts of several frames of a room at once (the feed had fallen behind):"
            " each viewer in step got them with one send()",
            registry=r,
        )
        self.bytes_out = Counter(
            "danmaku_bytes_out_total", "Payload bytes written to viewer sockets", registry=r
        )
        self.viewer_frames_dropped = Counter(
            "danmaku_viewer_frames_dropped_total",
            "Frames dropped from a slow viewer's full queue (oldest first)",
            registry=r,
        )
        self.frames_replayed = Counter(
            "danmaku_frames_replayed_total", "Frames sent from history on resume", registry=r
        )
        self.resume_gaps = Counter(
            "danmaku_resume_gaps_total", "Resumes whose frames had left history", registry=r
        )
        # --- worker
        self.frames_built = Counter(
            "danmaku_frames_built_total", "Frames committed by broadcast workers", registry=r
        )
        self.frame_items = Histogram(
            "danmaku_frame_items", "Items per committed frame", buckets=_ITEMS, registry=r
        )
        self.items_dropped = Counter(
            "danmaku_items_dropped_total",
            "Comments left out of frames by sampling, by tier",
            ["tier"],
            registry=r,
        )
        self.items_folded = Counter(
            "danmaku_items_folded_total",
            "Duplicate comments folded into a counted item",
            registry=r,
        )
        self.commit_conflicts = Counter(
            "danmaku_frame_commit_conflicts_total",
            "Frame commits refused by the fencing script, by reason",
            ["reason"],
            registry=r,
        )
        self.tick_lag = Histogram(
            "danmaku_tick_lag_seconds",
            "How late a worker tick started",
            buckets=_LATENCY,
            registry=r,
        )
        self.tick_duration = Histogram(
            "danmaku_tick_duration_seconds",
            "Time to read, merge and commit one tick",
            buckets=_LATENCY,
            registry=r,
        )
        self.rooms_held = Gauge(
            "danmaku_worker_rooms", "Rooms whose lease this worker holds", registry=r
        )
        self.leases = Counter(
            "danmaku_leases_total",
            "Room lease events (acquired, lost, released, takeover)",
            ["event"],
            registry=r,
        )
        # --- latency stages
        self.latency = Histogram(
            "danmaku_latency_seconds",
            "Comment latency by stage: ingest (gateway receive -> stored in the room stream), "
            "merge (stored -> frame committed), deliver (frame committed -> frame received "
            "by a gateway), end_to_end (gateway receive -> frame received by a gateway), "
            "write (one frame's socket write on a gateway)",
            ["stage"],
            buckets=_LATENCY,
            registry=r,
        )
        # --- Redis
        self.redis_latency = Histogram(
            "danmaku_redis_seconds",
            "Redis round trips (thread hop included), by operation",
            ["op"],
            buckets=_REDIS,
            registry=r,
        )
        self.redis_errors = Counter(
            "danmaku_redis_errors_total", "Failed Redis operations", ["op"], registry=r
        )
        # --- web
        self.http_requests = Counter(
            "danmaku_http_requests_total",
            "HTTP API requests, by route and status class",
            ["route", "status"],
            registry=r,
        )
        self.sessions_issued = Counter(
            "danmaku_sessions_issued_total",
            "Guest tokens issued by POST /api/session",
            registry=r,
        )
        # --- error boundaries (issue 18)
        self.connection_errors = Counter(
            "danmaku_connection_errors_total",
            "Connections ended by an unexpected error, by where it happened (that "
            "connection only: close 1011 or HTTP 400)",
            ["stage"],
            registry=r,
        )
        self.loop_restarts = Counter(
            "danmaku_loop_restarts_total",
            "Background loops that failed and were restarted after a backoff",
            ["loop"],
            registry=r,
        )
        self.loop_failing = Gauge(
            "danmaku_loop_failing",
            "1 while a background loop is failing (until it has run 10 s again)",
            ["loop"],
            registry=r,
        )
        # --- worker boundaries and costs (issue 18)
        self.room_errors = Counter(
            "danmaku_room_errors_total",
            "Rooms whose tick failed in the worker, by stage (that room released and "
            "retried after a backoff; the other rooms go on)",
            ["stage"],
            registry=r,
        )
        self.comments_invalid = Counter(
            "danmaku_comments_invalid_total",
            "Stored comment payloads the worker skipped: not a comment object",
            registry=r,
        )
        self.room_reads = Counter(
            "danmaku_worker_room_reads_total",
            "Rooms read from Redis by a worker loop (tick: comments; online: viewers and "
            "settings); idle rooms cost no tick reads",
            ["loop"],
            registry=r,
        )
        # --- replay exports
        self.exports = Counter(
            "danmaku_exports_total",
            "Replay export requests, by format and result: streamed (complete), "
            "not_modified (304), limited (429), failed (Redis error or client gone)",
            ["format", "result"],
            registry=r,
        )
        self.exports_active = Gauge(
            "danmaku_exports_active", "Replay exports being streamed now", registry=r
        )
        # --- room staff lists
        self.role_changes = Counter(
            "danmaku_role_changes_total",
            "Open connections whose role in their room a staff-list change raised or "
            "lowered (each sent a role notice)",
            registry=r,
        )
        # --- smoothing: the display budget per second (issue 21)
        self.comments_waiting = Gauge(
            "danmaku_comments_waiting",
            "Ordinary comments waiting in this worker's room queues for the display budget "
            "(refreshed each second)",
            registry=r,
        )
        # --- liveness (issue 21)
        self.pings_sent = Counter(
            "danmaku_pings_sent_total",
            "WebSocket pings the gateway sent to connections silent for their interval",
            registry=r,
        )
        # --- held for review and reports (issue 19)
        self.comments_held = Counter(
            "danmaku_comments_held_total",
            "Comments the door held for review (acked to the sender as held, not shown)",
            registry=r,
        )
        self.review_decisions = Counter(
            "danmaku_review_decisions_total",
            "Held comments moderators decided on: approved (delivered once) or denied",
            ["decision"],
            registry=r,
        )
        self.reports = Counter(
            "danmaku_reports_total",
            "Viewer reports of comments: accepted, or limited (429, over the per-user rate)",
            ["result"],
            registry=r,
        )
        # --- identity (issue 19)
        self.jwks_fetches = Counter(
            "danmaku_jwks_fetches_total",
            "Fetches of the platform's JWKS (signing keys), by outcome: ok, error (the "
            "cached keys stay in use; tokens of unknown keys are refused until one succeeds)",
            ["outcome"],
            registry=r,
        )
        self.identity_refusals = Counter(
            "danmaku_identity_refusals_total",
            "Sessions, handshakes and comments refused by the identity rules, by reason: "
            "guests_off, login_required, ip_banned, nick_taken",
            ["reason"],
            registry=r,
        )
        # --- resume epochs and head counts (issue 21)
        self.resumes = Counter(
            "danmaku_resumes_total",
            "Connections that asked to resume (since=), by outcome: replayed (from "
            "history, no gap), live (nothing to replay), and fresh starts after a "
            "resume_failed notice: epoch (stale epoch: the room was reset), gap (frames "
            "had left history), ahead (since beyond the room's last frame)",
            ["outcome"],
            registry=r,
        )
        self.room_resets = Counter(
            "danmaku_room_resets_total",
            "Rooms whose history epoch changed under a gateway's open connections (each "
            "closed with 1013 to resume, and be told, on reconnect)",
            registry=r,
        )
        self.viewers_local = Gauge(
            "danmaku_viewers_local",
            "This gateway's viewers as counted for online, summed over its rooms: users "
            "(distinct per room) and anonymous connections; connections are "
            "danmaku_connections_open",
            ["kind"],
            registry=r,
        )
        # --- permessage-deflate: frames compressed once per gateway (issue 21)
        self.deflate_fanout = Counter(
            "danmaku_deflate_fanout_bytes_total",
            "Wire bytes of frames written to viewers that agreed to permessage-deflate: "
            "as plain frames would have been (stage=before) and as written (stage=after)",
            ["stage"],
            registry=r,
        )
        self.deflate_encodes = Counter(
            "danmaku_deflate_encodes_total",
            "Frames (density variants) this gateway compressed: once each, however many "
            "viewers get them",
            registry=r,
        )
        # --- platform integration (issue 24): server API publishes, webhooks
        self.published = Counter(
            "danmaku_published_total",
            "Messages the platform's backend published (server API), by kind and result: "
            "published, duplicate (a retried id, not shown again), refused (by the room's "
            "door: ban, limits), limited (the API key's rate, 429)",
            ["kind", "result"],
            registry=r,
        )
        self.webhook_events = Counter(
            "danmaku_webhook_events_total",
            "Webhook events per URL queue, by result: delivered, overflow (dropped oldest: "
            "the queue was full), failed (dropped after the last attempt)",
            ["result"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "danmaku_webhook_requests_total",
            "Webhook POSTs, by result: ok (2xx), failed (other status, timeout, refused)",
            ["result"],
            registry=r,
        )
        self.webhook_queued = Gauge(
            "danmaku_webhook_queued", "Webhook events waiting in this process's queues", registry=r
        )
        # --- room-affine routing (issue 25): the gateway registry and the web app's answers
        self.gateways_registered = Gauge(
            "danmaku_gateways_registered",
            "Gateways in the registry at this web process's last read, by state: serving "
            "(routed to), draining, unhealthy (a gateway loop failing); expired entries "
            "are not counted",
            ["state"],
            registry=r,
        )
        self.gateway_routes = Counter(
            "danmaku_gateway_routes_total",
            "Answers to 'where to connect for a room' (GET /api/rooms/{room}/gateway, POST "
            "/api/session), by outcome: routed (rendezvous over the registry), no_gateways "
            "(none live: the configured URLs), unavailable (the registry unreadable: the "
            "configured URLs)",
            ["outcome"],
            registry=r,
        )
        # issue 24 leftovers: automatic recording, webhook endpoints registered over the API
        self.auto_recordings = Counter(
            "danmaku_auto_recordings_total",
            "Broadcasts the automatic recorder started or ended (rooms with auto_record)",
            ["action"],
            registry=r,
        )
        self.webhook_endpoints = Gauge(
            "danmaku_webhook_endpoints",
            "Webhook receivers this process sends to (DANMAKU_WEBHOOK_URLS and registered ones)",
            registry=r,
        )
        # --- notices to the gateways that hold a room (issue 25)
        self.notices_sent = Counter(
            "danmaku_notices_sent_total",
            "Notices this process sent after a commit or a moderation event: one per room "
            "and gateway holding it (never one every gateway reads)",
            registry=r,
        )
        self.notices_received = Counter(
            "danmaku_notices_received_total",
            "Rooms named in this gateway's notice stream, by result: held (a local room, "
            "read at once), stale (a room it no longer holds; its registration was late "
            "to go)",
            ["result"],
            registry=r,
        )
        self.feed_swept = Counter(
            "danmaku_feed_swept_total",
            "Local rooms the gateway read without a notice after DANMAKU_FEED_SWEEP_S, by "
            "result: idle (nothing new) or missed (news found: a notice was lost or late)",
            ["result"],
            registry=r,
        )

        self._zero_known_labels()

    def _zero_known_labels(self) -> None:
        """Create every known label combination at 0, so rate() sees the first event and
        dashboards show 0 rather than "no data" before anything happened."""
        from danmaku.protocol import ERROR_CODES

        for code in ERROR_CODES:
            self.comments_rejected.labels(code)
        for auth in ("user", "anonymous"):
            self.connections_opened.labels(auth)
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)
        for reason in HANDSHAKE_REJECTIONS:
            self.handshakes_rejected.labels(reason)
        for tier in ("0", "1", "2", "3"):
            self.items_dropped.labels(tier)
        for reason in ("lease_lost", "seq_moved"):
            self.commit_conflicts.labels(reason)
        for event in ("acquired", "takeover", "lost", "released"):
            self.leases.labels(event)
        for stage in ("ingest", "merge", "deliver", "end_to_end", "write"):
            self.latency.labels(stage)
        for stage in CONNECTION_STAGES:
            self.connection_errors.labels(stage)
        for loop in LOOPS:
            self.loop_restarts.labels(loop)
            self.loop_failing.labels(loop).set(0)
        for state in ("serving", "draining", "unhealthy"):
            self.gateways_registered.labels(state)
        for outcome in ("routed", "no_gateways", "unavailable"):
            self.gateway_routes.labels(outcome)
        # Not ``redis_latency``: 13 series per operation, ~80 operations of which a process
        # runs a dozen; half of each scrape's lines were empty Redis histograms.
        for op in REDIS_OPS:
            self.redis_errors.labels(op)
        for stage in ROOM_ERROR_STAGES:
            self.room_errors.labels(stage)
        for loop in ROOM_READ_LOOPS:
            self.room_reads.labels(loop)
        for decision in ("approved", "denied"):
            self.review_decisions.labels(decision)
        for result in ("accepted", "limited"):
            self.reports.labels(result)
        for fmt in ("json", "xml", "ass"):
            for result in ("streamed", "not_modified", "limited", "failed"):
                self.exports.labels(fmt, result)
        for outcome in ("ok", "error"):
            self.jwks_fetches.labels(outcome)
        for reason in IDENTITY_REFUSALS:
            self.identity_refusals.labels(reason)
        for outcome in RESUME_OUTCOMES:
            self.resumes.labels(outcome)
        for kind in ("users", "anonymous"):
            self.viewers_local.labels(kind)
        for stage in ("before", "after"):
            self.deflate_fanout.labels(stage)
        for kind in ("paid", "gift", "system", "comment"):
            for result in ("published", "duplicate", "refused", "limited"):
                self.published.labels(kind, result)
        for result in ("delivered", "overflow", "failed"):
            self.webhook_events.labels(result)
        for result in ("ok", "failed"):
            self.webhook_requests.labels(result)
        for action in ("start", "end"):
            self.auto_recordings.labels(action)
        for result in ("held", "stale"):
            self.notices_received.labels(result)
        for result in ("idle", "missed"):
            self.feed_swept.labels(result)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
