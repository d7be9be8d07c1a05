"""A link to a moment of a replay (issue 24) in a real Chromium against the real system:
``?t=`` starts the replay there, with the comments of that moment on screen and none of
what came long before."""

from __future__ import annotations

import json

import redis

from tests.browser.conftest import LiveSystem, Players
from tests.browser.test_replay import api, open_replay


def test_a_link_to_a_moment_starts_the_replay_there(live: LiveSystem, players: Players) -> None:
    room = "moment"
    bc = api(live, "POST", f"/rooms/{room}/broadcasts", {"title": "Moments"})
    # A recording with an early comment and one a minute in (as the worker writes them).
    plain = redis.Redis.from_url(live.settings.redis_url)
    try:
        for i, (offset, text) in enumerate(((1_000, "early"), (60_000, "a minute in"))):
            item = {"uid": f"u{i}", "nick": "n", "text": text, "offset_ms": offset}
            item |= {"color": "#ffffff", "mode": "scroll", "prio": 0, "ts": 0}
            plain.xadd(f"dm:{{{room}}}:rec:{bc['id']}", {"d": json.dumps(item)}, id=f"{5 + i}-0")
    finally:
        plain.close()
    api(live, "POST", f"/rooms/{room}/broadcasts/{bc['id']}/end")
    doc = api(live, "GET", f"/rooms/{room}/broadcasts/{bc['id']}/danmaku?format=json")
    ids = {c["text"]: c["id"] for c in doc["comments"]}

    for t in ("59.5", "0:59.5"):
        page, _ = open_replay(players, room, bc["id"], "recording", extra=f"&t={t}")
        start = page.evaluate("() => window.danmaku.replay().mediaMs")
        assert 59_500 <= start < 62_000, start  # there, not at 0
        page.wait_for_function(
            "id => window.danmaku.onScreen().includes(id)", arg=ids["a minute in"]
        )
        shown = dict(page.evaluate("() => window.danmaku.replay().shown"))
        assert ids["early"] not in shown
        assert shown[ids["a minute in"]] >= 59_500
        page.close()


def test_the_player_links_the_replay_when_a_broadcast_ends(
    live: LiveSystem, players: Players
) -> None:
    room = "ended"
    page = players.open(room)
    bc = api(live, "POST", f"/rooms/{room}/broadcasts", {"title": "Finals <b>night</b>"})
    api(live, "POST", f"/rooms/{room}/broadcasts/{bc['id']}/end")
    link = page.locator("#banner #replay-link")
    link.wait_for()
    assert link.get_attribute("href") == f"/?room={room}&broadcast={bc['id']}"
    assert "Finals <b>night</b>" in link.inner_text()  # the title as text, not markup
    assert page.locator("#banner b").count() == 0
