"""The console's room-settings form (issue 23), built from ``GET /api/room-settings`` in a
real Chromium: one input per setting of the schema, of its kind and bounds; what the form
changes reaches the room (``GET /api/rooms/{room}``), and the "now" column shows the value
in force."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_console import mod_token, open_console
from tests.client import http_sync


def get(live: LiveSystem, path: str) -> Any:
    reply = http_sync(f"{live.base_url}{path}")
    assert reply.status == 200
    return reply.json()


def test_every_setting_of_the_schema_has_an_input(live: LiveSystem, players: Players) -> None:
    schema = get(live, "/api/room-settings")
    assert {s["kind"] for s in schema} == {"number", "flag", "choice", "text"}
    page = open_console(players, "schema", mod_token())
    form = page.locator("#settings-form")
    for spec in schema:
        field = form.locator(f'[data-setting="{spec["name"]}"]')
        expect(field).to_have_count(1)
        tag = field.evaluate("(n) => n.tagName.toLowerCase()")
        kind = field.get_attribute("type")
        if not spec["writable"]:
            assert tag == "output", spec  # shown, not settable (shield has its own button)
            continue
        assert (tag, kind if tag == "input" else None) == {
            "number": ("input", "number"),
            "flag": ("input", "checkbox"),
            "choice": ("select", None),
            "text": ("input", "url" if spec["name"].endswith("_url") else "text"),
        }[spec["kind"]], spec
        if spec["kind"] == "number":
            assert float(field.get_attribute("min") or "nan") == spec["min"]
            assert float(field.get_attribute("max") or "nan") == spec["max"]
        if spec["kind"] == "choice":
            values = field.locator("option").evaluate_all("(os) => os.map((o) => o.value)")
            assert values == spec["choices"]
        # each input has a label that names it
        expect(form.locator(f'label[for="{field.get_attribute("id")}"]')).to_have_count(1)


def test_a_number_and_a_choice_set_in_the_form_reach_the_room(
    live: LiveSystem, players: Players
) -> None:
    room = "schemaset"
    page = open_console(players, room, mod_token())
    effective = get(live, f"/api/rooms/{room}")["effective"]
    # the "now" column shows the value in force before anything is set
    expect(page.locator("#now-room-review")).to_have_text(f"now {effective['review']}")
    expect(page.locator("#now-budget")).to_have_text(f"now {effective['budget']:,g}/s")

    page.fill('[data-setting="budget"]', "25")
    page.select_option('[data-setting="review"]', "all")
    page.click("#settings-apply")
    expect(page.locator("#msg")).to_have_text("Settings changed: display budget 25/s, review all.")
    info = get(live, f"/api/rooms/{room}")
    assert info["settings"]["budget"] == 25.0 and info["settings"]["review"] == "all"
    assert info["effective"]["budget"] == 25.0 and info["effective"]["review"] == "all"
    expect(page.locator("#now-budget")).to_have_text("now 25/s")
    expect(page.locator("#now-room-review")).to_have_text("now all")

    # reset: every writable setting back to the server's default
    page.click("#settings-reset")
    expect(page.locator("#now-room-review")).to_have_text(f"now {effective['review']}")
    info = get(live, f"/api/rooms/{room}")
    assert "budget" not in info["settings"] and "review" not in info["settings"]
    expect(page.locator('[data-setting="budget"]')).to_have_value("")
