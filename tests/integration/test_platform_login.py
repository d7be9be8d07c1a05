"""Platform login: RS256/ES256 tokens from the operator's own login service, checked
with a PEM public key or against a JWKS served by a real local HTTP server (real keys
from ``cryptography``), through the gateway handshake and the web API."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from danmaku import auth
from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.startup import settings_problem
from danmaku.verifier import KeysUnavailable, KeyUnknown, TokenVerifier
from tests.client import connect, http, start_system, token

ISSUER = "https://login.example"
AUDIENCE = "danmaku"


@dataclass
class Signer:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        return data | {"kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, uid: str, role: str = "viewer", **claims: Any) -> str:
        now = int(time.time())
        body = {
            "sub": uid,
            "nick": f"nick-{uid}",
            "role": role,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
        } | claims
        return jwt.encode(body, self.private, algorithm=self.alg, headers={"kid": self.kid})


def rsa_signer(kid: str) -> Signer:
    return Signer(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_signer(kid: str) -> Signer:
    return Signer(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


@dataclass
class JwksServer:
    """A real HTTP server publishing a JWKS; ``signers`` may change (key rotation),
    ``fetches`` counts GETs, ``hang`` makes it accept and never answer."""

    signers: list[Signer] = field(default_factory=list)
    fetches: int = 0
    hang: bool = False
    url: str = ""
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            if state.hang:
                state.release.wait(30)
                return
            body = json.dumps({"keys": [s.jwk() for s in state.signers]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def platform_settings(settings: Settings, url: str, **kw: Any) -> Settings:
    values = {
        "jwks_url": url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwks_refetch_s": 0.0,
    } | kw
    return settings.replace(**values)


async def test_jwks_tokens_verify_and_a_rotated_key_is_fetched(
    settings: Settings, jwks: JwksServer
) -> None:
    first, second = rsa_signer("k1"), ec_signer("k2")
    jwks.signers = [first]
    verifier = TokenVerifier(platform_settings(settings, jwks.url), Metrics(process=False))
    with pytest.raises(KeyUnknown):
        verifier.verify(first.sign("u1"))  # nothing cached: verify never fetches
    user = await verifier.verify_async(first.sign("u1", role="moderator"))
    assert (user.uid, user.nick, user.role) == ("u1", "nick-u1", "moderator")
    assert jwks.fetches == 1
    # Cached: the same kid needs no fetch, and plain verify works now.
    assert verifier.verify(first.sign("u2")).uid == "u2"
    assert jwks.fetches == 1
    # The platform rotates: a token of a kid not seen before makes one fetch.
    jwks.signers = [second]
    user = await verifier.verify_async(second.sign("u3"))
    assert user.uid == "u3" and jwks.fetches == 2
    # The withdrawn key is no longer trusted after that fetch.
    with pytest.raises(auth.TokenError):
        await verifier.verify_async(first.sign("u1"))
    # HS256 tokens of this system still pass beside them.
    assert (await verifier.verify_async(token("guest1"))).uid == "guest1"


async def test_an_old_key_set_is_fetched_again_and_a_withdrawn_key_stops_passing(
    settings: Settings, jwks: JwksServer
) -> None:
    signer = rsa_signer("k1")
    jwks.signers = [signer]
    verifier = TokenVerifier(platform_settings(settings, jwks.url, jwks_max_age_s=0.0))
    assert (await verifier.verify_async(signer.sign("u1"))).uid == "u1"
    jwks.signers = [rsa_signer("k2")]  # the platform withdraws k1
    # Still passes (nobody waits for the fetch) and sets off a fetch in the background.
    assert (await verifier.verify_async(signer.sign("u1"))).uid == "u1"
    with trio.fail_after(10):
        while jwks.fetches < 2:
            await trio.sleep(0.01)
        while True:  # the fetch's answer lands
            try:
                verifier.verify(signer.sign("u1"))
            except KeyUnknown:
                break
            await trio.sleep(0.01)
    # HS256 tokens never set off a fetch.
    before = jwks.fetches
    for _ in range(3):
        await verifier.verify_async(token("guest1"))
    await trio.sleep(0.1)
    assert jwks.fetches == before


async def test_unknown_kids_cost_one_fetch_per_interval(
    settings: Settings, jwks: JwksServer
) -> None:
    signer = rsa_signer("k1")
    jwks.signers = [signer]
    verifier = TokenVerifier(platform_settings(settings, jwks.url, jwks_refetch_s=3600.0))
    assert (await verifier.verify_async(signer.sign("u1"))).uid == "u1"
    forged = rsa_signer("made-up")
    for _ in range(20):
        with pytest.raises(auth.TokenError):
            await verifier.verify_async(forged.sign("u1"))
    # A flood of made-up kids right after a fetch costs the platform nothing more.
    assert jwks.fetches == 1


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": "another-service"}, "audience"),
        ({"iss": None}, "iss"),
        ({"aud": None}, "aud"),
    ],
)
async def test_wrong_or_missing_iss_and_aud_are_refused(
    settings: Settings, jwks: JwksServer, claims: dict[str, Any], why: str
) -> None:
    signer = rsa_signer("k1")
    jwks.signers = [signer]
    verifier = TokenVerifier(platform_settings(settings, jwks.url))
    body = {k: v for k, v in claims.items() if v is not None}
    raw = signer.sign("u1", **body)
    if None in claims.values():  # a missing claim: signed without it
        payload = jwt.decode(raw, options={"verify_signature": False})
        for name in claims:
            payload.pop(name)
        raw = jwt.encode(payload, signer.private, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(auth.TokenError, match=why):
        await verifier.verify_async(raw)


async def test_a_jwks_outage_refuses_new_keys_and_keeps_known_ones(
    settings: Settings, jwks: JwksServer
) -> None:
    known, rotated = rsa_signer("k1"), rsa_signer("k2")
    jwks.signers = [known]
    verifier = TokenVerifier(
        platform_settings(settings, jwks.url, jwks_timeout_s=0.5), Metrics(process=False)
    )
    await verifier.verify_async(known.sign("u1"))
    jwks.hang = True  # the platform's key service stops answering
    jwks.signers = [known, rotated]
    with trio.fail_after(10):  # (a bound against hanging, not a timing claim)
        with pytest.raises(KeysUnavailable, match="try again"):
            await verifier.verify_async(rotated.sign("u2"))
    assert (await verifier.verify_async(known.sign("u1"))).uid == "u1"
    assert verifier.metrics is not None
    assert verifier.metrics.jwks_fetches.labels("error")._value.get() == 1
    # Back: the next unknown kid is fetched and passes.
    jwks.hang = False
    jwks.release.set()
    assert (await verifier.verify_async(rotated.sign("u2"))).uid == "u2"


async def test_a_jwks_url_that_refuses_connections(settings: Settings) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verifier = TokenVerifier(platform_settings(settings, f"http://127.0.0.1:{port}/jwks"))
    with pytest.raises(KeysUnavailable):
        await verifier.verify_async(rsa_signer("k1").sign("u1"))


async def test_a_pem_public_key_as_text_or_path(settings: Settings, tmp_path: Path) -> None:
    signer = ec_signer("any")
    pem = (
        signer.private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    path = tmp_path / "platform.pem"
    path.write_text(pem)
    for value in (pem, str(path)):
        verifier = TokenVerifier(
            settings.replace(jwt_public_key=value, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
        )
        assert verifier.verify(signer.sign("u1")).uid == "u1"
        with pytest.raises(auth.TokenError):  # another key's token
            verifier.verify(ec_signer("x").sign("u1"))
        with pytest.raises(auth.TokenError):  # an RS256 token: the key is an ES256 one
            verifier.verify(rsa_signer("x").sign("u1"))
    # Without platform keys, RS256 tokens are refused, saying why.
    with pytest.raises(auth.TokenError, match="DANMAKU_JWT_PUBLIC_KEY"):
        TokenVerifier(settings).verify(signer.sign("u1"))


def test_bad_platform_settings_are_start_up_errors(settings: Settings, tmp_path: Path) -> None:
    missing = settings.replace(jwt_public_key=str(tmp_path / "nope.pem"))
    assert "DANMAKU_JWT_PUBLIC_KEY" in (settings_problem(missing) or "")
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\njunk\n")
    junk = settings.replace(jwt_public_key=str(tmp_path / "junk.pem"))
    assert "not a PEM public key" in (settings_problem(junk) or "")
    assert "http(s)" in (settings_problem(settings.replace(jwks_url="ftp://x/jwks")) or "")


async def test_platform_tokens_at_the_gateway_and_the_api(
    nursery: trio.Nursery, settings: Settings, jwks: JwksServer
) -> None:
    signer = rsa_signer("k1")
    jwks.signers = [signer]
    # A long JWKS timeout (and a longer handshake one): the outage below is seen waiting.
    slow = platform_settings(settings, jwks.url, jwks_timeout_s=8.0, connect_timeout_s=30.0)
    system = await start_system(nursery, slow)
    assert system.ws_port is not None
    port = system.ws_port
    viewer = await connect(nursery, system.ws_port, "plat", tok=signer.sign("pv1"))
    welcome = viewer.of_type("welcome")[0]
    assert welcome["user"] == {"uid": "pv1", "nick": "nick-pv1", "role": "viewer"}
    assert (await viewer.comment("hello from the platform", "n1"))["type"] == "ack"
    # A moderator token of the platform works on the moderation API.
    base = f"http://127.0.0.1:{system.web_port}/api/rooms/plat"
    reply = await http(base + "/bans", token=signer.sign("pm1", role="moderator"))
    assert reply.status == 200
    reply = await http(base + "/bans", token=signer.sign("pm1", role="moderator", aud="x"))
    assert reply.status == 401 and "audience" in reply.json()["detail"]
    # A wrong audience at the handshake: told why, closed as policy.
    bad = await connect(nursery, system.ws_port, "plat", tok=signer.sign("pv2", aud="x"))
    await bad.wait_for(lambda c: c.closed is not None)
    assert bad.of_type("error")[0]["code"] == "unauthorized"
    assert bad.closed is not None and bad.closed[0] == 1008
    # The key service goes away: a rotated key is refused as "try again later" (1013),
    # and while that handshake waits for the keys, nobody else does.
    jwks.hang = True
    before = jwks.fetches
    late: list[Any] = []

    async def late_viewer() -> None:
        late.append(await connect(nursery, port, "plat", tok=rsa_signer("k9").sign("pv3")))

    nursery.start_soon(late_viewer)
    with trio.fail_after(10):
        while jwks.fetches == before:  # its fetch is under way
            await trio.sleep(0.01)
    again = await connect(nursery, port, "plat", tok=signer.sign("pv4"))  # a known key
    assert again.of_type("welcome")[0]["user"]["uid"] == "pv4"
    guest = await connect(nursery, port, "plat", tok=token("hs1"))  # HS256
    assert guest.of_type("welcome")[0]["user"]["uid"] == "hs1"
    assert not late  # still waiting for the keys
    with trio.fail_after(30):
        while not late:
            await trio.sleep(0.05)
    await late[0].wait_for(lambda c: c.closed is not None, timeout=20)
    assert late[0].of_type("error")[0]["code"] == "unavailable"
    assert late[0].closed is not None and late[0].closed[0] == 1013
