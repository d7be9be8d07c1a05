"""Staff in the player, in a real Chromium against the real system: sign in with a role
token (kept for the tab only), chat with the role's badge, delete and time out from the
chat list; and the resume epoch on reconnect."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import FakeGateway, LiveSystem, Players, eventually
from tests.browser.test_player_chat import row
from tests.client import token


def test_a_moderator_signs_in_chats_deletes_and_times_out(
    live: LiveSystem, players: Players
) -> None:
    page = players.open("modroom")
    page.click("#staff summary")
    page.fill("#staff-token", token("mod1", role="moderator"))
    page.click("#staff-in")
    page.wait_for_function(
        "() => window.danmaku.state === 'connected' && window.danmaku.user?.role === 'moderator'"
    )
    expect(page.locator("#who-nick")).to_have_text("nick-mod1")
    expect(page.locator("#who-role")).to_have_text("Moderator")
    kept = page.evaluate(
        "[sessionStorage.getItem('danmaku.staff.v1') !== null,"
        " JSON.stringify(localStorage).includes('eyJ')]"
    )
    assert kept == [True, False]  # this tab only, never in localStorage

    page.fill("#send-text", "mods here")
    page.press("#send-text", "Enter")
    expect(row(page, "mods here").locator(".chat-badge")).to_have_text("Moderator")

    troll = live.client("modroom", "troll")
    live.comment(troll, "bad comment")
    live.comment(troll, "another one")
    bad = row(page, "bad comment")
    expect(bad).to_have_count(1)
    bad.click()
    page.locator("#chat-menu .act-delete").click()
    expect(bad).to_have_count(0)
    live.wait_for(troll, lambda c: any(m.get("retract") for m in c.messages))

    row(page, "another one").click()
    page.locator("#chat-menu .act-timeout").click()
    expect(page.locator("#toast")).to_have_text("nick-troll is timed out for 10 min.")
    live.wait_for(
        troll,
        lambda c: (
            c.closed is not None
            or any(m.get("type") == "error" and m.get("code") == "banned" for m in c.messages)
        ),
    )

    # signing out goes back to an anonymous viewer
    page.click("#staff-out")
    page.wait_for_function("() => window.danmaku.state === 'connected' && !window.danmaku.user")
    expect(page.locator("#nick-form")).to_be_visible()


def test_a_bad_token_is_refused_in_words(live: LiveSystem, players: Players) -> None:
    players.allow_console(r"WebSocket")
    page = players.open("modroom")
    page.click("#staff summary")
    page.fill("#staff-token", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad")
    page.click("#staff-in")
    expect(page.locator("#send-error")).to_have_text("That token was refused.")
    page.wait_for_function("() => window.danmaku.state === 'connected'")
    assert page.evaluate("sessionStorage.getItem('danmaku.staff.v1')") is None


def test_resume_sends_since_and_the_welcome_epoch(
    fake_players: Players, fake_gateway: FakeGateway
) -> None:
    fake = fake_gateway
    fake.welcome["epoch"] = "e1"
    page = fake_players.open("fake", ws_url=fake.url)
    assert "epoch=" not in fake.requests[0]
    fake.close_all(1013, "restart")
    eventually(page, lambda: len(fake.requests) >= 2, what="a reconnect")
    assert "since=10" in fake.requests[1] and "epoch=e1" in fake.requests[1]
    # the room's history was reset: a new epoch and a smaller seq are followed
    fake.welcome.update(epoch="e2", seq=3)
    page.wait_for_function("() => window.danmaku.state === 'connected'")
    fake.close_all(1013, "restart")
    eventually(page, lambda: len(fake.requests) >= 3, what="a second reconnect")
    page.wait_for_function("() => window.danmaku.epoch === 'e2'")
    assert page.evaluate("window.danmaku.lastSeq") == 3
    fake.close_all(1013, "restart")
    eventually(page, lambda: len(fake.requests) >= 4, what="a third reconnect")
    assert "since=3" in fake.requests[3] and "epoch=e2" in fake.requests[3]


def test_the_consoles_open_player_as_me_link_signs_the_player_in(
    live: LiveSystem, players: Players
) -> None:
    from tests.browser.test_console import open_console

    console = open_console(players, "linked", token("mod2", role="moderator"))
    link = console.locator("#player-me")
    expect(link).to_be_visible()
    href = link.get_attribute("href") or ""
    assert href.startswith("/?room=linked#token=")
    page = players.new_context().new_page()
    page.goto(f"{live.base_url}{href}")
    page.wait_for_function(
        "() => window.danmaku.state === 'connected' && window.danmaku.user?.role === 'moderator'"
    )
    assert "token" not in page.url  # taken from the address, kept for this tab only
    expect(page.locator("#who-role")).to_have_text("Moderator")
