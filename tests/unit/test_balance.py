"""Fair share of rooms: every room held, nobody far above its share, no thrash."""

from __future__ import annotations

import random

from danmaku.rules.balance import fair_share, plan


def test_fair_share_arithmetic() -> None:
    assert fair_share(30, 3) == (10, 11)
    assert fair_share(31, 3) == (11, 13)
    assert fair_share(5, 0) == (5, 6)
    assert fair_share(0, 4) == (0, 1)


def simulate(rooms: int, workers: list[str], holdings: dict[str, list[str]], rounds: int) -> None:
    """Workers take turns (random order) applying ``plan``; acquisition is exclusive."""
    rng = random.Random(1)
    all_rooms = [f"r{i}" for i in range(rooms)]
    for _ in range(rounds):
        order = list(workers)
        rng.shuffle(order)
        for w in order:
            held_by_anyone = {r for rs in holdings.values() for r in rs}
            unheld = [r for r in all_rooms if r not in held_by_anyone]
            take, release = plan(holdings[w], unheld, rooms, len(workers))
            holdings[w] = [r for r in holdings[w] if r not in release] + take


def test_rooms_spread_and_rebalance_when_workers_join_and_leave() -> None:
    holdings: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    simulate(30, ["a", "b", "c"], holdings, rounds=3)
    assert sorted(r for rs in holdings.values() for r in rs) == sorted(f"r{i}" for i in range(30))
    assert all(len(rs) <= 11 for rs in holdings.values())
    # c leaves: its rooms are taken by a and b
    del holdings["c"]
    simulate(30, ["a", "b"], holdings, rounds=3)
    assert sum(len(rs) for rs in holdings.values()) == 30
    assert all(len(rs) <= 17 for rs in holdings.values())
    # d joins: the others give back their excess and d takes it
    holdings["d"] = []
    simulate(30, ["a", "b", "d"], holdings, rounds=4)
    assert sum(len(rs) for rs in holdings.values()) == 30
    assert all(len(rs) <= 11 for rs in holdings.values()) and len(holdings["d"]) >= 8


def test_no_thrash_at_steady_state() -> None:
    holdings: dict[str, list[str]] = {"a": [], "b": []}
    simulate(21, ["a", "b"], holdings, rounds=3)
    before = {w: list(rs) for w, rs in holdings.items()}
    simulate(21, ["a", "b"], holdings, rounds=5)
    assert holdings == before
