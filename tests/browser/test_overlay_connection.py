"""The overlay's connection (``DanmakuOverlay.Connection``, what ``attach`` opens and the
player is built on), in Chromium against the real system: it finds a dead server by itself
(a proxy that stops moving bytes: no close, no error), reconnects and resumes after the
last frame it saw (``since`` with the room's ``epoch``), so what was said meanwhile shows
once; its events tell the page each step."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players, TrioThread
from tests.faultproxy import FaultProxy

DEAD_AFTER_MS = 4000

ATTACH = """(deadAfterMs) => {
  const video = document.getElementById('video');
  video.hidden = false;
  const log = window.ovlLog = {connecting: [], states: [], welcomes: 0, frames: [], dups: 0};
  window.ovl = window.DanmakuOverlay.attach(video, {room: 'ovlconn', deadAfterMs});
  const conn = window.ovl.connection;
  conn.on('connecting', (c) => log.connecting.push({url: c.url, since: c.since, via: c.via}));
  conn.on('state', (s) => log.states.push(s));
  conn.on('welcome', () => { log.welcomes += 1; });
  conn.on('frame', (msg) => log.frames.push(msg.seq));
  conn.on('duplicate', () => { log.dups += 1; });
}"""


def test_the_overlay_finds_a_dead_server_and_resumes_with_since_and_epoch(
    live: LiveSystem, players: Players, trio_thread: TrioThread, frozen_link: FaultProxy
) -> None:
    url = f"ws://127.0.0.1:{frozen_link.port}/ws"  # type: ignore[attr-defined]
    # the page's gateway hint and /api/config name the proxy, for the overlay too
    page = players.open("ovlhost", ws_url=url)
    page.evaluate(ATTACH, DEAD_AFTER_MS)
    page.wait_for_function("() => window.ovl.state === 'connected'")
    sender = live.client("ovlconn", "s1")
    live.comment(sender, "before the freeze")
    expect(page.locator(".dmo-item", has_text="before the freeze")).to_have_count(1)
    seq = page.evaluate("window.ovl.lastSeq")
    epoch = page.evaluate("window.ovl.epoch")
    assert seq >= 1 and epoch
    first = page.evaluate("window.ovlLog.connecting")
    assert len(first) == 1 and first[0]["since"] is None and first[0]["via"] == "hint"
    # a comment through the connection gets the server's answer: an anonymous viewer's
    # is refused, and the promise rejects with the error's code
    refused = page.evaluate(
        """() => window.ovl.connection.comment({text: 'anon says hi'})
             .then(() => 'acked', (e) => e.code)"""
    )
    assert refused == "unauthorized"
    assert page.evaluate("window.ovl.connection.pending.size") == 0

    # the link freezes: neither frames nor pongs come, and the socket is not closed
    trio_thread.run_sync(frozen_link.pause)
    live.comment(sender, "while frozen")
    page.wait_for_function(
        "() => window.ovlLog.connecting.length >= 2", timeout=DEAD_AFTER_MS + 10_000
    )
    assert page.evaluate("window.ovl.state") != "connected"
    trio_thread.run_sync(frozen_link.resume)
    page.wait_for_function("() => window.ovl.state === 'connected'", timeout=20_000)

    again = page.evaluate("window.ovlLog.connecting[1]")
    assert again["since"] == seq
    assert f"since={seq}" in again["url"] and f"epoch={epoch}" in again["url"]
    expect(page.locator(".dmo-item", has_text="while frozen")).to_have_count(1)
    live.comment(sender, "after the freeze")
    expect(page.locator(".dmo-item", has_text="after the freeze")).to_have_count(1)
    log = page.evaluate("window.ovlLog")
    assert "reconnecting" in log["states"] and log["states"][-1] == "connected"
    assert log["welcomes"] >= 2
    # every frame once, in order, none lost: the resume continued the numbering
    assert log["frames"] == sorted(set(log["frames"]))
    assert log["frames"] == list(range(log["frames"][0], log["frames"][-1] + 1))
    assert log["dups"] == 0

    page.evaluate("window.ovl.detach()")
    assert page.evaluate("window.ovlLog.states.at(-1)") == "closed"
