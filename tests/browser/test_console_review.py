"""The console's review queue, reports, names, user card and shield mode (issue 19), in a
real Chromium against the real system: what a moderator clicks, checked where it matters
(test clients' frames and replies, the API)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_console import mod_token, open_console, row
from tests.client import http_sync, token


def api(live: LiveSystem, method: str, path: str, body: object = None, tok: str | None = None):
    reply = http_sync(
        f"{live.base_url}/api{path}", method, json_body=body, token=tok or mod_token()
    )
    return reply.status, reply.json()


def texts(client) -> list[str]:  # type: ignore[no-untyped-def]
    return [item["text"] for f in client.frames for item in f["items"]]


def test_review_queue_approve_deny_and_shield(live: LiveSystem, players: Players) -> None:
    room = "reviewing"
    assert api(live, "PATCH", f"/rooms/{room}/settings", {"review": "all"})[0] == 200
    page = open_console(players, room, mod_token())
    watcher = live.client(room)
    sender = live.client(room, "newbie")
    staff = live.client(room, "mod2", role="moderator")
    first = live.comment(sender, "is this allowed?")
    second = live.comment(sender, "buy my stuff")
    assert first["code"] == second["code"] == "held"

    # the queue shows both in real time, with the sender's name (uid on hover)
    held = page.locator("#held-list .q-item")
    expect(held).to_have_count(2)
    expect(page.locator("#held-count")).to_have_text("2")
    item = page.locator("#held-list .q-item", has_text="is this allowed?")
    expect(item.locator(".name")).to_have_text("nick-newbie")
    expect(item.locator(".name")).to_have_attribute("title", re.compile(r"^newbie\b"))

    item.locator("button.approve").click()
    expect(page.locator("#msg")).to_contain_text("Approved the comment by nick-newbie")
    live.wait_for(watcher, lambda c: "is this allowed?" in texts(c))
    page.locator("#held-list .q-item", has_text="buy my stuff").locator("button.deny").click()
    expect(page.locator("#msg")).to_contain_text("Denied the comment by nick-newbie")
    expect(held).to_have_count(0)
    expect(page.locator("#held-empty")).to_be_visible()
    live.comment(staff, "staff after the decisions")
    live.wait_for(watcher, lambda c: "staff after the decisions" in texts(c))
    assert "buy my stuff" not in texts(watcher)
    assert texts(watcher).count("is this allowed?") == 1
    # the audit log names the decisions and who took them, by nick
    expect(page.locator("#audit-list .audit-entry[data-action='approve']")).to_have_count(1)
    deny_by = page.locator("#audit-list .audit-entry[data-action='deny'] .by")
    expect(deny_by).to_have_text(re.compile(r"^Mo\s*Moderator$"))
    expect(deny_by).to_have_attribute("title", re.compile(r"^mod1\b"))

    # shield mode: one click on, one click off, the room's settings restored
    page.click("#shield-toggle")
    expect(page.locator("#msg")).to_contain_text("Shield mode on")
    expect(page.locator("#now-shield")).to_have_text("on")
    _, info = api(live, "GET", f"/rooms/{room}")
    assert info["settings"]["shield"] is True
    assert info["effective"]["review"] == "all"  # stricter than the preset: kept
    page.click("#shield-toggle")
    expect(page.locator("#msg")).to_contain_text("Shield mode off")
    expect(page.locator("#now-shield")).to_have_text("off")
    _, info = api(live, "GET", f"/rooms/{room}")
    assert "shield" not in info["settings"] and info["effective"]["review"] == "all"
    # what was announced: guests to watch only, then back to the room's own (none)
    _status, audit = api(live, "GET", f"/rooms/{room}/audit")
    off, on = [e["detail"] for e in audit if e["action"] == "settings"][:2]
    assert on["guests"] == "watch" and on["shield"] is True
    assert off["guests"] is None and off["shield"] is False


def test_user_card_shows_history_reports_and_acts(live: LiveSystem, players: Players) -> None:
    room = "carding"
    page = open_console(players, room, mod_token())
    watcher = live.client(room)
    troll = live.client(room, "troll")
    ids = [live.comment(troll, f"nasty {w}")["id"] for w in ("one", "two")]
    status, _ = api(
        live,
        "POST",
        f"/rooms/{room}/reports",
        {"comment_id": ids[0], "reason": "harassment"},
        tok=token("witness"),
    )
    assert status == 202
    # the report reaches the console's reports queue, counted, with the author's name
    report = page.locator("#reports-list .q-item", has_text="nasty one")
    expect(report).to_contain_text("1 report")
    expect(report).to_contain_text("harassment")

    # a click on the name in the feed opens the card
    row(page, "nasty two").locator(".nick").click()
    card = page.locator("#card")
    expect(card).to_be_visible()
    expect(page.locator("#card-nick")).to_have_text("nick-troll")
    expect(page.locator("#card-uid")).to_have_text("troll")
    expect(page.locator("#card-comments li")).to_have_count(2)
    expect(page.locator("#card-comments")).to_contain_text("nasty one")
    expect(page.locator("#card-reports-count")).to_have_text("1")

    # a 10 minute timeout with a reason: the user is told, the card shows it
    page.fill("#card-reason", "insults")
    page.click(".card-timeout[data-s='600']")
    expect(page.locator("#card-history")).to_contain_text("timed out until")
    expect(page.locator("#card-history")).to_contain_text("insults")
    expect(page.locator("#card-state")).to_contain_text("timed out")
    live.wait_for(troll, lambda c: c.closed is not None)  # disconnected, and cannot return
    again = live.client(room, "troll")
    reply = live.loop.run(again.comment, "still here", "after-timeout")
    assert reply["type"] == "error" and reply["code"] == "banned"
    assert 590_000 < reply["retry_after_ms"] <= 600_000

    # a private note, kept for the next moderator
    page.fill("#card-note", "warned twice on stream")
    page.click("#card-note-save")
    expect(page.locator("#card-note-meta")).to_contain_text("by moderator:mod1")
    _, card_data = api(live, "GET", f"/rooms/{room}/users/troll")
    assert card_data["note"]["text"] == "warned twice on stream"

    # purge: both comments retracted from every screen
    page.select_option("#card-purge-min", "10")
    page.click("#card-purge")
    expect(page.locator("#msg")).to_contain_text("Purged 2 comments by nick-troll")
    live.wait_for(
        watcher, lambda c: set(ids) <= {r for f in c.frames for r in f.get("retract", [])}
    )
    expect(page.locator("#card-comments")).to_contain_text("no comments in recent history")
    page.click("#card-close")
    expect(card).to_be_hidden()

    # the bans list shows the name, the uid on hover
    ban = page.locator('#bans-list .ban[data-uid="troll"] .ban-uid')
    expect(ban).to_have_text("nick-troll")
    expect(ban).to_have_attribute("title", re.compile(r"^troll\b"))


def test_feed_filter_searches_the_rooms_history(live: LiveSystem, players: Players) -> None:
    room = "searching"
    talker = live.client(room, "talker")
    live.comment(talker, "the needle is here")
    for k in range(3):
        live.comment(talker, f"hay {k}")
    page = open_console(players, room, mod_token())
    page.fill("#filter-text", "needle")
    expect(page.locator("#search-status")).to_contain_text("1 match in the room's history")
    expect(page.locator("#search-results .row")).to_contain_text("the needle is here")
    page.click("#filter-clear")
    expect(page.locator("#search")).to_be_hidden()
