"""Replay: broadcasts record every accepted comment once with its offset, across worker
restarts; deletes and bans keep comments out; exports over HTTP and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pysubs2
import trio

from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.store import Store
from danmaku.system import System
from danmaku.worker import BroadcastWorker
from tests.client import RunningWorker, connect, http, label, start_system, token
from tests.integration.test_moderation import Api

MOD = token("mod", role="moderator")


async def test_recording_survives_worker_restarts_and_exports(
    nursery: trio.Nursery, settings: Settings, tmp_path: Path
) -> None:
    s = settings.replace(display_budget=10.0)  # sampling on: replay must not be sampled
    system: System = await start_system(nursery, s, ("web", "gateway"))
    assert system.ws_port
    api = Api(system, MOD)
    status, bc = await api("POST", "/rooms/show/broadcasts", {"title": "Finals"})
    assert status == 200 and bc["end"] is None
    store = Store(s.redis_url, Metrics(process=False))
    acked: dict[str, int] = {}
    async with trio.open_nursery() as n:
        senders = [await connect(n, system.ws_port, "show", tok=token(f"u{i}")) for i in range(5)]
        troll = await connect(n, system.ws_port, "show", tok=token("troll"))
        for round_ in range(3):
            running = RunningWorker(
                n, BroadcastWorker(store.frames, s, Metrics(process=False), worker_id=f"w{round_}")
            )
            for k in range(20):
                reply = await senders[k % 5].comment(f"r{round_} {label(k)}", nonce=f"{round_}-{k}")
                acked[reply["id"]] = 0
            reply = await troll.comment(f"trolling {label(round_)}", nonce=f"t{round_}")
            acked[reply["id"]] = 0
            await trio.sleep(0.3)
            running.crash()  # the lease must expire before the next worker takes over
        final = BroadcastWorker(store.frames, s, Metrics(process=False), worker_id="final")
        n.start_soon(final.run)
        with trio.fail_after(15):
            while len(await store.replay.recorded("show", bc["id"])) < len(acked):
                await trio.sleep(0.2)
        recorded = await store.replay.recorded("show", bc["id"])
        assert sorted(c["id"] for c in recorded) == sorted(acked), "lost or repeated"
        for c in recorded:
            assert c["offset_ms"] == c["ts"] - bc["start"] >= 0
        # A delete and a ban take comments out of the replay.
        victim = recorded[3]["id"]
        assert (await api("DELETE", f"/rooms/show/comments/{victim}"))[0] == 204
        assert (await api("POST", "/rooms/show/bans", {"uid": "troll"}))[0] == 200
        status, ended = await api("POST", f"/rooms/show/broadcasts/{bc['id']}/end")
        assert status == 200 and ended["end"] >= ended["start"]
        kept = len(acked) - 1 - 3  # the deleted one and the troll's three
        status, doc = await Api(system, None)("GET", f"/rooms/show/broadcasts/{bc['id']}/danmaku")
        assert status == 200 and doc["count"] == kept
        assert victim not in {c["id"] for c in doc["comments"]}
        assert all(c["uid"] != "troll" for c in doc["comments"])
        offsets = [c["offset_ms"] for c in doc["comments"]]
        assert offsets == sorted(offsets)
        _, listing = await Api(system, None)("GET", "/rooms/show/broadcasts")
        assert listing[0]["id"] == bc["id"] and listing[0]["title"] == "Finals"
        n.cancel_scope.cancel()

    # XML and ASS over HTTP parse with real parsers.
    base = f"http://127.0.0.1:{system.web_port}/api/rooms/show/broadcasts/{bc['id']}/danmaku"
    xml = (await http(base + "?format=xml")).body
    assert len(ET.fromstring(xml).findall("d")) == kept
    ass = (await http(base + "?format=ass")).body
    assert len(pysubs2.SSAFile.from_string(ass.decode()).events) == kept
    # The CLI exports the same.
    out = tmp_path / "show.ass"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "danmaku",
            "export",
            "show",
            bc["id"],
            "--format",
            "ass",
            "-o",
            str(out),
            "--redis-url",
            s.redis_url,
        ],
        check=True,
        env=env,
        timeout=60,
    )
    assert out.read_bytes() == ass
    missing = subprocess.run(
        [sys.executable, "-m", "danmaku", "export", "show", "abc", "--redis-url", s.redis_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 1 and "no broadcast" in missing.stderr
    store.close()


async def test_only_comments_during_a_broadcast_are_recorded(system: System) -> None:
    assert system.ws_port
    api = Api(system, MOD)
    async with trio.open_nursery() as n:
        c = await connect(n, system.ws_port, "clock", tok=token("u"))
        watcher = await connect(n, system.ws_port, "clock")
        before = await c.comment("before the show", nonce="a")
        _, bc = await api("POST", "/rooms/clock/broadcasts", {"title": "t"})
        during = await c.comment("during the show", nonce="b")
        await watcher.wait_for(lambda w: during["id"] in w.item_ids())
        await api("POST", f"/rooms/clock/broadcasts/{bc['id']}/end")
        after = await c.comment("after the show", nonce="c")
        await watcher.wait_for(lambda w: after["id"] in w.item_ids())
        _, doc = await Api(system, None)("GET", f"/rooms/clock/broadcasts/{bc['id']}/danmaku")
        assert [x["id"] for x in doc["comments"]] == [during["id"]]
        assert before["id"] != during["id"]
        assert (await Api(system, token("v"))("POST", "/rooms/clock/broadcasts", {}))[0] == 403
        _, log = await api("GET", "/rooms/clock/audit")
        actions = [(e["action"], e["target"]) for e in log]
        assert actions[:2] == [("broadcast_end", bc["id"]), ("broadcast_start", bc["id"])]
        n.cancel_scope.cancel()
