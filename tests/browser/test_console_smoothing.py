"""The console's smoothing inputs in Chromium against the real system: a moderator sets
the room's budget window (``smooth_window_s``) and longest wait (``max_wait_s``), the
room and its viewers are told, a value the API refuses names the field, and a reset
returns both to the server defaults."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_console import mod_token, open_console
from tests.client import http_sync


def room_figures(live: LiveSystem, room: str) -> dict[str, dict[str, float]]:
    reply = http_sync(f"{live.base_url}/api/rooms/{room}")
    assert reply.status == 200
    body = reply.json()
    return {"settings": body["settings"], "effective": body["effective"]}


def test_budget_window_and_longest_wait_are_set_and_reset(
    live: LiveSystem, players: Players
) -> None:
    players.allow_console(r"Failed to load resource: the server responded with a status of 422")
    room = "smooth"
    page = open_console(players, room, mod_token())
    viewer = live.client(room)
    defaults = live.settings
    # the "now" column shows the value in force: the server's default until the room sets one
    expect(page.locator("#now-window")).to_have_text(f"now {defaults.smooth_window_s:g} s")
    expect(page.locator("#now-max-wait")).to_have_text(f"now {defaults.max_wait_s:g} s")

    # set both: said in the console, read back from the room, told to its viewers
    page.fill("#set-window", "2")
    page.fill("#set-max-wait", "0.5")
    page.click("#settings-apply")
    expect(page.locator("#msg")).to_have_text(
        "Settings changed: budget window 2 s, longest wait 0.5 s."
    )
    expect(page.locator("#now-window")).to_have_text("now 2 s")
    expect(page.locator("#now-max-wait")).to_have_text("now 0.5 s")
    figures = room_figures(live, room)
    assert figures["settings"]["smooth_window_s"] == 2.0
    assert figures["effective"]["max_wait_s"] == 0.5
    live.wait_for(
        viewer,
        lambda c: any(
            m.get("event") == "settings"
            and m["changes"].get("smooth_window_s") == 2.0
            and m["changes"].get("max_wait_s") == 0.5
            for m in c.of_type("notice")
        ),
    )

    # a value the API refuses: the error names the field, nothing changes
    page.fill("#set-window", "20")
    page.click("#settings-apply")
    expect(page.locator("#msg")).to_contain_text("Invalid smooth_window_s")
    assert room_figures(live, room)["settings"]["smooth_window_s"] == 2.0
    page.fill("#set-window", "2")

    # only what changed is sent
    page.fill("#set-max-wait", "1")
    page.click("#settings-apply")
    expect(page.locator("#msg")).to_have_text("Settings changed: longest wait 1 s.")

    page.click("#settings-reset")
    # the "now" column shows the value in force: the server's default until the room sets one
    expect(page.locator("#now-window")).to_have_text(f"now {defaults.smooth_window_s:g} s")
    expect(page.locator("#now-max-wait")).to_have_text(f"now {defaults.max_wait_s:g} s")
    expect(page.locator("#set-window")).to_have_value("")
    expect(page.locator("#set-max-wait")).to_have_value("")
    figures = room_figures(live, room)
    assert "smooth_window_s" not in figures["settings"] and "max_wait_s" not in figures["settings"]
    assert figures["effective"]["smooth_window_s"] == live.settings.smooth_window_s
    assert figures["effective"]["max_wait_s"] == live.settings.max_wait_s
