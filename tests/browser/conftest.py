"""Browser test fixtures: a real Chromium (Debian's /usr/bin/chromium) against the real system.

Playwright's sync API wants a thread without a running event loop, and the system is a trio
service, so the tests are plain sync functions and the system runs in its own trio loop on
a background thread (``TrioThread``); the helpers call into that loop with
``trio.from_thread``. Each test gets a fresh system (on the session's redis-server, flushed)
and a fresh browser context; the browser itself is started once per session.

The player's Content-Security-Policy forbids eval, so ``wait_for_function`` predicates
must be written as functions (``"() => window.danmaku.state === 'connected'"``): a bare
expression is eval'ed in the page and fails under the CSP once it has to poll.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
import trio
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    sync_playwright,
)
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
)

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.system import ALL_ROLES, System, run_system
from tests.client import Client, connect, token
from tests.faultproxy import FaultProxy

CHROMIUM = os.environ.get("DANMAKU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T = TypeVar("T")


class TrioThread:
    """A trio event loop on a daemon thread, for sync code to run async functions in."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._nursery: trio.Nursery | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trio-system", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the trio thread did not start")

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by stop()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await trio.sleep_forever()

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(afn, *args, trio_token=self._token)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._nursery is not None and self._thread.is_alive():
            self.run_sync(self._nursery.cancel_scope.cancel)
        self._thread.join(15)
        if self._error is not None:
            raise self._error


async def _nursery_holder(task_status: trio.TaskStatus[trio.Nursery]) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


class LiveSystem:
    """The whole system (web app, gateway, worker) running in the trio thread.

    ``restart()`` drains it (viewers are closed with 1013, as in a deploy) and starts it
    again on the same ports and the same Redis, so frame history survives.
    """

    def __init__(
        self, loop: TrioThread, settings: Settings, roles: tuple[str, ...] = ALL_ROLES
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.roles = roles
        self.system: System | None = None
        self.crashed: Exception | None = None
        self._done: trio.Event | None = None
        self._clients: trio.Nursery = loop.run(loop.nursery.start, _nursery_holder)

    async def _serve(self, done: trio.Event, task_status: trio.TaskStatus[System]) -> None:
        """Run the system; a crash after start is kept for ``stop()`` to raise, so it fails
        this test only and does not take the shared trio thread down with it."""
        started = False

        def on_started(system: System) -> None:
            nonlocal started
            started = True
            task_status.started(system)

        try:
            await run_system(
                self.settings,
                self.roles,
                metrics=Metrics(process=False),
                task_status=SimpleNamespace(started=on_started),  # type: ignore[arg-type]
            )
        except Exception as exc:
            if not started:
                raise
            self.crashed = exc
        finally:
            done.set()

    def start(self) -> None:
        done = self.loop.run_sync(trio.Event)
        self.system = self.loop.run(self.loop.nursery.start, partial(self._serve, done))
        self._done = done
        # the same ports on a restart: the page keeps the ws_url it was given
        self.settings = self.settings.replace(
            web_port=self.system.web_port, ws_port=self.system.ws_port
        )

    def stop(self) -> None:
        system, done = self.system, self._done
        if system is None or done is None:
            return
        self.system = None

        async def shutdown() -> None:
            await system.shutdown()
            with trio.fail_after(10):
                await done.wait()

        self.loop.run(shutdown)
        if self.crashed is not None:
            raise RuntimeError("the system crashed during the test") from self.crashed

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.loop.run_sync(self._clients.cancel_scope.cancel)
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    @property
    def ws_port(self) -> int:
        return self.settings.ws_port

    # ---- test clients (tests/client.py) running in the trio thread ----------------------------
    def client(
        self, room: str, uid: str | None = None, role: str = "viewer", *, tok: str | None = None
    ) -> Client:
        """A test client in ``room``: anonymous, or user ``uid`` (or with token ``tok``)."""
        if tok is None and uid:
            tok = token(uid, role=role)
        return self.loop.run(partial(connect, self._clients, self.ws_port, room, tok=tok))

    def clients(self, room: str, uids: list[str], role: str = "viewer") -> list[Client]:
        """Many test clients, connected concurrently."""
        out: dict[str, Client] = {}

        async def one(uid: str) -> None:
            out[uid] = await connect(self._clients, self.ws_port, room, tok=token(uid, role=role))

        async def all_of_them() -> None:
            async with trio.open_nursery() as nursery:
                for uid in uids:
                    nursery.start_soon(one, uid)

        self.loop.run(all_of_them)
        return [out[uid] for uid in uids]

    def comment(self, client: Client, text: str, **kw: Any) -> dict[str, Any]:
        """Send a comment from a test client; returns its ack (asserts it is one)."""
        nonce = kw.pop("nonce", None) or f"t-{secrets.token_hex(6)}"
        reply = self.loop.run(partial(client.comment, text, nonce, **kw))
        assert reply["type"] == "ack", reply
        return reply

    def wait_for(self, client: Client, cond: Callable[[Client], bool], timeout: float = 10) -> None:
        self.loop.run(partial(client.wait_for, cond, timeout))


class FakeGateway:
    """A scripted stand-in for the gateway, for what the real one cannot be made to do on cue
    (moderator retracts, pins, folded counts, every error code, a connection that drops
    before the ack). The player is pointed at it by rewriting ``GET /api/config``.

    Every connection gets ``welcome`` (``self.welcome``); each client message is recorded
    in ``received`` and answered with ``reply(msg)`` (a list of messages, default none).
    """

    def __init__(self, loop: TrioThread, nursery: trio.Nursery) -> None:
        self.loop = loop
        self.requests: list[str] = []  # handshake paths (with the query string)
        self.received: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {
            "type": "welcome",
            "room": "fake",
            "seq": 10,
            "tick_ms": 100,
            "online": 7,
            "user": {"uid": "me", "nick": "Me", "role": "viewer"},
            "limits": {"max_text_chars": 100, "max_text_bytes": 300},
        }
        self.reply: Callable[[dict[str, Any]], list[dict[str, Any]]] = lambda msg: []
        self._conns: list[WebSocketConnection] = []
        server: WebSocketServer = loop.run(
            nursery.start,
            partial(
                serve_websocket,
                self._handle,
                "127.0.0.1",
                0,
                None,
                handler_nursery=nursery,
                disconnect_timeout=1,
            ),
        )
        self.url = f"ws://127.0.0.1:{server.port}/ws"

    async def _handle(self, request: WebSocketRequest) -> None:
        self.requests.append(request.path)
        ws = await request.accept()
        self._conns.append(ws)
        try:
            await ws.send_message(json.dumps(self.welcome))
            while True:
                msg = json.loads(await ws.get_message())
                self.received.append(msg)
                for answer in self.reply(msg):
                    await ws.send_message(json.dumps(answer))
        except ConnectionClosed:
            pass
        finally:
            self._conns.remove(ws)

    def send(self, msg: dict[str, Any]) -> None:
        """Send ``msg`` to every open connection."""

        async def send_all() -> None:
            for ws in list(self._conns):
                await ws.send_message(json.dumps(msg))

        self.loop.run(send_all)

    def close_all(self, code: int = 1013, reason: str = "server draining") -> None:
        async def close() -> None:
            for ws in list(self._conns):
                await ws.aclose(code, reason)

        self.loop.run(close)

    def connections(self) -> int:
        return len(self._conns)


def eventually(
    page: Page, cond: Callable[[], bool], timeout: float = 10, what: str = "condition"
) -> None:
    """Poll ``cond`` (state kept by the trio thread) until it holds.

    Waits through ``page.wait_for_timeout``, not ``time.sleep``: Playwright's sync API only
    runs route handlers (the rewritten /api/config) while the test thread is inside it.
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(25)


class Players:
    """Opens player pages and collects console errors (a test fails on any unexpected one)."""

    def __init__(self, browser: Browser, live: LiveSystem) -> None:
        self.browser = browser
        self.live = live
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow_console(self, pattern: str) -> None:
        """Console errors matching this regex are expected (e.g. a refused WebSocket)."""
        self.allowed.append(re.compile(pattern))

    def new_context(self) -> BrowserContext:
        ctx = self.browser.new_context(
            viewport={"width": 1280, "height": 900}, locale="en-US", device_scale_factor=1
        )
        ctx.set_default_timeout(10_000)
        self.contexts.append(ctx)
        return ctx

    def _console(self, page: Page, msg: ConsoleMessage) -> None:
        # a web app without the gateway hint (GET /api/rooms/R/gateway: 404, as during a
        # rolling deploy) is a case the player handles: it falls back to /api/config
        if msg.type == "error" and msg.location.get("url", "").endswith("/gateway"):
            return
        if msg.type == "error" and not any(p.search(msg.text) for p in self.allowed):
            self.errors.append(f"{page.url}: {msg.text}")

    def open(
        self,
        room: str,
        context: BrowserContext | None = None,
        *,
        query: str = "",
        wait_connected: bool = True,
        ws_url: str | None = None,
    ) -> Page:
        """A player page in ``room``; ``ws_url`` points it at another gateway (a fake)."""
        page = (context or self.new_context()).new_page()
        page.on("console", partial(self._console, page))
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        if ws_url is not None:
            config = {
                "ws_url": ws_url,
                "tick_ms": 100,
                "limits": {"max_text_chars": 100, "max_text_bytes": 300},
            }

            def fulfil(route: Route) -> None:
                route.fulfill(status=200, content_type="application/json", body=json.dumps(config))

            page.route("**/api/config", fulfil)
            # the gateway hint, when the web app has it, names the fake too
            hint = {"url": ws_url, "urls": [ws_url], "ttl_s": 10}

            def fulfil_hint(route: Route) -> None:
                body = json.dumps({"room": room, **hint})
                route.fulfill(status=200, content_type="application/json", body=body)

            page.route("**/api/rooms/*/gateway", fulfil_hint)
        page.goto(f"{self.live.base_url}/?room={room}{query}")
        if wait_connected:
            wait_until_connected(page)
        return page

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.close()


def wait_until_connected(page: Page) -> None:
    page.wait_for_function("() => window.danmaku && window.danmaku.state === 'connected'")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: `make system-deps` installs Debian's chromium "
            "(or set DANMAKU_CHROMIUM)"
        )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def trio_thread() -> Iterator[TrioThread]:
    loop = TrioThread()
    loop.start()
    yield loop
    loop.stop()


@pytest.fixture
def live(
    request: pytest.FixtureRequest, trio_thread: TrioThread, settings: Settings
) -> Iterator[LiveSystem]:
    chosen = settings.replace(tick_ms=50)
    if request.node.get_closest_marker("rate_limits"):
        defaults = Settings()  # production per-user limits (the shared fixture lifts them)
        chosen = chosen.replace(rate_per_s=defaults.rate_per_s, rate_burst=defaults.rate_burst)
    system = LiveSystem(trio_thread, chosen)
    system.start()
    yield system
    system.close()


@contextmanager
def open_players(browser: Browser, system: LiveSystem) -> Iterator[Players]:
    """Player pages on ``system``, closed at the end; any console error the test did not
    expect (``allow_console``) fails it."""
    p = Players(browser, system)
    try:
        yield p
    finally:
        p.close()
    assert not p.errors, "console errors:\n" + "\n".join(p.errors)


@pytest.fixture
def players(browser: Browser, live: LiveSystem) -> Iterator[Players]:
    with open_players(browser, live) as p:
        yield p


@pytest.fixture
def web_only(trio_thread: TrioThread, settings: Settings) -> Iterator[LiveSystem]:
    """Only the web app (serves the player): for pages pointed at a ``FakeGateway``."""
    system = LiveSystem(trio_thread, settings, roles=("web",))
    system.start()
    yield system
    system.close()


@pytest.fixture
def fake_players(browser: Browser, web_only: LiveSystem) -> Iterator[Players]:
    with open_players(browser, web_only) as p:
        yield p


@pytest.fixture
def fake_gateway(trio_thread: TrioThread) -> Iterator[FakeGateway]:
    nursery = trio_thread.run(trio_thread.nursery.start, _nursery_holder)
    yield FakeGateway(trio_thread, nursery)
    trio_thread.run_sync(nursery.cancel_scope.cancel)


@pytest.fixture
def frozen_link(trio_thread: TrioThread, live: LiveSystem) -> Iterator[FaultProxy]:
    """A proxy in front of the gateway (``FaultProxy``: freeze the link, resume it), with its
    port as ``proxy.port``; the player and overlay liveness tests connect through it."""
    nursery = trio_thread.run(trio_thread.nursery.start, _nursery_holder)
    proxy = FaultProxy(live.ws_port)
    proxy.port = trio_thread.run(nursery.start, proxy.run)  # type: ignore[attr-defined]
    yield proxy
    trio_thread.run_sync(proxy.resume)
    trio_thread.run_sync(nursery.cancel_scope.cancel)
