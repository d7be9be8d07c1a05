"""The chat list beside the video, in a real Chromium.

A real system shows a comment with its nick in the list; a scripted gateway
(``FakeGateway``) sends what the real one cannot on cue (role badges, folded counts,
retracts, pins, hundreds of items), and the report is checked at the HTTP boundary
(the player's request: path, token, body) with the server's two answers, 202 and 429.
"""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import FakeGateway, LiveSystem, Players, eventually
from tests.browser.test_player import _frame, _item, join

ROWS = "#chat-list > li"


def row(page: Page, text: str) -> Locator:
    return page.locator("#chat-list > li.chat-row", has=page.locator(".chat-text", has_text=text))


def test_a_comment_shows_in_the_chat_list_with_its_nick(live: LiveSystem, players: Players) -> None:
    page = players.open("chatroom")
    join(page, "Alice")
    page.fill("#send-text", "my own words")
    page.press("#send-text", "Enter")
    bob = live.client("chatroom", "bob")
    live.comment(bob, "hello from bob", color="#ff8800")

    bob_row = row(page, "hello from bob")
    expect(bob_row).to_have_count(1)
    expect(bob_row.locator(".chat-nick")).to_have_text("nick-bob")
    assert bob_row.locator(".chat-nick").evaluate("e => getComputedStyle(e).color") == (
        "rgb(255, 136, 0)"
    )
    expect(bob_row.locator(".chat-time")).to_have_text(re.compile(r"^\d\d:\d\d$"))
    own = row(page, "my own words")
    expect(own).to_have_count(1)
    expect(own).to_have_class("chat-row own")
    expect(own.locator(".chat-nick")).to_have_text("Alice")
    # the list sits beside the video at 1280 px: to its right, overlapping it vertically
    chat = page.locator("#chat").bounding_box()
    stage = page.locator("#stage").bounding_box()
    assert chat and stage and chat["x"] >= stage["x"] + stage["width"]
    assert chat["y"] < stage["y"] + stage["height"]


def test_badges_folds_notices_retracts_and_the_bound(
    fake_players: Players, fake_gateway: FakeGateway
) -> None:
    fake = fake_gateway
    page = fake_players.open("fake", ws_url=fake.url)
    fake.send(
        _frame(
            11,
            [
                _item("a", "hello chat", uid="bob", nick="Bob", color="#ff8800"),
                _item("b", "be nice", uid="mod1", nick="Mod", role="moderator", prio=2),
                _item("c", "666", uid="spam", nick="Spammer", count=12, prio=1),
                _item("d", "I am staff, trust me", uid="x", nick="Moderator"),  # a nick, no role
            ],
        )
    )
    expect(page.locator(ROWS)).to_have_count(4)
    expect(row(page, "be nice").locator(".chat-badge")).to_have_text("Moderator")
    expect(row(page, "be nice")).to_have_class("chat-row prio2")
    expect(row(page, "I am staff").locator(".chat-badge")).to_have_count(0)
    expect(row(page, "666").locator(".chat-count")).to_have_text("×12")
    expect(row(page, "666")).to_have_class("chat-row prio1")

    # a pin and a notice signed by a role come inline, in the player's words
    fake.send({"type": "notice", "event": "pin", "text": "rules: be kind", "nick": "host"})
    pin = page.locator("#chat-list > li.chat-notice", has_text="rules: be kind")
    expect(pin.locator(".chat-tag")).to_have_text("pinned")
    fake.send(
        {
            "type": "notice",
            "event": "room_notice",
            "text": "stream starts soon",
            "role": "moderator",
            "by": "moderator:mod1",
        }
    )
    notice = page.locator("#chat-list > li.chat-notice", has_text="stream starts soon")
    expect(notice).to_contain_text("Moderator: stream starts soon")
    expect(notice).not_to_contain_text("moderator:mod1")

    # a moderator deleted "b": it leaves the list
    fake.send(_frame(12, [], retract=["b"]))
    expect(row(page, "be nice")).to_have_count(0)

    # bounded: the last 300 rows, the newest kept
    seq = 13
    for start in range(0, 330, 110):
        items = [_item(f"n{i}", f"bulk {i}") for i in range(start, start + 110)]
        fake.send(_frame(seq, items))
        seq += 1
    expect(row(page, "bulk 329")).to_have_count(1)
    assert page.evaluate("window.danmaku.chatSize()") == 300
    expect(row(page, "hello chat")).to_have_count(0)


def test_scrolled_up_the_list_waits_with_a_new_messages_pill(
    fake_players: Players, fake_gateway: FakeGateway
) -> None:
    fake = fake_gateway
    page = fake_players.open("fake", ws_url=fake.url)
    fake.send(_frame(11, [_item(f"f{i}", f"filler {i}") for i in range(60)]))
    expect(row(page, "filler 59")).to_have_count(1)
    at_bottom = (
        "() => { const l = document.getElementById('chat-list');"
        " return l.scrollHeight - l.scrollTop - l.clientHeight < 30; }"
    )
    assert page.evaluate(at_bottom)  # followed the new rows
    page.eval_on_selector("#chat-list", "l => { l.scrollTop = 0; }")
    fake.send(_frame(12, [_item("late", "while you read")]))
    expect(row(page, "while you read")).to_have_count(1)
    pill = page.locator("#chat-more")
    expect(pill).to_be_visible()
    expect(pill).to_contain_text("1 new")
    assert page.eval_on_selector("#chat-list", "l => l.scrollTop") == 0  # not yanked down
    pill.click()
    expect(pill).to_be_hidden()
    assert page.evaluate(at_bottom)


def test_block_and_report_from_the_list(fake_players: Players, fake_gateway: FakeGateway) -> None:
    fake = fake_gateway
    fake.welcome["user"] = {"uid": "g_rep", "nick": "Reporter", "role": "viewer"}
    page = fake_players.open("fake", ws_url=fake.url)
    join(page, "Reporter")
    token = page.evaluate("JSON.parse(localStorage.getItem('danmaku.session.v1')).token")
    reports: list[dict[str, Any]] = []
    answer = {"status": 202}

    def on_report(route: Route) -> None:
        req = route.request
        reports.append(
            {
                "method": req.method,
                "auth": req.headers.get("authorization"),
                "body": json.loads(req.post_data or "null"),
            }
        )
        headers = {"Retry-After": "30"} if answer["status"] == 429 else {}
        route.fulfill(status=answer["status"], headers=headers, body="{}")

    page.route("**/api/rooms/fake/reports", on_report)
    fake.send(
        _frame(
            11,
            [
                _item("a", "rude words", uid="troll", nick="Troll"),
                _item("b", "more rudeness", uid="troll", nick="Troll"),
                _item("c", "a friendly line", uid="pal", nick="Pal"),
            ],
        )
    )
    expect(page.locator(ROWS)).to_have_count(3)

    # report: a reason from the list, sent with the viewer's token
    row(page, "rude words").click()
    menu = page.locator("#chat-menu")
    expect(menu).to_be_visible()
    menu.locator(".act-report").click()
    menu.locator(".reason-harassment").click()
    eventually(page, lambda: len(reports) == 1, what="the report")
    assert reports[0] == {
        "method": "POST",
        "auth": f"Bearer {token}",
        "body": {"comment_id": "a", "reason": "harassment"},
    }
    expect(page.locator("#toast")).to_have_text("Thanks: the moderators will look at it.")
    answer["status"] = 429
    fake_players.allow_console(r"status of 429")
    row(page, "a friendly line").click()
    menu.locator(".act-report").click()
    menu.locator(".reason-spam").click()
    expect(page.locator("#toast")).to_have_text("Too many reports: try again in 30 s.")

    # block: the user's rows leave, and stay blocked after a reload
    row(page, "rude words").click()
    menu.locator(".act-block").click()
    expect(row(page, "rude words")).to_have_count(0)
    expect(row(page, "more rudeness")).to_have_count(0)
    expect(row(page, "a friendly line")).to_have_count(1)
    assert "troll" in page.evaluate("window.danmaku.settings().blockUsers")
    page.reload()
    page.wait_for_function("() => window.danmaku.state === 'connected'")
    fake.send(
        _frame(
            20,
            [_item("d", "back again", uid="troll", nick="Troll2"), _item("e", "hi", uid="pal")],
        )
    )
    expect(row(page, "hi")).to_have_count(1)
    expect(row(page, "back again")).to_have_count(0)
    assert page.locator("#overlay .dm", has_text="back again").count() == 0
