"""The moderation console (/console) in a real Chromium against the real system.

Each test opens the console with a moderator token (``#token=`` in the URL, as a console
URL printed for a moderator would carry it), drives it like a moderator would, and checks
the effect where it matters: on test clients' replies (``banned``, ``slow_mode``,
``blocked``) and on a player page open in another browser context (retract, pin).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import ConsoleMessage, Locator, Page, Route, expect

from danmaku import auth
from tests.browser.conftest import LiveSystem, Players
from tests.client import Client, http_sync, label, token
from tests.conftest import SECRET


def mod_token(room: str | None = None, role: str = "moderator") -> str:
    return auth.mint(SECRET, uid="mod1", nick="Mo", role=role, room=room)


def open_console(
    players: Players,
    room: str,
    tok: str | None = None,
    *,
    logged_in: bool = True,
    routes: dict[str, Callable[[Route], None]] | None = None,
) -> Page:
    """A console page in its own browser context (console errors fail the test);
    ``routes`` rewrite some requests (URL glob -> handler)."""
    ctx = players.browser.new_context(
        viewport={"width": 1440, "height": 960}, locale="en-US", device_scale_factor=1
    )
    ctx.set_default_timeout(10_000)
    players.contexts.append(ctx)
    for pattern, handler in (routes or {}).items():
        ctx.route(pattern, handler)
    page = ctx.new_page()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and not any(p.search(msg.text) for p in players.allowed):
            players.errors.append(f"{page.url}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: players.errors.append(f"page error: {exc}"))
    page.goto(f"{players.live.base_url}/console?room={room}" + (f"#token={tok}" if tok else ""))
    if logged_in:
        page.wait_for_function(
            "() => window.dmConsole && window.dmConsole.auth === 'ok' && window.dmConsole.polls > 0"
        )
    return page


def row(page: Page, text: str) -> Locator:
    return page.locator("#feed .row", has_text=text)


def send(live: LiveSystem, client: Client, text: str) -> dict[str, Any]:
    """Send a comment; return the reply (ack or error) as it is."""
    return live.loop.run(partial(client.comment, text, f"t-{secrets.token_hex(6)}"))


def blast(live: LiveSystem, clients: list[Client], per_client: int) -> None:
    """Every client sends ``per_client`` comments as fast as acks come back."""

    async def one(i: int, client: Client) -> None:
        for k in range(per_client):
            reply = await client.comment(f"burst {label(i * per_client + k)}", secrets.token_hex(6))
            assert reply["type"] == "ack", reply

    async def all_of_them() -> None:
        async with trio.open_nursery() as nursery:
            for i, client in enumerate(clients):
                nursery.start_soon(one, i, client)

    live.loop.run(all_of_them)


@contextmanager
def traffic(live: LiveSystem, clients: list[Client], per_s: float) -> Iterator[list[int]]:
    """Comments from ``clients`` at about ``per_s`` a second until the block ends."""
    sent = [0]
    scope = trio.CancelScope()
    failures: list[BaseException] = []

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with scope:
            try:
                while True:
                    client = clients[sent[0] % len(clients)]
                    text = f"traffic {label(sent[0])}"
                    await client.send(type="comment", text=text, nonce=secrets.token_hex(6))
                    sent[0] += 1
                    await trio.sleep(1 / per_s)
            except Exception as exc:  # a closed client: stop, and say so below
                failures.append(exc)

    live.loop.run(live.loop.nursery.start, run)
    try:
        yield sent
    finally:
        live.loop.run_sync(scope.cancel)
    assert not failures, failures


# ---- figures ------------------------------------------------------------------------------
def test_figures_rise_while_comments_flow(
    live: LiveSystem, players: Players, tmp_path: Path
) -> None:
    room = "figures"
    page = open_console(players, room, mod_token())
    assert "#token" not in page.url  # taken out of the address bar once stored
    viewers = [live.client(room) for _ in range(2)]
    senders = live.clients(room, ["s1", "s2", "s3"])
    expect(page.locator("#fig-online-v")).to_have_text("5")
    assert viewers[0].closed is None
    # quiet first: the sparkline starts at zero
    page.wait_for_function("() => window.dmConsole.series('comments_per_s').length >= 1")
    assert page.evaluate("() => window.dmConsole.series('comments_per_s')[0]") == 0

    with traffic(live, senders, per_s=60):
        page.wait_for_function(
            "() => window.dmConsole.series('comments_per_s').filter(v => v > 10).length >= 2",
            timeout=15_000,
        )
        figures = page.evaluate("() => window.dmConsole.figures()")
        assert figures["comments_per_s"] > 10 and figures["shown_per_s"] > 0, figures
        assert figures["latency_p99_ms"] > 0, figures
        shown = float(page.text_content("#fig-comments-per-s-v") or "0")
        assert shown > 0
        # the sparkline rose off its baseline
        points = page.get_attribute("#fig-comments-per-s polyline", "points") or ""
        ys = [float(p.split(",")[1]) for p in points.split()]
        assert len(ys) >= 3 and min(ys) < ys[0] - 5, points
        # and the feed kept up with every comment
        expect(row(page, "traffic").first).to_be_visible()
        page.wait_for_function("() => window.dmConsole.received >= 60")
        shot = Path(os.environ.get("DANMAKU_CONSOLE_SCREENSHOT") or tmp_path / "console.png")
        page.screenshot(path=str(shot))


# ---- the feed -----------------------------------------------------------------------------
def test_feed_is_live_bounded_pausable_and_filterable(live: LiveSystem, players: Players) -> None:
    room = "feed"
    ann, bob = live.clients(room, ["ann", "bob"])
    live.comment(ann, "said before the console opened")
    page = open_console(players, room, mod_token())
    # recent history first, then the live feed
    expect(row(page, "said before the console opened")).to_have_count(1)
    live.comment(ann, "hello from ann")
    live.comment(bob, "bob says hi")
    expect(row(page, "hello from ann")).to_have_count(1)
    expect(row(page, "bob says hi").locator(".nick")).to_have_text("nick-bob")
    expect(page.locator("#feed .row").first).to_contain_text("bob says hi")  # newest on top

    # a burst: at most 300 rows in the DOM, newest first, every comment read
    crowd = live.clients(room, [f"c{i}" for i in range(12)])
    blast(live, crowd, 100)
    page.wait_for_function("n => window.dmConsole.received >= n", arg=1203, timeout=15_000)
    expect(page.locator("#feed .row")).to_have_count(300)
    ids = page.evaluate("() => window.dmConsole.rowIds()")
    keys = [tuple(int(x) for x in i.split("-")) for i in ids]
    assert keys == sorted(keys, reverse=True) and len(set(ids)) == 300

    # paused: the list holds still, what arrives is counted, resuming shows it
    page.click("#feed-pause")
    expect(page.locator("#feed-pause")).to_have_text("Resume")
    live.comment(ann, "while paused one")
    live.comment(bob, "while paused two")
    expect(page.locator("#feed-new")).to_have_text("2 new")
    expect(row(page, "while paused")).to_have_count(0)
    page.fill("#filter-text", "while paused")  # re-filtering keeps to what came before
    expect(page.locator("#feed-empty")).to_have_text("No comments match the filter.")
    page.fill("#filter-text", "")
    expect(page.locator("#feed .row")).to_have_count(300)
    page.click("#feed-pause")
    expect(row(page, "while paused")).to_have_count(2)
    expect(page.locator("#feed .divider")).to_have_text("▲ 2 new while paused")
    expect(page.locator("#feed-new")).to_be_hidden()

    # filters: by user (id or nick), by text; live comments obey them too
    page.fill("#filter-user", "bob")
    page.wait_for_function(
        """() => { const rows = [...document.querySelectorAll('#feed .row')];
                   return rows.length === 2 && rows.every(r => r.dataset.uid === 'bob'); }"""
    )
    page.fill("#filter-text", "PAUSED")
    expect(page.locator("#feed .row")).to_have_count(1)
    expect(page.locator("#feed .row .text")).to_have_text("while paused two")
    live.comment(ann, "ann paused again")
    live.comment(bob, "bob paused again")
    expect(row(page, "bob paused again")).to_have_count(1)
    expect(page.locator("#feed .row").first).to_contain_text("bob paused again")
    assert row(page, "ann paused again").count() == 0
    page.click("#filter-clear")
    expect(row(page, "ann paused again")).to_have_count(1)
    expect(page.locator("#feed .row")).to_have_count(300)


# The gaps between painted frames for 3 s: their count, 90th percentile and worst. A page
# that does per-comment DOM work at 2,000/s (or re-renders its whole buffer) freezes for
# seconds; one that renders only the visible rows keeps painting. How long a poll's work
# takes depends on how many cores this shared machine leaves Chromium (gaps of 850-900 ms
# were measured beside six busy agents), so the bounds are "never frozen":
# frames keep coming and no gap reaches 2 s; the work itself is bounded by the DOM checks.
FRAME_GAPS_JS = """() => new Promise(done => {
  let last = performance.now();
  const t0 = last, gaps = [];
  function tick(now) {
    gaps.push(now - last); last = now;
    if (now - t0 < 3000) { requestAnimationFrame(tick); return; }
    gaps.sort((a, b) => a - b);
    done({frames: gaps.length, p90: gaps[Math.floor(gaps.length * 0.9)],
          worst: gaps[gaps.length - 1]});
  }
  requestAnimationFrame(tick);
})"""


def test_feed_stays_usable_at_2000_comments_per_s(live: LiveSystem, players: Players) -> None:
    """The feed endpoint is rewritten to hand out 999 fresh comments per poll (twice a
    second: ~2,000/s); the page keeps its DOM bounded, keeps painting, and stays clickable."""
    served = [0]

    def feed(route: Route) -> None:
        now = int(time.time() * 1000)
        first = served[0]
        served[0] += 999
        items = [
            {
                "id": f"{now}-{first + i}",
                "uid": f"u{(first + i) % 97}",
                "nick": f"viewer {(first + i) % 97}",
                "text": f"synthetic comment number {first + i} 好耶",
                "color": "#ffffff",
                "mode": "scroll",
                "ts": now,
                "prio": 0,
            }
            for i in range(999)
        ]
        route.fulfill(json={"items": items, "next": items[-1]["id"]})

    page = open_console(players, "busy", mod_token(), routes={"**/feed?*": feed})
    page.wait_for_function("() => window.dmConsole.received >= 4000")
    gaps = page.evaluate(FRAME_GAPS_JS)
    assert gaps["frames"] >= 6 and gaps["worst"] < 2000, gaps
    received = page.evaluate("() => window.dmConsole.received")
    assert received >= 9000, received  # ~2,000/s all along
    expect(page.locator("#feed .row")).to_have_count(300)
    assert page.evaluate("() => window.dmConsole.bufferSize()") <= 6000
    assert page.evaluate("() => document.getElementsByTagName('*').length") < 3000
    # a moderator can still pick a comment out of it
    page.click("#feed-pause")
    picked = page.locator("#feed .row").nth(5)
    text = picked.locator(".text").text_content()
    picked.click()
    expect(page.locator("#sel-text")).to_have_text(text or "")
    page.wait_for_function("() => window.dmConsole.newCount >= 999")
    expect(page.locator("#feed-new")).to_contain_text("new")
    assert page.locator("#feed .row").nth(5).locator(".text").text_content() == text


# ---- delete, ban, timeout -----------------------------------------------------------------
def test_delete_from_the_feed_removes_it_from_a_player(live: LiveSystem, players: Players) -> None:
    room = "deleting"
    player = players.open(room)
    page = open_console(players, room, mod_token(room=room))
    troll = live.client(room, "troll")
    doomed = live.comment(troll, "delete me please")["id"]
    kept = live.comment(troll, "this one stays")["id"]
    player.wait_for_function(
        "ids => ids.every(id => window.danmaku.onScreen().includes(id))", arg=[doomed, kept]
    )
    expect(player.locator(f'#live p[data-id="{doomed}"]')).to_have_count(1)

    row(page, "delete me please").click()
    expect(page.locator("#sel-text")).to_have_text("delete me please")
    expect(page.locator("#sel-uid")).to_have_text("troll")
    page.click("#act-delete")
    expect(page.locator("#msg")).to_contain_text("Deleted the comment by nick-troll")
    expect(row(page, "delete me please")).to_have_class(re.compile(r"\bdeleted\b"))
    expect(page.locator("#act-delete")).to_be_disabled()

    # the player got the retract in the next frame: gone from the overlay and the mirror
    player.wait_for_function("id => !window.danmaku.onScreen().includes(id)", arg=doomed)
    expect(player.locator(f'#overlay [data-id="{doomed}"]')).to_have_count(0)
    expect(player.locator(f'#live p[data-id="{doomed}"]')).to_have_count(0)
    assert kept in player.evaluate("() => window.danmaku.onScreen()")
    entry = page.locator("#audit-list .audit-entry[data-action=delete]")
    expect(entry).to_contain_text('deleted: "delete me please"')


def test_ban_and_timeout_from_the_feed(live: LiveSystem, players: Players) -> None:
    room = "banning"
    page = open_console(players, room, mod_token())
    spammer, rude = live.clients(room, ["spammer", "rude"])
    live.comment(spammer, "buy cheap followers")
    live.comment(rude, "slightly rude")

    # ban (closing their connections): an unprompted `banned`, a 1008 close, and a new
    # connection cannot send either
    row(page, "buy cheap followers").click()
    page.click("#act-ban")
    expect(page.locator("#msg")).to_contain_text("nick-spammer is banned and disconnected")
    live.wait_for(spammer, lambda c: c.closed is not None)
    assert spammer.closed is not None and spammer.closed[0] == 1008
    assert any(m["type"] == "error" and m["code"] == "banned" for m in spammer.messages)
    again = live.client(room, "spammer")
    reply = send(live, again, "let me back in")
    assert reply["type"] == "error" and reply["code"] == "banned", reply
    assert "retry_after_ms" not in reply  # permanent
    expect(page.locator('#bans-list .ban[data-uid="spammer"]')).to_contain_text("permanent")
    expect(row(page, "buy cheap followers")).to_have_class(re.compile(r"\bbanned\b"))

    # a 10 minute timeout that leaves the connection open
    row(page, "slightly rude").click()
    page.uncheck("#sel-close-conns")
    page.click("#act-timeout")
    expect(page.locator("#msg")).to_contain_text("nick-rude is timed out for 10 min")
    reply = send(live, rude, "why")
    assert reply["type"] == "error" and reply["code"] == "banned", reply
    assert 590_000 < reply["retry_after_ms"] <= 600_000, reply
    assert rude.closed is None
    ban_row = page.locator('#bans-list .ban[data-uid="rude"]')
    expect(ban_row).to_contain_text(re.compile(r"\d+ min.* left"))

    # unban from the list: they can send again
    ban_row.locator("button").click()
    expect(ban_row).to_have_count(0)
    assert send(live, rude, "sorry")["type"] == "ack"
    actions = page.locator("#audit-list .audit-entry .action")
    expect(actions).to_have_text(["unban", "ban", "ban"])


# ---- settings and blocked words -------------------------------------------------------------
def test_blocked_words_and_slow_mode_reach_senders(live: LiveSystem, players: Players) -> None:
    players.allow_console(r"Failed to load resource: the server responded with a status of 422")
    room = "rules"
    page = open_console(players, room, mod_token())
    chatty = live.client(room, "chatty")

    # blocked words: listed at once, refused within a second
    page.fill("#words-input", "spoiler, <i>x</i>")
    page.click("#words-add")
    expect(page.locator("#words-list .chip-text")).to_have_text(["<i>x</i>", "spoiler"])
    assert page.locator("#words-list i").count() == 0

    def blocked() -> bool:
        return send(live, chatty, "big SPOILER ahead")["type"] == "error"

    deadline = 30
    while not blocked():
        deadline -= 1
        assert deadline, "the blocked word never took effect"
        page.wait_for_timeout(100)
    reply = send(live, chatty, "the s p o i l e r is here")
    assert reply["type"] == "error" and reply["code"] == "blocked", reply
    page.locator('#words-list button[data-word="<i>x</i>"]').click()
    expect(page.locator("#words-list .chip-text")).to_have_text(["spoiler"])

    # a value the API refuses: the error names the field
    page.fill("#set-budget", "0")
    page.click("#settings-apply")
    expect(page.locator("#msg")).to_contain_text("Invalid budget")
    page.fill("#set-budget", "")

    # slow mode: a sender's second comment gets slow_mode
    page.fill("#set-slow", "30")
    page.click("#settings-apply")
    expect(page.locator("#msg")).to_have_text("Settings changed: slow mode 30 s.")
    expect(page.locator("#now-slow")).to_have_text("now 30 s")  # read back from the room
    sender = live.client(room, "sender")
    assert send(live, sender, "first")["type"] == "ack"
    reply = send(live, sender, "second")
    assert reply["type"] == "error" and reply["code"] == "slow_mode", reply
    assert reply["retry_after_ms"] > 20_000

    page.click("#settings-reset")
    expect(page.locator("#now-slow")).to_have_text("now off")
    expect(page.locator("#set-slow")).to_have_value("")
    actions = page.locator("#audit-list .audit-entry .action")
    expect(actions).to_have_text(["settings", "settings", "words", "words"])


# ---- pin and notices ------------------------------------------------------------------------
def test_pin_and_notice_show_on_the_player(live: LiveSystem, players: Players) -> None:
    room = "pinning"
    player = players.open(room)
    page = open_console(players, room, mod_token(role="streamer"))
    page.fill("#pin-text", "welcome <b>all</b>")
    page.select_option("#pin-duration", "300")
    page.click("#pin-set")
    expect(player.locator("#banner-text")).to_have_text("Mo: welcome <b>all</b>")
    expect(player.locator("#banner-tag")).to_have_text("pinned")
    expect(page.locator("#pin-current")).to_contain_text("welcome <b>all</b>")
    expect(page.locator("#pin-current")).to_contain_text("more")  # "for 4 min 59 s more"
    assert page.locator("#pin-current b").count() == 0

    page.click("#pin-unset")
    expect(player.locator("#banner")).to_be_hidden()
    expect(page.locator("#pin-current")).to_have_text("Nothing pinned.")
    page.fill("#notice-text", "stream ends in 5 min")
    page.click("#notice-send")
    expect(player.locator("#banner-text")).to_contain_text("stream ends in 5 min")
    actions = page.locator("#audit-list .audit-entry .action")
    expect(actions).to_have_text(["notice", "unpin", "pin"])


# ---- tokens and errors ----------------------------------------------------------------------
def test_wrong_tokens_and_api_errors_are_shown_in_words(live: LiveSystem, players: Players) -> None:
    players.allow_console(r"Failed to load resource: .* status of (401|403|503)")
    room = "locked"
    page = open_console(players, room, logged_in=False)
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#feed-empty")).to_have_text("Log in to see the feed.")
    msg = page.locator("#msg")

    page.fill("#token-input", "not-a-token")
    page.click("#token-use")
    expect(msg).to_have_text(re.compile(r"^Token rejected, paste a moderator token"))
    page.fill("#token-input", token("v1"))  # a viewer
    page.click("#token-use")
    expect(msg).to_have_text(re.compile(r"^This token cannot moderate room locked"))
    page.fill("#token-input", mod_token(room="elsewhere"))
    page.click("#token-use")
    expect(msg).to_have_text(re.compile(r"^This token cannot moderate room locked"))
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("() => window.dmConsole.auth") == "forbidden"

    # the right token: in, and kept across a reload
    page.fill("#token-input", mod_token(room=room))
    page.click("#token-use")
    page.wait_for_function("() => window.dmConsole.auth === 'ok'")
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#who-nick")).to_have_text("Mo")
    expect(page.locator("#who-role")).to_have_text("(moderator · room locked)")
    page.reload()
    page.wait_for_function("() => window.dmConsole && window.dmConsole.auth === 'ok'")
    live.comment(live.client(room, "u1"), "after the reload")
    expect(row(page, "after the reload")).to_have_count(1)

    # Redis down (faked for one call): said in words, the token is kept
    def storage_down(route: Route) -> None:
        route.fulfill(status=503, json={"detail": "storage unavailable"})

    page.route("**/pin", storage_down)
    page.fill("#pin-text", "hello")
    page.click("#pin-set")
    expect(msg).to_have_text(re.compile(r"^Storage unavailable"))
    assert page.evaluate("() => window.dmConsole.auth") == "ok"

    # the room switcher: this token is for "locked" only
    page.fill("#room-input", "other-room")
    page.press("#room-input", "Enter")
    page.wait_for_url(re.compile(r"/console\?room=other-room$"))
    expect(msg).to_have_text(re.compile(r"^This token cannot moderate room other-room"))
    expect(page.locator("#who-nick")).to_have_text("Mo")


# ---- hostile text ---------------------------------------------------------------------------
def test_markup_in_comments_and_nicks_shows_as_text(live: LiveSystem, players: Players) -> None:
    room = "xss"
    page = open_console(players, room, mod_token())
    nick = '<img src=x onerror="window.pwned=1">'
    evil = live.client(room, tok=auth.mint(SECRET, uid="evil", nick=nick))
    text = "<script>window.pwned=2</script><b>bold</b><svg onload=window.pwned=3>"
    live.comment(evil, text)
    found = row(page, "<b>bold</b>")
    expect(found.locator(".text")).to_have_text(text)
    expect(found.locator(".nick")).to_have_text(nick)
    assert page.locator("#feed img, #feed script, #feed b, #feed .row svg").count() == 0
    found.click()
    expect(page.locator("#sel-text")).to_have_text(text)
    expect(page.locator("#sel-nick")).to_have_text(nick)
    page.click("#act-delete")
    expect(page.locator("#msg")).to_contain_text(f"Deleted the comment by {nick}")
    expect(page.locator("#audit-list .detail").first).to_contain_text(text)
    assert page.locator("#msg img, #audit-list img, #audit-list script").count() == 0
    assert page.evaluate("() => window.pwned === undefined")


# ---- room staff list ------------------------------------------------------------------------
def test_staff_list_changes_read_as_words_in_the_audit(live: LiveSystem, players: Players) -> None:
    room = "crew"
    star = mod_token(room, role="streamer")
    page = open_console(players, room, star)
    base = f"{live.base_url}/api/rooms/{room}/staff/fan"
    assert http_sync(base, "PUT", json_body={"role": "moderator"}, token=star).status == 200
    assert http_sync(base, "DELETE", token=star).status == 204
    actions = page.locator("#audit-list .audit-entry .action")
    expect(actions).to_have_text(["staff_revoke", "staff_grant"], timeout=15_000)
    details = page.locator("#audit-list .audit-entry .detail")
    expect(details).to_have_text(["removed from the room's staff", "appointed moderator"])
