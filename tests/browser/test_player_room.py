"""The player's room figures in a real Chromium against the real system."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players, eventually
from tests.client import http_sync


def test_a_quiet_room_shows_the_online_count_the_api_gives(
    live: LiveSystem, players: Players
) -> None:
    # three viewers already watching a room where nobody comments: no frame carries a count
    live.clients("quiet", ["v1", "v2", "v3"])
    page = players.open("quiet")
    url = f"{live.base_url}/api/rooms/quiet"
    eventually(page, lambda: http_sync(url).json()["online"] == 4, what="the API counts 4")
    expect(page.locator("#online-n")).to_have_text("4")
    assert page.evaluate("window.danmaku.stats().frames") == 0  # it did not come with a frame
