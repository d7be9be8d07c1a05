"""The pure pieces of start-up (danmaku/startup.py): settings checks, secret rules,
URL masking, finding the cause inside exception groups, the private files of `up`."""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from danmaku.config import Settings, from_sources
from danmaku.startup import (
    AT_LEAST_ONE,
    PORTS,
    StartupError,
    check_secret,
    create_secret_file,
    describe,
    leaf_error,
    mask_url,
    private_dir,
    read_secret_file,
    settings_problem,
    starting,
)

NUMERIC = [f for f in dataclasses.fields(Settings) if isinstance(f.default, int | float)]


# ---- settings values -------------------------------------------------------------------


@given(
    st.sampled_from(NUMERIC),
    st.one_of(
        st.text(max_size=12),
        st.integers(-(10**20), 10**20).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["nan", "inf", "-inf", "1e400", "²", "٣", " 5 ", "0x10", "1_000"]),
    ),
)
def test_any_environment_value_is_accepted_sound_or_refused_in_one_line(
    f: dataclasses.Field[object], raw: str
) -> None:
    """Whatever text an operator puts in a numeric variable: it is refused by a one-line
    message naming the variable, or the value the system runs with is finite and in
    range. Nothing else (no other exception, no NaN reaching a timer)."""
    env = f.metadata["env"]
    try:
        settings = from_sources(None, {env: raw})
    except ValueError as exc:
        assert env in str(exc) and "\n" not in str(exc)
        return
    problem = settings_problem(settings)
    value = getattr(settings, f.name)
    if problem is not None:
        assert problem.startswith(f"{env}=") and "\n" not in problem
        return
    assert math.isfinite(value)
    assert value >= (1 if f.name in AT_LEAST_ONE else min(0, f.default))  # type: ignore[call-overload]
    if f.name in PORTS:
        assert value <= 65535


def test_the_defaults_pass() -> None:
    assert settings_problem(Settings()) is None


def test_tls_cert_and_key_go_together() -> None:
    assert "go together" in (settings_problem(Settings(tls_cert="c.pem")) or "")
    assert settings_problem(Settings(tls_cert="c.pem", tls_key="k.pem")) is None


# ---- secrets -----------------------------------------------------------------------------


@given(st.text(max_size=40))
def test_a_secret_is_accepted_exactly_when_it_has_32_bytes(secret: str) -> None:
    size = len(secret.encode())
    if size >= 32:
        check_secret(secret)
    else:
        with pytest.raises(StartupError) as caught:
            check_secret(secret)
        message = str(caught.value)
        assert f"{size} bytes" in message and "\n" not in message


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: the modes below must not depend on the caller's."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_private_dir_is_0700_and_tightens_a_loose_one(tmp_path: Path, umask_zero: None) -> None:
    made = private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o777
    private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(StartupError, match="not a directory"):
        private_dir(tmp_path / "f")


def test_a_new_secret_file_is_0600_and_a_racing_one_wins(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "secret"
    first = "a" * 40
    assert create_secret_file(path, first) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Someone else's file appeared first: its secret, checked, is the one used.
    assert create_secret_file(path, "b" * 40) == first
    assert read_secret_file(path) == first


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o622, 0o660, 0o666, 0o777])
def test_a_secret_file_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    path.write_text("s" * 40)
    path.chmod(mode)
    with pytest.raises(StartupError, match="other users can write it"):
        read_secret_file(path)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o644])
def test_a_secret_file_only_its_owner_can_write_is_read(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    path.write_text("s" * 40 + "\n")
    path.chmod(mode)
    assert read_secret_file(path) == "s" * 40


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_a_secret_file_someone_else_owns_is_refused_even_through_a_link(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.write_text("s" * 40)
    theirs.chmod(0o600)
    os.chown(theirs, 65534, 65534)
    (tmp_path / "secret").symlink_to(theirs)
    for path in (theirs, tmp_path / "secret"):
        with pytest.raises(StartupError, match="owned by uid 65534"):
            read_secret_file(path)


# ---- masking -------------------------------------------------------------------------------

PASSWORDS = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=6, max_size=40
).filter(lambda p: "***" not in p)


@given(
    PASSWORDS,
    st.sampled_from(["", "default", "app"]),
    st.sampled_from(["redis", "rediss", "redis+cluster"]),
    st.sampled_from(["127.0.0.1:6379", "r1.example:7000,r2.example:7001", "[::1]:6380"]),
)
def test_mask_url_hides_any_password_and_keeps_the_rest(
    password: str, user: str, scheme: str, hosts: str
) -> None:
    encoded = quote(password, safe="")
    url = f"{scheme}://{user}:{encoded}@{hosts}/0"
    masked = mask_url(url)
    assert masked == f"{scheme}://{user}:***@{hosts}/0"


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "redis://user@h:1/0", "unix:///run/redis.sock", "", "garbage"],
)
def test_mask_url_leaves_urls_without_a_password_alone(url: str) -> None:
    assert mask_url(url) == url


# ---- exception groups -----------------------------------------------------------------------


def _nest(exc: BaseException, depth: int) -> BaseException:
    for _ in range(depth):
        exc = BaseExceptionGroup("nursery", [exc, trio.Cancelled._create()])
    return exc


@given(st.integers(0, 6), st.booleans())
def test_leaf_error_finds_the_cause_at_any_depth(depth: int, with_startup: bool) -> None:
    cause = OSError(98, "Address already in use")
    inner: list[BaseException] = [cause]
    if with_startup:
        inner.insert(0, RuntimeError("noise"))
        inner.append(StartupError("web app: it broke"))
    tree = _nest(BaseExceptionGroup("g", inner) if len(inner) > 1 else cause, depth)
    found = leaf_error(tree)
    assert found is (inner[-1] if with_startup else cause)


def test_leaf_error_of_cancellations_alone_is_none() -> None:
    assert leaf_error(_nest(trio.Cancelled._create(), 3)) is None


async def test_starting_names_the_step_and_lets_cancellation_through() -> None:
    async def fails() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(trio.sleep_forever)
            raise OSError(98, "Address already in use")

    with pytest.raises(StartupError) as caught, starting("web app on 127.0.0.1:8080"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails)
    assert str(caught.value) == "web app on 127.0.0.1:8080: address already in use"

    with trio.move_on_after(0.01) as scope, starting("anything"):
        await trio.sleep_forever()
    assert scope.cancelled_caught  # Cancelled passed through untouched


@given(st.text(max_size=60))
def test_describe_is_always_one_line(message: str) -> None:
    for exc in (ValueError(message), OSError(2, message or "x", "f"), StartupError(message)):
        assert "\n" not in describe(exc) and "\r" not in describe(exc)
