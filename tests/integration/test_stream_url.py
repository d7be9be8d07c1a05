"""The room setting ``stream_url`` (the video players show) end to end: set by staff,
read back by anyone, announced to viewers, validated, cleared to the server default."""

from __future__ import annotations

import trio

from danmaku.system import System
from tests.client import connect
from tests.integration.test_moderation import STREAMER, Api


async def test_stream_url_is_set_read_announced_and_cleared(system: System) -> None:
    assert system.ws_port
    staff, anyone = Api(system, STREAMER), Api(system, None)
    url = "https://cdn.example.test/live/room.m3u8"
    async with trio.open_nursery() as n:
        viewer = await connect(n, system.ws_port, "tv")
        status, current = await staff("PATCH", "/rooms/tv/settings", {"stream_url": url})
        assert status == 200 and current["stream_url"] == url
        _, info = await anyone("GET", "/rooms/tv")
        assert info["settings"]["stream_url"] == url
        assert info["effective"]["stream_url"] == url
        await viewer.wait_for(
            lambda c: any(
                m.get("event") == "settings" and m["changes"].get("stream_url") == url
                for m in c.messages
            )
        )
        # numbers beside it still read as numbers
        await staff("PATCH", "/rooms/tv/settings", {"slow_mode_s": 5})
        _, info = await anyone("GET", "/rooms/tv")
        assert info["settings"] == {"stream_url": url, "slow_mode_s": 5}

        for bad in ("javascript:alert(1)", "ftp://x/y.mp4", "https://a b", "x" * 3000):
            status, _ = await staff("PATCH", "/rooms/tv/settings", {"stream_url": bad})
            assert status == 422, bad
        assert (await anyone("PATCH", "/rooms/tv/settings", {"stream_url": url}))[0] == 401

        status, current = await staff("PATCH", "/rooms/tv/settings", {"stream_url": ""})
        assert status == 200 and "stream_url" not in current
        _, info = await anyone("GET", "/rooms/tv")
        assert info["effective"]["stream_url"] == system.settings.stream_url == ""
        n.cancel_scope.cancel()
