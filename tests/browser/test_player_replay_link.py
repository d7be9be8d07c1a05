"""The player's link to the room's last recording, in a real Chromium against the real
system: none while the room has no finished broadcast, then one that opens the replay
(in the viewer's language)."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players, eventually
from tests.client import http_sync, token

STAFF = token("host", role="streamer")


def test_the_player_links_to_the_rooms_last_recording(live: LiveSystem, players: Players) -> None:
    base = f"{live.base_url}/api/rooms/shows/broadcasts"
    page = players.open("shows")
    link = page.locator("#replay-latest")
    expect(link).to_be_hidden()  # nothing recorded yet

    started = http_sync(base, "POST", json_body={"title": "Friday show"}, token=STAFF)
    assert started.status == 200
    bid = started.json()["id"]
    bob = live.client("shows", "bob")
    live.comment(bob, "recorded words")
    eventually(page, lambda: http_sync(base).json()[0]["comments"] == 1, what="recorded")
    assert http_sync(f"{base}/{bid}/end", "POST", token=STAFF).status == 200

    page.reload()  # a viewer who comes later sees the link
    expect(link).to_be_visible()
    expect(link).to_have_text("Replay")
    assert link.get_attribute("title") == "Watch the last recording: Friday show"
    assert link.get_attribute("href") == f"/?room=shows&broadcast={bid}"
    page.locator("#lang-switch").click()
    expect(link).to_have_text("回放")

    link.click()
    page.wait_for_function("() => window.danmaku.replay() && window.danmaku.replay().loaded")
    assert page.evaluate("window.danmaku.replay().count") == 1
    expect(page.locator("#replay-title")).to_have_text("Friday show")
    # the replay page in the language chosen on the live page
    expect(page.locator("#rp-count")).to_have_text("1 条弹幕")
    assert page.get_attribute("#replay-bar", "aria-label") == "录像播放"
    assert page.get_attribute("#rp-rate", "title") == "播放速度"
