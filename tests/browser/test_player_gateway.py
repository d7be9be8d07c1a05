"""The gateway hint (GET /api/rooms/{room}/gateway, issue 25) from the player's and the
overlay's side, in a real Chromium against the real system: they ask it before connecting
and after every failure, and when it fails they connect where /api/config says."""

from __future__ import annotations

from playwright.sync_api import Page, Request, Route, expect

from tests.browser.conftest import LiveSystem, Players, eventually


def _hint_requests(page: Page) -> list[str]:
    asked: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/gateway"):
            asked.append(request.url)

    page.on("request", on_request)
    return asked


def _fail_hint(route: Route) -> None:
    route.abort("failed")  # the web app is unreachable for this one call


def test_the_player_falls_back_to_the_config_when_the_hint_fails_and_asks_again(
    live: LiveSystem, players: Players
) -> None:
    players.allow_console(r"net::ERR_FAILED")
    ctx = players.new_context()
    ctx.route("**/api/rooms/*/gateway", _fail_hint)
    page = players.open("hinted", ctx, wait_connected=False)
    asked = _hint_requests(page)
    page.wait_for_function("() => window.danmaku.state === 'connected'")
    first = page.evaluate("window.danmaku.connects.at(-1)")
    assert first["via"] == "config"
    assert first["gateway"] == f"127.0.0.1:{live.ws_port}"
    bob = live.client("hinted", "bob")
    live.comment(bob, "over the fallback")
    expect(page.locator("#chat-list li", has_text="over the fallback")).to_have_count(1)

    before = len(asked)
    page.evaluate("window.danmaku.dropConnection()")  # a failure: the hint is asked again
    page.wait_for_function(
        "() => window.danmaku.connects.length === 2 && window.danmaku.state === 'connected'"
    )
    eventually(page, lambda: len(asked) > before, what="the hint asked again")
    again = page.evaluate("window.danmaku.connects.at(-1)")
    assert again["via"] == "config" and again["since"] is not None


def test_the_player_asks_the_hint_first_and_connects_to_the_rooms_gateway(
    live: LiveSystem, players: Players
) -> None:
    # whether the web app answers the hint or not (404: the player falls back), the page
    # asks it and reaches the one gateway this system has
    ctx = players.new_context()
    asked: list[str] = []
    ctx.on("request", lambda r: asked.append(r.url) if r.url.endswith("/gateway") else None)
    page = players.open("hinted2", ctx)
    assert asked and asked[0].endswith("/api/rooms/hinted2/gateway")
    last = page.evaluate("window.danmaku.connects.at(-1)")
    assert last["gateway"] == f"127.0.0.1:{live.ws_port}"
    assert last["via"] in ("hint", "config")


def test_the_overlay_without_a_ws_address_finds_the_gateway_itself(
    live: LiveSystem, players: Players
) -> None:
    """danmaku-overlay.js on a page of the web app's own origin, given only a room: it asks
    the hint, and when that fails reads /api/config; comments then fly over the video."""
    players.allow_console(r"net::ERR_FAILED")
    ctx = players.new_context()
    ctx.route("**/api/rooms/*/gateway", _fail_hint)
    page = players.open("ovl", ctx)
    page.evaluate(
        """() => {
          const video = document.getElementById('video');
          video.hidden = false;
          window.ovl = window.DanmakuOverlay.attach(video, {room: 'ovl2'});
        }"""
    )
    page.wait_for_function("() => window.ovl.state === 'connected'")
    gw = page.evaluate("window.ovl.gateway")
    assert gw["via"] == "config"
    assert gw["url"] == f"ws://127.0.0.1:{live.ws_port}/ws"
    bob = live.client("ovl2", "bob")
    live.comment(bob, "overlay found its way")
    expect(page.locator(".dmo-item", has_text="overlay found its way")).to_have_count(1)
