"""The web player in a real Chromium against the real system (gateway, worker, web app, Redis).

Each test opens player pages (``players.open``) and drives comments either from a page or
from test clients (tests/client.py) running in the system's trio thread. ``window.danmaku``
is the player's read-only test hook. Any console error fails the test (see conftest).
"""

from __future__ import annotations

import os
import re
import secrets
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, Locator, Page, expect

from danmaku import auth
from danmaku.config import Settings
from danmaku.dev.embedded import free_port
from tests.browser.conftest import (
    FakeGateway,
    LiveSystem,
    Players,
    TrioThread,
    eventually,
    open_players,
    wait_until_connected,
)
from tests.conftest import SECRET

OVERLAY_ITEMS = "#overlay > .dm"


def dm(page: Page, text: str) -> Locator:
    """The overlay elements whose text (without a fold count) is exactly ``text``."""
    return page.locator(
        "xpath=//div[@id='overlay']/div[contains(concat(' ', @class, ' '), ' dm ')]"
        f"[text()[1] = {xpath_literal(text)}]"
    )


def xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    parts = text.split("'")
    return "concat(" + ', "\'", '.join(f"'{p}'" for p in parts) + ")"


def rendered_ids(page: Page) -> list[str]:
    ids: list[str] = page.evaluate("() => window.danmaku.shownIds()")
    return ids


def join(page: Page, nick: str) -> None:
    page.fill("#nick-input", nick)
    page.click("#nick-join")
    expect(page.locator("#who-nick")).to_have_text(nick)
    page.wait_for_function(
        "nick => window.danmaku.state === 'connected' && window.danmaku.user"
        " && window.danmaku.user.nick === nick",
        arg=nick,
    )


def send_from_page(page: Page, text: str) -> None:
    page.fill("#send-text", text)
    page.press("#send-text", "Enter")


def set_control(page: Page, selector: str, value: str) -> None:
    """Set a range/text control's value and fire input+change as a user edit does."""
    page.eval_on_selector(
        selector,
        """(el, v) => { el.value = v;
            el.dispatchEvent(new Event('input', {bubbles: true}));
            el.dispatchEvent(new Event('change', {bubbles: true})); }""",
        value,
    )


# ---- loading and status -------------------------------------------------------------------
def test_page_loads_connected_with_online_count(live: LiveSystem, players: Players) -> None:
    page = players.open("lobby")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(page.locator("#conn-text")).to_have_text("connected")
    expect(page.locator("#room-name")).to_have_text("lobby")
    assert isinstance(page.evaluate("window.danmaku.lastSeq"), int)
    # no ?src=: the moving test pattern is drawn (the canvas changes over time)
    first = page.eval_on_selector("#pattern", "c => c.toDataURL()")
    page.wait_for_function(
        "prev => document.getElementById('pattern').toDataURL() !== prev", arg=first
    )
    # online count arrives with frames: keep a comment flowing until it shows us
    streamer = live.client("lobby", "host", role="streamer")
    for i in range(40):
        live.comment(streamer, f"welcome {i}")
        if (page.evaluate("window.danmaku.online") or 0) >= 1:
            break
        page.wait_for_timeout(250)
    page.wait_for_function("() => window.danmaku.online >= 1")
    online = page.evaluate("window.danmaku.online")
    expect(page.locator("#online-n")).to_have_text(f"{online:,}")


# ---- sending and receiving ----------------------------------------------------------------
def test_comment_typed_in_one_context_shows_in_the_room_once_and_not_in_another_room(
    live: LiveSystem,
    players: Players,
) -> None:
    sender = players.open("alpha")
    viewer = players.open("alpha")
    elsewhere = players.open("beta")
    join(sender, "Alice")
    sender.fill("#send-color", "#ff8800")
    send_from_page(sender, "hello   from the page")  # whitespace is collapsed, as the server does
    text = "hello from the page"

    own = dm(sender, text)
    expect(own).to_have_count(1)
    expect(own).to_have_class("dm own")
    assert own.evaluate("e => getComputedStyle(e).color") == "rgb(255, 136, 0)"
    assert own.evaluate("e => getComputedStyle(e).textShadow") != "none"  # the outline
    expect(sender.locator("#send-text")).to_have_value("")

    other = dm(viewer, text)
    expect(other).to_have_count(1)
    assert "own" not in (other.get_attribute("class") or "")
    assert other.get_attribute("data-uid") == sender.evaluate("window.danmaku.user.uid")

    # the sender got the same id again in a frame (after its ack) and did not show it twice
    sender.wait_for_function("() => window.danmaku.stats().dupItems >= 1")
    expect(own).to_have_count(1)
    ids = rendered_ids(sender)
    assert len(ids) == len(set(ids)) == 1
    # the screen-reader mirror has it, as text
    expect(viewer.locator("#live p").last).to_have_text(f"Alice: {text}")

    # another room: a marker arrives there, the alpha comment never does
    beta = live.client("beta", "bob")
    live.comment(beta, "beta marker")
    expect(dm(elsewhere, "beta marker")).to_have_count(1)
    expect(dm(elsewhere, text)).to_have_count(0)
    assert elsewhere.evaluate("window.danmaku.stats().items") == 1


def test_other_clients_comments_render_with_colour_mode_and_cjk(
    live: LiveSystem,
    players: Players,
) -> None:
    page = players.open("gamma")
    bob = live.client("gamma", "bob")
    live.comment(bob, "green scroll", color="#00ff00")
    live.comment(bob, "弹幕测试", color="#ff0000", mode="top")
    live.comment(bob, "bottom line", mode="bottom", color="#000000")

    green = dm(page, "green scroll")
    expect(green).to_have_count(1)
    assert green.evaluate("e => getComputedStyle(e).color") == "rgb(0, 255, 0)"
    assert green.get_attribute("data-mode") == "scroll"
    assert green.get_attribute("data-nick") == "nick-bob"

    cjk = dm(page, "弹幕测试")
    expect(cjk).to_have_count(1)
    assert cjk.get_attribute("data-mode") == "top"
    box = cjk.bounding_box()
    stage = page.locator("#stage").bounding_box()
    assert box and stage
    font_px = page.evaluate("window.danmaku.settings().fontSize")
    # four full-width glyphs, not tofu or nothing: about one em each
    assert box["width"] >= 3.5 * font_px, box
    assert box["y"] - stage["y"] < 2 * font_px  # a top comment is at the top...
    assert abs((box["x"] + box["width"] / 2) - (stage["x"] + stage["width"] / 2)) < 2  # centred
    assert page.evaluate("document.fonts.check('24px \"WenQuanYi Micro Hei\"')")

    bottom = dm(page, "bottom line")
    expect(bottom).to_have_count(1)
    bbox = bottom.bounding_box()
    assert bbox and bbox["y"] + bbox["height"] > stage["y"] + stage["height"] - 2 * font_px
    # black text gets a light outline to stay readable
    expect(bottom).to_have_class("dm dark")


def test_markup_in_comments_and_nicks_is_shown_as_text(live: LiveSystem, players: Players) -> None:
    page = players.open("xss")
    payload = '<img src=x onerror="window.__pwned=1">'
    nick = "<img src=y onerror=window.__pwned=2>"
    tok = auth.mint(SECRET, uid="mallory", nick=nick)
    mallory = live.client("xss", tok=tok)
    live.comment(mallory, payload)
    live.comment(mallory, "<b>bold?</b><script>window.__pwned=3</script>")

    expect(dm(page, payload)).to_have_count(1)
    expect(dm(page, "<b>bold?</b><script>window.__pwned=3</script>")).to_have_count(1)
    assert page.locator("#overlay img, #overlay b, #overlay script").count() == 0
    assert page.locator("#live img, #live b, #live script").count() == 0
    expect(page.locator("#live p").first).to_have_text(f"{nick}: {payload}")
    assert page.evaluate("window.__pwned") is None


# ---- settings -----------------------------------------------------------------------------
def test_settings_persist_across_reload_and_filter(live: LiveSystem, players: Players) -> None:
    page = players.open("prefs")
    page.click("#settings summary")
    set_control(page, "#set-opacity", "0.5")
    set_control(page, "#set-speed", "1.5")
    set_control(page, "#set-font", "30")
    page.select_option("#set-area", "half")
    page.select_option("#set-density", "0.5")  # reconnects: density goes on the handshake
    page.uncheck("#set-top")
    set_control(page, "#set-words", "Spoiler, ad")
    set_control(page, "#set-users", "nick-troll")
    page.click("#toggle-on")
    expect(page.locator("#overlay")).to_have_class("overlay off")
    page.click("#toggle-on")
    page.select_option("#send-mode", "bottom")

    page.reload()
    wait_until_connected(page)
    settings = page.evaluate("window.danmaku.settings()")
    assert settings == {
        "on": True,
        "opacity": 0.5,
        "speed": 1.5,
        "fontSize": 30,
        "area": "half",
        "density": 0.5,
        "showTop": False,
        "showBottom": True,
        "blockWords": ["Spoiler", "ad"],
        "blockUsers": ["nick-troll"],
    }
    expect(page.locator("#set-opacity")).to_have_value("0.5")
    expect(page.locator("#set-font")).to_have_value("30")
    expect(page.locator("#set-area")).to_have_value("half")
    expect(page.locator("#set-density")).to_have_value("0.5")
    expect(page.locator("#set-top")).not_to_be_checked()
    expect(page.locator("#set-words")).to_have_value("Spoiler, ad")
    expect(page.locator("#send-mode")).to_have_value("bottom")
    assert page.evaluate("window.danmaku.connects.at(-1).density") == 0.5
    assert page.eval_on_selector("#overlay", "e => getComputedStyle(e).opacity") == "0.5"
    # half the display area: half the lanes of a 30 px font
    lanes = page.evaluate("window.danmaku.stats().lanes")
    stage_h = page.eval_on_selector("#stage", "e => e.clientHeight")
    assert lanes == int(stage_h * 0.5 // (round(30 * 1.25) + 6))

    # back to every comment (at density 0.5 the gateway would trim half of them)
    page.click("#settings summary")
    page.select_option("#set-density", "1")
    page.wait_for_function("() => window.danmaku.connects.at(-1).density === 1")
    wait_until_connected(page)

    troll = live.client("prefs", "troll")
    viewer = live.client("prefs", "u2")
    live.comment(troll, "from a blocked user")
    live.comment(viewer, "a big SPOILER here")
    live.comment(viewer, "a top comment", mode="top")
    live.comment(viewer, "fine comment")
    fine = dm(page, "fine comment")
    expect(fine).to_have_count(1)
    assert fine.evaluate("e => getComputedStyle(e).fontSize") == "30px"
    assert page.locator(OVERLAY_ITEMS).count() == 1
    assert page.evaluate("window.danmaku.stats().blocked") == 2


# ---- errors in words ----------------------------------------------------------------------
def test_server_errors_are_shown_in_words(live: LiveSystem, players: Players) -> None:
    page = players.open("errors")
    # anonymous: the gateway refuses, the page says what to do
    send_from_page(page, "hello?")
    expect(page.locator("#send-error")).to_contain_text("Pick a nickname to send comments")
    expect(page.locator("#send-text")).to_have_value("hello?")  # kept for after joining

    join(page, "Bea")
    send_from_page(page, "x" * 101)
    expect(page.locator("#send-error")).to_contain_text("too long (at most 100 characters)")
    expect(page.locator("#send-count")).to_have_class("send-count over")
    # fix it and send: the error goes away and the comment shows
    page.fill("#send-text", "short now")
    page.press("#send-text", "Enter")
    expect(dm(page, "short now")).to_have_count(1)
    expect(page.locator("#send-error")).to_have_text("")


@pytest.mark.rate_limits
def test_rate_limit_shows_a_countdown(live: LiveSystem, players: Players) -> None:
    page = players.open("limits")
    join(page, "Speedy")
    # Eight sends in one task: a burst the per-user bucket (3, then 1/s) refuses, however
    # slowly this machine drives the page (typing them one by one let the bucket refill).
    page.evaluate("""() => {
        const input = document.getElementById('send-text');
        const form = document.getElementById('send-form');
        for (let i = 0; i < 8; i++) { input.value = `fast ${i}`; form.requestSubmit(); }
    }""")
    page.wait_for_function(
        "() => document.getElementById('send-error').textContent.includes('send again in')"
        " || window.danmaku.stats().rendered >= 8"
    )
    assert "send again in" in (page.text_content("#send-error") or ""), "no countdown shown"
    # Enter during the countdown sends nothing and keeps the text
    tried = page.evaluate("""() => {
        const button = document.getElementById('send-button').textContent;
        const before = window.danmaku.pending.length;
        const input = document.getElementById('send-text');
        input.value = 'wait for it';
        document.getElementById('send-form').requestSubmit();
        return {button, before, after: window.danmaku.pending.length, value: input.value};
    }""")
    if tried["button"].endswith(" s"):
        assert tried["after"] == tried["before"] and tried["value"] == "wait for it", tried
    expect(page.locator("#send-button")).to_have_text("Send", timeout=15_000)
    expect(page.locator("#send-error")).to_have_text("")


# ---- reconnect and resume -----------------------------------------------------------------
def test_reconnects_with_since_and_shows_nothing_twice(live: LiveSystem, players: Players) -> None:
    # while the system restarts, the browser logs the refused handshakes and fetches
    players.allow_console(r"WebSocket connection to .* failed|Failed to load resource")
    page = players.open("resume")
    first = live.client("resume", "s1")
    live.comment(first, "before one")
    live.comment(first, "before two")
    expect(dm(page, "before two")).to_have_count(1)

    # 1. the socket dies under the page: it reconnects with since=<last seq>
    seq = page.evaluate("window.danmaku.lastSeq")
    assert seq >= 1
    page.evaluate("window.danmaku.dropConnection()")
    page.wait_for_function("n => window.danmaku.connects.length === n", arg=2)
    wait_until_connected(page)
    assert page.evaluate("window.danmaku.connects.at(-1).since") == seq

    # 2. the whole system restarts (viewers closed with 1013, as in a deploy); what is said
    # while the page is away is replayed from the frame history after since
    live.restart()
    second = live.client("resume", "s2")
    live.comment(second, "during the outage")
    page.wait_for_function("n => window.danmaku.connects.length > n", arg=2, timeout=20_000)
    page.wait_for_function("() => window.danmaku.state === 'connected'", timeout=20_000)
    expect(dm(page, "during the outage")).to_have_count(1)
    live.comment(second, "after the restart")
    expect(dm(page, "after the restart")).to_have_count(1)

    connects = page.evaluate("window.danmaku.connects")
    assert all(c["since"] is not None and c["since"] >= seq for c in connects[1:]), connects
    ids = rendered_ids(page)
    assert len(ids) == len(set(ids)) == 4
    stats = page.evaluate("window.danmaku.stats()")
    assert stats["dupFrames"] == 0 and stats["gaps"] == 0, stats
    for text in ("before one", "before two", "during the outage", "after the restart"):
        assert dm(page, text).count() <= 1


# ---- a busy overlay -------------------------------------------------------------------------
OVERLAP_JS = """() => {
  const st = document.getElementById('stage').getBoundingClientRect();
  return Array.from(document.querySelectorAll('#overlay > .dm')).map(e => {
    const r = e.getBoundingClientRect();
    return {mode: e.dataset.mode, lane: Number(e.dataset.lane), x: r.left - st.left,
            r: r.right - st.left, y: r.top - st.top, b: r.bottom - st.top};
  });
}"""


def _overlaps(rects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    bad = []
    scroll = [r for r in rects if r["mode"] == "scroll"]
    for mode in ("scroll", "top", "bottom"):
        group = [r for r in rects if r["mode"] == mode]
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                apart = (
                    a["r"] <= b["x"] + 1
                    or b["r"] <= a["x"] + 1
                    or a["b"] <= b["y"] + 1
                    or b["b"] <= a["y"] + 1
                )
                if not apart:
                    bad.append((a, b))
    assert all(r["lane"] >= 0 for r in scroll)
    return bad


def test_a_burst_renders_without_overlap_in_lanes(
    live: LiveSystem,
    players: Players,
    tmp_path: Path,
) -> None:
    """About 200 comments in ~3.5 s from 66 viewers and a streamer; snapshots of the screen."""
    page = players.open("burst")
    join(page, "Me")
    streamer = live.client("burst", "host", role="streamer")
    fans = live.clients("burst", [f"fan{i}" for i in range(66)])

    async def fan(i: int, client: Any) -> None:
        if i < 24:  # a wave of identical spam first: the worker may fold it into one "666 ×N"
            await _ack(client, "666", mode="scroll")
        await trio.sleep(i * 0.05)  # ~200 comments over ~3.5 s
        for k in range(3 if i >= 24 else 2):
            n = i * 3 + k
            mode = "top" if n % 31 == 0 else "bottom" if n % 37 == 0 else "scroll"
            text = WORDS[n % len(WORDS)] + ("" if n % 4 else f" {n}")
            await _ack(client, text, color=COLOURS[n % len(COLOURS)], mode=mode)

    async def burst() -> None:
        async with trio.open_nursery() as nursery:
            for i, client in enumerate(fans):
                nursery.start_soon(fan, i, client)
            for text in ("欢迎来到直播间", "pinned by the host: be nice", "下一把开始"):
                nursery.start_soon(partial(_ack, streamer, text, color="#ffe133"))

    live.loop.run(burst)
    send_from_page(page, "my own comment 我的弹幕")
    expect(page.locator("#overlay > .dm.own")).to_have_count(1)
    page.wait_for_function("() => window.danmaku.stats().rendered >= 30", timeout=20_000)

    for _ in range(6):
        rects = page.evaluate(OVERLAP_JS)
        assert len(rects) >= 10
        bad = _overlaps(rects)
        assert not bad, f"overlapping comments: {bad[:3]}"
        page.wait_for_timeout(300)
    ids = rendered_ids(page)
    assert len(ids) == len(set(ids))
    expect(page.locator("#overlay > .dm.own")).to_have_count(1)
    for count in page.locator("#overlay .dm .count").all_text_contents():
        assert count.startswith("×") and int(count[1:].replace(",", "")) >= 2
    # the picture: once the first comments have crossed the screen
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('#overlay > .dm[data-mode=scroll]'))
                 .some(e => e.getBoundingClientRect().left < 100)""",
        timeout=15_000,
    )
    shot = Path(os.environ.get("DANMAKU_SCREENSHOT") or tmp_path / "player.png")
    page.screenshot(path=str(shot))


WORDS = [
    "好耶",
    "前方高能",
    "awesome play",
    "23333",
    "what a goal!!",
    "哈哈哈哈哈哈",
    "clutch",
    "来了来了",
    "no way",
    "GG",
    "這也太強了吧",
    "lol",
    "神回",
    "first time here",
    "泣ける",
    "名场面",
    "let's go",
    "wwwww",
    "テンション上がる",
    "这操作太秀了",
]
COLOURS = [
    "#ffffff",
    "#ffffff",
    "#ffffff",
    "#ffffff",
    "#fe0302",
    "#ffe133",
    "#00cd00",
    "#89d5ff",
    "#cc0273",
    "#ff7204",
]


async def _ack(client: Any, text: str, **kw: Any) -> None:
    reply = await client.comment(text, secrets.token_hex(6), **kw)
    assert reply["type"] == "ack", reply


# ---- a scripted gateway: moderator actions, folded counts, every error code -----------------
def _item(item_id: str, text: str, **kw: Any) -> dict[str, Any]:
    base = {
        "id": item_id,
        "uid": "u9",
        "nick": "Nine",
        "text": text,
        "color": "#ffffff",
        "mode": "scroll",
        "ts": 0,
        "prio": 0,
    }
    return {**base, **kw}


def _frame(seq: int, items: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "type": "frame",
        "room": "fake",
        "seq": seq,
        "ts": 0,
        "items": items,
        "dropped": 0,
        "online": 7,
        **kw,
    }


def test_retract_pin_fold_and_repeated_frames(
    fake_players: Players, fake_gateway: FakeGateway
) -> None:
    fake = fake_gateway
    page = fake_players.open("fake", ws_url=fake.url)
    assert "room=fake" in fake.requests[0] and "density=1" in fake.requests[0]
    assert "since=" not in fake.requests[0] and "token=" not in fake.requests[0]
    expect(page.locator("#online-n")).to_have_text("7")

    fake.send(
        _frame(
            11,
            [
                _item("a", "666", count=1234),
                _item("b", "to be deleted"),
                _item("c", "staff says hi", prio=2),
            ],
            dropped=5,
            online=1500,
        )
    )
    spam = dm(page, "666")
    expect(spam).to_have_count(1)
    expect(spam.locator(".count")).to_have_text("×1234")
    expect(page.locator("#online-n")).to_have_text("1,500")
    expect(dm(page, "staff says hi")).to_have_class("dm prio2")
    doomed = dm(page, "to be deleted")
    expect(doomed).to_have_count(1)

    # a moderator deleted "b": it leaves the screen and the screen-reader mirror
    fake.send(_frame(12, [], retract=["b"]))
    expect(doomed).to_have_count(0)
    expect(page.locator("#live p", has_text="to be deleted")).to_have_count(0)
    # a frame seen before and an id seen before are ignored; a retracted id never returns
    fake.send(_frame(12, [_item("d", "repeated frame")]))
    fake.send(
        _frame(
            13, [_item("a", "666", count=1300), _item("b", "to be deleted"), _item("e", "fresh")]
        )
    )
    expect(dm(page, "fresh")).to_have_count(1)
    expect(dm(page, "repeated frame")).to_have_count(0)
    expect(dm(page, "666")).to_have_count(1)
    expect(dm(page, "to be deleted")).to_have_count(0)
    stats = page.evaluate("() => window.danmaku.stats()")
    assert (stats["dupFrames"], stats["dupItems"], stats["dropped"]) == (1, 2, 5), stats
    assert page.evaluate("() => window.danmaku.lastSeq") == 13

    # pinned message and notices: a banner, as text
    banner = page.locator("#banner")
    fake.send({"type": "notice", "event": "pin", "text": "be nice <b>ok</b>", "nick": "host"})
    expect(banner).to_be_visible()
    expect(page.locator("#banner-text")).to_have_text("host: be nice <b>ok</b>")
    assert page.locator("#banner b").count() == 0
    fake.send({"type": "notice", "event": "unpin"})
    expect(banner).to_be_hidden()
    fake.send({"type": "notice", "event": "slow_mode", "message": "one comment every 5 s"})
    expect(page.locator("#banner-tag")).to_have_text("slow mode")
    expect(page.locator("#banner-text")).to_have_text("one comment every 5 s")


def test_error_codes_countdown_and_resend_with_the_same_nonce(
    fake_players: Players,
    fake_gateway: FakeGateway,
) -> None:
    fake = fake_gateway
    errors = {
        "bad word": {"code": "blocked"},
        "banned": {"code": "banned"},
        "fast": {"code": "rate_limited", "retry_after_ms": 2000},
        "slow": {"code": "slow_mode", "retry_after_ms": 1200},
        "same": {"code": "duplicate"},
    }

    def reply(msg: dict[str, Any]) -> list[dict[str, Any]]:
        if msg.get("type") != "comment" or msg["text"] == "no answer":
            return []
        for prefix, err in errors.items():
            if msg["text"].startswith(prefix):
                return [{"type": "error", "nonce": msg["nonce"], "message": "x", **err}]
        return [{"type": "ack", "nonce": msg["nonce"], "id": f"id-{msg['nonce']}"}]

    fake.reply = reply
    page = fake_players.open("fake", ws_url=fake.url)
    error = page.locator("#send-error")
    send_from_page(page, "bad word here")
    expect(error).to_contain_text("Your comment contains a blocked word and was not sent.")
    expect(page.locator("#send-text")).to_have_value("bad word here")  # kept to edit
    send_from_page(page, "banned?")
    expect(error).to_have_text("You are banned from commenting in this room.")
    send_from_page(page, "same again")
    expect(error).to_have_text("You just sent that. Say something new.")

    # rate limited: a countdown from retry_after_ms; Enter meanwhile sends nothing
    send_from_page(page, "fast one")
    expect(error).to_contain_text("You are sending too fast: you can send again in")
    expect(page.locator("#send-button")).to_have_text(re.compile(r"^[12] s$"))
    sent = len(fake.received)
    send_from_page(page, "during the countdown")
    expect(page.locator("#send-text")).to_have_value("during the countdown")
    assert len(fake.received) == sent
    expect(page.locator("#send-button")).to_have_text("Send", timeout=5000)
    expect(error).to_have_text("")
    send_from_page(page, "slow one")
    expect(error).to_contain_text("Slow mode is on in this room: you can send again in")
    expect(page.locator("#send-button")).to_have_text("Send", timeout=5000)

    # no answer, then the connection drops: after reconnecting, the same nonce is resent
    send_from_page(page, "no answer")
    eventually(page, lambda: any(m.get("text") == "no answer" for m in fake.received))
    fake.reply = lambda msg: (
        [{"type": "ack", "nonce": msg["nonce"], "id": "id-late"}] if "nonce" in msg else []
    )
    fake.close_all(1013)
    eventually(
        page,
        lambda: len([m for m in fake.received if m.get("text") == "no answer"]) == 2,
        what="the resend",
    )
    first, again = [m for m in fake.received if m.get("text") == "no answer"]
    assert first["nonce"] == again["nonce"]
    assert "since=10" in fake.requests[-1]
    own = dm(page, "no answer")
    expect(own).to_have_count(1)
    expect(own).to_have_class("dm own")
    assert page.evaluate("() => window.danmaku.pending") == []


def test_a_stopped_gateway_is_left_for_the_next_one_listed(
    browser: Browser, trio_thread: TrioThread, settings: Settings
) -> None:
    """Two gateways listed in DANMAKU_PUBLIC_WS_URL, no load balancer: when the page's
    gateway stops, the player moves to the other and resumes with since, no gap."""
    web_port, port_a, port_b = free_port(), free_port(), free_port()
    base = settings.replace(
        tick_ms=50,
        public_ws_url=f"ws://127.0.0.1:{port_a}/ws,ws://127.0.0.1:{port_b}/ws",
        public_web_url=f"http://127.0.0.1:{web_port}",
    )
    core = LiveSystem(trio_thread, base.replace(web_port=web_port), roles=("worker", "web"))
    gateways = {
        port: LiveSystem(trio_thread, base.replace(ws_port=port), roles=("gateway",))
        for port in (port_a, port_b)
    }
    systems = [core, *gateways.values()]
    for system in systems:
        system.start()
    try:
        with open_players(browser, core) as players:
            players.allow_console(r"WebSocket connection to .* failed")
            _move_between_gateways(players, gateways, port_a, port_b)
    finally:
        for system in systems:
            system.close()


def _move_between_gateways(
    players: Players, gateways: dict[int, LiveSystem], port_a: int, port_b: int
) -> None:
    """Open a page; stop its gateway; it must resume on the other with nothing lost."""
    page = players.open("hop")
    first = page.evaluate("window.danmaku.connects[0].gateway")
    here = int(first.rsplit(":", 1)[1])
    there = port_b if here == port_a else port_a
    sender = gateways[there].client("hop", "s1")
    gateways[there].comment(sender, "before the move")
    expect(dm(page, "before the move")).to_have_count(1)

    gateways[here].stop()  # a deploy or a crash: viewers closed, port gone
    gateways[there].comment(sender, "while moving")
    page.wait_for_function(
        "host => window.danmaku.connects.at(-1).gateway === host"
        " && window.danmaku.state === 'connected'",
        arg=f"127.0.0.1:{there}",
        timeout=20_000,
    )
    expect(dm(page, "while moving")).to_have_count(1)
    gateways[there].comment(sender, "after the move")
    expect(dm(page, "after the move")).to_have_count(1)
    assert page.evaluate("window.danmaku.connects.at(-1).since") is not None
    stats = page.evaluate("window.danmaku.stats()")
    assert stats["gaps"] == 0 and stats["dupFrames"] == 0, stats


def test_a_guest_who_changes_nickname_keeps_its_identity(
    live: LiveSystem, players: Players
) -> None:
    """The evasion of issue 19: a timed-out guest clicked "change", picked a new nickname
    and came back as a new user. The browser's device cookie keeps the guest uid; another
    browser (a new context) is another guest."""
    page = players.open("device")
    join(page, "First Name")
    uid = page.evaluate("window.danmaku.user.uid")
    page.click("#who-change")
    join(page, "Second Name")
    assert page.evaluate("window.danmaku.user.uid") == uid
    stranger = players.open("device")
    join(stranger, "First Name")
    assert stranger.evaluate("window.danmaku.user.uid") != uid
