"""The one module that owns Redis: key names, Lua scripts and the thread bridge.

Nothing outside ``danmaku.store`` imports ``redis``.
"""

from danmaku.store.records import (
    CommittedFrame,
    ControlEvent,
    FrameCommit,
    Ingest,
    IngestLimits,
    Lease,
    Outcome,
    RoomLive,
    RoomState,
    StoredComment,
    StoreError,
    door_key,
)
from danmaku.store.redis_store import Store

__all__ = [
    "CommittedFrame",
    "ControlEvent",
    "FrameCommit",
    "Ingest",
    "IngestLimits",
    "Lease",
    "Outcome",
    "RoomLive",
    "RoomState",
    "Store",
    "StoreError",
    "StoredComment",
    "door_key",
]
