"""The console's send box (issue 19, "Staff chat as themselves") in a real Chromium:
a moderator comments into the room from the console with the console's own token, over
the gateway's WebSocket; viewers get it with the sender's role, the console's live feed
shows it, and the gateway's refusals are shown in the console's words."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from danmaku.config import Settings
from tests.browser.conftest import LiveSystem, Players, TrioThread, open_players
from tests.browser.test_console import mod_token, open_console, row


def items(client: Any) -> list[dict[str, Any]]:
    return [it for f in client.of_type("frame") for it in f["items"]]


def test_a_moderator_comments_from_the_console(live: LiveSystem, players: Players) -> None:
    room = "staffchat"
    viewer = live.client(room, "watcher")
    page = open_console(players, room, mod_token())

    page.fill("#send-text", "hello from the mods")
    page.click("#send-go")
    expect(page.locator("#send-status")).to_have_text("Sent to the room.")
    expect(page.locator("#send-text")).to_have_value("")

    live.wait_for(viewer, lambda c: any(it["text"] == "hello from the mods" for it in items(c)))
    item = next(it for it in items(viewer) if it["text"] == "hello from the mods")
    assert item["role"] == "moderator" and item["uid"] == "mod1" and item["nick"] == "Mo"
    assert item["prio"] == 2
    # the console's own feed shows it, with the role it was sent with
    mine = row(page, "hello from the mods")
    expect(mine).to_have_attribute("data-role", "moderator")
    expect(mine.locator(".role-badge")).to_have_text("Moderator")

    # a second comment goes over the same connection
    page.fill("#send-text", "and another")
    page.click("#send-go")
    live.wait_for(viewer, lambda c: any(it["text"] == "and another" for it in items(c)))
    page.wait_for_function("() => window.dmConsoleSend.sent === 2")  # both acked


def test_a_streamer_comment_carries_its_role(live: LiveSystem, players: Players) -> None:
    room = "staffchat2"
    viewer = live.client(room, "watcher")
    page = open_console(players, room, mod_token(room, role="streamer"))
    page.fill("#send-text", "streamer here")
    page.press("#send-text", "Enter")
    expect(page.locator("#send-status")).to_have_text("Sent to the room.")
    live.wait_for(viewer, lambda c: any(it["text"] == "streamer here" for it in items(c)))
    item = next(it for it in items(viewer) if it["text"] == "streamer here")
    assert item["role"] == "streamer"


def test_refusals_are_shown_in_the_consoles_words(live: LiveSystem, players: Players) -> None:
    room = "staffchat3"
    page = open_console(players, room, mod_token())
    page.click("#send-go")
    expect(page.locator("#send-status")).to_have_text("Type a comment first.")
    # over the limit: the gateway answers too_long, the text is given back to edit
    # the input takes the gateway's limit (GET /api/config); past it, the gateway's answer
    limit = live.settings.max_text_chars
    expect(page.locator("#send-text")).to_have_attribute("maxlength", str(limit))
    page.evaluate("() => { document.getElementById('send-text').removeAttribute('maxlength'); }")
    page.fill("#send-text", "x" * (limit + 5))
    page.click("#send-go")
    expect(page.locator("#send-status")).to_have_text(
        f"Not sent: the comment is too long (at most {limit} characters)."
    )
    expect(page.locator("#send-text")).to_have_value("x" * (limit + 5))
    assert page.evaluate("() => window.dmConsoleSend.lastCode") == "too_long"


@pytest.fixture
def slow_staff(trio_thread: TrioThread, settings: Settings) -> Iterator[LiveSystem]:
    """The live system with a staff bucket of one comment (then one per 100 s)."""
    system = LiveSystem(
        trio_thread, settings.replace(tick_ms=50, staff_rate_per_s=0.01, staff_rate_burst=1.0)
    )
    system.start()
    yield system
    system.close()


def test_rate_limited_says_when_to_try_again(browser: Browser, slow_staff: LiveSystem) -> None:
    room = "staffchat4"
    with open_players(browser, slow_staff) as players:
        page = open_console(players, room, mod_token())
        page.fill("#send-text", "first")
        page.click("#send-go")
        expect(page.locator("#send-status")).to_have_text("Sent to the room.")
        page.fill("#send-text", "second")
        page.click("#send-go")
        expect(page.locator("#send-status")).to_have_text(
            re.compile(r"^Not sent: you are sending too fast\. Try again in \d+ s\.$")
        )
        wait = int(re.findall(r"\d+", page.locator("#send-status").inner_text())[0])
        assert 50 <= wait <= 100  # the bucket refills one comment per 100 s
        expect(page.locator("#send-text")).to_have_value("second")  # kept to resend
        assert page.evaluate("() => window.dmConsoleSend.lastCode") == "rate_limited"
