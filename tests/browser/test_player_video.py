"""The player's video in a real Chromium: a real HLS stream (made by ffmpeg, served with
CORS from another origin as a CDN would) played by the vendored hls.js, the room's
stream_url setting, the controls, fullscreen with the overlay and the comment box inside,
the keyboard, reduced motion, and the settings popover over the picture at 1280x800."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_player import dm
from tests.client import http_sync, token


class _CorsHandler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def hls_stream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HLS stream (H.264 in MPEG-TS, 2 s segments, 8 s) served on 127.0.0.1."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg not found: `make system-deps` installs it")
    out: Path = tmp_path_factory.mktemp("hls")
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-g", "25", "-hls_time", "2", "-hls_playlist_type", "vod", "-f", "hls",
         str(out / "live.m3u8")],
        check=True,
        timeout=120,
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_CorsHandler, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/live.m3u8"
    server.shutdown()
    server.server_close()


def wait_playing(page: Page, past: float = 1.0) -> None:
    page.wait_for_function(
        "t => { const v = window.danmaku.video(); return !v.hidden && v.currentTime > t; }",
        arg=past,
        timeout=20_000,
    )


def test_an_hls_stream_plays_with_danmaku_over_it_in_fullscreen(
    live: LiveSystem, players: Players, hls_stream: str
) -> None:
    page = players.open("tv", query=f"&src={hls_stream}")
    wait_playing(page)
    assert page.evaluate("window.danmaku.video().engine") == "hls.js"
    t1 = page.evaluate("window.danmaku.video().currentTime")
    wait_playing(page, t1 + 0.5)  # the clock moves: it plays, not one frame

    page.click("#vc-play")  # pause and play again from the bar
    page.wait_for_function("() => window.danmaku.video().paused")
    page.click("#vc-play")
    page.wait_for_function("() => !window.danmaku.video().paused")
    page.click("#vc-mute")  # starts muted (autoplay); the button unmutes
    assert page.evaluate("document.getElementById('video').muted") is False

    page.click("#vc-full")
    page.wait_for_function("() => document.fullscreenElement?.id === 'player'")
    inside = page.evaluate(
        """() => ['overlay', 'send-text', 'video'].every(
              id => document.fullscreenElement.contains(document.getElementById(id)))"""
    )
    assert inside
    streamer = live.client("tv", "host", role="streamer")
    live.comment(streamer, "over the stream")
    item = dm(page, "over the stream")
    expect(item).to_have_count(1)
    box, stage = item.bounding_box(), page.locator("#stage").bounding_box()
    viewport = page.viewport_size
    assert box and stage and viewport
    assert stage["width"] == viewport["width"]  # the picture fills the screen
    assert stage["y"] <= box["y"] < stage["y"] + stage["height"]
    page.keyboard.press("f")  # f leaves fullscreen
    page.wait_for_function("() => !document.fullscreenElement")


def test_the_rooms_stream_url_plays_without_src(
    live: LiveSystem, players: Players, hls_stream: str
) -> None:
    reply = http_sync(
        f"{live.base_url}/api/rooms/stage/settings",
        "PATCH",
        json_body={"stream_url": hls_stream},
        token=token("star", role="streamer"),
    )
    assert reply.status == 200, reply.body
    page = players.open("stage")
    wait_playing(page)
    assert page.evaluate("window.danmaku.video().url") == hls_stream
    # the streamer clears it: viewers go back to the test pattern without reloading
    http_sync(
        f"{live.base_url}/api/rooms/stage/settings",
        "PATCH",
        json_body={"stream_url": None},
        token=token("star", role="streamer"),
    )
    page.wait_for_function("() => window.danmaku.video().hidden")
    expect(page.locator("#pattern")).to_be_visible()


def test_keys_settings_popover_and_reduced_motion(live: LiveSystem, players: Players) -> None:
    ctx = players.browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="en-US", reduced_motion="reduce"
    )
    players.contexts.append(ctx)
    page = players.open("keys", ctx)
    # the settings sit over the picture: opened, both are on screen at 1280x800
    page.click("#vc-settings")
    expect(page.locator("#settings")).to_have_attribute("open", "")
    panel, stage = page.locator("#settings").bounding_box(), page.locator("#stage").bounding_box()
    assert panel and stage
    assert panel["y"] + panel["height"] <= 800 and stage["y"] < 800 - 100
    assert stage["x"] <= panel["x"] and panel["x"] + panel["width"] <= stage["x"] + stage["width"]
    page.fill("#set-opacity", "0.4")
    page.dispatch_event("#set-opacity", "input")
    assert page.eval_on_selector("#overlay", "e => getComputedStyle(e).opacity") == "0.4"
    page.click("#set-reset")
    assert page.evaluate("window.danmaku.settings().opacity") == 1
    page.click("#set-close")

    # reduced motion: a scrolling comment is shown still
    bob = live.client("keys", "bob")
    live.comment(bob, "no flying please")
    item = dm(page, "no flying please")
    expect(item).to_have_count(1)
    assert item.get_attribute("data-mode") == "top"
    x0 = item.bounding_box()
    page.wait_for_timeout(300)
    assert x0 == item.bounding_box()

    # d toggles the danmaku, Enter goes to the comment box
    page.locator("body").press("d")
    expect(page.locator("#overlay")).to_have_class("overlay off")
    page.locator("body").press("d")
    expect(page.locator("#overlay")).to_have_class("overlay")
    page.locator("body").press("Enter")
    assert page.evaluate("document.activeElement.id") == "send-text"
