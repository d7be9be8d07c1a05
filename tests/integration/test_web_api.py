"""The HTTP API over a real socket (Hypercorn on trio), against a real Redis."""

from __future__ import annotations

import pytest
import trio

from danmaku import auth
from danmaku.config import Settings
from danmaku.system import System
from tests.client import Reply, connect, http, label, start_system, token
from tests.conftest import SECRET


async def test_session_gives_a_guest_token_that_the_gateway_accepts(system: System) -> None:
    base = f"http://127.0.0.1:{system.web_port}"
    reply = await http(f"{base}/api/session", "POST", json_body={"nick": "  Bob  "})
    body = reply.json()
    assert reply.status == 200
    user = auth.verify(SECRET, body["token"])
    assert user.nick == "Bob" == body["user"]["nick"] and user.role == "viewer"
    assert body["user"]["uid"] == user.uid
    for bad in ({"nick": ""}, {}, {"nick": "x" * 65}, {"nick": 5}):
        assert (await http(f"{base}/api/session", "POST", json_body=bad)).status == 422, bad


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
                reply = await http(f"{base}/api/rooms/fig")
                assert reply.status == 200
                info = reply.json()
                if info["online"] == 2 and info["seq"] >= 1:
                    break
                await trio.sleep(0.2)
        assert info["comments_stored"] == 5
        n.cancel_scope.cancel()
    assert (await http(f"{base}/api/rooms/bad%20room")).status == 422
    cfg = (await http(f"{base}/api/config")).json()
    assert cfg["ws_url"] == f"ws://127.0.0.1:{system.ws_port}/ws" and cfg["tick_ms"] == 50


async def test_health_metrics_openapi_and_pages(system: System) -> None:
    base = f"http://127.0.0.1:{system.web_port}"
    reply = await http(f"{base}/healthz")
    assert (reply.status, reply.json()) == (200, {"ok": True})
    reply = await http(f"{base}/readyz")
    assert (reply.status, reply.json()) == (200, {"ok": True, "redis": True, "failing_loops": {}})
    reply = await http(f"{base}/metrics")
    text = reply.body.decode()
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    assert "danmaku_connections_open" in text
    reply = await http(f"{base}/openapi.json")
    doc = reply.json()
    assert reply.status == 200 and {"/api/session", "/api/rooms/{room}"} <= set(doc["paths"])
    for page in ("/", "/console"):
        reply = await http(f"{base}{page}")
        assert reply.status == 200 and "<html" in reply.body.decode().lower()


async def test_readyz_names_a_failing_background_loop(system: System) -> None:
    """A background loop that keeps failing makes /readyz answer 503 and say which (the
    worker's clock, a dependency it is given, breaks here); the process goes on."""
    assert system.worker is not None
    base = f"http://127.0.0.1:{system.web_port}"
    good = system.worker._clock

    def broken() -> float:
        raise RuntimeError("clock broken")

    system.worker._clock = broken
    with trio.fail_after(10):
        while (reply := await http(f"{base}/readyz")).status != 503:
            await trio.sleep(0.1)
    body = reply.json()
    assert body["ok"] is False and body["redis"] is True
    assert "RuntimeError: clock broken" in " ".join(body["failing_loops"].values())
    assert (await http(f"{base}/healthz")).status == 200  # alive, only not ready
    system.worker._clock = good


async def test_guest_sessions_are_limited_per_client_address(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Identities must not be free: one address gets DANMAKU_GUEST_SESSIONS_PER_IP_PER_MIN
    guest tokens a minute (over every web process: counted in Redis), then 429 with
    Retry-After; behind a trusted proxy each forwarded client has its own count."""
    system = await start_system(
        nursery,
        settings.replace(guest_sessions_per_ip_per_min=3, trusted_proxies="127.0.0.1/32"),
        ("web",),
    )
    base = f"http://127.0.0.1:{system.web_port}"

    async def ask(client: str) -> Reply:
        return await http(
            f"{base}/api/session",
            "POST",
            json_body={"nick": "n"},
            headers={"X-Forwarded-For": client},
        )

    uids = set()
    for _ in range(3):
        reply = await ask("203.0.113.5")
        assert reply.status == 200
        uids.add(reply.json()["user"]["uid"])
    assert len(uids) == 3
    refused = await ask("203.0.113.5")
    assert refused.status == 429 and "guest sessions" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert (await ask("198.51.100.20")).status == 200  # another client: its own count
    # Unlimited with 0 (load tests from one address).
    free = await start_system(nursery, settings.replace(guest_sessions_per_ip_per_min=0), ("web",))
    for _ in range(12):
        reply = await http(
            f"http://127.0.0.1:{free.web_port}/api/session", "POST", json_body={"nick": "n"}
        )
        assert reply.status == 200


async def test_a_guest_keeps_its_uid_on_its_device(system: System) -> None:
    """POST /api/session sets a signed, HttpOnly device cookie; a new session from the same
    browser keeps the guest uid (a new nick is fine, a new identity is not)."""
    base = f"http://127.0.0.1:{system.web_port}"
    first = await http(f"{base}/api/session", "POST", json_body={"nick": "Ann"})
    cookie = first.headers["set-cookie"]
    attrs = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attrs
    assert "samesite=strict" in cookie.lower() and "path=/api/session" in cookie.lower()
    ticket = cookie.split(";")[0]  # dm_device=...
    uid = first.json()["user"]["uid"]
    again = await http(
        f"{base}/api/session", "POST", json_body={"nick": "Totally New"}, headers={"Cookie": ticket}
    )
    assert again.json()["user"] == {"uid": uid, "nick": "Totally New", "role": "viewer"}
    # Without the cookie (another browser), or with one signed by someone else: new uid.
    other = await http(f"{base}/api/session", "POST", json_body={"nick": "Ann"})
    assert other.json()["user"]["uid"] != uid
    forged = "dm_device=" + auth.device_ticket("another-secret-0123456789abcdef0123", uid)
    stolen = await http(
        f"{base}/api/session", "POST", json_body={"nick": "x"}, headers={"Cookie": forged}
    )
    assert stolen.json()["user"]["uid"] != uid
    # A device ticket is not a user token anywhere.
    device = ticket.split("=", 1)[1]
    assert (await http(f"{base}/api/rooms/r/bans", token=device)).status == 401
    with pytest.raises(auth.TokenError):
        auth.verify(SECRET, device)
