"""The player finds a dead server by itself, in Chromium against the real system: the
link to the gateway freezes (a proxy that stops moving bytes both ways: no close, no
error, the socket stays open, as when a phone loses coverage); with nothing heard for
``DEAD_AFTER_MS`` (shortened with ``?dead_after_ms=``) the player drops the socket and
reconnects with ``since``, and what was said meanwhile is replayed once, with no gap."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players, TrioThread
from tests.faultproxy import FaultProxy

DEAD_AFTER_MS = 5000


def test_player_detects_a_dead_server_and_resumes(
    live: LiveSystem, players: Players, trio_thread: TrioThread, frozen_link: FaultProxy
) -> None:
    room = "frozen"
    url = f"ws://127.0.0.1:{frozen_link.port}/ws"  # type: ignore[attr-defined]
    page = players.open(room, query=f"&dead_after_ms={DEAD_AFTER_MS}", ws_url=url)
    sender = live.client(room, "s1")
    live.comment(sender, "before the freeze")
    expect(page.locator("#overlay .dm", has_text="before the freeze")).to_have_count(1)
    seq = page.evaluate("window.danmaku.lastSeq")
    assert seq >= 1
    assert page.evaluate("window.danmaku.connects.length") == 1

    # The link freezes: the server neither answers the player's pings nor sends frames,
    # and nothing tells the browser the socket is gone.
    trio_thread.run_sync(frozen_link.pause)
    live.comment(sender, "while frozen")
    # The player gives the socket up by itself and tries again (through the frozen link,
    # so the new handshake waits until it flows again).
    page.wait_for_function(
        "() => window.danmaku.connects.length >= 2", timeout=DEAD_AFTER_MS + 10_000
    )
    assert page.evaluate("window.danmaku.state") != "connected"
    trio_thread.run_sync(frozen_link.resume)
    page.wait_for_function("() => window.danmaku.state === 'connected'", timeout=20_000)

    # It resumed where it was: what was said while frozen shows once, nothing is lost.
    assert page.evaluate("window.danmaku.connects[1].since") == seq
    expect(page.locator("#overlay .dm", has_text="while frozen")).to_have_count(1)
    live.comment(sender, "after the freeze")
    expect(page.locator("#overlay .dm", has_text="after the freeze")).to_have_count(1)
    stats = page.evaluate("window.danmaku.stats()")
    assert stats["dupFrames"] == 0 and stats["gaps"] == 0, stats
