"""Tokens, settings resolution and per-IP admission: pure, no I/O."""

from __future__ import annotations

import argparse

import pytest

from danmaku import auth, config
from danmaku.rules.admission import IpAdmission

SECRET = "unit-secret-0123456789abcdef0123456789"


def test_token_round_trip_and_claims() -> None:
    tok = auth.mint(SECRET, uid="u1", nick="Ann", role="streamer", room="r", highlight=True)
    user = auth.verify(SECRET, tok, room="r")
    assert (user.uid, user.nick, user.role, user.room, user.highlight) == (
        "u1",
        "Ann",
        "streamer",
        "r",
        True,
    )
    assert user.is_staff


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),
        lambda t: auth.mint("other-secret-0123456789abcdef01234", uid="u", nick="n"),
        lambda t: auth.mint(SECRET, uid="u", nick="n", ttl_s=-5),
        lambda t: auth.mint(SECRET, uid="u", nick="n", room="elsewhere"),
        lambda t: "x" * 3000,
    ],
)
def test_bad_tokens_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    tok = mutate(auth.mint(SECRET, uid="u", nick="n"))
    with pytest.raises(auth.TokenError):
        auth.verify(SECRET, tok, room="r")


def test_mint_refuses_bad_role_and_uid() -> None:
    with pytest.raises(ValueError):
        auth.mint(SECRET, uid="u", nick="n", role="king")
    with pytest.raises(ValueError):
        auth.mint(SECRET, uid="bad uid", nick="n")
    with pytest.raises(ValueError):  # $ of the pattern matches before a final newline
        auth.mint(SECRET, uid="u\n", nick="n")


def test_settings_flag_beats_env_beats_default() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    env = {"DANMAKU_TICK_MS": "200", "REDIS_URL": "redis://x", "DANMAKU_WS_PORT": "9"}
    s = config.from_sources(parser.parse_args(["--ws-port", "0"]), env)
    assert (s.tick_ms, s.redis_url, s.ws_port, s.web_port) == (200, "redis://x", 0, 8080)
    with pytest.raises(ValueError, match="DANMAKU_TICK_MS"):
        config.from_sources(None, {"DANMAKU_TICK_MS": "fast"})


def test_ip_admission_caps_concurrency_and_rate() -> None:
    adm = IpAdmission(max_conns=2, max_per_min=3)
    assert adm.try_open("1.1.1.1", now=0) is None
    assert adm.try_open("1.1.1.1", now=1) is None
    assert adm.try_open("1.1.1.1", now=2) == "too_many_connections"
    adm.close("1.1.1.1")
    assert adm.try_open("1.1.1.1", now=3) is None  # third session this minute
    adm.close("1.1.1.1")
    assert adm.try_open("1.1.1.1", now=4) == "too_many_sessions"
    assert adm.try_open("1.1.1.1", now=61) is None  # a new minute
    assert adm.try_open("2.2.2.2", now=4) is None  # other IPs unaffected


def test_ip_admission_zero_means_unlimited_and_state_is_bounded() -> None:
    adm = IpAdmission(max_conns=0, max_per_min=5, max_tracked=100)
    for i in range(100):
        assert adm.try_open(f"10.0.0.{i}", now=0) is None
    assert adm.try_open("10.0.1.1", now=1) == "too_many_sessions"  # table full this minute
    assert adm.try_open("10.0.1.1", now=61) is None  # old windows pruned
    assert adm.tracked() <= 100


def test_moderator_of_listed_rooms() -> None:
    tok = auth.mint(SECRET, uid="m", nick="M", role="moderator", room=["a", "b"])
    user = auth.verify(SECRET, tok)
    assert user.rooms == ("a", "b") and user.allowed_in("b") and not user.allowed_in("c")
    assert auth.verify(SECRET, tok, room="a").uid == "m"
    with pytest.raises(auth.TokenError):
        auth.verify(SECRET, tok, room="c")
    everywhere = auth.verify(SECRET, auth.mint(SECRET, uid="m", nick="M", role="moderator"))
    assert everywhere.rooms is None and everywhere.allowed_in("anything")
