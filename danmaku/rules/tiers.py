"""Paid tiers: an amount -> its tier (colour, how long it stays pinned), and the pure
checks of the platform's settings (tier table, API keys).

Like YouTube's Super Chat: the bigger the amount, the more visible the message. A table
is a list of tiers ordered by ``min`` (the smallest amount of the tier, in the
platform's currency unit); an amount maps to the last tier whose ``min`` it reaches,
and an amount below the first tier's ``min`` maps to the first tier (a paid message is
never shown as an ordinary one). ``level`` is the tier's place in the table (0 the
lowest): players and the pin rule compare tiers by it. No I/O but ``load``'s reading
of an ``@FILE`` (start-up only).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from danmaku.rules.items import Tier as WireTier

_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_PIN_S = 86_400
MIN_API_KEY_CHARS = 16


@dataclass(frozen=True, slots=True)
class Tier:
    """One row of a tier table."""

    name: str
    min: float  # the smallest amount of this tier
    color: str  # "#rrggbb"
    pin_s: int  # seconds the message stays pinned at the top (0: not pinned)
    level: int = 0  # place in the table (0 = lowest); set by ``table``

    def wire(self) -> WireTier:
        """The tier as a frame item carries it (``tier``)."""
        return {"name": self.name, "level": self.level, "color": self.color, "pin_s": self.pin_s}


# Super Chat's table (USD): blue and light blue are not pinned; green 2 min up to red 1 h.
DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier("blue", 1, "#1565c0", 0, 0),
    Tier("lightblue", 2, "#00b8d4", 0, 1),
    Tier("green", 5, "#00bfa5", 120, 2),
    Tier("yellow", 10, "#ffb300", 300, 3),
    Tier("orange", 20, "#e65100", 600, 4),
    Tier("magenta", 50, "#c2185b", 1800, 5),
    Tier("red", 100, "#d00000", 3600, 6),
)


def table(rows: Sequence[Any]) -> tuple[Tier, ...]:
    """A tier table from JSON-like rows ``{"name", "min", "color", "pin_s"}``: sorted by
    ``min``, levels assigned. Raises ``ValueError`` saying what is wrong (1-32 tiers,
    names ``[A-Za-z0-9_-]``, unique; ``min`` a finite number >= 0, unique; ``color``
    ``#rrggbb``; ``pin_s`` an integer in 0..86400)."""
    if not isinstance(rows, list) or not 1 <= len(rows) <= 32:
        raise ValueError("a tier table is a JSON list of 1-32 tiers")
    tiers = []
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError("each tier is an object {name, min, color, pin_s}")
        name, low, color, pin = (
            row.get("name"),
            row.get("min"),
            row.get("color"),
            row.get("pin_s", 0),
        )
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ValueError(f"tier name {name!r}: 1-32 of [A-Za-z0-9_-]")
        if not isinstance(low, int | float) or isinstance(low, bool) or not math.isfinite(low):
            raise ValueError(f"tier {name}: min must be a finite number >= 0")
        if low < 0:
            raise ValueError(f"tier {name}: min must be a finite number >= 0")
        if not isinstance(color, str) or not _COLOR_RE.fullmatch(color):
            raise ValueError(f"tier {name}: color must be #rrggbb")
        if type(pin) is not int or not 0 <= pin <= MAX_PIN_S:
            raise ValueError(f"tier {name}: pin_s must be an integer in 0..{MAX_PIN_S}")
        tiers.append(Tier(name, float(low), color, pin))
    tiers.sort(key=lambda t: t.min)
    if len({t.name for t in tiers}) != len(tiers) or len({t.min for t in tiers}) != len(tiers):
        raise ValueError("tier names and mins must be unique")
    return tuple(Tier(t.name, t.min, t.color, t.pin_s, i) for i, t in enumerate(tiers))


def tier_for(amount: float, tiers: Sequence[Tier] = DEFAULT_TIERS) -> Tier:
    """The tier of ``amount``: the highest whose ``min`` it reaches, else the lowest.
    ``tiers`` sorted by ``min`` (as ``table`` returns them), not empty."""
    found = tiers[0]
    for t in tiers:
        if amount >= t.min:
            found = t
        else:
            break
    return found


def room_table(rows: Any, default: tuple[Tier, ...]) -> tuple[Tier, ...]:
    """A room's table from its stored rows (``None``: it has none), else ``default``.
    Rows that no longer pass ``table`` (written by hand into Redis) fall back too: a
    payment is never refused for the room's table."""
    if rows is None:
        return default
    try:
        return table(rows)
    except ValueError:
        return default


def _read(value: str, what: str) -> str:
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {value[1:]}: {exc.strerror}") from exc


def load(value: str) -> tuple[Tier, ...]:
    """``DANMAKU_PAID_TIERS``: empty -> ``DEFAULT_TIERS``; a JSON list, or ``@FILE``
    holding one. ``ValueError`` (naming the setting) when it does not parse."""
    if not value.strip():
        return DEFAULT_TIERS
    text = _read(value.strip(), "DANMAKU_PAID_TIERS")
    try:
        return table(orjson.loads(text))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"DANMAKU_PAID_TIERS: {exc}") from exc


def api_keys(value: str) -> tuple[str, ...]:
    """``DANMAKU_API_KEYS``: comma-separated keys, or ``@FILE`` with one key a line
    (blank lines and ``#`` comments skipped). Each key 16+ printable ASCII characters
    without spaces or commas; ``ValueError`` (naming the setting) otherwise."""
    text = _read(value.strip(), "DANMAKU_API_KEYS")
    if value.strip().startswith("@"):
        parts = [line.strip() for line in text.splitlines()]
        parts = [p for p in parts if p and not p.startswith("#")]
    else:
        parts = [p.strip() for p in text.split(",") if p.strip()]
    for key in parts:
        if len(key) < MIN_API_KEY_CHARS or not all(33 <= ord(c) < 127 for c in key):
            raise ValueError(
                f"DANMAKU_API_KEYS: each key must be {MIN_API_KEY_CHARS}+ printable ASCII "
                "characters without spaces"
            )
    return tuple(parts)
