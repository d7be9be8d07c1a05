"""The console's room switcher (issue 24) in a real Chromium against the real system: an
admin sees the live rooms of the room directory (busiest first, with their viewers) and
switches the console to one; a staff token of several rooms switches among its own; a
token of one room shows no switcher."""

from __future__ import annotations

from playwright.sync_api import expect

from danmaku import auth
from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_console import open_console
from tests.conftest import SECRET


def test_an_admin_switches_rooms_from_the_directory(live: LiveSystem, players: Players) -> None:
    # Live rooms: "busy" with three viewers, "quiet" with one.
    for uid in ("a", "b", "c"):
        live.client("busy", uid)
    live.client("quiet", "d")
    admin = auth.mint(SECRET, uid="root", nick="Root", role="admin")
    page = open_console(players, "quiet", admin)
    page.wait_for_function(
        "() => window.dmRooms && window.dmRooms.source === 'directory'"
        " && window.dmRooms.rooms().includes('busy')"
    )
    switcher = page.locator("#rooms-select")
    expect(switcher).to_be_visible()
    labels = switcher.locator("option").all_inner_texts()
    assert labels[0] == "quiet (this room)"
    busy = next(text for text in labels if text.startswith("busy"))
    assert "3 online" in busy
    switcher.select_option("busy")
    page.wait_for_url("**/console?room=busy")
    page.wait_for_function("() => window.dmConsole && window.dmConsole.auth === 'ok'")
    assert page.evaluate("() => window.dmConsole.room") == "busy"
    expect(page.locator("#rooms-select")).to_have_value("busy")


def test_staff_of_several_rooms_switch_among_their_own_and_one_room_shows_none(
    live: LiveSystem, players: Players
) -> None:
    several = auth.mint(SECRET, uid="s1", nick="Sam", role="streamer", room=["one", "two"])
    page = open_console(players, "one", several)
    page.wait_for_function("() => window.dmRooms && window.dmRooms.source === 'token'")
    options = page.locator("#rooms-select option")
    expect(options).to_have_text(["one (this room)", "two"])
    page.locator("#rooms-select").select_option("two")
    page.wait_for_url("**/console?room=two")

    single = auth.mint(SECRET, uid="m1", nick="Mo", role="moderator", room="solo")
    page = open_console(players, "solo", single)
    page.wait_for_function("() => window.dmRooms && window.dmRooms.loaded")
    expect(page.locator("#rooms-switcher")).to_be_hidden()
