"""The player's room figures in a real Chromium against the real system."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players, eventually
from tests.client import http_sync, token


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


def test_a_phone_viewport_stacks_the_chat_below_with_touch_sized_controls(
    live: LiveSystem, players: Players
) -> None:
    ctx = players.browser.new_context(
        viewport={"width": 390, "height": 844}, locale="en-US", has_touch=True, is_mobile=True
    )
    players.contexts.append(ctx)
    page = players.open("phone", ctx)
    bob = live.client("phone", "bob")
    live.comment(bob, "hi phone")
    expect(page.locator("#chat-list li", has_text="hi phone")).to_have_count(1)
    stage = page.locator("#stage").bounding_box()
    chat = page.locator("#chat").bounding_box()
    send = page.locator("#send-text").bounding_box()
    assert stage and chat and send
    assert chat["y"] >= stage["y"] + stage["height"]  # below the video
    assert stage["width"] <= 390 and chat["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    assert send["height"] >= 40 and send["width"] >= 300  # the comment box: a full row
    # the controls are there without hover, each at least 44 px to touch
    expect(page.locator("#vc-full")).to_be_visible()
    assert page.eval_on_selector("#controls", "e => getComputedStyle(e).opacity") == "1"
    for button in ("#vc-full", "#vc-settings"):
        box = page.locator(button).bounding_box()
        assert box and box["width"] >= 44 and box["height"] >= 44, button
    assert page.eval_on_selector("#send-text", "e => getComputedStyle(e).fontSize") == "16px"


def test_room_rules_are_told_beside_the_input_and_in_the_list(
    live: LiveSystem, players: Players
) -> None:
    url = f"{live.base_url}/api/rooms/rules/settings"
    streamer = token("star", role="streamer")
    assert http_sync(url, "PATCH", json_body={"slow_mode_s": 10}, token=streamer).status == 200
    page = players.open("rules")  # rules set before the page opened: read with the room
    status = page.locator("#room-status")
    expect(status).to_have_text("Slow mode: one comment every 10 s")
    http_sync(url, "PATCH", json_body={"mute": True}, token=streamer)  # announced live
    expect(status).to_have_text("Slow mode: one comment every 10 s · Only staff can comment now")
    notice = page.locator("#chat-list li.chat-notice", has_text="Only staff can comment now")
    expect(notice).to_have_count(1)
    http_sync(url, "PATCH", json_body={"mute": None, "slow_mode_s": None}, token=streamer)
    expect(status).to_be_hidden()
    expect(page.locator("#chat-list li.chat-notice", has_text="Slow mode is off")).to_have_count(1)
