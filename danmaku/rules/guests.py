"""The room setting ``guests``: what guests (``POST /api/session`` tokens) may do in a room.

* ``comment`` (the default of ``danmaku up``): guests watch and comment;
* ``watch``: guests watch; only logged-in users (platform or staff tokens) comment, a
  guest's comment is refused with ``login_required``;
* ``off``: ``POST /api/session`` for the room answers 403 and the gateway refuses guest
  tokens at the handshake (``login_required``). Anonymous viewers (no token) still watch.

Staff are never held by it (a guest uid on the room's staff list acts as staff). The
settings hash of a room holds numbers only, so the policy is kept there as its index in
``POLICIES`` (``code``/``policy``). Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from danmaku.auth import User

SETTING = "guests"
POLICIES = ("comment", "watch", "off")


def code(policy: str) -> float:
    """The number a policy is stored as. Raises ``ValueError`` for an unknown policy."""
    return float(POLICIES.index(policy))


def policy(stored: float | None, default: str = "comment") -> str:
    """The policy a stored number names; ``default`` when unset or not a known code."""
    if stored is None or not math.isfinite(stored) or stored != int(stored):
        return default
    if not 0 <= stored < len(POLICIES):
        return default
    return POLICIES[int(stored)]


def may_enter(policy_name: str, user: User | None) -> bool:
    """Whether the room admits this connection (``None``: anonymous, watch only)."""
    return policy_name != "off" or user is None or not user.guest or user.is_staff


def may_comment(policy_name: str, user: User) -> bool:
    """Whether ``user`` may comment in a room with this policy."""
    return policy_name == "comment" or not user.guest or user.is_staff


def shown(stored: Mapping[str, float]) -> dict[str, Any]:
    """A room's stored settings as the API shows them (``guests`` by its name)."""
    out: dict[str, Any] = dict(stored)
    if SETTING in out:
        out[SETTING] = policy(out[SETTING])
    return out
