"""Chromium offers permessage-deflate on every WebSocket: the player gets compressed
frames from the real gateway and shows them, and its own (compressed) comments are
taken."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_player import dm, join, send_from_page


def test_player_shows_frames_compressed_by_the_gateway(live: LiveSystem, players: Players) -> None:
    assert live.system is not None
    metrics = live.system.metrics
    viewer = players.open("zipped")
    sender = players.open("zipped")
    join(sender, "Zed")
    text = "a comment long enough that its frame is compressed before it flies past 0123456789"
    send_from_page(sender, text)  # Chromium compresses what it sends too
    expect(dm(viewer, text)).to_have_count(1)
    expect(dm(sender, text)).to_have_count(1)
    client = live.client("zipped", "streamer-z", role="streamer")
    other = "from a plain client " + "x" * 80
    live.comment(client, other)
    expect(dm(viewer, other)).to_have_count(1)
    # Both pages agreed to deflate: the frames went out compressed, and smaller.
    after = metrics.deflate_fanout.labels("after")._value.get()
    before = metrics.deflate_fanout.labels("before")._value.get()
    assert 0 < after < before
    assert metrics.deflate_encodes._value.get() >= 1
