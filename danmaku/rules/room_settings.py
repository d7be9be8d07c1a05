"""Room settings: one schema (name, kind, bounds, server default, help) that every part
reads: the API's patch model and its answers (``web/moderation.py``, ``web/app.py``),
what the store writes in the room's settings hash, the roles that apply them (worker,
gateway presence, the Lua door), the docs table (``tests/unit/test_docs.py`` checks
docs/operations.md names each) and the console (``GET /api/room-settings``).

The settings hash holds numbers (the Lua door and the gateways' presence rounds read
floats): a ``flag`` is stored as 0/1, a ``choice`` as its index in ``choices``, and the
API shows them as a bool and a word; a ``text`` setting (``stream_url``) is stored as
its text, and only the web app reads it. A setting that is not set takes the server's
default: a ``Settings`` field (``server_default``) or a fixed value. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from danmaku.config import Settings
from danmaku.rules.guests import POLICIES
from danmaku.rules.review import REVIEW_MODES

__all__ = [
    "SCHEMA",
    "RoomSetting",
    "by_name",
    "effective",
    "encode_changes",
    "public",
    "shown_changes",
]

Kind = Literal["number", "flag", "choice", "text"]
Shown = float | bool | str


@dataclass(frozen=True, slots=True)
class RoomSetting:
    """One room setting. ``lo``/``hi``: a number's bounds (inclusive); ``choices``: a
    choice's values, in their stored order; ``writable``: set through the settings API
    (``shield`` is set by its own endpoint and only shown)."""

    name: str
    kind: Kind
    help: str
    default: Shown = 0.0
    server_default: str | None = None  # a ``Settings`` field naming the default
    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    choices: tuple[str, ...] = ()
    writable: bool = True
    max_len: int = 0  # text: its longest
    pattern: str | None = None  # text: what it must match (fully)

    def default_for(self, settings: Settings) -> Shown:
        """The value in force when the room has not set it (as the API shows it)."""
        if self.server_default is None:
            return self.default
        return self.shown(_stored_of(self, getattr(settings, self.server_default)))

    def encode(self, value: Shown) -> float | str:
        """What the settings hash keeps (``ValueError``: not one of ``choices``)."""
        if self.kind == "text":
            return str(value)
        if self.kind == "choice":
            return float(self.choices.index(str(value)))
        return float(value)

    def shown(self, stored: float | str | None) -> Shown:
        """A stored value as the API shows it (``None``/unknown: the fixed default)."""
        if self.kind == "text":
            return stored if isinstance(stored, str) else self.default
        if isinstance(stored, str):
            return self.default
        if self.kind == "flag":
            return bool(stored)
        if self.kind == "choice":
            ok = stored is not None and math.isfinite(stored) and stored == int(stored)
            if ok and stored is not None and 0 <= stored < len(self.choices):
                return self.choices[int(stored)]
            return self.default
        return self.default if stored is None else float(stored)

    def spec(self) -> dict[str, Any]:
        """What the console needs to build an input for it."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "help": self.help}
        out |= {"unit": self.unit, "writable": self.writable}
        if self.kind == "number":
            out |= {"min": self.lo, "max": self.hi}
        if self.kind == "choice":
            out["choices"] = list(self.choices)
        if self.kind == "text":
            out |= {"max_length": self.max_len, "pattern": self.pattern}
        return out


def _stored_of(setting: RoomSetting, value: Any) -> float | str:
    return setting.encode(value) if setting.kind in ("choice", "text") else float(value)


SCHEMA: tuple[RoomSetting, ...] = (
    RoomSetting(
        "slow_mode_s", "number", "one comment per this many seconds per user (0: off)",
        lo=0, hi=3600, unit="s",
    ),
    RoomSetting(
        "budget", "number", "items per second the room's frames show",
        server_default="display_budget", lo=1, hi=1000, unit="/s",
    ),
    RoomSetting(
        "ingest_ceiling", "number", "comments/s beyond which gateways shed ordinary ones",
        server_default="ingest_ceiling", lo=0, hi=1_000_000, unit="/s",
    ),
    RoomSetting("mute", "flag", "only staff and highlighted viewers send", default=False),
    RoomSetting(
        "smooth_window_s", "number", "the budget's window and the longest queue of waiting "
        "comments", server_default="smooth_window_s", lo=0.1, hi=10, unit="s",
    ),
    RoomSetting(
        "max_wait_s", "number", "longest a comment waits for a frame",
        server_default="max_wait_s", lo=0, hi=5, unit="s",
    ),
    RoomSetting(
        "review", "choice", "hold comments for review: none, suspicious ones, all",
        default="off", choices=REVIEW_MODES,
    ),
    RoomSetting(
        "first_chat_min", "number", "first-time chatters are held this long (review "
        "suspicious)", server_default="first_chat_minutes", lo=0, hi=10080, unit="min",
    ),
    RoomSetting(
        "guests", "choice", "guests comment, only watch (logged-in users comment), or are off",
        default="comment", server_default="guests", choices=POLICIES,
    ),
    RoomSetting(
        "stream_url", "text", "the room's video for players (http(s): HLS .m3u8, MP4, "
        "WebM); empty: the server default", default="", server_default="stream_url",
        max_len=2048, pattern=r"^(https?://[^\s]+)?$",
    ),
    RoomSetting(
        "shield", "flag", "shield mode is on (PUT/DELETE /api/rooms/{room}/shield)",
        default=False, writable=False,
    ),
    # issue 24: broadcasts record on their own while the room is live; replays align
    RoomSetting(
        "auto_record", "flag", "record a broadcast whenever the room is live (viewers or "
        "comments); it ends after DANMAKU_AUTO_RECORD_IDLE_S without either",
        default=False, server_default="auto_record",
    ),
    RoomSetting(
        "replay_offset_s", "number", "viewers' video delay (e.g. HLS latency): new "
        "broadcasts' replays show comments this much earlier", server_default="replay_offset_s",
        lo=0, hi=120, unit="s",
    ),
)  # fmt: skip
_BY_NAME = {s.name: s for s in SCHEMA}


def by_name(name: str) -> RoomSetting | None:
    return _BY_NAME.get(name)


def public(stored: Mapping[str, float | str]) -> dict[str, Shown]:
    """The settings a room has set, as the API shows them (others in the hash, such as
    version counters, are left out)."""
    out: dict[str, Shown] = {}
    for name, value in stored.items():
        setting = _BY_NAME.get(name)
        if setting is None:
            continue
        if isinstance(value, str) == (setting.kind == "text"):
            out[name] = setting.shown(value if isinstance(value, str) else float(value))
    return out


def shown_changes(changes: Mapping[str, float | str | None]) -> dict[str, Shown | None]:
    """A change of settings as announced (notices, the audit log): ``None`` (back to the
    default) stays ``None``; the rest as ``public`` shows it."""
    shown: dict[str, Shown | None] = dict(
        public({k: v for k, v in changes.items() if v is not None})
    )
    return shown | {k: None for k, v in changes.items() if v is None and k in _BY_NAME}


def effective(stored: Mapping[str, float | str], settings: Settings) -> dict[str, Shown]:
    """Every setting's value in force in the room: its own, else the server's default."""
    shown = public(stored)
    return {s.name: shown.get(s.name, s.default_for(settings)) for s in SCHEMA}


def encode_changes(given: Mapping[str, Any]) -> dict[str, float | str | None]:
    """The hash writes for an API patch (``None``, or ``""`` for a text: back to the
    default). Raises ``ValueError`` for a setting the schema does not know or that is
    not writable."""
    out: dict[str, float | str | None] = {}
    for name, value in given.items():
        setting = _BY_NAME.get(name)
        if setting is None or not setting.writable:
            raise ValueError(f"{name} is not a room setting one can set")
        out[name] = None if value is None or value == "" else setting.encode(value)
    return out
