"""What each role may ask of the store: one narrow interface per role.

``Store`` (``redis_store.py``) is a container of components, and a component
implements each: ``store.intake`` (``Intake``) is an ``IngestStore``, ``store.feed``
(``Feed``) a ``FeedStore``, ``store.frames`` (``Frames``) a ``FrameStore``. A role is
handed its component typed as its interface, so the type checker (``make lint``)
refuses a gateway that reaches for the worker's leases or a moderation write, and a
reader sees in one place everything a role does with Redis.
``tests/unit/test_imports.py`` holds the roles to this: gateway and worker code name
these interfaces, never ``Store`` or a component's class.

- ``IngestStore``: the room's door (gateway intake).
- ``FeedStore``: what a gateway reads to serve viewers (frames, moderation events, the
  notices of its own stream and the rooms it holds (``NoticeHolder``),
  presence, the room's staff list and staff nicks, blocked and review words, IP bans)
  and what it records (the roles, staff nicks and client addresses it has seen).
- ``FrameStore``: the broadcast worker (leases, comments in, frames out, figures).
- ``GatewayStore``: what a gateway process is handed, its two interfaces as
  ``intake`` and ``feed`` (``Store`` is one).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence, Set
from typing import Any, Protocol

from danmaku.rules.headcount import LocalViewers
from danmaku.rules.ipbans import IpBan
from danmaku.store.gateways import Gateways
from danmaku.store.records import (
    CommitResult,
    CommittedFrame,
    ControlEvent,
    FrameCommit,
    Ingest,
    IngestLimits,
    Lease,
    Outcome,
    RoomLive,
    RoomsPage,
    RoomState,
    TickRead,
)

__all__ = ["FeedStore", "FrameStore", "GatewayStore", "IngestStore", "NoticeHolder"]


class IngestStore(Protocol):
    async def append_comments(
        self,
        batch: Mapping[str, Sequence[Ingest]],
        limits: IngestLimits,
        *,
        clock_ms: int | None = None,
    ) -> dict[str, list[Outcome]]: ...


class NoticeHolder(Protocol):
    """A gateway feed's side of ``store.notices``: its stream, the rooms it holds."""

    async def open(self, feed: str, ttl_ms: int) -> str: ...

    async def hold(
        self,
        feed: str,
        rooms: Collection[str],
        dropped: Collection[str],
        ttl_ms: int,
        *,
        wake: Collection[str] = (),
        prune: bool = True,
    ) -> None: ...

    async def close(self, feed: str, rooms: Collection[str]) -> None: ...


class FeedStore(Protocol):
    async def room_state(self, room: str) -> RoomState: ...

    async def room_position(self, room: str) -> tuple[int, str]: ...

    async def frames_after(self, room: str, after_seq: int, count: int) -> list[CommittedFrame]: ...

    @property
    def notices(self) -> NoticeHolder: ...

    async def wait_notices(
        self,
        feed: str,
        after: str,
        block_ms: int,
        then_read: Callable[[str], tuple[int, str] | None] | None = None,
        count: int = 64,
    ) -> tuple[str, list[str], list[CommittedFrame], list[ControlEvent]]: ...

    async def read_events(
        self, frames_after: Mapping[str, int], control_after: Mapping[str, str], count: int = 64
    ) -> tuple[list[CommittedFrame], list[ControlEvent]]: ...

    async def sync_rooms(
        self,
        gateway_id: str,
        counts: Mapping[str, LocalViewers | None],
        offered: Mapping[str, float],
        shed: Mapping[str, float] | None = None,
        quiet: Set[str] = frozenset(),
    ) -> dict[str, RoomLive]: ...

    async def staff_list(self, room: str) -> dict[str, dict[str, Any]]: ...

    async def words(self, room: str | None) -> tuple[list[str], list[str]]: ...

    async def review_words(self, room: str) -> list[str]: ...

    async def ip_bans(self, room: str) -> dict[str, IpBan]: ...

    async def staff_nicks(self, room: str) -> dict[str, str]: ...

    async def note_ips(self, seen: Mapping[str, Mapping[str, str]]) -> None: ...

    async def note_staff_nick(self, room: str, uid: str, nick: str) -> None: ...

    async def note_role(
        self, room: str, uid: str, role: str, *, everywhere: bool = False
    ) -> None: ...


class GatewayStore(Protocol):
    @property
    def intake(self) -> IngestStore: ...

    @property
    def feed(self) -> FeedStore: ...

    @property
    def gateways(self) -> Gateways:
        """The gateway registry (room-affine routing): the gateway announces itself."""
        ...


class FrameStore(Protocol):
    async def online_counts(
        self, rooms: Iterable[str]
    ) -> dict[str, tuple[int, dict[str, float], set[str]]]: ...

    async def hot_rooms(self, since_ms: int) -> set[str]: ...

    async def active_rooms(
        self, since_ms: int, recent_ms: int, cursor: int, count: int
    ) -> RoomsPage: ...

    async def worker_heartbeat(self, worker_id: str, fresh_ms: int) -> int: ...

    async def worker_gone(self, worker_id: str) -> None: ...

    async def unleased(self, rooms: Sequence[str]) -> list[str]: ...

    async def acquire(self, rooms: Sequence[str], token: str, lease_ms: int) -> list[Lease]: ...

    async def renew(self, leases: Mapping[str, str], lease_ms: int) -> set[str]: ...

    async def release(self, leases: Mapping[str, str]) -> None: ...

    async def read_comments(self, cursors: Mapping[str, str], count: int) -> TickRead: ...

    async def write_stats(self, stats: Mapping[str, Mapping[str, float]]) -> None: ...

    async def commit(self, frames: Sequence[FrameCommit]) -> list[CommitResult]: ...

    async def frames_after(self, room: str, after_seq: int, count: int) -> list[CommittedFrame]: ...
