"""The console's identity panel (issue 19) in a real Chromium: the room's guest policy
and IP bans, checked on test clients' replies."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from danmaku import auth
from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_console import mod_token, open_console, send
from tests.client import Client
from tests.conftest import SECRET


def until_reply(live: LiveSystem, page: Page, client: Client, code: str) -> dict[str, Any]:
    """Send until the reply has ``code`` (gateways take settings within a presence round)."""
    for _ in range(50):
        reply = send(live, client, "hello?")
        if reply.get("code") == code or (code == "ack" and reply["type"] == "ack"):
            return reply
        page.wait_for_timeout(100)
    raise AssertionError(f"never got {code}: last {reply}")


def test_guest_policy_and_ip_bans_from_the_console(live: LiveSystem, players: Players) -> None:
    room = "identity"
    page = open_console(players, room, mod_token())
    visitor = live.client(room, tok=auth.mint(SECRET, uid="g_visitor00001", nick="V", guest=True))
    member = live.client(room, "member")
    assert send(live, visitor, "hi")["type"] == "ack"

    page.select_option("#set-guests", "watch")
    page.click("#guests-apply")
    expect(page.locator("#msg")).to_have_text("Settings changed: guests watch only.")
    expect(page.locator("#now-guests")).to_have_text("now: guests watch only")
    until_reply(live, page, visitor, "login_required")
    assert send(live, member, "members talk")["type"] == "ack"
    page.select_option("#set-guests", "comment")
    page.click("#guests-apply")
    until_reply(live, page, visitor, "ack")

    page.fill("#ipban-target", "127.0.0.1")
    page.select_option("#ipban-duration", "3600")
    page.fill("#ipban-reason", "raid")
    page.click("#ipban-add")
    expect(page.locator("#msg")).to_have_text("Banned 127.0.0.1 for 1 h.")
    entry = page.locator("#ipbans-list .ipban")
    expect(entry).to_contain_text("127.0.0.1/32")
    expect(entry).to_contain_text("raid")
    reply = until_reply(live, page, member, "banned")
    assert reply["reason"] == "raid" and reply["until"] > 0
    entry.locator("button").click()
    expect(entry).to_have_count(0)
    until_reply(live, page, member, "ack")
    expect(page.locator("#audit-list .audit-entry .action").first).to_have_text("ip_unban")
