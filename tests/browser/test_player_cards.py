"""Paid messages, gifts and system announcements in the player, in a real Chromium against
the real system: published through the server API with an API key, they show as cards
(the tier's colour, the nick, the amount in the viewer's locale and currency, the text or
the gift) in the chat list and over the video, and a paid pin as its card in the banner;
all of it as text, never markup. Also guest sessions under the room's rules (refusals
in the player's words), the density menu from the welcome, and resume_failed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from danmaku.config import Settings
from tests.browser.conftest import (
    FakeGateway,
    LiveSystem,
    Players,
    TrioThread,
    eventually,
    open_players,
)
from tests.browser.test_player import _frame, _item
from tests.client import http_sync, token

KEY = "k-platform-backend-0123456789"
RED = "rgb(208, 0, 0)"  # the built-in tier of 100+: "red", #d00000, pinned 1 h
GREEN = "rgb(0, 191, 165)"  # 5+: "green", #00bfa5, pinned 2 min


@pytest.fixture
def paid_live(trio_thread: TrioThread, settings: Settings) -> Iterator[LiveSystem]:
    system = LiveSystem(trio_thread, settings.replace(tick_ms=50, api_keys=KEY))
    system.start()
    yield system
    system.close()


@pytest.fixture
def paid_players(browser: Browser, paid_live: LiveSystem) -> Iterator[Players]:
    with open_players(browser, paid_live) as p:
        yield p


def publish(live: LiveSystem, room: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = http_sync(
        f"{live.base_url}/api/rooms/{room}/messages",
        "POST",
        json_body=body,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert reply.status == 201, (reply.status, reply.body)
    out: dict[str, Any] = reply.json()
    return out


def card_row(page: Page, kind: str) -> Locator:
    return page.locator(f"#chat-list > li.chat-card.kind-{kind}")


def border(loc: Locator) -> str:
    return str(loc.evaluate("e => getComputedStyle(e).borderTopColor"))


def test_paid_gift_and_system_items_are_cards_and_a_paid_pin_fills_the_banner(
    paid_live: LiveSystem, paid_players: Players
) -> None:
    live, room = paid_live, "thanks"
    page = paid_players.open(room)
    paid = publish(
        live,
        room,
        {
            "id": "p1",
            "kind": "paid",
            "uid": "fan",
            "nick": "Fan <b>1</b>",
            "amount": 120,
            "currency": "USD",
            "text": "GG <i>wp</i>",
        },
    )
    assert paid["tier"]["color"] == "#d00000"
    gift = {"id": "g1", "kind": "gift", "uid": "fan2", "nick": "Gifter"}
    publish(live, room, gift | {"gift": {"name": "rocket", "count": 3, "value": 2}})
    publish(live, room, {"id": "s1", "kind": "system", "text": "the stream ends at 10"})

    # the chat list: a card each, in the tier's colour
    paid_row = card_row(page, "paid")
    expect(paid_row).to_have_count(1)
    card = paid_row.locator(".card")
    expect(card.locator(".card-nick")).to_have_text("Fan <b>1</b>")
    expect(card.locator(".card-amount")).to_have_text("$120.00")
    expect(card.locator(".card-text")).to_have_text("GG <i>wp</i>")
    assert border(card) == RED
    gift_card = card_row(page, "gift").locator(".card")
    expect(gift_card.locator(".card-amount")).to_have_text("rocket × 3")
    expect(gift_card.locator(".card-nick")).to_have_text("Gifter")
    assert border(gift_card) == GREEN
    system_card = card_row(page, "system").locator(".card")
    expect(system_card.locator(".card-nick")).to_have_text("System")
    expect(system_card.locator(".card-text")).to_have_text("the stream ends at 10")
    expect(system_card.locator(".card-amount")).to_have_count(0)

    # over the video: the paid item is a card in its lane, not plain text
    over = page.locator("#overlay .dm.dm-card.kind-paid .card")
    expect(over).to_have_count(1)
    expect(over.locator(".card-amount")).to_have_text("$120.00")
    assert border(over) == RED
    assert paid["comment_id"] in page.evaluate("window.danmaku.shownIds()")

    # the pin: the red card stays (a green gift does not take a higher tier's pin)
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    pinned = banner.locator("#banner-text .card")
    expect(pinned.locator(".card-amount")).to_have_text("$120.00")
    expect(pinned.locator(".card-nick")).to_have_text("Fan <b>1</b>")
    assert border(pinned) == RED
    expect(page.locator("#banner-tag")).to_have_text("pinned")

    # text, never markup
    assert page.locator("#chat-list b, #chat-list i, #banner b, #overlay b").count() == 0

    # switched to Chinese: the cards on screen speak it too
    page.click("#lang-switch")
    expect(card.locator(".card-amount")).to_have_text("US$120.00")
    expect(system_card.locator(".card-nick")).to_have_text("系统")
    expect(pinned.locator(".card-amount")).to_have_text("US$120.00")
    assert border(card) == RED
    page.click("#lang-switch")
    expect(pinned.locator(".card-amount")).to_have_text("$120.00")

    # a viewer who comes later gets the pin on connect, in Chinese: the amount in zh-CN
    later = paid_players.open(room, query="&lang=zh")
    later_pin = later.locator("#banner-text .card")
    expect(later_pin.locator(".card-amount")).to_have_text("US$120.00")
    assert border(later_pin) == RED
    expect(later.locator("#banner-tag")).to_have_text("置顶")
    publish(live, room, {"id": "s2", "kind": "system", "text": "welcome"})
    expect(card_row(later, "system").locator(".card-nick")).to_have_text("系统")


def try_join(page: Page, nick: str) -> None:
    if page.locator("#who").is_visible():
        page.click("#who-change")
    page.fill("#nick-input", nick)
    page.click("#nick-join")


def test_guest_sessions_follow_the_rooms_rules_in_the_players_words(
    live: LiveSystem, players: Players
) -> None:
    players.allow_console(r"status of (403|409)")
    room = "members"
    mod = token("mod1", role="moderator", room=room)
    url = f"{live.base_url}/api/rooms/{room}/settings"
    assert http_sync(url, "PATCH", json_body={"guests": "off"}, token=mod).status == 200
    page = players.open(room)  # anonymous viewers still watch
    try_join(page, "Visitor")
    expect(page.locator("#send-error")).to_have_text(
        "Guests cannot join this room: log in to watch and comment."
    )
    assert page.evaluate("window.danmaku.sessionRefusal") == "guests_off"
    assert page.evaluate("localStorage.getItem('danmaku.session.v1')") in (None, "null")
    expect(page.locator("#nick-form")).to_be_visible()

    # a nick that looks like a staff member's (recorded when the streamer is present)
    assert http_sync(url, "PATCH", json_body={"guests": None}, token=mod).status == 200
    live.client(room, tok=token("star", role="streamer", room=room))  # nick "nick-star"
    refused = "That nickname looks like a staff member's in this room: pick another."
    for _ in range(50):  # the staff nick reaches the session check in a presence round
        try_join(page, "Nick-\u0455TAR")  # capitals and a Cyrillic s
        page.wait_for_function("() => !document.getElementById('nick-input').disabled")
        if page.evaluate("window.danmaku.sessionRefusal") == "nick_staff":
            break
        page.wait_for_timeout(100)  # given before the round: try again
    expect(page.locator("#send-error")).to_have_text(refused)
    assert page.evaluate("window.danmaku.sessionRefusal") == "nick_staff"
    try_join(page, "Fan of the star")
    expect(page.locator("#who-nick")).to_have_text("Fan of the star")
    page.wait_for_function("() => window.danmaku.user?.nick === 'Fan of the star'")

    # an address under the room's IP ban gets no session there
    banned_room = "netban"
    other = players.open(banned_room)
    bans = f"{live.base_url}/api/rooms/{banned_room}/ip-bans"
    ban = {"ip": "127.0.0.1", "duration_s": 600, "reason": "spam"}
    mod2 = token("mod2", role="moderator", room=banned_room)
    assert http_sync(bans, "POST", json_body=ban, token=mod2).status in (200, 201)
    try_join(other, "Evader")
    expect(other.locator("#send-error")).to_have_text("Your network is banned from this room.")
    assert other.evaluate("window.danmaku.sessionRefusal") == "banned"


@pytest.fixture
def capped_live(trio_thread: TrioThread, settings: Settings) -> Iterator[LiveSystem]:
    system = LiveSystem(trio_thread, settings.replace(tick_ms=50, guest_sessions_per_ip_per_min=1))
    system.start()
    yield system
    system.close()


def test_too_many_sessions_says_how_long_to_wait(browser: Browser, capped_live: LiveSystem) -> None:
    with open_players(browser, capped_live) as players:
        players.allow_console(r"status of 429")
        page = players.open("capped", query="&lang=zh")
        try_join(page, "First")
        expect(page.locator("#who-nick")).to_have_text("First")
        try_join(page, "Second")
        expect(page.locator("#send-error")).to_have_text(
            re.compile(r"^你的网络地址新建会话太多，请 \d+ 秒后再试。$")
        )
        assert page.evaluate("window.danmaku.sessionRefusal") == "wait"


def test_the_density_menu_offers_the_welcomes_levels(
    fake_players: Players, fake_gateway: FakeGateway
) -> None:
    fake = fake_gateway
    fake.welcome["densities"] = [1.0, 0.4, 0.1]
    page = fake_players.open("fake", ws_url=fake.url)
    menu = page.locator("#set-density option")
    expect(menu).to_have_count(3)
    values = [float(v) for v in menu.evaluate_all("os => os.map(o => o.value)")]
    assert values == [1.0, 0.4, 0.1]
    assert menu.all_text_contents() == ["all", "40% of comments", "10% of comments"]
    page.click("#settings summary")
    page.select_option("#set-density", "0.1")
    eventually(page, lambda: len(fake.requests) >= 2, what="a reconnect with the new density")
    assert "density=0.1" in fake.requests[-1]


def test_the_density_menu_is_the_real_gateways(live: LiveSystem, players: Players) -> None:
    page = players.open("levels")
    served = page.evaluate("window.danmaku.densities")
    values = page.locator("#set-density option").evaluate_all("os => os.map(o => Number(o.value))")
    assert values == served == [1.0, 0.5, 0.25]


def test_resume_failed_moves_the_place_without_a_false_gap(
    fake_players: Players, fake_gateway: FakeGateway
) -> None:
    fake = fake_gateway
    fake.welcome["epoch"] = "e1"
    page = fake_players.open("fake", ws_url=fake.url)
    fake.send(_frame(11, [_item("a", "before")]))
    page.wait_for_function("() => window.danmaku.lastSeq === 11")
    # the history after 11 is gone: the gateway starts this connection fresh at 500
    fake.welcome.update(seq=500)
    fake.close_all(1013, "restart")
    eventually(page, lambda: len(fake.requests) >= 2, what="a reconnect")
    assert "since=11" in fake.requests[1]
    page.wait_for_function("() => window.danmaku.state === 'connected'")
    fake.send(
        {
            "type": "notice",
            "event": "resume_failed",
            "code": "resume_failed",
            "reason": "gap",
            "message": "history not recovered",
            "since": 11,
            "seq": 500,
            "epoch": "e1",
            "missing_from": 12,
            "missing_to": 480,
        }
    )
    fake.send(_frame(501, [_item("b", "after")]))
    page.wait_for_function("() => window.danmaku.lastSeq === 501")
    assert page.evaluate("window.danmaku.stats().gaps") == 0
    expect(page.locator("#toast")).to_have_text("Some comments were missed while reconnecting.")
    # a reset room names a new epoch in the notice: the next resume uses it
    fake.welcome.update(seq=3)
    fake.close_all(1013, "restart")
    eventually(page, lambda: len(fake.requests) >= 3, what="a second reconnect")
    page.wait_for_function("() => window.danmaku.state === 'connected'")
    fake.send(
        {"type": "notice", "event": "resume_failed", "reason": "epoch", "since": 501, "seq": 3}
        | {"epoch": "e2", "code": "resume_failed", "message": "history not recovered"}
    )
    page.wait_for_function("() => window.danmaku.epoch === 'e2' && window.danmaku.lastSeq === 3")
    fake.send(_frame(4, [_item("c", "new numbering")]))
    page.wait_for_function("() => window.danmaku.lastSeq === 4")
    assert page.evaluate("window.danmaku.stats().gaps") == 0
