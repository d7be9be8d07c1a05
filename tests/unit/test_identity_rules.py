"""The pure identity rules (issue 19): IP ban networks, nick cleaning and confusable
skeletons, the guest policy, what a banned viewer is told."""

from __future__ import annotations

import ipaddress
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from danmaku.auth import User
from danmaku.rules import guests
from danmaku.rules.bans import BanReasons, banned_fields, until_from_retry
from danmaku.rules.ipbans import IpBan, IpBans, candidates, network_of, prefix_of
from danmaku.rules.nicks import CONFUSABLES, NickError, StaffNicks, clean, skeleton

# ---- IP bans ------------------------------------------------------------------------------
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))


@pytest.mark.parametrize(
    ("given_as", "network"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        ("203.0.113.7/24", "203.0.113.0/24"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("2001:db8:0:0:abcd::/64", "2001:db8::/64"),
        ("::ffff:198.51.100.9", "198.51.100.9/32"),
    ],
)
def test_networks_a_ban_may_name(given_as: str, network: str) -> None:
    assert network_of(given_as) == network


@pytest.mark.parametrize("bad", ["10.0.0.0/8", "10.0.0.0/16", "2001:db8::/48", "nope", "1.2.3"])
def test_too_wide_or_malformed_networks_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        network_of(bad)


@given(st.one_of(ipv4, ipv6), st.integers(0, 255))
def test_a_prefix_ban_covers_its_neighbours_and_an_address_ban_only_itself(
    ip: str, low: int
) -> None:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    neighbour = str(type(addr)((int(addr) & ~0xFF) | low))
    now = 1000.0
    prefix_ban = IpBans({prefix_of(ip): IpBan(prefix_of(ip), until=now + 60)})
    assert prefix_ban.match(candidates(neighbour), now) is not None
    own = network_of(ip)
    address_ban = IpBans({own: IpBan(own, until=0)})
    assert address_ban.match(candidates(ip), now) is not None
    assert (address_ban.match(candidates(neighbour), now) is not None) == (
        type(addr)(neighbour) == addr
    )
    assert prefix_ban.match(candidates(neighbour), now + 61) is None  # expired


def test_what_is_not_an_address_is_never_banned() -> None:
    assert candidates("unknown") == () and candidates("") == ()
    assert IpBans({"1.2.3.4/32": IpBan("1.2.3.4/32", 0)}).match((), 0) is None


def test_of_two_bans_on_one_address_the_longer_counts() -> None:
    bans = IpBans(
        {
            "1.2.3.4/32": IpBan("1.2.3.4/32", until=500, reason="short"),
            "1.2.3.0/24": IpBan("1.2.3.0/24", until=900, reason="long"),
        }
    )
    found = bans.match(candidates("1.2.3.4"), 100)
    assert found is not None and found.reason == "long"


# ---- nicks --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("  Bob  ", "Bob"),
        ("Bo\u200bb", "Bob"),  # zero-width space
        ("\u202eevil\u202c", "evil"),  # bidi override
        ("a\u2066b\u2069", "ab"),  # bidi isolate
        ("ann\u3164", "ann"),  # Hangul filler
        ("ｆｕｌｌ", "full"),  # NFKC
        ("tab\there", "tab here"),
        ("z\u0301\u0302\u0303\u0304\u0305", "z\u0301\u0302"),  # at most two marks
    ],
)
def test_nicks_are_cleaned(raw: str, cleaned: str) -> None:
    assert clean(raw, 24) == unicodedata.normalize("NFKC", cleaned)


@pytest.mark.parametrize("raw", ["", "   ", "\u200b\u200d", "\u202e", "\u3164"])
def test_a_nick_of_nothing_visible_is_refused(raw: str) -> None:
    with pytest.raises(NickError):
        clean(raw, 24)


@given(st.text(max_size=80))
def test_a_cleaned_nick_has_no_control_or_invisible_character(raw: str) -> None:
    try:
        nick = clean(raw, 24)
    except NickError:
        return
    assert 0 < len(nick) <= 24 and nick == nick.strip()
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Cn") for ch in nick)
    assert "  " not in nick


@pytest.mark.parametrize(
    "fake",
    [
        "StreamerMax",
        "STREAMERMAX",
        "streamermax",
        "ЅtrеamеrMax",  # Cyrillic Ѕ and е
        "StrеаmеrМах",  # Cyrillic е, а, М, х
        "ＳｔｒｅａｍｅｒＭａｘ",  # fullwidth
        "StrearnerMax",  # rn for m
        "StreamerMaх",  # Cyrillic х
    ],
)
def test_look_alikes_of_a_staff_nick_share_its_skeleton(fake: str) -> None:
    assert skeleton(fake) == skeleton("StreamerMax")


@pytest.mark.parametrize(
    ("a", "b"), [("Il1|", "llll"), ("B0B", "BOB"), ("ΑΒΕΗ", "ABEH"), ("cIean", "clean")]
)
def test_digits_and_letters_that_pass_for_each_other(a: str, b: str) -> None:
    assert skeleton(a) == skeleton(b)


@pytest.mark.parametrize(("a", "b"), [("Streamer", "Steamer"), ("Ann", "Anna"), ("mod", "god")])
def test_different_names_stay_different(a: str, b: str) -> None:
    assert skeleton(a) != skeleton(b)


# Latin letters and the look-alikes the table maps to them (the inverse of CONFUSABLES).
_LOOKALIKES: dict[str, list[str]] = {}
for _src, _proto in CONFUSABLES.items():
    if len(_proto) == 1:
        _LOOKALIKES.setdefault(_proto, []).append(chr(_src))


@given(st.data(), st.text(alphabet=sorted(_LOOKALIKES), min_size=1, max_size=20))
def test_swapping_letters_for_their_look_alikes_keeps_the_skeleton(
    data: st.DataObject, name: str
) -> None:
    fake = "".join(
        data.draw(st.sampled_from([ch, *_LOOKALIKES[ch]]), label=f"for {ch}") for ch in name
    )
    assert skeleton(fake) == skeleton(name)


def test_a_staff_member_keeps_its_own_nick() -> None:
    staff = StaffNicks({"star": "StreamerMax", "mod1": "Mo"})
    assert staff.mimics("ЅtreamerMax", "troll") == "StreamerMax"
    assert staff.mimics("StreamerMax", "star") is None
    assert staff.mimics("M0", "troll") == "Mo"
    assert staff.mimics("Fan", "troll") is None
    assert StaffNicks().mimics("anything", "x") is None


# ---- guests ---------------------------------------------------------------------------------
def test_guest_policy_codes_round_trip_and_unknown_codes_fall_back() -> None:
    for name in guests.POLICIES:
        assert guests.policy(guests.code(name)) == name
    assert guests.policy(None, "watch") == "watch"
    assert guests.policy(7.0) == "comment" and guests.policy(0.5) == "comment"
    assert guests.policy(float("nan")) == "comment"
    assert guests.shown({"guests": 1.0, "budget": 5.0}) == {"guests": "watch", "budget": 5.0}


@pytest.mark.parametrize(
    ("policy", "who", "enter", "comment"),
    [
        ("comment", "guest", True, True),
        ("watch", "guest", True, False),
        ("off", "guest", False, False),
        ("watch", "member", True, True),
        ("off", "member", True, True),
        ("off", "staff guest", True, True),
    ],
)
def test_what_a_guest_may_do(policy: str, who: str, enter: bool, comment: bool) -> None:
    user = User(
        uid="g_abcdefghijkl",
        nick="n",
        role="moderator" if "staff" in who else "viewer",
        guest="guest" in who,
    )
    assert guests.may_enter(policy, user) is enter
    assert guests.may_comment(policy, user) is comment
    assert guests.may_enter("off", None)  # anonymous viewers watch


# ---- what a banned viewer is told -----------------------------------------------------------
def test_banned_fields() -> None:
    assert banned_fields(0, "") == {"until": None}
    assert banned_fields(1700000000.5, "spam") == {"until": 1700000000500, "reason": "spam"}
    assert banned_fields(None, None) == {"until": None}
    assert until_from_retry(0, 5000) == 0.0 and until_from_retry(1000, 5000) == 6.0
    reasons = BanReasons({"a": (1.0, "x" * 300)})
    assert reasons.reason("a") == "x" * 200 and reasons.reason("b") == ""
