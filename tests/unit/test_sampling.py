"""Frame sampling: budget, priority tiers, folding, fairness, determinism, density levels."""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections import Counter

import pytest

from danmaku.rules.normalize import normalize
from danmaku.rules.sampling import (
    BudgetMeter,
    DensityLevels,
    FrameSampler,
    Item,
    Selection,
    frame_budget,
)

_ids = itertools.count()


def mk(uid: str, text: str, ts: int, prio: int = 0) -> Item:
    return {
        "id": f"{ts}-{next(_ids)}",
        "uid": uid,
        "nick": uid,
        "text": text,
        "color": "#ffffff",
        "mode": "scroll",
        "ts": ts,
        "prio": prio,
    }


def uniq(*parts: object) -> str:
    """A text whose normalised form is unique: no two equal characters side by side."""
    return "t" + "/".join("-".join(str(p)) for p in parts)


def weight(item: Item) -> int:
    return int(item.get("count", 1))


def check_invariants(offered: list[Item], sel: Selection, budget: int) -> None:
    assert len(sel.items) <= budget
    prio_in = [it for it in offered if it["prio"] >= 1]
    prio_out = [it for it in sel.items if it["prio"] >= 1]
    # priority: every item exactly once, shown or carried
    assert sorted(it["id"] for it in prio_out + sel.carry) == sorted(it["id"] for it in prio_in)
    if sel.carry:
        assert len(sel.items) == budget and len(prio_out) == budget
    # ordinary: shown + folded + dropped accounts for every comment
    ordinary_in = sum(weight(it) for it in offered if it["prio"] == 0)
    shown = [it for it in sel.items if it["prio"] == 0]
    assert sum(weight(it) for it in shown) + sel.dropped == ordinary_in
    assert sel.folded == sum(weight(it) - 1 for it in shown)
    assert sel.dropped_by_tier == {0: sel.dropped}
    assert sum(sel.carried_by_tier.values()) == len(sel.carry)
    # order: priority first by tier desc then ts, then ordinary by ts
    keys = [(-it["prio"] if it["prio"] else 0, it["ts"] if it["prio"] else 0) for it in sel.items]
    assert keys == sorted(keys)
    assert [it["ts"] for it in shown] == sorted(it["ts"] for it in shown)
    # one item per normalised text among ordinary items
    assert len({normalize(it["text"]) for it in shown}) == len(shown)


def test_budget_never_exceeded_and_accounting_holds_on_random_input() -> None:
    rng = random.Random(1234)
    sampler = FrameSampler(random.Random(99))
    texts = ["666", "６６６", "lol", "LOL", "gg", "nice", "哈哈哈", "哈哈"] + [
        f"t{i}" for i in range(40)
    ]
    carry: list[Item] = []
    for frame in range(600):
        new = [
            mk(
                f"u{rng.randrange(30)}",
                rng.choice(texts),
                frame * 100 + rng.randrange(100),
                rng.choices([0, 1, 2], weights=[90, 7, 3])[0],
            )
            for _ in range(rng.randrange(60))
        ]
        offered = carry + new
        snapshot = copy.deepcopy(offered)
        budget = rng.randrange(12)
        sel = sampler.select(offered, budget)
        assert offered == snapshot  # inputs never mutated
        check_invariants(offered, sel, budget)
        carry = sel.carry


def test_priority_overflow_is_carried_oldest_first_staff_first() -> None:
    staff = [mk("mod", f"s{i}", 10 + i, prio=2) for i in range(3)]
    high = [mk(f"vip{i}", f"h{i}", i, prio=1) for i in range(3)]
    plain = [mk("u", "hello", 0)]
    sel = FrameSampler(random.Random(0)).select(plain + high + staff, 4)
    assert sel.items == [*staff, high[0]]
    assert sel.carry == [high[1], high[2]]
    assert sel.carried_by_tier == {1: 2}
    assert sel.dropped == 1


def test_priority_never_dropped_across_frames() -> None:
    sampler = FrameSampler(random.Random(0))
    sent: list[str] = []
    shown: list[str] = []
    carry: list[Item] = []
    for frame in range(50):
        new = [mk(f"u{i}", f"c{frame}-{i}", frame * 100 + i) for i in range(20)]
        if frame < 10:  # a burst of 6 priority items per frame, budget 4
            burst = [
                mk("streamer", f"p{frame}-{i}", frame * 100 + i, prio=1 + i % 2) for i in range(6)
            ]
            sent += [it["id"] for it in burst]
            new += burst
        sel = sampler.select(carry + new, 4)
        assert len(sel.items) <= 4
        shown += [it["id"] for it in sel.items if it["prio"] >= 1]
        carry = sel.carry
    assert not carry
    assert sorted(shown) == sorted(sent)
    assert len(shown) == len(set(shown))


def test_budget_zero_shows_nothing_and_keeps_priority() -> None:
    items = [mk("a", "x", 1), mk("b", "y", 2, prio=2)]
    sel = FrameSampler(random.Random(0)).select(items, 0)
    assert sel.items == [] and sel.carry == [items[1]] and sel.dropped == 1


def test_no_contention_passes_everything_in_ts_order() -> None:
    items = [mk("a", "x", 3), mk("b", "y", 1), mk("c", "z", 2, prio=1)]
    sel = FrameSampler(random.Random(0)).select(items, 10)
    assert sel.items == [items[2], items[1], items[0]]
    assert sel.dropped == 0 and sel.folded == 0
    assert all("count" not in it for it in sel.items)


@pytest.mark.parametrize("spam_same_text", [False, True])
def test_fairness_fifty_users_get_ninety_percent_against_a_spammer(spam_same_text: bool) -> None:
    # 1 spammer at 500/s, 50 users at 1/s (5 per 100 ms tick), 10 s, budget 4 per frame.
    sampler = FrameSampler(random.Random(42))
    slots = Counter[str]()
    for tick in range(100):
        items = [
            mk("spammer", "buy now" if spam_same_text else uniq("buy", tick, k), tick * 100 + k * 2)
            for k in range(50)
        ]
        items += [
            mk(f"user{u}", uniq(u, tick), tick * 100 + u) for u in range(50) if u % 10 == tick % 10
        ]
        sel = sampler.select(items, 4)
        assert len(sel.items) <= 4
        for it in sel.items:
            slots["spammer" if it["uid"] == "spammer" else "users"] += 1
    total = slots["spammer"] + slots["users"]
    assert total == 400
    assert slots["users"] / total >= 0.9
    assert slots["spammer"] >= 1  # fair, not banned: it still gets a share


def test_fairness_with_random_phases_users_fill_every_slot_they_can() -> None:
    # Users at random phases: some ticks have fewer than 4 of them, and those spare slots
    # rightly go to the spammer. Users must still get all but a fair sliver of the rest.
    for seed in range(3):
        phase_rng = random.Random(seed)
        phase = {u: phase_rng.randrange(10) for u in range(50)}
        sampler = FrameSampler(random.Random(seed))
        users = fillable = 0
        for tick in range(100):
            mine = [
                mk(f"user{u}", uniq(u, tick), tick * 100 + u)
                for u in range(50)
                if phase[u] == tick % 10
            ]
            spam = [mk("spammer", uniq("buy", tick, k), tick * 100 + k) for k in range(50)]
            sel = sampler.select(spam + mine, 4)
            users += sum(it["uid"] != "spammer" for it in sel.items)
            fillable += min(4, len(mine))
        assert users >= fillable - 8


def test_one_item_per_user_while_others_wait() -> None:
    rng = random.Random(8)
    sampler = FrameSampler(random.Random(8), fold_share=0.0)
    for _ in range(300):
        items = [
            mk(f"u{rng.randrange(8)}", uniq(next(_ids)), rng.randrange(1000))
            for _ in range(rng.randrange(1, 30))
        ]
        budget = rng.randrange(1, 12)
        sel = sampler.select(items, budget)
        per_user = Counter(it["uid"] for it in sel.items)
        senders = {it["uid"] for it in items}
        if max(per_user.values()) >= 2:
            assert set(per_user) == senders  # nobody waits while someone has two
        assert len(sel.items) == min(budget, len(items))  # slots are not wasted


def test_spam_folds_into_one_item_with_count() -> None:
    variants = ["666", "６６６", "6666666", "666 "]
    flood = [mk(f"fan{i}", variants[i % 4], 1000 + i) for i in range(1234)]
    others = [mk(f"u{i}", uniq("q", i), 500 + i) for i in range(3)]
    items = flood[600:] + others + flood[:600]
    sel = FrameSampler(random.Random(0)).select(items, 4)
    folded = [it for it in sel.items if it.get("count")]
    assert len(folded) == 1 and len(sel.items) == 4
    assert folded[0]["count"] == 1234
    assert folded[0]["id"] == flood[0]["id"]  # the earliest is the representative
    assert folded[0]["uid"] == "fan0"
    assert sel.folded == 1233 and sel.dropped == 0
    assert "count" not in flood[0]  # a copy carries the count


def test_popular_fold_gets_a_slot_in_a_crowd_and_counts_when_dropped() -> None:
    flood = [mk(f"fan{i}", "666", 1000 + i) for i in range(1234)]
    crowd = [mk(f"u{i}", uniq(i), 500 + i) for i in range(100)]
    sel = FrameSampler(random.Random(3)).select(crowd + flood, 4)
    assert [it.get("count") for it in sel.items].count(1234) == 1
    assert sel.dropped == 100 - 3
    # with no fold share the phrase competes as one bucket among 101: when left out,
    # all 1234 comments count as dropped
    sel = FrameSampler(random.Random(3), fold_share=0.0).select(crowd + flood, 1)
    if sel.items[0].get("count") is None:
        assert sel.dropped == 99 + 1234


def test_one_users_repeated_text_is_that_users_single_slot() -> None:
    items = [mk("spammer", "666", i) for i in range(50)]
    items += [mk(f"u{i}", uniq(i), 100 + i) for i in range(5)]
    sampler = FrameSampler(random.Random(1))
    spammer_slots = 0
    for _ in range(20):
        sel = sampler.select(items, 4)
        spammer_slots += sum(it["uid"] == "spammer" for it in sel.items)
        assert sum(it["uid"] == "spammer" for it in sel.items) <= 1
    assert spammer_slots < 20  # not a popular phrase: no reserved slot


def _run(seed: int) -> list[list[str]]:
    sampler = FrameSampler(random.Random(seed))
    out = []
    for tick in range(20):
        items = [mk(f"u{(tick * 7 + i) % 40}", f"msg {i % 13}", tick * 100 + i) for i in range(60)]
        for it in items:  # ids independent of the global counter, so runs compare
            it["id"] = f"{tick}-{it['ts']}"
        out.append([it["id"] for it in sampler.select(items, 5).items])
    return out


def test_seeded_sampling_is_deterministic_and_seed_dependent() -> None:
    assert _run(7) == _run(7)
    assert _run(7) != _run(8)


def test_choice_is_random_not_first_come() -> None:
    items = [mk(f"u{i}", uniq(i), i) for i in range(20)]
    picks = Counter(
        FrameSampler(random.Random(seed)).select(items, 1).items[0]["id"] for seed in range(200)
    )
    assert len(picks) >= 15
    assert picks[items[0]["id"]] < 40
    one_user = [mk("solo", uniq(i), i) for i in range(10)]
    picks = Counter(
        FrameSampler(random.Random(seed)).select(one_user, 1).items[0]["id"] for seed in range(100)
    )
    assert len(picks) >= 8


def test_history_is_bounded() -> None:
    sampler = FrameSampler(random.Random(0), history_size=10)
    for tick in range(50):
        sampler.select([mk(f"u{tick}-{i}", uniq(i), i) for i in range(30)], 4)
    assert len(sampler._last_shown) <= 10
    with pytest.raises(ValueError):
        sampler.select([], -1)


# ---- budget per frame -----------------------------------------------------------------------
def test_frame_budget_examples() -> None:
    meter = BudgetMeter(40.0)
    assert [meter.take(0.1) for _ in range(10)] == [4] * 10
    meter = BudgetMeter(15.0)
    assert [meter.take(0.1) for _ in range(6)] == [1, 2, 1, 2, 1, 2]
    n, credit = frame_budget(30.0, 0.1, 0.0)
    assert n == 3 and credit == pytest.approx(0.0)
    assert frame_budget(0.0, 0.1, 0.0) == (0, 0.0)


@pytest.mark.parametrize("rate", [1.0, 7.0, 15.0, 33.3, 40.0, 2.5, 1000 / 7])
@pytest.mark.parametrize("tick", [0.1, 0.05, 0.033])
def test_fractional_budget_honours_rate_over_time(rate: float, tick: float) -> None:
    meter = BudgetMeter(rate)
    total = 0
    for n in range(1, 5001):
        total += meter.take(tick)
        ideal = rate * tick * n
        assert ideal - 1 < total <= ideal + 1e-6
    assert total == math.floor(rate * tick * 5000 + 1e-6)


def test_budget_meter_keeps_credit_when_rate_changes() -> None:
    meter = BudgetMeter(5.0)
    assert meter.take(0.1) == 0  # 0.5 earned
    meter.per_second = 10.0
    assert meter.take(0.1) == 1  # 0.5 + 1.0
    with pytest.raises(ValueError):
        frame_budget(-1.0, 0.1)
    with pytest.raises(ValueError):
        frame_budget(1.0, math.nan)


# ---- density levels -------------------------------------------------------------------------
def test_density_levels_nested_and_priority_kept() -> None:
    levels = DensityLevels([1.0, 0.5, 0.25, 0.0])
    items = [mk(f"u{i}", f"t{i}", i, prio=2 if i % 50 == 0 else 0) for i in range(4000)]
    full, half, quarter, none = levels.split(items)
    assert full == items
    assert set(map(id, quarter)) <= set(map(id, half)) <= set(map(id, full))
    kept = set(map(id, half))
    assert half == [it for it in items if id(it) in kept]  # order kept
    prio = [it for it in items if it["prio"]]
    assert none == prio
    for sub in (half, quarter):
        assert all(it in sub for it in prio)
    ordinary = len(items) - len(prio)
    assert abs((len(half) - len(prio)) / ordinary - 0.5) < 0.04
    assert abs((len(quarter) - len(prio)) / ordinary - 0.25) < 0.04
    assert DensityLevels([1.0, 0.5, 0.25, 0.0]).split(items) == [full, half, quarter, none]


def test_density_index_for() -> None:
    levels = DensityLevels([1.0, 0.5, 0.25])
    assert levels.index_for(1.0) == 0
    assert levels.index_for(0.7) == 1
    assert levels.index_for(0.25) == 2
    assert levels.index_for(0.1) == 2
    with pytest.raises(ValueError):
        DensityLevels([1.5])


# ---- the priority backlog cap ---------------------------------------------------------------
def test_priority_backlog_is_capped_and_the_oldest_are_dropped_and_counted() -> None:
    staff = [mk("mod", uniq("s", i), 100 + i, prio=2) for i in range(10)]
    high = [mk("vip", uniq("h", i), 50 + i, prio=1) for i in range(2)]  # older than staff
    plain = [mk("u", "hello", 0)]
    sel = FrameSampler(random.Random(0)).select(plain + high + staff, 2, max_carry=3)
    # 12 priority items, room for 2 + 3: the 7 oldest go (both paid ones, 5 staff).
    assert sel.items == staff[5:7] and sel.carry == staff[7:]
    assert sel.dropped_by_tier == {0: 1, 1: 2, 2: 5} and sel.dropped == 8


def test_priority_flood_stays_within_the_backlog_over_many_frames() -> None:
    """Every priority item is shown, carried or dropped exactly once; the carry never
    exceeds the cap, so a shown staff item is never more than cap / budget + 1 frames
    old. (Highlighted items wait behind staff ones, whatever their age.)"""
    rng = random.Random(7)
    sampler = FrameSampler(random.Random(1))
    budget, cap = 3, 6
    carry: list[Item] = []
    sent: set[str] = set()
    accounted: list[str] = []
    dropped_prio = 0
    for frame in range(200):
        new = [
            mk(f"m{k}", uniq(frame, k), frame, prio=rng.choice([1, 2]))
            for k in range(rng.randrange(0, 12))
        ]
        new += [mk(f"u{k}", uniq("o", frame, k), frame) for k in range(rng.randrange(0, 5))]
        sent |= {it["id"] for it in new if it["prio"] >= 1}
        sel = sampler.select(carry + new, budget, max_carry=cap)
        assert len(sel.items) <= budget and len(sel.carry) <= cap
        shown_prio = [it for it in sel.items if it["prio"] >= 1]
        staff_shown = [it for it in shown_prio if it["prio"] == 2]
        assert all(frame - it["ts"] <= cap // budget + 1 for it in staff_shown)
        accounted += [it["id"] for it in shown_prio]
        dropped_prio += sel.dropped_by_tier.get(1, 0) + sel.dropped_by_tier.get(2, 0)
        assert sel.dropped == sum(sel.dropped_by_tier.values())
        carry = sel.carry
    accounted += [it["id"] for it in carry]
    assert len(accounted) == len(set(accounted))
    assert len(accounted) + dropped_prio == len(sent)
    assert dropped_prio > 0


def test_without_a_cap_priority_is_carried_whole() -> None:
    staff = [mk("mod", uniq("s", i), i, prio=2) for i in range(10)]
    sel = FrameSampler(random.Random(0)).select(staff, 2)
    assert sel.items == staff[:2] and sel.carry == staff[2:] and sel.dropped == 0
