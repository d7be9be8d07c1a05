"""A small test client: a real WebSocket viewer/sender that records what it receives."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from danmaku import auth
from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.store.records import split_entry
from danmaku.system import ALL_ROLES, System, run_system
from danmaku.worker import BroadcastWorker
from tests.conftest import SECRET

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def label(k: int) -> str:
    """A number spelt so that spam folding (which collapses repeated characters: "11"
    and "1" are the same phrase) never folds two different comments of a test."""
    return "-".join(WORDS[int(d)] for d in str(k))


def lost_acks(
    acked_at: Mapping[str, float], kept: Collection[str], killed: float
) -> tuple[list[str], float]:
    """Of the acknowledged ids (``acked_at``: id -> when its ack came), the ones missing
    from ``kept``, and how long before ``killed`` the oldest of those was acked (0 when
    none is missing): what a crash lost, and from how far back."""
    lost = [i for i in acked_at if i not in kept]
    return lost, max((killed - acked_at[i] for i in lost), default=0.0)


def stored_ids(client: Any, room: str) -> list[str]:
    """The ids of every comment in a room's comment stream (entries pack several), read
    with a plain redis-py client."""
    return [
        cid
        for entry_id, fields in client.xrange(f"dm:{{{room}}}:in")
        for cid, _ in split_entry(entry_id.decode(), fields[b"d"])
    ]


def token(uid: str, role: str = "viewer", **kw: Any) -> str:
    return auth.mint(SECRET, uid=uid, nick=f"nick-{uid}", role=role, **kw)


class Client:
    """Connects, keeps every message (parsed), and lets a test wait for conditions."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str | None] | None = None
        self._changed = trio.Event()

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "frame"]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def item_ids(self) -> list[str]:
        return [item["id"] for f in self.frames for item in f["items"]]

    async def reader(self) -> None:
        try:
            while True:
                self.messages.append(orjson.loads(await self.ws.get_message()))
                self._changed.set()
                self._changed = trio.Event()
        except ConnectionClosed as exc:
            self.closed = (exc.reason.code, exc.reason.reason)
            self._changed.set()

    async def wait_for(self, cond: Callable[[Client], bool], timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not cond(self):
                if self.closed and not cond(self):
                    raise AssertionError(
                        f"closed {self.closed} before condition; last messages {self.messages[-3:]}"
                    )
                await self._changed.wait()

    async def send(self, **msg: Any) -> None:
        await self.ws.send_message(orjson.dumps(msg).decode())

    async def comment(self, text: str, nonce: str, **kw: Any) -> dict[str, Any]:
        """Send a comment and wait for its ack or error."""
        await self.send(type="comment", text=text, nonce=nonce, **kw)
        await self.wait_for(lambda c: c.reply(nonce) is not None)
        reply = self.reply(nonce)
        assert reply is not None
        return reply

    def reply(self, nonce: str) -> dict[str, Any] | None:
        for m in self.messages:
            if m["type"] in ("ack", "error") and m.get("nonce") == nonce:
                return m
        return None


async def connect(
    nursery: trio.Nursery,
    port: int,
    room: str,
    *,
    tok: str | None = None,
    since: int | None = None,
    wait_welcome: bool = True,
    epoch: str | None = None,
) -> Client:
    url = f"ws://127.0.0.1:{port}/ws?room={room}"
    if tok:
        url += f"&token={tok}"
    if since is not None:
        url += f"&since={since}"
    if epoch is not None:
        url += f"&epoch={epoch}"

    async def hold(task_status: trio.TaskStatus[WebSocketConnection]) -> None:
        async with open_websocket_url(url) as ws:
            task_status.started(ws)
            await trio.sleep_forever()

    # Started, not start_soon: a failed connect (a gateway not listening yet) raises
    # here, to the caller, instead of cancelling the caller's nursery.
    client = Client(await nursery.start(hold))
    nursery.start_soon(client.reader)
    if wait_welcome:
        await client.wait_for(lambda c: bool(c.of_type("welcome")) or c.closed is not None)
    return client


async def handshake_status(port: int, room: str, headers: Sequence[tuple[str, str]] = ()) -> int:
    """101 when the gateway upgrades the connection (its ``welcome`` read), else the HTTP
    status it refused the upgrade with."""
    try:
        async with open_websocket_url(
            f"ws://127.0.0.1:{port}/ws?room={room}", extra_headers=list(headers)
        ) as ws:
            await ws.get_message()  # welcome
            return 101
    except ConnectionRejected as exc:
        return exc.status_code


async def printed_urls(proc: trio.Process, what: str) -> dict[str, str]:
    """Read a ``danmaku`` process's start-up lines until ``ready:``; return the printed
    ``name: url`` pairs (fails if the process exits first or takes over 30 s)."""
    assert proc.stdout is not None
    buf = b""
    with trio.fail_after(30):
        while b"ready:" not in buf:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, f"`{what}` exited early: {buf!r}"
            buf += chunk
    urls = {}
    for line in buf.decode().splitlines():
        name, _, url = line.strip().partition(": ")
        urls[name] = url
    return urls


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers (lower-case names) and body, whatever the status."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def http_sync(
    url: str,
    method: str = "GET",
    *,
    json_body: Any = None,
    data: bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """One real HTTP request (urllib); error statuses are returned, not raised."""
    hdrs = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, _lower(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, _lower(exc.headers.items()), exc.read())


async def http(url: str, method: str = "GET", **kw: Any) -> Reply:
    """``http_sync`` from trio, in a thread."""
    return await trio.to_thread.run_sync(partial(http_sync, url, method, **kw))


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


class RunningWorker:
    """A broadcast worker running in ``nursery``; ``stop()`` is a graceful stop (leases
    given back), ``crash()`` stops it as SIGKILL would (leases left to expire)."""

    def __init__(self, nursery: trio.Nursery, worker: BroadcastWorker) -> None:
        self.worker = worker
        self.scope = trio.CancelScope()
        nursery.start_soon(self._run)

    async def _run(self) -> None:
        with self.scope:
            await self.worker.run()

    def stop(self) -> None:
        self.scope.cancel()

    def crash(self) -> None:
        self.worker.release_all = _no_release  # type: ignore[method-assign]
        self.scope.cancel()


async def _no_release() -> None:
    return None


async def start_system(
    nursery: trio.Nursery, settings: Settings, roles: Collection[str] = ALL_ROLES
) -> System:
    """``run_system`` in ``nursery`` with its own metrics registry (no process collectors,
    so several systems fit in one test process); returns once it serves."""
    system: System = await nursery.start(
        partial(run_system, settings, roles, metrics=Metrics(process=False))
    )
    return system
