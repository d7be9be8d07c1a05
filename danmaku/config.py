"""Settings: one frozen dataclass, filled from flags, then ``DANMAKU_*`` env, then defaults.

Every limit of the system is a field here with a documented default; ``--help`` of each
command lists them (generated from the field metadata, so docs and code cannot drift).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def _opt(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    redis_url: str = _opt(
        "",
        "REDIS_URL",
        "Redis URL (redis://, rediss://) or Redis Cluster seeds "
        "(redis+cluster://host:port,host:port); empty: `up` starts an embedded redis-server",
    )
    secret: str = _opt(
        "",
        "DANMAKU_SECRET",
        "HS256 token secret, 32 bytes or more; empty: `up` keeps a dev secret in data_dir",
    )
    data_dir: str = _opt(".danmaku", "DANMAKU_DATA_DIR", "state of `up`: embedded Redis, secret")
    tick_ms: int = _opt(100, "DANMAKU_TICK_MS", "frame tick of the broadcast worker (ms)")
    web_host: str = _opt("127.0.0.1", "DANMAKU_WEB_HOST", "web app bind address")
    web_port: int = _opt(8080, "DANMAKU_WEB_PORT", "web app port (0 = pick a free one)")
    ws_host: str = _opt("127.0.0.1", "DANMAKU_WS_HOST", "WebSocket gateway bind address")
    ws_port: int = _opt(8081, "DANMAKU_WS_PORT", "WebSocket gateway port (0 = pick a free one)")
    public_ws_url: str = _opt(
        "",
        "DANMAKU_PUBLIC_WS_URL",
        "ws:// URL players connect to, or several comma-separated (players pick one at random "
        "and move to the next after a failure); empty: derived from ws bind",
    )
    metrics_port: int = _opt(
        -1, "DANMAKU_METRICS_PORT", "/metrics port of a gateway/worker process (-1 = off, 0 = any)"
    )
    max_message_bytes: int = _opt(
        4096, "DANMAKU_MAX_MESSAGE_BYTES", "largest client message; larger closes with 1009"
    )
    max_text_chars: int = _opt(100, "DANMAKU_MAX_TEXT_CHARS", "comment length limit (characters)")
    max_text_bytes: int = _opt(300, "DANMAKU_MAX_TEXT_BYTES", "comment length limit (UTF-8 bytes)")
    max_nick_chars: int = _opt(24, "DANMAKU_MAX_NICK_CHARS", "nickname length limit")
    viewer_queue_frames: int = _opt(
        64, "DANMAKU_VIEWER_QUEUE_FRAMES", "frames queued per viewer before oldest are dropped"
    )
    viewer_queue_control: int = _opt(
        256, "DANMAKU_VIEWER_QUEUE_CONTROL", "acks/errors queued per viewer before it is closed"
    )
    slow_viewer_timeout_s: float = _opt(
        10.0, "DANMAKU_SLOW_VIEWER_TIMEOUT_S", "a viewer stuck this long is closed with 4000"
    )
    allowed_origins: str = _opt(
        "",
        "DANMAKU_ALLOWED_ORIGINS",
        "browser Origins the gateway accepts, comma-separated ('*' = any); empty: the web "
        "app's own origin (clients that send no Origin, i.e. not browsers, always pass)",
    )
    public_web_url: str = _opt(
        "", "DANMAKU_PUBLIC_WEB_URL", "http(s) URL of the web app as browsers see it (origin)"
    )
    max_msgs_per_s: float = _opt(
        20.0, "DANMAKU_MAX_MSGS_PER_S", "client messages per second per connection (any type)"
    )
    max_msgs_burst: float = _opt(
        60.0, "DANMAKU_MAX_MSGS_BURST", "burst of client messages; beyond: close 1008 'flood'"
    )
    max_http_body_bytes: int = _opt(
        65536, "DANMAKU_MAX_HTTP_BODY_BYTES", "largest HTTP request body; beyond: 413"
    )
    tls_cert: str = _opt("", "DANMAKU_TLS_CERT", "PEM certificate: the gateway serves wss://")
    tls_key: str = _opt("", "DANMAKU_TLS_KEY", "PEM private key for --tls-cert")
    max_accepts_per_s: float = _opt(
        0.0,
        "DANMAKU_MAX_ACCEPTS_PER_S",
        "connections accepted per second (a storm waits in the listen backlog); 0 = unpaced",
    )
    max_handshakes: int = _opt(
        64, "DANMAKU_MAX_HANDSHAKES", "handshakes a gateway completes at once (others wait)"
    )
    connect_timeout_s: float = _opt(
        5.0, "DANMAKU_CONNECT_TIMEOUT_S", "WebSocket handshake must finish within this"
    )
    max_conns_per_ip: int = _opt(
        256, "DANMAKU_MAX_CONNS_PER_IP", "concurrent WebSocket connections per IP (0 = unlimited)"
    )
    max_sessions_per_ip_per_min: int = _opt(
        600, "DANMAKU_MAX_SESSIONS_PER_IP_PER_MIN", "new connections per IP per minute (0 = off)"
    )
    guest_sessions_per_ip_per_min: int = _opt(
        10,
        "DANMAKU_GUEST_SESSIONS_PER_IP_PER_MIN",
        "guest tokens POST /api/session gives one client address per minute, over all web "
        "processes (0 = unlimited, for load tests from one address)",
    )
    max_connections: int = _opt(
        0,
        "DANMAKU_MAX_CONNECTIONS",
        "open WebSocket connections per gateway, checked at accept (0 = the process's "
        "open-file limit less 256)",
    )
    frames_history: int = _opt(
        3000, "DANMAKU_FRAMES_HISTORY", "frames kept per room for resume (since=SEQ)"
    )
    stream_maxlen: int = _opt(
        100_000, "DANMAKU_STREAM_MAXLEN", "comments kept per room stream (approximate trim)"
    )
    nonce_ttl_s: int = _opt(300, "DANMAKU_NONCE_TTL_S", "resend window: same nonce = same id")
    lease_ms: int = _opt(
        2000, "DANMAKU_LEASE_MS", "room lease of a worker, renewed every third of it"
    )
    room_idle_s: float = _opt(
        30.0, "DANMAKU_ROOM_IDLE_S", "a worker releases a room with no viewers/comments this long"
    )
    display_budget: float = _opt(
        40.0, "DANMAKU_DISPLAY_BUDGET", "items per second a room's frames carry (room setting)"
    )
    ingest_ceiling: float = _opt(
        2000.0,
        "DANMAKU_INGEST_CEILING",
        "comments/s per room beyond which gateways shed ordinary ones (room setting, 0 = off)",
    )
    rate_per_s: float = _opt(
        1.0, "DANMAKU_RATE_PER_S", "comments per second per user and room (token bucket)"
    )
    rate_burst: float = _opt(3.0, "DANMAKU_RATE_BURST", "token bucket burst per user and room")
    duplicate_window_s: float = _opt(
        30.0, "DANMAKU_DUPLICATE_WINDOW_S", "same user, same text within this is 'duplicate'"
    )
    max_items_per_tick: int = _opt(
        10_000,
        "DANMAKU_MAX_ITEMS_PER_TICK",
        "comment stream entries (up to 16 comments each) a worker reads per room per tick",
    )
    ingest_queue: int = _opt(
        10_000,
        "DANMAKU_INGEST_QUEUE",
        "comments waiting for Redis per gateway; beyond: 'overloaded'",
    )
    ingest_linger_ms: float = _opt(
        2.0,
        "DANMAKU_INGEST_LINGER_MS",
        "how long a gateway waits for more comments before a Redis round trip (0 = none)",
    )
    session_ttl_s: int = _opt(
        86_400, "DANMAKU_SESSION_TTL_S", "lifetime of a guest token from POST /api/session"
    )
    fast_path: int = _opt(
        1,
        "DANMAKU_FAST_PATH",
        "1: write prebuilt frame bytes straight to idle sockets; 0: per-viewer send (ablation)",
    )
    replay_retention_days: float = _opt(
        30.0, "DANMAKU_REPLAY_RETENTION_DAYS", "how long a broadcast's recording is kept"
    )
    instance_id: str = _opt(
        "",
        "DANMAKU_INSTANCE_ID",
        "id of this gateway/worker in Redis (leases, presence); empty: random",
    )
    gc_freeze: int = _opt(
        1, "DANMAKU_GC_FREEZE", "1: after start-up, exempt what exists from later full GC runs"
    )
    drain_s: float = _opt(2.0, "DANMAKU_DRAIN_S", "graceful shutdown: time to flush and close")
    # --- behind a reverse proxy (danmaku.rules.clientip)
    trusted_proxies: str = _opt(
        "",
        "DANMAKU_TRUSTED_PROXIES",
        "comma-separated CIDRs/addresses of reverse proxies whose forwarding header names "
        "the client (per-IP limits, logs); empty: the socket's peer is the client",
    )
    proxy_header: str = _opt(
        "x-forwarded-for",
        "DANMAKU_PROXY_HEADER",
        "the header trusted proxies write: x-forwarded-for or forwarded (RFC 7239)",
    )

    # --- staff limits and the priority backlog (issue 18)
    staff_rate_per_s: float = _opt(
        10.0,
        "DANMAKU_STAFF_RATE_PER_S",
        "comments per second per staff member (streamer, moderator, admin) and room, a "
        "bucket of its own (0 = unlimited)",
    )
    staff_rate_burst: float = _opt(
        20.0, "DANMAKU_STAFF_RATE_BURST", "staff token bucket burst per staff member and room"
    )
    priority_backlog_s: float = _opt(
        2.0,
        "DANMAKU_PRIORITY_BACKLOG_S",
        "priority items (staff, highlighted) waiting for a frame, in seconds of the room's "
        "display budget; beyond it the oldest are dropped and counted in frames' dropped",
    )

    # --- smoothing: the display budget per second, not per tick (issue 21)
    smooth_window_s: float = _opt(
        1.0,
        "DANMAKU_SMOOTH_WINDOW_S",
        "the display budget holds over any window of this many seconds; comments beyond a "
        "tick's share wait (at most this many seconds of budget per room) instead of being "
        "cut (room setting)",
    )
    max_wait_s: float = _opt(
        1.5,
        "DANMAKU_MAX_WAIT_S",
        "longest an ordinary comment waits for a frame; what would be older is sampled out "
        "and counted in frames' dropped (room setting)",
    )

    # --- replay exports
    max_exports: int = _opt(
        4,
        "DANMAKU_MAX_EXPORTS",
        "replay exports streamed at once per web process; beyond: 429 (0 = unlimited)",
    )
    max_exports_per_ip: int = _opt(
        1,
        "DANMAKU_MAX_EXPORTS_PER_IP",
        "replay exports streamed at once per client address; beyond: 429 (0 = unlimited)",
    )
    # --- room staff lists
    staff_list_max: int = _opt(
        1000,
        "DANMAKU_STAFF_LIST_MAX",
        "entries (grants and revocations) on one room's staff list; beyond: 409 (0 = unlimited)",
    )
    # --- liveness (issue 21): pings to silent connections, dead peers closed
    ping_min_s: float = _opt(
        15.0,
        "DANMAKU_PING_MIN_S",
        "a connection silent this long gets a WebSocket ping (first and after a miss); "
        "two unanswered pings in a row close it (1001); 0 = no pings",
    )
    ping_max_s: float = _opt(
        60.0,
        "DANMAKU_PING_MAX_S",
        "the longest ping interval: it grows x1.5 per answered ping up to this",
    )
    # --- held for review, reports, shield mode (issue 19; store/review.py)
    first_chat_minutes: float = _opt(
        10.0,
        "DANMAKU_FIRST_CHAT_MINUTES",
        "with the room's review setting `suspicious`, comments of a user whose first comment "
        "in the room is less than this many minutes old are held (room setting "
        "first_chat_min; 0 = first-time chatters are not held)",
    )
    first_chat_keep_days: int = _opt(
        30,
        "DANMAKU_FIRST_CHAT_KEEP_DAYS",
        "a room forgets when its chatters first spoke after this many days without a new one",
    )
    review_queue_max: int = _opt(
        500,
        "DANMAKU_REVIEW_QUEUE_MAX",
        "comments held for review per room; beyond, new ones are refused (review_full)",
    )
    review_ttl_s: int = _opt(
        3600,
        "DANMAKU_REVIEW_TTL_S",
        "a held comment no one approved or denied within this many seconds is dropped",
    )
    reports_per_min: int = _opt(
        5,
        "DANMAKU_REPORTS_PER_MIN",
        "reports one user may file per room per minute; beyond: 429 (0 = unlimited)",
    )
    reports_max: int = _opt(
        1000,
        "DANMAKU_REPORTS_MAX",
        "reported comments kept per room (beyond, the least recently reported go)",
    )
    shield_slow_mode_s: float = _opt(
        10.0,
        "DANMAKU_SHIELD_SLOW_MODE_S",
        "slow mode (s) shield mode sets (the room's own, if longer, is kept)",
    )
    shield_first_chat_minutes: float = _opt(
        60.0,
        "DANMAKU_SHIELD_FIRST_CHAT_MINUTES",
        "first-time chatters (minutes) shield mode holds for review (a longer room value is kept)",
    )
    # --- identity (issue 19): platform login, guests, IP bans, nicks
    jwt_public_key: str = _opt(
        "",
        "DANMAKU_JWT_PUBLIC_KEY",
        "the platform's PEM public key (RSA: RS256, EC P-256: ES256), a path or the PEM "
        "text: user tokens it signs are accepted besides HS256 ones",
    )
    jwks_url: str = _opt(
        "",
        "DANMAKU_JWKS_URL",
        "the platform's JWKS URL (http(s)): RS256/ES256 tokens are checked against its keys, "
        "cached and fetched again for an unknown key id (kid)",
    )
    jwt_issuer: str = _opt(
        "", "DANMAKU_JWT_ISSUER", "required iss of platform (RS256/ES256) tokens; empty: none"
    )
    jwt_audience: str = _opt(
        "",
        "DANMAKU_JWT_AUDIENCE",
        "required aud of platform (RS256/ES256) tokens; empty: tokens naming one are refused",
    )
    jwks_timeout_s: float = _opt(
        3.0, "DANMAKU_JWKS_TIMEOUT_S", "a JWKS fetch gives up after this (a handshake waits)"
    )
    jwks_refetch_s: float = _opt(
        10.0,
        "DANMAKU_JWKS_REFETCH_S",
        "at most one JWKS fetch per this many seconds (unknown kids, failures)",
    )
    jwks_max_age_s: float = _opt(
        600.0,
        "DANMAKU_JWKS_MAX_AGE_S",
        "cached JWKS keys older than this are fetched again (kept if the fetch fails)",
    )
    guests: str = _opt(
        "comment",
        "DANMAKU_GUESTS",
        "what guests (POST /api/session tokens) may do in a room that has not set it: "
        "comment, watch (only logged-in users comment) or off (room setting guests)",
    )
    # --- online head counts (issue 21): people, not connections
    online_exact_max: int = _opt(
        1000,
        "DANMAKU_ONLINE_EXACT_MAX",
        "a gateway lists a room's users exactly while it has at most this many distinct "
        "ones there; beyond, it adds them to the room's HyperLogLog (error about 0.8 percent, "
        "12 KB per room and 5 s bucket)",
    )
    deflate: int = _opt(
        1,
        "DANMAKU_DEFLATE",
        "1: agree to permessage-deflate when a client offers it (frames compressed once "
        "per gateway, the same bytes to every such viewer); 0: never (plain frames)",
    )
    deflate_min_bytes: int = _opt(
        128,
        "DANMAKU_DEFLATE_MIN_BYTES",
        "frames shorter than this (JSON bytes) go uncompressed even to deflate viewers",
    )
    # --- every core of a host (issue 22): gateway processes sharing one port
    processes: int = _opt(
        1,
        "DANMAKU_PROCESSES",
        "gateway processes on this host (`gateway`, and the gateway role of `up`), sharing "
        "the WebSocket port (SO_REUSEPORT) under a parent that restarts them; 0 = one per core",
    )
    reuse_port: int = _opt(
        0,
        "DANMAKU_REUSE_PORT",
        "1: open the WebSocket port with SO_REUSEPORT so several gateways share it (set by "
        "--processes for its children)",
    )
    # ---- player video (issue 20) ----
    stream_url: str = _opt(
        "",
        "DANMAKU_STREAM_URL",
        "the video players show in a room whose streamer set no stream_url (http(s): an "
        "HLS playlist .m3u8, MP4 or WebM); empty: the test pattern",
    )
    # --- platform integration (issue 24): server API, paid tiers, webhooks
    api_keys: str = _opt(
        "",
        "DANMAKU_API_KEYS",
        "server API keys (the platform's backend): comma-separated, or @FILE with one a line; "
        "each 16+ characters; empty: only `danmaku token --role server` tokens",
    )
    publish_rate_per_s: float = _opt(
        200.0,
        "DANMAKU_PUBLISH_RATE_PER_S",
        "messages one API key (or server token) may publish per second over all web "
        "processes; beyond: 429 with Retry-After (0 = unlimited)",
    )
    publish_batch_max: int = _opt(
        500, "DANMAKU_PUBLISH_BATCH_MAX", "messages in one batch publish request; beyond: 422"
    )
    publish_id_ttl_s: int = _opt(
        86_400,
        "DANMAKU_PUBLISH_ID_TTL_S",
        "how long a published message's id is remembered: a retry within it is not shown twice",
    )
    paid_tiers: str = _opt(
        "",
        "DANMAKU_PAID_TIERS",
        "paid tiers, a JSON list of {name, min, color, pin_s} or @FILE; "
        "empty: the built-in Super Chat-like table (docs/protocol.md)",
    )
    webhook_urls: str = _opt(
        "",
        "DANMAKU_WEBHOOK_URLS",
        "http(s) URLs that receive room events as signed JSON, comma-separated; "
        "empty: no webhooks (the web process delivers them)",
    )
    webhook_secret: str = _opt(
        "",
        "DANMAKU_WEBHOOK_SECRET",
        "HMAC-SHA256 key of the X-Danmaku-Signature header (required with webhook URLs)",
    )
    webhook_queue: int = _opt(
        10_000,
        "DANMAKU_WEBHOOK_QUEUE",
        "events queued per webhook URL; beyond, the oldest are dropped (counted)",
    )
    webhook_batch: int = _opt(100, "DANMAKU_WEBHOOK_BATCH", "events per webhook request, at most")
    webhook_timeout_s: float = _opt(
        5.0, "DANMAKU_WEBHOOK_TIMEOUT_S", "a webhook request slower than this failed (retried)"
    )
    webhook_max_attempts: int = _opt(
        8,
        "DANMAKU_WEBHOOK_MAX_ATTEMPTS",
        "tries of one webhook batch (backoff 0.5 s doubling up to 60 s) before it is dropped "
        "(counted)",
    )
    webhook_poll_ms: int = _opt(
        500, "DANMAKU_WEBHOOK_POLL_MS", "how often the webhook reader reads new room events"
    )
    # --- room-affine routing (issue 25): the gateway registry and rendezvous hashing
    gateway_public_url: str = _opt(
        "",
        "DANMAKU_GATEWAY_PUBLIC_URL",
        "ws:// URL of THIS gateway as clients reach it, announced in the gateway registry "
        "(GET /api/rooms/{room}/gateway); empty: derived from the bound host and port",
    )
    gateway_registry_ttl_s: float = _opt(
        10.0,
        "DANMAKU_GATEWAY_REGISTRY_TTL_S",
        "a gateway's registry entry lives this long; it is refreshed every third of it, so "
        "a killed gateway stops being routed to within this time",
    )
    room_share: int = _opt(
        2000,
        "DANMAKU_ROOM_SHARE",
        "viewers of one room per gateway before the room spreads to the next gateway of "
        "its rendezvous order (a room of V viewers is routed to ceil((V+1)/share) gateways)",
    )
    gateway_load_factor: float = _opt(
        1.25,
        "DANMAKU_GATEWAY_LOAD_FACTOR",
        "a gateway holding more than this times the mean connections (plus one room_share) "
        "is passed over for rooms it does not hold yet (bounded-load hashing); 0 = off",
    )
    # --- issue 24 leftovers: webhook admin API, auto-record, replay offset
    webhook_endpoints_max: int = _opt(
        20,
        "DANMAKU_WEBHOOK_ENDPOINTS_MAX",
        "webhook endpoints one may register through POST /api/webhooks; beyond: 409",
    )
    auto_record: int = _opt(
        0,
        "DANMAKU_AUTO_RECORD",
        "1: rooms that set no auto_record record a broadcast whenever they are live "
        "(viewers or comments)",
    )
    auto_record_idle_s: int = _opt(
        300,
        "DANMAKU_AUTO_RECORD_IDLE_S",
        "an automatic recording ends after the room has been this long without viewers or "
        "comments (1-3000)",
    )
    auto_record_poll_ms: int = _opt(
        2000, "DANMAKU_AUTO_RECORD_POLL_MS", "how often rooms are checked for automatic recording"
    )
    replay_offset_s: float = _opt(
        0.0,
        "DANMAKU_REPLAY_OFFSET_S",
        "viewers' video delay (e.g. HLS latency) for rooms that set no replay_offset_s: "
        "replays show comments this much earlier, aligned with the recorded video",
    )
    # --- notices to the gateways that hold a room, no deployment-wide key (issue 25)
    notice_holder_ttl_s: float = _opt(
        15.0,
        "DANMAKU_NOTICE_HOLDER_TTL_S",
        "a gateway's registration as a holder of a room (and its notice stream) expires "
        "this long after its last refresh (every third of it): how long a dead gateway is "
        "still sent notices",
    )
    notice_holders_cache_ms: int = _opt(
        1000,
        "DANMAKU_NOTICE_HOLDERS_CACHE_MS",
        "committers (workers, moderation) reuse a room's holders this long before reading "
        "them again (0: every commit); a gateway polls a room it just took on every tick "
        "for as long",
    )
    feed_sweep_s: float = _opt(
        5.0,
        "DANMAKU_FEED_SWEEP_S",
        "a gateway reads a local room that got no notice for this long anyway (a lost "
        "notice delays a frame at most this much)",
    )

    def __post_init__(self) -> None:
        # A bad proxy setting is an operator's mistake: refuse it at start-up (one line).
        from danmaku.rules.clientip import HEADERS, parse_trusted

        try:
            parse_trusted(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"DANMAKU_TRUSTED_PROXIES: {exc}") from exc
        if self.proxy_header.lower() not in HEADERS:
            raise ValueError(f"DANMAKU_PROXY_HEADER must be one of {', '.join(HEADERS)}")
        if self.ping_min_s < 0 or self.ping_max_s < 0:
            raise ValueError("DANMAKU_PING_MIN_S and DANMAKU_PING_MAX_S must be >= 0")
        if self.deflate not in (0, 1) or self.deflate_min_bytes < 0:
            raise ValueError("DANMAKU_DEFLATE must be 0 or 1, DANMAKU_DEFLATE_MIN_BYTES >= 0")
        # --- platform integration (issue 24): refused at start-up, one line
        from danmaku.rules import tiers

        tiers.load(self.paid_tiers)
        tiers.api_keys(self.api_keys)
        if self.webhook_urls and not self.webhook_secret:
            raise ValueError("DANMAKU_WEBHOOK_URLS needs DANMAKU_WEBHOOK_SECRET")
        for url in (u.strip() for u in self.webhook_urls.split(",") if u.strip()):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"DANMAKU_WEBHOOK_URLS: {url!r} is not an http(s) URL")
        # --- room-affine routing (issue 25)
        if self.gateway_public_url and not self.gateway_public_url.startswith(("ws://", "wss://")):
            raise ValueError("DANMAKU_GATEWAY_PUBLIC_URL must be a ws:// or wss:// URL")
        if self.gateway_registry_ttl_s < 1 or self.room_share < 1 or self.gateway_load_factor < 0:
            raise ValueError(
                "DANMAKU_GATEWAY_REGISTRY_TTL_S must be >= 1, DANMAKU_ROOM_SHARE >= 1 and "
                "DANMAKU_GATEWAY_LOAD_FACTOR >= 0"
            )
        if self.webhook_endpoints_max < 0:
            raise ValueError("DANMAKU_WEBHOOK_ENDPOINTS_MAX must be >= 0")
        if self.auto_record not in (0, 1):
            raise ValueError("DANMAKU_AUTO_RECORD must be 0 or 1")
        if not 1 <= self.auto_record_idle_s <= 3000 or self.auto_record_poll_ms <= 0:
            raise ValueError(
                "DANMAKU_AUTO_RECORD_IDLE_S must be in 1..3000, DANMAKU_AUTO_RECORD_POLL_MS > 0"
            )
        if not 0 <= self.replay_offset_s <= 120:
            raise ValueError("DANMAKU_REPLAY_OFFSET_S must be in 0..120")
        # --- notices (issue 25)
        if self.notice_holder_ttl_s <= 0 or self.feed_sweep_s <= 0:
            raise ValueError("DANMAKU_NOTICE_HOLDER_TTL_S and DANMAKU_FEED_SWEEP_S must be > 0")
        if self.notice_holders_cache_ms < 0:
            raise ValueError("DANMAKU_NOTICE_HOLDERS_CACHE_MS must be >= 0")

    @property
    def tick_s(self) -> float:
        return self.tick_ms / 1000.0

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# The defaults, for constructors of pure classes and the store that take a limit as a
# keyword: they default to this, so each default is written once, in ``Settings``.
DEFAULTS = Settings()


def add_arguments(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """Add one ``--flag`` per setting (default ``None`` so env and defaults still apply)."""
    for f in dataclasses.fields(Settings):
        if only is not None and f.name not in only:
            continue
        kind = {int: int, float: float}.get(type(f.default), str)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=None,
            metavar=f.metadata["env"],
            help=f"{f.metadata['help']} (default: {f.default!r})",
        )


def from_sources(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Resolve settings: flag if given, else environment variable, else default.

    Raises ``ValueError`` naming the variable when an environment value does not parse.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        flag = getattr(args, f.name, None) if args is not None else None
        if flag is not None:
            values[f.name] = flag
            continue
        name = f.metadata["env"]
        raw = env.get(name)
        if raw is None and name == "REDIS_URL":
            raw = env.get("DANMAKU_REDIS_URL")
        if raw is None or raw == "":
            continue
        try:
            kind: Any = type(f.default)
            values[f.name] = kind(raw)
        except ValueError as exc:
            raise ValueError(f"{name}={raw!r}: expected {type(f.default).__name__}") from exc
    return Settings(**values)
