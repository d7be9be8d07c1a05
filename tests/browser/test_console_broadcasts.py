"""The console's platform panels in a real Chromium against the real system: start a
broadcast with a title, comments are recorded, end it, and the recordings list links the
replay page and the exports (which hold the comment); paid messages and gifts listed."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import expect

from danmaku import auth
from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_console import mod_token, open_console, send
from tests.client import http_sync
from tests.conftest import SECRET


def test_start_record_end_and_the_recordings_list(live: LiveSystem, players: Players) -> None:
    room = "onair"
    page = open_console(players, room, mod_token(role="streamer"))
    page.wait_for_function("() => window.dmBroadcasts && window.dmBroadcasts.loaded")
    expect(page.locator("#bc-empty")).to_be_visible()
    page.fill("#bc-title", "Finals <b>night</b>")
    page.click("#bc-start")
    expect(page.locator("#bc-live-text")).to_contain_text("On air: Finals <b>night</b>")
    on_air = http_sync(f"{live.base_url}/api/rooms/{room}/broadcasts").json()
    assert (
        len(on_air) == 1
        and on_air[0]["end"] is None
        and on_air[0]["title"] == "Finals <b>night</b>"
    )

    sender = live.client(room, "singer")
    reply = send(live, sender, "recorded line")
    assert reply["type"] == "ack"

    page.click("#bc-end")
    expect(page.locator("#bc-live")).to_be_hidden()
    item = page.locator("#bc-list .bc-item")
    expect(item).to_have_count(1)
    expect(item.locator(".bc-name")).to_have_text("Finals <b>night</b>")  # text, not markup
    assert page.locator("#bc-list b").count() == 0
    bid = on_air[0]["id"]
    replay = urlparse(item.locator(".bc-replay").get_attribute("href") or "")
    assert replay.path == "/" and parse_qs(replay.query) == {"room": [room], "broadcast": [bid]}
    json_href = item.locator(".bc-json").get_attribute("href") or ""
    assert json_href.endswith(f"/broadcasts/{bid}/danmaku?format=json")
    for fmt in ("xml", "ass"):
        assert (item.locator(f".bc-{fmt}").get_attribute("href") or "").endswith(f"format={fmt}")

    # The export the link names holds the comment (the worker records before the end).
    def exported() -> list[str]:
        body = http_sync(live.base_url + json_href).body
        return [c["text"] for c in json.loads(body)["comments"]]

    for _ in range(50):
        if "recorded line" in exported():
            break
        page.wait_for_timeout(100)
    assert "recorded line" in exported()


def test_a_rejected_token_is_told_in_words_and_nothing_starts(
    live: LiveSystem, players: Players
) -> None:
    page = open_console(players, "noair", mod_token())
    page.wait_for_function("() => window.dmBroadcasts && window.dmBroadcasts.loaded")
    page.evaluate(
        "() => localStorage.setItem('danmaku.console.token.v1', JSON.stringify('not-a-token'))"
    )
    players.allow_console(r"status of 401")  # the refused start, as the browser logs it
    page.click("#bc-start")
    expect(page.locator("#bc-msg")).to_contain_text("paste a moderator or streamer token")
    assert http_sync(f"{live.base_url}/api/rooms/noair/broadcasts").json() == []


def test_paid_messages_and_gifts_are_listed_for_staff(live: LiveSystem, players: Players) -> None:
    room = "thanks"
    page = open_console(players, room, mod_token())
    page.wait_for_function("() => window.dmHighlights && window.dmHighlights.loaded")
    expect(page.locator("#hl-empty")).to_be_visible()
    server = auth.mint_server(SECRET, uid="backend")
    url = f"{live.base_url}/api/rooms/{room}/messages"
    paid = {"id": "p1", "kind": "paid", "uid": "fan", "nick": "Fan <i>1</i>", "amount": 50}
    paid |= {"currency": "USD", "text": "love <b>it</b>"}
    assert http_sync(url, "POST", json_body=paid, token=server).status == 201
    gift = {"id": "g1", "kind": "gift", "uid": "fan2", "nick": "Gifter"}
    gift["gift"] = {"name": "rocket", "count": 3, "value": 2}
    assert http_sync(url, "POST", json_body=gift, token=server).status == 201
    system = {"id": "s1", "kind": "system", "text": "not a highlight"}
    assert http_sync(url, "POST", json_body=system, token=server).status == 201
    page.evaluate("() => window.dmHighlights.refresh()")
    items = page.locator("#hl-list .hl-item")
    expect(items).to_have_count(2)
    expect(items.nth(0).locator(".hl-amount")).to_have_text("rocket × 3")  # newest first
    expect(items.nth(1).locator(".hl-nick")).to_have_text("Fan <i>1</i>")
    expect(items.nth(1).locator(".hl-amount")).to_have_text("$50.00")
    expect(items.nth(1).locator(".hl-tier")).to_have_text("magenta")
    expect(items.nth(1).locator(".hl-text")).to_have_text("love <b>it</b>")
    assert page.locator("#hl-list b, #hl-list i").count() == 0
