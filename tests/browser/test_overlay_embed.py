"""danmaku-overlay.js on a plain page of another origin (docs/embed-example.html, served
by a separate HTTP server), in a real Chromium against the real system, with the
gateway's allowed origins set to that page's origin."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, expect

from danmaku.config import Settings
from tests.browser.conftest import LiveSystem, TrioThread, eventually
from tests.client import token

DOCS = Path(__file__).resolve().parents[2] / "docs"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def foreign_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(DOCS)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def embed_live(
    trio_thread: TrioThread, settings: Settings, foreign_site: str
) -> Iterator[LiveSystem]:
    system = LiveSystem(trio_thread, settings.replace(tick_ms=50, allowed_origins=foreign_site))
    system.start()
    yield system
    system.close()


def test_the_overlay_on_a_foreign_page_shows_sends_and_detaches(
    browser: Browser, embed_live: LiveSystem, foreign_site: str
) -> None:
    live = embed_live
    ctx = browser.new_context(viewport={"width": 1000, "height": 700})
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        query = urlencode(
            {
                "web": live.base_url,
                "ws": f"ws://127.0.0.1:{live.ws_port}/ws",
                "room": "embedded",
                "token": token("fan"),
            }
        )
        page.goto(f"{foreign_site}/embed-example.html?{query}")
        expect(page.locator("#state")).to_have_text("connected")
        layer = page.locator(".dmo-layer")
        video = page.locator("#my-video").bounding_box()
        box = layer.bounding_box()
        assert video and box
        assert (box["x"], box["y"], box["width"], box["height"]) == (
            video["x"],
            video["y"],
            video["width"],
            video["height"],
        )

        streamer = live.client("embedded", "host", role="streamer")
        live.comment(streamer, "hello embed", color="#00ff00")
        item = layer.locator(".dmo-item", has_text="hello embed")
        expect(item).to_have_count(1)
        assert item.evaluate("e => getComputedStyle(e).color") == "rgb(0, 255, 0)"

        # sending from the foreign page reaches the room
        page.fill("#say-text", "from the other site")
        page.click("#say button")
        expect(layer.locator(".dmo-item.own", has_text="from the other site")).to_have_count(1)
        live.wait_for(
            streamer,
            lambda c: any(
                i.get("text") == "from the other site"
                for m in c.messages
                if m.get("type") == "frame"
                for i in m["items"]
            ),
        )
        page.evaluate("window.dm.set({opacity: 0.5})")
        assert layer.evaluate("e => getComputedStyle(e).opacity") == "0.5"
        page.evaluate("window.dm.detach()")
        expect(layer).to_have_count(0)
        expect(page.locator("#state")).to_have_text("closed")
        eventually(page, lambda: not errors, what="no page errors")
    finally:
        ctx.close()


def test_an_origin_not_allowed_is_refused(
    browser: Browser, trio_thread: TrioThread, settings: Settings, foreign_site: str
) -> None:
    live = LiveSystem(trio_thread, settings.replace(tick_ms=50))  # default: own origin only
    live.start()
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        query = urlencode(
            {"web": live.base_url, "ws": f"ws://127.0.0.1:{live.ws_port}/ws", "room": "x"}
        )
        page.goto(f"{foreign_site}/embed-example.html?{query}")
        expect(page.locator("#state")).to_have_text("reconnecting")
    finally:
        ctx.close()
        live.close()
