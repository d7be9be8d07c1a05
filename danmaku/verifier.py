"""``TokenVerifier``: which user a token names, whoever signed it.

Two kinds of signer are trusted:

* this system itself (HS256 with ``DANMAKU_SECRET``): guest tokens from
  ``POST /api/session``, ``danmaku token``, a platform backend that shares the secret;
* the operator's own login service (RS256 or ES256), with its public key
  (``DANMAKU_JWT_PUBLIC_KEY``, a path or the PEM text) or its JWKS URL
  (``DANMAKU_JWKS_URL``). Such tokens must also carry the configured ``iss`` and
  ``aud`` (``DANMAKU_JWT_ISSUER``, ``DANMAKU_JWT_AUDIENCE``).

The token's header picks the signer: an ``HS256`` token is checked with the secret only,
an ``RS256``/``ES256`` one with the platform's keys only (no algorithm confusion: a
public key is never used as an HMAC secret).

JWKS keys live in a dict by ``kid``. ``verify`` never does I/O: a token whose ``kid``
is not cached raises ``KeyUnknown``. ``verify_async`` then fetches the key set once
(pyjwt's ``PyJWKClient`` in a worker thread, abandoned after ``DANMAKU_JWKS_TIMEOUT_S``,
so neither the event loop nor a handshake waits longer) and tries again. Fetches are
single-flight and at most one per ``DANMAKU_JWKS_REFETCH_S``, so a flood of made-up
kids costs the platform one request per interval; a failed fetch keeps the keys already
cached (tokens of known keys still pass) and refuses unknown ones with
``KeysUnavailable`` (clients are told to retry). Key sets older than
``DANMAKU_JWKS_MAX_AGE_S`` are fetched again in the background (the token that noticed
passes with the cached key), so a key the platform withdrew stops being trusted. HS256
tokens never wait for the JWKS.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import jwt
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from danmaku import auth
from danmaku.auth import TokenError, User
from danmaku.config import Settings
from danmaku.metrics import Metrics

log = logging.getLogger(__name__)

ASYMMETRIC = ("RS256", "ES256")


class KeyUnknown(TokenError):
    """The token names a JWKS key id not in the cache (``verify_async`` fetches)."""


class KeysUnavailable(TokenError):
    """The platform's keys could not be fetched: the token can be neither checked nor
    refused for good (clients should retry later)."""


def load_public_key(value: str) -> tuple[Any, str]:
    """The key and its algorithm from ``DANMAKU_JWT_PUBLIC_KEY``: PEM text, or the path
    of a PEM file. Raises ``ValueError`` saying what is wrong (a start-up error)."""
    text = value
    if "-----BEGIN" not in value:
        try:
            text = Path(value).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"DANMAKU_JWT_PUBLIC_KEY: cannot read {value}: {exc}") from exc
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError("DANMAKU_JWT_PUBLIC_KEY: not a PEM public key") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("DANMAKU_JWT_PUBLIC_KEY: an RSA key needs 2048 bits or more")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError("DANMAKU_JWT_PUBLIC_KEY: must be an RSA (RS256) or P-256 EC (ES256) key")


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError(f"bad token: {exc}") from exc
    return header


class TokenVerifier:
    """One per role and process (its JWKS fetches are single-flight within one trio
    run). Raises ``ValueError`` at construction for an unusable key or URL."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.secret = settings.secret
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.metrics = metrics
        self.public_key: tuple[Any, str] | None = None
        if settings.jwt_public_key:
            self.public_key = load_public_key(settings.jwt_public_key)
        self.timeout_s = max(0.1, settings.jwks_timeout_s)
        self.refetch_s = settings.jwks_refetch_s
        self.max_age_s = settings.jwks_max_age_s
        self.jwks: jwt.PyJWKClient | None = None
        if settings.jwks_url:
            if not settings.jwks_url.startswith(("http://", "https://")):
                raise ValueError("DANMAKU_JWKS_URL must be an http(s) URL")
            self.jwks = jwt.PyJWKClient(
                settings.jwks_url, cache_jwk_set=False, timeout=self.timeout_s
            )
        self._keys: dict[str, tuple[Any, str]] = {}  # kid -> (key, algorithm)
        self._fetched_at = -math.inf  # time.monotonic() of the last good fetch
        self._tried_at = -math.inf  # ... of the last attempt, good or not
        self._failure = ""  # why the last attempt failed ("" after a good one)
        self._fetching: trio.Event | None = None

    @property
    def platform(self) -> bool:
        """Whether RS256/ES256 tokens are accepted at all."""
        return self.public_key is not None or self.jwks is not None

    # ---- checking ---------------------------------------------------------------------
    def verify(self, token: str, *, room: str | None = None) -> User:
        """The token's user, without I/O. Raises ``TokenError``: ``KeyUnknown`` when the
        token needs a JWKS key not cached yet (``verify_async`` fetches it)."""
        if len(token) > auth.MAX_TOKEN_CHARS:
            raise TokenError("token too long")
        alg = _header(token).get("alg")
        if alg == auth.ALGORITHM:
            return auth.verify(self.secret, token, room=room)
        if alg not in ASYMMETRIC:
            raise TokenError(f"bad token: algorithm {str(alg)[:16]!r} not accepted")
        if not self.platform:
            raise TokenError(
                f"bad token: {alg} tokens are not accepted here (no platform key is set: "
                "DANMAKU_JWT_PUBLIC_KEY or DANMAKU_JWKS_URL)"
            )
        kid = _header(token).get("kid")
        key = self._key_for(alg, kid)
        return auth.decode(
            token, key, (alg,), room=room, issuer=self.issuer, audience=self.audience
        )

    def _key_for(self, alg: str, kid: Any) -> Any:
        if self.jwks is not None and isinstance(kid, str) and kid:
            found = self._keys.get(kid)
            if found is None:
                if self.public_key is not None and self.public_key[1] == alg:
                    return self.public_key[0]
                raise KeyUnknown(f"bad token: unknown signing key (kid {kid[:40]!r})")
            if found[1] != alg:
                raise TokenError(f"bad token: key {kid[:40]!r} is for {found[1]}, not {alg}")
            return found[0]
        if self.public_key is not None and self.public_key[1] == alg:
            return self.public_key[0]
        if self.jwks is not None:
            raise TokenError("bad token: a kid is needed to pick the platform's key")
        raise TokenError(f"bad token: the platform key is not a {alg} key")

    async def verify_async(self, token: str, *, room: str | None = None) -> User:
        """``verify``, fetching the platform's key set first when the token's ``kid`` is
        unknown (an old set: fetched in the background). Waits at most about
        ``DANMAKU_JWKS_TIMEOUT_S``.
        Raises ``TokenError``; ``KeysUnavailable`` when the keys could not be fetched."""
        try:
            user = self.verify(token, room=room)
        except KeyUnknown:
            await self.refresh()
        else:
            now = time.monotonic()
            stale = now - self._fetched_at > self.max_age_s and self._fetching is None
            due = stale and now - self._tried_at >= self.refetch_s
            if due and self.jwks is not None and _header(token).get("alg") in ASYMMETRIC:
                # Checked with a cached key: fetch the set again behind this token's back
                # (a withdrawn key stops passing after that), nobody waits for it.
                trio.lowlevel.spawn_system_task(self.refresh)
            return user
        try:
            return self.verify(token, room=room)
        except KeyUnknown as exc:
            if self._failure:
                raise KeysUnavailable(
                    "the platform's signing keys are unavailable (JWKS fetch failed): "
                    "try again later"
                ) from exc
            raise

    # ---- the key set ------------------------------------------------------------------
    async def refresh(self) -> None:
        """Fetch the JWKS again unless one was tried within ``DANMAKU_JWKS_REFETCH_S``
        (then: nothing); joins a fetch already under way. Never raises for the fetch."""
        if self.jwks is None:
            return
        if self._fetching is not None:
            await self._fetching.wait()
            return
        if time.monotonic() - self._tried_at < self.refetch_s:
            return
        self._fetching = done = trio.Event()
        self._tried_at = time.monotonic()
        try:
            keys: dict[str, tuple[Any, str]] | None = None
            with trio.move_on_after(self.timeout_s):
                # abandon_on_cancel: after the timeout the thread is left to urllib's own
                # timeout; its result is dropped, the event loop never waits for it.
                keys = await trio.to_thread.run_sync(self._fetch, abandon_on_cancel=True)
            if keys is None:
                self._failed(f"no answer within {self.timeout_s:g} s")
            else:
                self._keys = keys
                self._fetched_at = time.monotonic()
                self._failure = ""
                self._count("ok")
        except Exception as exc:  # the JWKS is the network's: whatever it sends, log it
            self._failed(f"{type(exc).__name__}: {exc}")
        finally:
            self._fetching = None
            done.set()

    def _failed(self, why: str) -> None:
        self._failure = why[:200]
        self._count("error")
        log.warning("JWKS fetch failed (keeping %d cached keys): %s", len(self._keys), why[:200])

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.jwks_fetches.labels(outcome).inc()

    def _fetch(self) -> dict[str, tuple[Any, str]]:
        """The key set as kid -> (key, algorithm): signing keys of an accepted algorithm
        only (runs in a worker thread)."""
        assert self.jwks is not None
        keys: dict[str, tuple[Any, str]] = {}
        for jwk in self.jwks.get_jwk_set(refresh=True).keys:
            use = getattr(jwk, "public_key_use", None)
            if jwk.key_id and jwk.algorithm_name in ASYMMETRIC and use in (None, "sig"):
                keys[jwk.key_id] = (jwk.key, jwk.algorithm_name)
        return keys
