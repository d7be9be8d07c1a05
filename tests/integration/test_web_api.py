"""The HTTP API over a real socket (Hypercorn on trio), against a real Redis."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import trio

from danmaku import auth
from danmaku.system import System
from tests.client import connect, label, token
from tests.conftest import SECRET


def _request(url: str, body: Any = None) -> tuple[int, Any, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read().decode()
            status, ctype = resp.status, resp.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        raw, status, ctype = exc.read().decode(), exc.code, exc.headers.get("content-type", "")
    return status, (json.loads(raw) if "json" in ctype else raw), ctype


async def call(url: str, body: Any = None) -> tuple[int, Any, str]:
    return await trio.to_thread.run_sync(_request, url, body)


async def test_session_gives_a_guest_token_that_the_gateway_accepts(system: System) -> None:
    base = f"http://127.0.0.1:{system.web_port}"
    status, body, _ = await call(f"{base}/api/session", {"nick": "  Bob  "})
    assert status == 200
    user = auth.verify(SECRET, body["token"])
    assert user.nick == "Bob" == body["user"]["nick"] and user.role == "viewer"
    assert body["user"]["uid"] == user.uid
    for bad in ({"nick": ""}, {}, {"nick": "x" * 65}, {"nick": 5}):
        status, _err, _ = await call(f"{base}/api/session", bad)
        assert status == 422, bad


async def test_room_figures_and_config(system: System) -> None:
    base = f"http://127.0.0.1:{system.web_port}"
    assert system.ws_port
    async with trio.open_nursery() as n:
        await connect(n, system.ws_port, "fig")
        sender = await connect(n, system.ws_port, "fig", tok=token("u"))
        for k in range(5):
            await sender.comment(f"c {label(k)}", nonce=f"c{k}")
        with trio.fail_after(10):
            while True:
                status, info, _ = await call(f"{base}/api/rooms/fig")
                assert status == 200
                if info["online"] == 2 and info["seq"] >= 1:
                    break
                await trio.sleep(0.2)
        assert info["comments_stored"] == 5
        n.cancel_scope.cancel()
    status, _, _ = await call(f"{base}/api/rooms/bad%20room")
    assert status == 422
    status, cfg, _ = await call(f"{base}/api/config")
    assert cfg["ws_url"] == f"ws://127.0.0.1:{system.ws_port}/ws" and cfg["tick_ms"] == 50


async def test_health_metrics_openapi_and_pages(system: System) -> None:
    base = f"http://127.0.0.1:{system.web_port}"
    assert (await call(f"{base}/healthz"))[:2] == (200, {"ok": True})
    assert (await call(f"{base}/readyz"))[:2] == (200, {"ok": True})
    status, text, ctype = await call(f"{base}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert "danmaku_connections_open" in text
    status, doc, _ = await call(f"{base}/openapi.json")
    assert status == 200 and {"/api/session", "/api/rooms/{room}"} <= set(doc["paths"])
    for page in ("/", "/console"):
        status, html, _ = await call(f"{base}{page}")
        assert status == 200 and "<html" in html.lower()
