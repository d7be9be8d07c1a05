"""``Store``: every Redis command of danmaku, as components of one container.

``Store`` builds the ``StoreCore`` (the clients and the thread bridge, ``core.py``) and
one component per concern, each owning its keys' commands and its Lua scripts:

| attribute | class | who uses it |
| --- | --- | --- |
| ``intake`` | ``intake.Intake`` | gateway (as ``interfaces.IngestStore``): the door |
| ``feed`` | ``feed.Feed`` | gateway (as ``interfaces.FeedStore``): frames, presence |
| ``frames`` | ``frames.Frames`` | worker (as ``interfaces.FrameStore``): leases, commits |
| ``rooms`` | ``rooms.Rooms`` | web: room settings and live figures |
| ``moderation`` | ``moderation.Moderation`` | web: bans, deletes, words, pins, staff |
| ``review`` | ``review.Review`` | web: review queue, reports, notes, shield |
| ``identity`` | ``identity.Identity`` | web: IP bans, guest sessions |
| ``replay`` | ``replay.Replay`` | web, cli: broadcasts, recordings, exports |
| ``platform`` | ``platform.Platform`` | web (server API), webhooks |
| ``notices`` | ``notices.Notices`` | gateway (its notice stream, the rooms it holds); committers |
| ``gateways`` | ``gateways.Gateways`` | gateway (announces itself), web (room-affine routing) |
| ``room_tiers`` | ``room_tiers.RoomTiers`` | web: a room's own paid tier table |
| ``webhook_endpoints`` | ``webhook_endpoints.WebhookEndpoints`` | web: registered webhooks |
| ``autorecord`` | ``autorecord.AutoRecordOps`` | web: the automatic recorder's lease and rooms |

A component that needs another is handed it (``Moderation`` takes ``Replay``: a delete
leaves the recordings; ``Review`` takes ``Moderation``; ``Feed`` reads the staff list,
words and identity state through theirs; every committer of news (``Frames``,
``Moderation``, ``Replay``, ``Platform``) and ``Feed`` share one ``Notices``).
"""

from __future__ import annotations

from danmaku.config import DEFAULTS
from danmaku.metrics import Metrics
from danmaku.store.autorecord import AutoRecordOps
from danmaku.store.core import StoreCore
from danmaku.store.feed import Feed
from danmaku.store.frames import Frames
from danmaku.store.gateways import Gateways
from danmaku.store.identity import Identity
from danmaku.store.intake import Intake
from danmaku.store.moderation import Moderation
from danmaku.store.notices import Notices
from danmaku.store.platform import Platform
from danmaku.store.replay import Replay
from danmaku.store.review import Review
from danmaku.store.room_tiers import RoomTiers
from danmaku.store.rooms import Rooms
from danmaku.store.webhook_endpoints import WebhookEndpoints


class Store:
    """One Redis or Redis Cluster (``redis+cluster://`` URL) and the components that
    speak to it. Thread-safe; share one per process. Close with ``close()``
    (idempotent) when the process is done with Redis."""

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        frames_history: int = DEFAULTS.frames_history,
        stream_maxlen: int = DEFAULTS.stream_maxlen,
        nonce_ttl_s: int = DEFAULTS.nonce_ttl_s,
        max_threads: int = 16,
        replay_retention_s: int = 30 * 86400,
        notice_holders_cache_ms: int = DEFAULTS.notice_holders_cache_ms,
    ) -> None:
        self.url = url
        self.core = core = StoreCore(url, metrics, max_threads=max_threads)
        self.cluster = core.cluster
        self.notices = Notices(core, holders_cache_ms=notice_holders_cache_ms)
        self.intake = Intake(core, stream_maxlen=stream_maxlen, nonce_ttl_s=nonce_ttl_s)
        self.frames = Frames(core, frames_history, self.notices)
        self.replay = Replay(core, replay_retention_s, self.notices)
        self.moderation = Moderation(core, self.replay, self.notices)
        self.review = Review(core, self.moderation, stream_maxlen)
        self.identity = Identity(core)
        self.feed = Feed(core, self.moderation, self.review, self.identity, self.notices)
        self.rooms = Rooms(core, stream_maxlen)
        self.platform = Platform(core, stream_maxlen, self.notices)
        self.gateways = Gateways(core)  # the gateway registry (room-affine routing)
        self.room_tiers = RoomTiers(core)  # a room's own paid tiers
        self.webhook_endpoints = WebhookEndpoints(core)  # webhooks registered over the API
        self.autorecord = AutoRecordOps(core)  # the automatic recorder

    async def ping(self) -> bool:
        """``StoreCore.ping``: Redis (every master of a cluster) answers."""
        return await self.core.ping()

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """``StoreCore.wait_ready``: wait until Redis answers, else ``StoreError``."""
        await self.core.wait_ready(timeout_s)

    def close(self) -> None:
        """Drop all connections. Idempotent."""
        self.core.close()
