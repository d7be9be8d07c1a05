"""Start-up: what may end a process, and how it says so.

Only start-up errors end a process (see docs/operations.md, "Failure behaviour"):
anything that goes wrong before a command printed its URLs is a ``StartupError``,
reported as one line ``danmaku: <what>: <why>`` on stderr with exit code 2. This module
holds the pieces of that boundary that need no process around them: the error type,
``starting()`` (names the step an exception came from), ``leaf_error()`` (finds the
cause inside trio's exception groups), ``one_line()``, the checks of settings values and
of the token secret, the private state directory and secret file of ``danmaku up``, and
``mask_url()`` for every Redis URL that is printed or logged.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import ssl
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from danmaku.config import Settings

#: HS256 needs a key at least as long as its output (RFC 7518 3.2): 256 bits.
MIN_SECRET_BYTES = 32

#: Settings where 0 would wedge the system rather than mean "off" or "unlimited".
AT_LEAST_ONE = frozenset(
    {
        "tick_ms",
        "lease_ms",
        "viewer_queue_frames",
        "viewer_queue_control",
        "max_handshakes",
        "ingest_queue",
        "max_items_per_tick",
        "max_message_bytes",
        "max_text_chars",
        "max_text_bytes",
        "max_nick_chars",
        "frames_history",
    }
)
PORTS = frozenset({"web_port", "ws_port", "metrics_port"})
#: What redis-py (redis, rediss, unix) and danmaku's cluster client accept.
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


class StartupError(Exception):
    """The process cannot start; ``str()`` is the one line an operator reads."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def describe(exc: BaseException) -> str:
    """A short, one-line reason for ``exc`` without the class path noise of a traceback:
    ``OSError``s by their (lower-case) ``strerror`` and file, our own errors by their
    message, anything else as ``Type: message``."""
    if isinstance(exc, StartupError):
        return one_line(str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        why = exc.strerror[:1].lower() + exc.strerror[1:]
        return one_line(f"{exc.filename}: {why}" if exc.filename else why)
    text = one_line(str(exc))
    name = type(exc).__name__
    if name in ("StoreError", "RedisNotFound", "RuntimeError") and text:
        return text
    return f"{name}: {text}" if text else name


def _why(exc: OSError) -> str:
    """The reason of an ``OSError`` without its file name: "permission denied"."""
    if not exc.strerror:
        return one_line(str(exc))
    return exc.strerror[:1].lower() + exc.strerror[1:]


def leaf_error(exc: BaseException) -> BaseException | None:
    """The first error inside ``exc`` that explains it: a ``StartupError`` if the groups
    hold one, else the first ``Exception`` leaf (depth first), else ``None`` (only
    cancellations, ``KeyboardInterrupt`` or ``SystemExit`` inside). trio's strict
    exception groups wrap a failure once per nursery it crossed."""
    found = list(leaves(exc))
    for leaf in found:
        if isinstance(leaf, StartupError):
            return leaf
    for leaf in found:
        if isinstance(leaf, Exception):
            return leaf
    return None


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc`` that are not groups (``exc`` itself if it is not)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


@contextmanager
def starting(what: str) -> Iterator[None]:
    """Turn an error of the start-up step ``what`` into ``StartupError("what: why")``.

    Cancellations (and groups of nothing but) pass through untouched, and so does a
    ``StartupError`` that already names its step."""
    try:
        yield
    except BaseException as exc:
        leaf = leaf_error(exc)
        if leaf is None:
            raise
        if isinstance(leaf, StartupError):
            raise leaf from exc
        raise StartupError(f"{what}: {describe(leaf)}") from exc


def mask_url(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``: what may be printed or logged.

    ``redis://:pw@host:1/0`` -> ``redis://:***@host:1/0``; a user name stays readable.
    Cluster seed lists (``redis+cluster://u:pw@h1:1,h2:2``) are masked the same way.
    Anything that does not parse as a URL with credentials is returned unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if ":" not in userinfo:
        return url  # a user name alone: no password to hide
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hosts}").geturl()


# ---- settings values ---------------------------------------------------------------------


def settings_problem(settings: Settings) -> str | None:
    """The first value of ``settings`` the system cannot run with, as ``NAME=value: why``
    (``NAME`` the environment variable), or ``None``. Numbers must be finite and not
    below zero (nor below their default, for settings whose default is negative: -1 =
    off); ports at most 65535; the settings in ``AT_LEAST_ONE`` at least 1."""
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        env = f.metadata["env"]
        lowest = min(0, cast(float, f.default))
        if f.name in AT_LEAST_ONE:
            lowest = 1
        if isinstance(value, float) and not math.isfinite(value):
            return f"{env}={value!r}: must be a finite number"
        if value < lowest:
            return f"{env}={value!r}: must be {lowest} or more"
        if f.name in PORTS and value > 65535:
            return f"{env}={value!r}: a port is 65535 at most"
    if settings.redis_url:
        scheme = settings.redis_url.partition("://")[0].lower()
        if "://" not in settings.redis_url or scheme not in REDIS_SCHEMES:
            return (
                f"REDIS_URL={mask_url(settings.redis_url)!r}: not a Redis URL (one of "
                + ", ".join(f"{s}://" for s in REDIS_SCHEMES)
                + ")"
            )
    if bool(settings.tls_cert) != bool(settings.tls_key):
        return "--tls-cert and --tls-key go together (DANMAKU_TLS_CERT, DANMAKU_TLS_KEY)"
    # Identity (issue 19): a guest policy, platform keys the system cannot use.
    if settings.guests not in ("comment", "watch", "off"):
        return f"DANMAKU_GUESTS={settings.guests!r}: must be comment, watch or off"
    if settings.jwks_url and not settings.jwks_url.startswith(("http://", "https://")):
        return f"DANMAKU_JWKS_URL={settings.jwks_url!r}: must be an http(s) URL"
    if settings.jwt_public_key:
        from danmaku.verifier import load_public_key

        try:
            load_public_key(settings.jwt_public_key)
        except ValueError as exc:
            return str(exc)
    return None


def check_secret(secret: str, source: str = "DANMAKU_SECRET") -> None:
    """Raise ``StartupError`` unless ``secret`` is at least ``MIN_SECRET_BYTES`` bytes
    (UTF-8). The message names the source, never the secret."""
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise StartupError(
            f"{source}: {size} bytes is too short for a token secret: use "
            f"{MIN_SECRET_BYTES} bytes or more (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`)"
        )


# ---- the private state of `danmaku up` -----------------------------------------------------


def private_dir(path: Path, what: str = "data dir") -> Path:
    """Create ``path`` (and its parents) as a directory only this user can enter (0700),
    or tighten an existing one of ours to 0700. ``StartupError`` when it cannot be made,
    is not a directory, or belongs to another user."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = path.stat()
    except FileExistsError:
        raise StartupError(f"{what} {path}: exists and is not a directory") from None
    except OSError as exc:
        raise StartupError(f"{what} {path}: {_why(exc)}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise StartupError(f"{what} {path}: not a directory")
    if info.st_uid != os.geteuid():
        raise StartupError(
            f"{what} {path}: owned by uid {info.st_uid}, not by this user "
            f"(uid {os.geteuid()}): choose a directory of your own (--data-dir)"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(0o700)  # ours: state and secret are nobody else's business
    return path


def read_secret_file(path: Path) -> str:
    """The secret kept in ``path``, after checking that only this user controls it: the
    file (symbolic links followed) must belong to this user and be writable by nobody
    else. ``StartupError`` otherwise, or when it is unreadable, empty or too short."""
    try:
        info = path.stat()
        if info.st_uid != os.geteuid():
            raise StartupError(
                f"secret file {path}: owned by uid {info.st_uid}, not by this user "
                f"(uid {os.geteuid()}): refusing a secret someone else controls"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise StartupError(
                f"secret file {path}: other users can write it (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): `chmod 600 {path}` and rotate the secret"
            )
        secret = path.read_text().strip()
    except OSError as exc:
        raise StartupError(f"secret file {path}: {_why(exc)}") from exc
    except UnicodeDecodeError:
        raise StartupError(f"secret file {path}: not UTF-8 text") from None
    check_secret(secret, f"secret file {path}")
    return secret


def create_secret_file(path: Path, secret: str) -> str:
    """Write ``secret`` to a new file ``path`` that is 0600 from its first byte (never
    world-readable, not even for a moment) and return it. If another process created the
    file first, its secret (checked by ``read_secret_file``) wins."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return read_secret_file(path)
    except OSError as exc:
        raise StartupError(f"secret file {path}: {_why(exc)}") from exc
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return secret


def check_tls(settings: Settings) -> None:
    """``StartupError`` unless ``--tls-cert``/``--tls-key`` (when given) are readable and
    hold a PEM certificate with its private key: found before anything listens."""
    if not settings.tls_cert:
        return
    for flag, name in (("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key)):
        try:
            with open(name, "rb") as pem:
                pem.read(1)
        except OSError as exc:
            raise StartupError(f"{flag} {name}: {_why(exc)}") from exc
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key
        )
    except ssl.SSLError as exc:
        raise StartupError(
            f"--tls-cert {settings.tls_cert} / --tls-key {settings.tls_key}: not a PEM "
            f"certificate and its private key ({exc.reason or exc})"
        ) from exc
