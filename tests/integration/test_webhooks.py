"""Webhooks against real local HTTP receivers: one that answers 200, one that fails its
first requests (retried: at least once, same event ids), one that holds every request
until the test lets it go (a slow receiver: ingest and fan-out go on meanwhile), and one
that is down (its batches dropped after the last attempt, counted; the others unharmed).
Every request is checked against its HMAC-SHA256 signature."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trio

from danmaku.config import Settings
from danmaku.rules import webhooks as rules
from tests.client import connect, http, start_system, token
from tests.integration.test_server_api import KEY, paid

SECRET = "whsec-0123456789abcdef"


class Receiver:
    """A real HTTP server in a thread that records every request it answers."""

    def __init__(self, *, fail_first: int = 0, always: int = 200, hold: bool = False) -> None:
        self.fail_first = fail_first
        self.always = always
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        self.lock = threading.Lock()
        self.requests: list[tuple[int, dict[str, str], bytes]] = []  # (answer, headers, body)
        self.waiting = 0  # requests held at the gate now
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.waiting += 1
                receiver.gate.wait(30)
                with receiver.lock:
                    receiver.waiting -= 1
                    n = len(receiver.requests)
                    status = 500 if n < receiver.fail_first else receiver.always
                    receiver.requests.append((status, dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        """The events of the requests answered 2xx, in order."""
        with self.lock:
            return [
                e
                for status, _, body in self.requests
                if status < 300
                for e in json.loads(body)["events"]
            ]

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {
        "ok": Receiver(),
        "flaky": Receiver(fail_first=2),
        "slow": Receiver(hold=True),
        "down": Receiver(always=503),
    }
    yield made
    for r in made.values():
        r.close()


async def wait_until(cond: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.05)


async def test_events_reach_every_receiver_signed_retried_and_never_block_the_room(
    nursery: trio.Nursery, settings: Settings, receivers: dict[str, Receiver]
) -> None:
    s = settings.replace(
        api_keys=KEY,
        webhook_urls=",".join(r.url for r in receivers.values()),
        webhook_secret=SECRET,
        webhook_poll_ms=50,
        webhook_max_attempts=3,
        webhook_batch=5,
    )
    system = await start_system(nursery, s)
    assert system.ws_port
    base = f"http://127.0.0.1:{system.web_port}/api"
    mod = token("mod", role="moderator")
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "hooks")
        sender = await connect(n, system.ws_port, "hooks", tok=token("alice"))
        bc = (await http(f"{base}/rooms/hooks/broadcasts", "POST", json_body={}, token=mod)).json()
        ids = [(await sender.comment(f"hello {w}", nonce=w))["id"] for w in ("one", "two", "six")]
        # The slow receiver holds its first request: the room goes on regardless.
        await wait_until(lambda: receivers["slow"].waiting > 0)
        await viewer.wait_for(lambda c: set(ids) <= set(c.item_ids()))
        reply = await http(
            f"{base}/rooms/hooks/messages", "POST", json_body=paid("p", 20), token=KEY
        )
        paid_id = reply.json()["comment_id"]
        await viewer.wait_for(lambda c: paid_id in c.item_ids())
        assert (
            await http(f"{base}/rooms/hooks/comments/{ids[0]}", "DELETE", token=mod)
        ).status == 204
        ban = {"uid": "troll", "duration_s": 60, "reason": "spam"}
        assert (
            await http(f"{base}/rooms/hooks/bans", "POST", json_body=ban, token=mod)
        ).status == 200
        await http(f"{base}/rooms/hooks/broadcasts/{bc['id']}/end", "POST", token=mod)
        n.cancel_scope.cancel()

    want = {
        ("comment.accepted", ids[0]),
        ("comment.accepted", ids[1]),
        ("comment.accepted", ids[2]),
        ("comment.accepted", paid_id),
        ("comment.deleted", ids[0]),
        ("user.timed_out", "troll"),
        ("broadcast.started", bc["id"]),
        ("broadcast.ended", bc["id"]),
    }

    def got(r: Receiver) -> set[tuple[str, str]]:
        return {(e["type"], e["data"].get("id") or e["data"].get("uid")) for e in r.delivered()}

    await wait_until(lambda: want <= got(receivers["ok"]) and want <= got(receivers["flaky"]))
    assert receivers["slow"].delivered() == []  # still held: nothing went through
    receivers["slow"].gate.set()
    await wait_until(lambda: want <= got(receivers["slow"]))

    ok = receivers["ok"].delivered()
    paid_event = next(e for e in ok if e["data"]["id"] == paid_id)
    assert paid_event["data"]["kind"] == "paid" and paid_event["data"]["tier"]["name"] == "orange"
    ban_event = next(e for e in ok if e["type"] == "user.timed_out")
    assert ban_event["data"]["reason"] == "spam" and ban_event["data"]["by"] == "moderator:mod"
    # One event id per record; the flaky receiver got the same ids again on the retries.
    assert len({e["id"] for e in ok}) == len(ok)
    flaky = receivers["flaky"]
    retried = [json.loads(b)["events"] for status, _, b in flaky.requests if status == 500]
    assert retried and {e["id"] for e in retried[0]} <= {e["id"] for e in flaky.delivered()}
    # Every request of every receiver is signed, over its timestamp and body.
    for r in receivers.values():
        for _, headers, body in r.requests:
            sig = headers[rules.SIGNATURE_HEADER]
            assert rules.verify(SECRET, headers[rules.TIMESTAMP_HEADER], body, sig)
            assert not rules.verify("another-secret", headers[rules.TIMESTAMP_HEADER], body, sig)
    # The receiver that is down: its batches were tried 3 times each, then dropped, counted.
    failed = system.metrics.webhook_events.labels("failed")
    await wait_until(lambda: failed._value.get() > 0)
    assert receivers["down"].delivered() == []


async def test_a_restarted_service_redelivers_what_was_not_finished(
    nursery: trio.Nursery, settings: Settings, receivers: dict[str, Receiver]
) -> None:
    """At least once: a web process stopped while its receiver held a batch; the next
    one delivers the same events, under the same ids, from the committed cursors."""
    held = receivers["slow"]
    s = settings.replace(webhook_urls=held.url, webhook_secret=SECRET, webhook_poll_ms=50)
    web = await start_system(nursery, s, ("web",))
    rest = await start_system(nursery, s.replace(webhook_urls=""), ("gateway", "worker"))
    assert rest.ws_port
    async with trio.open_nursery() as n:
        sender = await connect(n, rest.ws_port, "again", tok=token("bob"))
        first = (await sender.comment("before the crash", nonce="a"))["id"]
        n.cancel_scope.cancel()
    await wait_until(lambda: held.waiting > 0)
    web.cancel_scope.cancel()  # gone mid-request: nothing was acknowledged
    # Another web process takes the lease once it expires, and delivers again.
    again = await start_system(nursery, s, ("web",))
    held.gate.set()
    # Twice: the first process's request (answered after it had gone) and the redelivery.
    await wait_until(lambda: [e["data"]["id"] for e in held.delivered()].count(first) >= 2)
    again.cancel_scope.cancel()


async def test_idle_rooms_lose_their_cursors_and_come_back_after_what_was_read(
    redis_url: str,
) -> None:
    """The cursors hash stays bounded: a room idle past the window is forgotten, and when
    it comes back only what is newer than the window is read (the rest was delivered)."""
    import redis as redis_py

    from danmaku.metrics import Metrics
    from danmaku.store import Store

    store = Store(redis_url, Metrics(process=False))
    plain = redis_py.Redis.from_url(redis_url)
    try:
        now = int(time.time() * 1000)
        plain.xadd("dm:{quiet}:in", {"d": b'{"uid":"u","text":"old"}'}, id=f"{now - 5000}-0")
        plain.zadd("dm:rooms", {"quiet": now - 4000, "busy": now})
        plain.hset("dm:webhooks:cursors", mapping={"_start": now - 10_000})
        got = await store.platform.webhook_read(now - 6000, 100, 10, {})
        assert [eid for eid, _ in got["quiet"][0]] == [f"{now - 5000}-0"]
        await store.platform.webhook_commit({"quiet:in": f"{now - 5000}-0", "busy:in": "1-0"})
        # "quiet" has been idle since now - 4000: a prune at now - 3000 forgets it.
        assert await store.platform.webhook_prune(now - 3000) == 1
        assert plain.hget("dm:webhooks:cursors", "quiet:in") is None
        assert plain.hget("dm:webhooks:cursors", "busy:in") == b"1-0"
        # It comes back: read from the window's start, so the old entry is not redelivered.
        plain.xadd("dm:{quiet}:in", {"d": b'{"uid":"u","text":"new"}'}, id=f"{now + 1}-0")
        plain.zadd("dm:rooms", {"quiet": now + 1})
        got = await store.platform.webhook_read(now - 3000, 100, 10, {})
        assert [eid for eid, _ in got["quiet"][0]] == [f"{now + 1}-0"]
    finally:
        store.close()
        plain.close()
