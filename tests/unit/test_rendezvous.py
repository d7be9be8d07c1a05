"""Rendezvous routing of rooms to gateways (rules/rendezvous.py): properties of the
choice that routing promises, on generated gateway sets, rooms and room sizes."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from danmaku.rules.rendezvous import GatewayEntry, Rendezvous, live_targets, weight

NOW = 1000.0
SHARE = 100


def gw(i: int, **kw: object) -> GatewayEntry:
    fields: dict[str, object] = {
        "gateway_id": f"g{i}",
        "url": f"ws://10.0.0.{i}:8081/ws",
        "connections": 0,
        "capacity": 0,
        "draining": False,
        "healthy": True,
        "expires_at": NOW + 10,
    }
    fields.update(kw)
    return GatewayEntry(**fields)  # type: ignore[arg-type]


def fleet(n: int) -> list[GatewayEntry]:
    return [gw(i) for i in range(n)]


rooms = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=20)
sizes = st.integers(min_value=2, max_value=12)
picks = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def first_k(r: Rendezvous, room: str, entries: list[GatewayEntry], viewers: int) -> list[str]:
    """The room's k gateways (URLs) for a room of ``viewers`` spread evenly so far."""
    targets = live_targets(entries, NOW)
    order = r.order(room, targets)
    return [t.url for t in order[: r.spread(viewers, len(order))]]


@given(rooms, sizes, st.integers(min_value=0, max_value=2000), st.data())
def test_removing_a_gateway_moves_only_the_rooms_it_held(
    room: str, n: int, viewers: int, data: st.DataObject
) -> None:
    r = Rendezvous(SHARE)
    entries = fleet(n)
    gone = data.draw(st.integers(min_value=0, max_value=n - 1))
    before = first_k(r, room, entries, viewers)
    after = first_k(r, room, [e for e in entries if e.gateway_id != f"g{gone}"], viewers)
    removed_url = entries[gone].url
    if removed_url not in before:
        assert after == before  # a room the gateway did not hold does not move
    else:
        # The others keep the room; one gateway (the next in its order) takes the share
        # of the one that left, unless there is no gateway left to take it.
        kept = [u for u in before if u != removed_url]
        assert after[: len(kept)] == kept
        assert len(after) == min(len(before), n - 1)


@given(rooms, sizes, picks)
def test_a_small_room_maps_to_one_gateway_for_every_client(room: str, n: int, pick: float) -> None:
    r = Rendezvous(SHARE)
    viewers = {"g0": SHARE // 3}
    route = r.route(room, fleet(n), viewers, NOW, pick)
    assert route is not None and route.spread == 1
    same = r.route(room, fleet(n), viewers, NOW, 0.0)
    assert same is not None and route.urls[0] == same.urls[0]
    # The fallbacks are the rest of the room's order, each URL once.
    assert len(set(route.urls)) == len(route.urls) == min(n, r.max_urls)


@given(rooms, sizes, st.integers(min_value=0, max_value=5000), st.integers(0, 5000))
def test_the_spread_grows_with_the_room_and_is_capped_by_the_gateways(
    room: str, n: int, v1: int, v2: int
) -> None:
    r = Rendezvous(SHARE)
    small, big = sorted((v1, v2))
    k_small, k_big = r.spread(small, n), r.spread(big, n)
    assert 1 <= k_small <= k_big <= n
    assert k_big == min(n, math.ceil((big + 1) / SHARE))


@given(rooms, sizes, picks, st.data())
def test_never_a_draining_unhealthy_or_expired_gateway(
    room: str, n: int, pick: float, data: st.DataObject
) -> None:
    states = data.draw(
        st.lists(
            st.sampled_from(["ok", "draining", "unhealthy", "expired"]), min_size=n, max_size=n
        )
    )
    entries = [
        gw(
            i,
            draining=s == "draining",
            healthy=s != "unhealthy",
            expires_at=NOW - 0.1 if s == "expired" else NOW + 5,
        )
        for i, s in enumerate(states)
    ]
    route = Rendezvous(SHARE).route(room, entries, {"g0": 5000}, NOW, pick)
    ok = {e.url for e, s in zip(entries, states, strict=True) if s == "ok"}
    if not ok:
        assert route is None
    else:
        assert route is not None and set(route.urls) <= ok


def test_adding_a_gateway_moves_about_one_room_in_n_and_only_to_it() -> None:
    r = Rendezvous(SHARE)
    n = 10
    old, new = fleet(n), fleet(n + 1)
    moved = 0
    names = [f"room-{i}" for i in range(2000)]
    for room in names:
        a = r.route(room, old, {}, NOW, 0.5)
        b = r.route(room, new, {}, NOW, 0.5)
        assert a is not None and b is not None
        if a.urls[0] != b.urls[0]:
            moved += 1
            assert b.urls[0] == new[n].url  # a room moves only to the newcomer
    # Expected 2000/11 = 182; a hash that moved everything would be ~1800.
    assert 2000 / (n + 1) / 2 < moved < 2000 / (n + 1) * 2


def test_rooms_spread_evenly_over_gateways() -> None:
    r = Rendezvous(SHARE)
    entries = fleet(8)
    counts: dict[str, int] = {}
    for i in range(4000):
        route = r.route(f"r{i}", entries, {}, NOW, 0.5)
        assert route is not None
        counts[route.urls[0]] = counts.get(route.urls[0], 0) + 1
    assert len(counts) == 8 and min(counts.values()) > 4000 / 8 * 0.8


def test_a_celebrity_room_spreads_as_it_grows_and_fills_the_emptiest_first() -> None:
    r = Rendezvous(SHARE)
    entries = fleet(6)
    order = [t.url for t in r.order("star", live_targets(entries, NOW))]
    by_url = {e.url: e.gateway_id for e in entries}
    # 250 viewers: 2.5 shares -> 3 gateways; the first two full, the third empty.
    viewers = {by_url[order[0]]: SHARE, by_url[order[1]]: SHARE, by_url[order[2]]: 50}
    chosen = {}
    for i in range(200):
        route = r.route("star", entries, viewers, NOW, i / 200)
        assert route is not None and route.spread == 3
        chosen[route.urls[0]] = chosen.get(route.urls[0], 0) + 1
    assert set(chosen) <= set(order[:3])
    # The third has 51 of the 53 free places (1 each for the full ones, by design).
    assert chosen.get(order[2], 0) > 180


def test_a_full_gateway_comes_last_and_an_overloaded_one_takes_no_new_rooms() -> None:
    r = Rendezvous(SHARE, load_factor=1.25)
    for room in ("a", "b", "c", "d", "e"):
        entries = fleet(4)
        top = r.order(room, live_targets(entries, NOW))[0].url
        i = next(j for j, e in enumerate(entries) if e.url == top)
        # Full: last in the order, whoever holds the room.
        full = [gw(j, capacity=10, connections=10) if j == i else e for j, e in enumerate(entries)]
        route = r.route(room, full, {}, NOW, 0.0)
        assert route is not None and route.urls[0] != top and route.urls[-1] == top
        # Overloaded (well over 1.25x the mean + a share): passed over for a new room ...
        busy = [gw(j, connections=10_000) if j == i else e for j, e in enumerate(entries)]
        route = r.route(room, busy, {}, NOW, 0.0)
        assert route is not None and route.urls[0] != top
        # ... but it keeps a room it already holds.
        route = r.route(room, busy, {f"g{i}": 10}, NOW, 0.0)
        assert route is not None and route.urls[0] == top


def test_processes_sharing_a_url_are_one_target() -> None:
    entries = [
        gw(0, connections=5, capacity=100),
        gw(1, url=gw(0).url, connections=7, capacity=100),
        gw(2),
    ]
    targets = live_targets(entries, NOW)
    assert [t.url for t in targets] == sorted({gw(0).url, gw(2).url})
    shared = next(t for t in targets if t.url == gw(0).url)
    assert (shared.connections, shared.capacity, shared.ids) == (12, 200, frozenset({"g0", "g1"}))


def test_the_weight_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; every web process must rank alike, so the
    # weight is a fixed function (BLAKE2b, then MurmurHash3's finaliser) with a known value.
    assert weight("lobby", "ws://a:1/ws") == 0x1627C2BEE26526D6
