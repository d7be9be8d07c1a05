"""The web player's own cost in a real browser (issue 20): Debian's Chromium, headless,
on a ``danmaku up`` of its own, while senders keep a room at a given rate of shown items.

    python -m loadtest.playerbench --rates 40,200 --seconds 10

For each rate it reports, over the measured window (after a warm-up):
* ``fps`` and ``dropped``: animation frames the page drew (``requestAnimationFrame``)
  and frames it missed (a gap of n frame periods counts n-1; 60 Hz assumed);
* ``busy``: the renderer main thread's task time over wall time (Chrome DevTools
  Protocol ``Performance.getMetrics`` ``TaskDuration``), in percent;
* ``shown/s`` and ``skipped/s``: comments put on screen and skipped for want of a lane.
Headless Chromium has no display: the figures compare runs and rates on one machine,
they are not a phone's. The server and senders run on the same (shared) machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from danmaku import auth

CHROMIUM = os.environ.get("DANMAKU_CHROMIUM", "/usr/bin/chromium")
SENDERS = 10
FRAME_MS = 1000 / 60

_COUNTER_JS = """frameMs => {
  const s = { frames: 0, dropped: 0, last: performance.now(), on: true };
  const tick = (now) => {
    const gap = now - s.last;
    s.last = now;
    s.frames += 1;
    s.dropped += Math.max(0, Math.round(gap / frameMs) - 1);
    if (s.on) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  window.__bench = s;
}"""


def start_server(
    tmp: Path, secret: str, rate: float
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {
        **os.environ,
        "DANMAKU_SECRET": secret,
        "DANMAKU_DISPLAY_BUDGET": str(max(40.0, rate * 1.5)),
        "DANMAKU_RATE_PER_S": "100",
        "DANMAKU_RATE_BURST": "200",
        "DANMAKU_MAX_MSGS_PER_S": "200",
        "DANMAKU_MAX_MSGS_BURST": "400",
        "DANMAKU_MAX_CONNS_PER_IP": "0",
    }
    env.pop("REDIS_URL", None)
    cmd = [sys.executable, "-m", "danmaku", "up", "--web-port", "0", "--ws-port", "0",
           "--data-dir", str(tmp / "data"), "--log-level", "WARNING"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)  # fmt: skip
    urls: dict[str, str] = {}
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        name, _, url = line.strip().partition(": ")
        urls[name] = url
        if name == "ready" or time.monotonic() > deadline:
            break
    if "player" not in urls:
        proc.terminate()
        raise SystemExit("playerbench: the server did not start")
    return proc, urls


async def _senders(ws_url: str, room: str, secret: str, rate: float, stop: threading.Event) -> None:
    per = rate / SENDERS

    async def one(i: int) -> None:
        tok = auth.mint(secret, uid=f"bench{i}", nick=f"观众{i}", ttl_s=3600)
        try:
            await _send(i, tok)
        except* ConnectionClosed:
            pass  # the server stopped first (the end of a run)

    async def _send(i: int, tok: str) -> None:
        async with open_websocket_url(f"{ws_url}?room={room}&token={tok}") as ws:

            async def drain() -> None:
                while True:
                    await ws.get_message()

            async with trio.open_nursery() as n:
                n.start_soon(drain)
                k = 0
                start = trio.current_time()
                while not stop.is_set():
                    k += 1
                    text = f"弹幕 {i}-{k} hello" + "!" * (k % 5)
                    msg = {"type": "comment", "text": text, "nonce": f"b{i}-{k}"}
                    await ws.send_message(json.dumps(msg))
                    await trio.sleep_until(start + k / per)
                n.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for i in range(SENDERS):
            nursery.start_soon(one, i)


def measure(rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    secret = auth.new_secret()
    with tempfile.TemporaryDirectory(prefix="playerbench-") as tmp:
        proc, urls = start_server(Path(tmp), secret, rate)
        stop = threading.Event()
        room = "bench"
        sender = threading.Thread(
            target=lambda: trio.run(_senders, urls["websocket"], room, secret, rate, stop),
            daemon=True,
        )
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
                )
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                base = urls["player"].split("/?")[0]
                page.goto(f"{base}/?room={room}{os.environ.get('PLAYERBENCH_QUERY', '')}")
                page.wait_for_function("() => window.danmaku.state === 'connected'")
                sender.start()
                page.wait_for_timeout(warmup * 1000)
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")

                def task_s() -> float:
                    got = cdp.send("Performance.getMetrics")["metrics"]
                    return float(next(m["value"] for m in got if m["name"] == "TaskDuration"))

                page.evaluate(_COUNTER_JS, FRAME_MS)
                before = page.evaluate("() => window.danmaku.stats()")
                t0, busy0 = time.monotonic(), task_s()
                page.wait_for_timeout(seconds * 1000)
                busy1, t1 = task_s(), time.monotonic()
                after = page.evaluate("() => window.danmaku.stats()")
                counter = page.evaluate(
                    "() => { window.__bench.on = false; return window.__bench; }"
                )
                browser.close()
        finally:
            stop.set()
            proc.terminate()
            proc.wait(15)
    wall = t1 - t0
    return {
        "rate": rate,
        "seconds": round(wall, 1),
        "fps": round(counter["frames"] / wall, 1),
        "dropped": int(counter["dropped"]),
        "busy_pct": round(100 * (busy1 - busy0) / wall, 1),
        "shown_per_s": round((after["rendered"] - before["rendered"]) / wall, 1),
        "skipped_per_s": round((after["skipped"] - before["skipped"]) / wall, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m loadtest.playerbench", description=__doc__)
    ap.add_argument("--rates", default="40,200", help="items/s to drive, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per rate")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    args = ap.parse_args(argv)
    print("| items/s driven | shown/s | skipped/s | rAF fps | frames dropped | main thread busy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rate in (float(r) for r in args.rates.split(",")):
        r = measure(rate, args.seconds, args.warmup)
        print(
            f"| {r['rate']:g} | {r['shown_per_s']} | {r['skipped_per_s']} | {r['fps']} | "
            f"{r['dropped']} in {r['seconds']} s | {r['busy_pct']}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
