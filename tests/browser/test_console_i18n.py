"""The console in Chinese and English, in a real Chromium against the real system: the
language follows the browser, the switch changes it (and is remembered), the words the
page builds (figures, feed, settings, panels, messages) come from the catalogue."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_console import mod_token


def test_the_console_in_chinese_and_switched_to_english(live: LiveSystem, players: Players) -> None:
    ctx = players.browser.new_context(
        viewport={"width": 1440, "height": 960}, locale="zh-CN", device_scale_factor=1
    )
    ctx.set_default_timeout(10_000)
    players.contexts.append(ctx)
    page = ctx.new_page()
    page.on("pageerror", lambda exc: players.errors.append(f"page error: {exc}"))
    page.goto(f"{live.base_url}/console?room=zhroom#token={mod_token()}")
    page.wait_for_function(
        "() => window.dmConsole && window.dmConsole.auth === 'ok' && window.dmConsole.polls > 0"
    )
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    # the page's own labels, the figures, the panels the scripts build, a message
    expect(page.locator("#feed-title")).to_contain_text("实时弹幕流")
    expect(page.locator("#settings-title")).to_have_text("房间设置")
    expect(page.locator("#fig-online .fig-label")).to_have_text("在线")
    expect(page.locator("#bc-heading")).to_have_text("直播与录像")
    expect(page.locator("#hl-heading")).to_have_text("付费留言与礼物")
    expect(page.locator("#feed-pause")).to_have_text("暂停")
    expect(page.locator("#msg")).to_have_text("正在管理房间 zhroom。")
    expect(page.locator("label[for='set-slow']")).to_have_text("慢速模式")
    assert page.get_attribute("#words-input", "placeholder") == "词，另一个词"

    page.locator("#lang-switch").click()  # the page again, in English
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    page.wait_for_function("() => window.dmConsole && window.dmConsole.auth === 'ok'")
    expect(page.locator("#settings-title")).to_have_text("Room settings")
    expect(page.locator("#fig-online .fig-label")).to_have_text("online")
    expect(page.locator("#feed-pause")).to_have_text("Pause")
    expect(page.locator("label[for='set-slow']")).to_have_text("Slow mode")

    page.reload()  # the choice is remembered over the browser's language
    page.wait_for_function("() => window.dmConsole && window.dmConsole.auth === 'ok'")
    expect(page.locator("#settings-title")).to_have_text("Room settings")


def test_every_key_the_console_page_names_is_in_the_catalogue(
    live: LiveSystem, players: Players
) -> None:
    ctx = players.new_context()
    page = ctx.new_page()
    page.goto(f"{live.base_url}/console?room=keys")
    used = page.evaluate(
        """() => Array.from(document.querySelectorAll(
              '[data-i18n],[data-i18n-placeholder],[data-i18n-title],[data-i18n-aria-label]'))
            .flatMap(e => [e.dataset.i18n, e.dataset.i18nPlaceholder, e.dataset.i18nTitle,
                           e.dataset.i18nAriaLabel]).filter(Boolean)"""
    )
    assert len(used) > 50
    missing = page.evaluate(
        "used => used.filter(k => !['en', 'zh'].every(l => window.DanmakuI18n.has(l, k)))", used
    )
    assert not missing, missing
