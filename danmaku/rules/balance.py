"""Fair share of rooms per broadcast worker. Pure arithmetic, no I/O.

Every worker counts the active rooms and the live workers (both read from Redis) and
applies the same rule: take rooms until it holds ``target``; when it holds more than
``ceiling`` (``target`` plus slack), give the excess back so others can take it. Slack
keeps workers from handing rooms back and forth when the counts wobble. Correctness does
not depend on this rule: the fenced commit already makes it impossible for two workers
to merge one room at once; balance only spreads the work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def fair_share(active_rooms: int, live_workers: int, slack_ratio: float = 0.1) -> tuple[int, int]:
    """``(target, ceiling)`` for one worker."""
    workers = max(1, live_workers)
    target = math.ceil(active_rooms / workers)
    slack = max(1, math.ceil(target * slack_ratio))
    return target, target + slack


def plan(
    held: Sequence[str], unheld: Sequence[str], active_rooms: int, live_workers: int
) -> tuple[list[str], list[str]]:
    """``(to_acquire, to_release)`` for one worker.

    ``held`` is ordered most valuable first (e.g. most recently active); the tail is
    released first. ``unheld`` are candidates nobody is known to hold.
    """
    target, ceiling = fair_share(active_rooms, live_workers)
    if len(held) > ceiling:
        return [], list(held[target:])
    room_for = max(0, target - len(held))
    return list(unheld[:room_for]), []
