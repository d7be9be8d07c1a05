"""The web app's error boundary over a real socket, against a real Redis: whatever a
request holds, or whatever a handler meets, the answer is JSON and the app goes on."""

from __future__ import annotations

import json
import logging
import re
import socket
import urllib.parse
from pathlib import Path

import pytest
import redis
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from danmaku.config import Settings
from danmaku.system import System
from tests.client import http, http_sync, start_system, token
from tests.integration.test_failures import start_redis

MOD = token("mod1", role="moderator", room="fz")
ADMIN = token("root", role="admin")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in Prometheus text: (labels, value)."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent)."""
    return sum(v for got, v in samples(text, name) if got == labels)


def redis_errors(text: str) -> float:
    return sum(v for _, v in samples(text, "danmaku_redis_errors_total"))


async def test_an_exception_in_a_handler_is_a_json_500_and_the_next_request_works(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    """Provoked honestly: values in Redis the handlers cannot decode (a pin that is not
    JSON, a ban that is not a number), as a bad migration or a hand edit would leave."""
    base = f"http://127.0.0.1:{system.web_port}"
    r = redis.Redis.from_url(system.settings.redis_url)
    r.set("dm:{fz}:pin", b"\xff not json")
    r.hset("dm:{fz}:bans", "who", "soon")
    caplog.set_level(logging.INFO)
    for path, route in [
        ("/api/rooms/fz/pin", "/api/rooms/{room}/pin"),
        ("/api/rooms/fz/bans", "/api/rooms/{room}/bans"),
    ]:
        caplog.clear()
        reply = await http(base + path, token=MOD)
        assert reply.status == 500
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == {"detail": "internal error", "status": 500}
        assert reply.headers["x-content-type-options"] == "nosniff"
        warnings = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert len(warnings) == 1, [rec.getMessage() for rec in warnings]
        assert warnings[0].getMessage().startswith(f"GET {route} from 127.0.0.1 failed: ")
        assert (await http(f"{base}/healthz")).status == 200
        assert (await http(f"{base}/api/rooms/fz/audit", token=MOD)).status == 200
    text = (await http(f"{base}/metrics")).body.decode()
    assert metric(text, "danmaku_http_requests_total", route="/api/rooms/{room}/pin", status="5xx")
    assert metric(text, "danmaku_http_requests_total", route="/healthz", status="2xx") == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "tok"),
    [
        ("PATCH", "/api/rooms/fz/words", b'{"add": ["\\ud800"]}', MOD),
        ("PATCH", "/api/words", b'{"add": ["\\udfff"]}', ADMIN),
        ("PUT", "/api/rooms/fz/pin", b'{"text": "x\\ud800y"}', MOD),
        ("POST", "/api/rooms/fz/notices", b'{"text": "\\ud800"}', MOD),
        ("POST", "/api/rooms/fz/bans", b'{"uid": "x", "reason": "\\ud800"}', MOD),
        ("POST", "/api/session", b'{"nick": "\\ud800"}', None),
        ("POST", "/api/rooms/fz/broadcasts", b'{"title": "\\ud800"}', MOD),
        ("PATCH", "/api/rooms/fz/settings", b'{"budget": NaN}', MOD),
        ("POST", "/api/session", b'\x81{"nick": 1}', None),
    ],
)
async def test_json_no_store_can_hold_is_a_422_not_a_500(
    system: System, method: str, path: str, body: bytes, tok: str | None
) -> None:
    """Found by the fuzz: Python's json reads a lone surrogate escape (and NaN); the text
    then failed in Redis' encoder or orjson as a 500 (before the boundary: plain text)."""
    base = f"http://127.0.0.1:{system.web_port}"
    reply = await http(
        base + path, method, data=body, token=tok, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 422, (reply.status, reply.body)
    assert reply.json()["detail"][0]["type"] == "json_invalid"
    r = redis.Redis.from_url(system.settings.redis_url)
    assert not r.exists("dm:{fz}:pin") and not r.smembers("dm:{fz}:words")


@pytest.mark.parametrize(
    ("trusted", "forwarded", "logged"),
    [
        ("", "203.0.113.9", "127.0.0.1"),  # no proxy trusted: the header is ignored
        ("127.0.0.0/8", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the proxy's entry
        ("127.0.0.0/8", "", "127.0.0.1"),
    ],
)
async def test_logs_name_the_client_behind_a_trusted_proxy_only(
    nursery: trio.Nursery,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    trusted: str,
    forwarded: str,
    logged: str,
) -> None:
    web: System = await start_system(nursery, settings.replace(trusted_proxies=trusted), ("web",))
    redis.Redis.from_url(settings.redis_url).set("dm:{fz}:pin", b"not json")
    caplog.set_level(logging.WARNING, logger="danmaku.web")
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    reply = await http(
        f"http://127.0.0.1:{web.web_port}/api/rooms/fz/pin", token=MOD, headers=headers
    )
    assert reply.status == 500
    [record] = [r for r in caplog.records if r.name == "danmaku.web"]
    assert f" from {logged} failed" in record.getMessage()


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "1-2-3",
        "18446744073709551616-0",  # 2**64: one past Redis' range
        "0-99999999999999999999",
        "١٢٣-٠",  # Arabic-Indic digits: `\d` let them through to Redis before
        "１-０",
        "-",
        "1-" + "9" * 300,
    ],
)
async def test_bad_comment_ids_are_400_and_never_reach_redis(system: System, bad: str) -> None:
    base = f"http://127.0.0.1:{system.web_port}"
    quoted = urllib.parse.quote(bad, safe="")
    for method, path, what in [
        ("DELETE", f"/api/rooms/fz/comments/{quoted}", "comment id"),
        ("GET", f"/api/rooms/fz/comments?before={quoted}", "before"),
        ("GET", f"/api/rooms/fz/feed?after={quoted}", "after"),
    ]:
        reply = await http(base + path, method, token=MOD)
        assert reply.status == 400, (path, reply.status, reply.body)
        assert reply.json()["detail"].startswith(f"bad {what}: "), reply.json()
    text = (await http(f"{base}/metrics")).body.decode()
    assert redis_errors(text) == 0
    assert (await http(f"{base}/api/rooms/fz/feed?after=0-0", token=MOD)).status == 200


async def test_redis_down_is_503_with_retry_after_and_the_app_recovers(
    nursery: trio.Nursery, settings: Settings, tmp_path: Path
) -> None:
    proc, port = await start_redis(tmp_path / "r")
    s = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0")
    web: System = await start_system(nursery, s, ("web",))
    base = f"http://127.0.0.1:{web.web_port}"
    paths = ["/api/rooms/fz", "/api/rooms/fz/bans", "/api/rooms/fz/broadcasts"]
    for path in paths:
        assert (await http(base + path, token=MOD)).status == 200
    proc.terminate()
    await trio.to_thread.run_sync(proc.wait)
    for path in paths:
        reply = await http(base + path, token=MOD)
        assert reply.status == 503, (path, reply.status)
        assert reply.json()["detail"] == "storage unavailable"
        assert reply.headers["retry-after"] == "1"
    assert (await http(f"{base}/readyz")).status == 503
    assert (await http(f"{base}/healthz")).status == 200
    proc, _ = await start_redis(tmp_path / "r", port=port)
    try:
        with trio.fail_after(15):
            while (await http(f"{base}/api/rooms/fz/bans", token=MOD)).status != 200:
                await trio.sleep(0.1)
    finally:
        proc.terminate()
        await trio.to_thread.run_sync(proc.wait)


# ---- the fuzz: generated requests at the real app ------------------------------------
# Route templates and the methods they answer: most generated requests use one of those
# (with a token that is valid in room "fz"), so they get past routing and auth into the
# handlers; the rest try anything.
ROUTES = {
    "/": "GET",
    "/console": "GET",
    "/healthz": "GET",
    "/readyz": "GET",
    "/metrics": "GET",
    "/openapi.json": "GET",
    "/api/config": "GET",
    "/api/session": "POST",
    "/api/words": "PATCH",
    "/api/rooms/{room}": "GET",
    "/api/rooms/{room}/bans": "GET POST",
    "/api/rooms/{room}/bans/{uid}": "DELETE",
    "/api/rooms/{room}/comments": "GET",
    "/api/rooms/{room}/comments/{id}": "DELETE",
    "/api/rooms/{room}/feed": "GET",
    "/api/rooms/{room}/settings": "PATCH",
    "/api/rooms/{room}/words": "GET PATCH",
    "/api/rooms/{room}/highlights": "GET",
    "/api/rooms/{room}/highlights/{uid}": "PUT DELETE",
    "/api/rooms/{room}/pin": "GET PUT DELETE",
    "/api/rooms/{room}/notices": "POST",
    "/api/rooms/{room}/audit": "GET",
    "/api/rooms/{room}/broadcasts": "GET POST",
    "/api/rooms/{room}/broadcasts/{bid}": "GET",
    "/api/rooms/{room}/broadcasts/{bid}/end": "POST",
    "/api/rooms/{room}/broadcasts/{bid}/danmaku": "GET",
    "/static/{uid}": "GET",
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
segment = st.one_of(
    st.sampled_from(["fz", "1-0", "0-0", "18446744073709551616-0", "%D9%A3-%D9%A3", "..", "%00"]),
    st.text(max_size=30).map(lambda t: urllib.parse.quote(t, safe="")),
    st.text(alphabet="0123456789-", max_size=45),
)


@st.composite
def targets(draw: st.DrawFn) -> tuple[str, str]:
    """``(method, path?query)``."""
    path = draw(st.sampled_from(sorted(ROUTES)))
    allowed = ROUTES[path].split()
    method = draw(st.sampled_from(allowed if draw(st.integers(0, 9)) else METHODS))
    for name in ("{room}", "{uid}", "{id}", "{bid}"):
        while name in path:
            value = draw(st.sampled_from(["fz"]) | segment) if name == "{room}" else draw(segment)
            if name == "{room}" and draw(st.integers(0, 3)):
                value = "fz"
            path = path.replace(name, value, 1)
    pairs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["before", "after", "limit", "uid", "q", "format", "x", "room"]),
                st.one_of(segment, st.integers(-(2**70), 2**70).map(str)),
            ),
            max_size=4,
        )
    )
    query = "&".join(f"{k}={v}" for k, v in pairs)
    return method, path + ("?" + query if query else "")


json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),  # NaN and infinities too: json.dumps writes them, orjson refuses
        st.text(max_size=40),
        # Lone surrogates (json.dumps escapes them as \udXXX): no UTF-8 store holds one.
        st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=8),
    ),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["uid", "duration_s", "text", "add", "remove", "nick", "mute", "budget"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.just(b""),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
)
content_type = st.sampled_from(
    ["application/json"] * 4
    + ["Application/JSON; charset=utf-8", "application/x+json", "text/plain", ""]
)
header_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60
).map(str.strip)
authorization = st.integers(0, 9).flatmap(
    lambda k: (
        st.sampled_from([f"Bearer {MOD}", f"Bearer {ADMIN}"])
        if k
        else st.sampled_from(["", "Bearer x", "Basic y", f"Bearer {token('v')}"])
    )
)
headers = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["Content-Type", "X-Forwarded-For", "Forwarded", "Accept", "Origin"]),
            header_value,
        ),
        st.tuples(st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"), header_value),
    ),
    max_size=5,
)


def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes, read the whole answer (the request says ``Connection: close``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0] + " ")
    assert match, f"not an HTTP answer: {raw[:200]!r}"
    fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(match.group(1)), fields, body


async def test_fuzz_generated_requests_never_get_a_5xx_and_the_app_stays_up(
    system: System,
) -> None:
    port = system.web_port
    assert port

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(targets(), authorization, content_type, headers, bodies)
    def one(
        target: tuple[str, str],
        auth: str,
        ctype: str,
        extra: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        method, path = target
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"Authorization: {auth}"] if auth else []
        lines += [f"Content-Type: {ctype}"] if ctype else []
        lines += [f"{k}: {v}" for k, v in extra]
        lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        status, fields, answer = raw_request(port, data)
        # Redis is up: nothing a client sends may end in a server error ...
        assert status < 500, (data[:500], status, answer[:300])
        # ... and an error the app answers is JSON (hypercorn's own 400s for requests
        # that are not HTTP have no body).
        if status >= 400 and answer and method != "HEAD":
            assert fields.get("content-type") == "application/json", (data[:300], fields)
            assert "detail" in json.loads(answer)
        assert http_sync(f"http://127.0.0.1:{port}/healthz").status == 200

    await trio.to_thread.run_sync(one)
    reply = await http(f"http://127.0.0.1:{port}/metrics")
    assert redis_errors(reply.body.decode()) == 0
