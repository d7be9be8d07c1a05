"""The player in Chinese and English, in a real Chromium: the language follows the
browser, can be switched and is remembered; every catalogue key exists in both languages;
errors (including the held ack, a timeout with its reason, login_required) are the
player's own words."""

from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import FakeGateway, LiveSystem, Players
from tests.browser.test_player import join

# the same in both languages on purpose (a glyph, a language's own name)
SAME_IN_BOTH = {"send.toggle"}


def test_every_catalogue_key_is_translated_and_used_keys_exist(
    live: LiveSystem, players: Players
) -> None:
    page = players.open("i18n")
    langs = page.evaluate("window.DanmakuI18n.langs()")
    assert set(langs) == {"en", "zh"}
    en_keys = page.evaluate("window.DanmakuI18n.keys('en')")
    zh_keys = page.evaluate("window.DanmakuI18n.keys('zh')")
    assert set(en_keys) == set(zh_keys), set(en_keys) ^ set(zh_keys)
    walked: dict[str, Any] = page.evaluate(
        """() => {
            const I = window.DanmakuI18n;
            const out = {};
            for (const key of I.keys('en')) {
                I.setLang('en'); const en = I.t(key);
                I.setLang('zh'); const zh = I.t(key);
                out[key] = [en, zh];
            }
            I.setLang('en');
            return out;
        }"""
    )
    for key, (en, zh) in walked.items():
        assert en and zh and en != key, key
        if key not in SAME_IN_BOTH:
            assert en != zh, f"{key} is not translated: {zh!r}"
    # every key the page names is in the catalogue
    used = page.evaluate(
        """() => Array.from(document.querySelectorAll(
              '[data-i18n],[data-i18n-placeholder],[data-i18n-title],[data-i18n-aria-label]'))
            .flatMap(e => [e.dataset.i18n, e.dataset.i18nPlaceholder, e.dataset.i18nTitle,
                           e.dataset.i18nAriaLabel]).filter(Boolean)"""
    )
    assert used and not set(used) - set(en_keys), set(used) - set(en_keys)


def test_chinese_browser_gets_chinese_and_the_switch_is_remembered(
    live: LiveSystem, players: Players
) -> None:
    ctx = players.browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="zh-CN", device_scale_factor=1
    )
    players.contexts.append(ctx)
    page = players.open("zhroom", ctx)
    expect(page.locator("#conn-text")).to_have_text("已连接")
    expect(page.locator("#send-button")).to_have_text("发送")
    expect(page.locator("#send-text")).to_have_attribute("placeholder", "发个弹幕吧…（回车发送）")
    expect(page.locator(".chat-title")).to_have_text("弹幕列表")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    bob = live.client("zhroom", "bob", role="moderator")
    live.comment(bob, "大家好")
    badge = page.locator("#chat-list li", has_text="大家好").locator(".chat-badge")
    expect(badge).to_have_text("房管")
    # an error in Chinese: an anonymous viewer tries to send
    page.fill("#send-text", "你好")
    page.press("#send-text", "Enter")
    expect(page.locator("#send-error")).to_have_text("起个昵称才能发弹幕（匿名观众只能观看）。")

    page.click("#lang-switch")
    expect(page.locator("#conn-text")).to_have_text("connected")
    expect(badge).to_have_text("Moderator")
    page.reload()
    page.wait_for_function("() => window.danmaku.state === 'connected'")
    expect(page.locator("#send-button")).to_have_text("Send")
    assert page.evaluate("window.danmaku.lang") == "en"


def _fake_errors(fake: FakeGateway, answers: dict[str, dict[str, Any]]) -> None:
    def reply(msg: dict[str, Any]) -> list[dict[str, Any]]:
        if msg.get("type") != "comment":
            return []
        answer = answers.get(msg["text"])
        return [{**answer, "nonce": msg["nonce"]}] if answer else []

    fake.reply = reply


def test_held_timeout_and_login_required_in_the_players_words(
    fake_players: Players, fake_gateway: FakeGateway
) -> None:
    fake = fake_gateway
    fake.welcome["user"] = {"uid": "g_me", "nick": "Me", "role": "viewer"}
    until = int(time.time() * 1000) + 600_000
    _fake_errors(
        fake,
        {
            "hold me": {"type": "ack", "id": "r-1", "code": "held"},
            "timed out": {
                "type": "error",
                "code": "banned",
                "message": "raw server text",
                "until": until,
                "reason": "spam",
                "retry_after_ms": 600_000,
            },
            "guest": {"type": "error", "code": "login_required", "message": "raw server text"},
            "forever": {"type": "error", "code": "banned", "message": "raw", "until": None},
        },
    )
    page = fake_players.open("fake", ws_url=fake.url)
    join(page, "Me")
    error = page.locator("#send-error")

    def send(text: str) -> None:
        page.fill("#send-text", text)
        page.press("#send-text", "Enter")

    send("hold me")
    expect(error).to_have_text(
        "Your comment is held for review: the room sees it once a moderator approves it."
    )
    assert page.locator("#overlay .dm").count() == 0  # not shown as if it had gone out
    assert page.locator("#chat-list li").count() == 0
    send("timed out")
    expect(error).to_contain_text("Timed out for 10 min: spam.")
    expect(error).not_to_contain_text("raw server text")
    send("guest")
    expect(error).to_have_text("Log in to comment: guests can only watch in this room.")
    send("forever")
    expect(error).to_have_text("Banned from commenting in this room.")
    page.click("#lang-switch")
    send("timed out")
    expect(error).to_contain_text("禁言 10 分钟: spam")
