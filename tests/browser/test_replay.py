"""Replay in a real Chromium against the real system: a broadcast is recorded through the
gateway and worker, then the player plays it back (``?room=&broadcast=&src=``) with the
comments on the recording's clock.

The recording is a real WebM video (VP8, 320x180, 10 fps, 10 s, about 120 KB), made once
per module: Chromium's own encoder (WebCodecs) draws a clock on a canvas, this module
puts the frames in a WebM file with a duration and cues (so it is seekable), and a small
HTTP server with range requests serves it. Seek, pause and playback rate are therefore
the browser's own media element's. Nothing is stored in the repository.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.browser.conftest import LiveSystem, Players
from tests.client import token

STAFF = token("host", role="streamer")
LIFE_MS = 4000  # a comment's time on screen at display speed 2 (scrolling and still alike)


# ---- a seekable test recording ---------------------------------------------------------------
ENCODE_JS = """async ({w, h, fps, seconds}) => {
  const canvas = document.createElement('canvas');
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext('2d');
  const chunks = [];
  let failure = null;
  const encoder = new VideoEncoder({
    output: (chunk) => {
      const bytes = new Uint8Array(chunk.byteLength);
      chunk.copyTo(bytes);
      let s = '';
      for (const b of bytes) s += String.fromCharCode(b);
      chunks.push({ts: chunk.timestamp, key: chunk.type === 'key', data: btoa(s)});
    },
    error: (e) => { failure = String(e); },
  });
  encoder.configure({codec: 'vp8', width: w, height: h, bitrate: 100000, framerate: fps});
  for (let i = 0; i < fps * seconds; i++) {
    const t = i / fps;
    ctx.fillStyle = `hsl(${(t * 30) % 360}, 45%, 22%)`;
    ctx.fillRect(0, 0, w, h);
    ctx.fillStyle = 'rgba(255,255,255,0.25)';
    for (let s = 0; s <= seconds; s++) ctx.fillRect(10 + (s / seconds) * (w - 20), h - 26, 1, 10);
    ctx.fillStyle = '#ffd27a';
    ctx.fillRect(10, h - 20, (t / seconds) * (w - 20), 6);
    ctx.fillStyle = '#fff';
    ctx.textAlign = 'center';
    ctx.font = 'bold 56px sans-serif';
    ctx.fillText(`${t.toFixed(1)} s`, w / 2, h / 2 + 12);
    ctx.font = '14px sans-serif';
    ctx.fillText('test recording', w / 2, 28);
    const frame = new VideoFrame(canvas, {timestamp: Math.round(t * 1e6), duration: 1e6 / fps});
    encoder.encode(frame, {keyFrame: i % fps === 0});
    frame.close();
  }
  await encoder.flush();
  return {failure, chunks};
}"""


def _size(n: int) -> bytes:
    """An EBML data size (a variable-length integer)."""
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return (n | (1 << (7 * length))).to_bytes(length, "big")
    raise ValueError(n)


def _el(eid: int, payload: bytes) -> bytes:
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big") + _size(len(payload)) + payload


def _uint(eid: int, value: int, width: int = 0) -> bytes:
    return _el(eid, value.to_bytes(width or max(1, (value.bit_length() + 7) // 8), "big"))


def webm(frames: list[tuple[int, bool, bytes]], width: int, height: int, duration_ms: int) -> bytes:
    """A WebM file of VP8 ``frames`` (timestamp in µs, key frame?, data): a cluster per key
    frame and cues before the clusters, so a browser can seek without reading it all."""
    header = _el(
        0x1A45DFA3,  # EBML: version 1, ids up to 4 bytes, sizes up to 8, doctype webm v2
        _uint(0x4286, 1)
        + _uint(0x42F7, 1)
        + _uint(0x42F2, 4)
        + _uint(0x42F3, 8)
        + _el(0x4282, b"webm")
        + _uint(0x4287, 2)
        + _uint(0x4285, 2),
    )
    info = _el(
        0x1549A966,  # Info: ms timecodes, muxing/writing app, duration
        _uint(0x2AD7B1, 1_000_000)
        + _el(0x4D80, b"danmaku tests")
        + _el(0x5741, b"danmaku tests")
        + _el(0x4489, struct.pack(">d", float(duration_ms))),
    )
    video = _el(0xE0, _uint(0xB0, width) + _uint(0xBA, height))
    track = _uint(0xD7, 1) + _uint(0x73C5, 1) + _uint(0x83, 1) + _uint(0x9C, 0)
    tracks = _el(0x1654AE6B, _el(0xAE, track + _el(0x86, b"V_VP8") + video))
    clusters: list[tuple[int, list[bytes]]] = []
    for ts_us, key, data in frames:
        ms = ts_us // 1000
        if key or not clusters:
            clusters.append((ms, []))
        start, blocks = clusters[-1]
        flags = b"\x80" if key else b"\x00"
        blocks.append(_el(0xA3, b"\x81" + struct.pack(">h", ms - start) + flags + data))
    encoded = [_el(0x1F43B675, _uint(0xE7, ms) + b"".join(blocks)) for ms, blocks in clusters]

    def cues(first: int) -> bytes:  # fixed-width numbers: the size does not depend on first
        points, pos = [], first
        for (ms, _), cluster in zip(clusters, encoded, strict=True):
            where = _el(0xB7, _uint(0xF7, 1) + _uint(0xF1, pos, 8))
            points.append(_el(0xBB, _uint(0xB3, ms, 8) + where))
            pos += len(cluster)
        return _el(0x1C53BB6B, b"".join(points))

    head = info + tracks
    body = head + cues(len(head) + len(cues(0))) + b"".join(encoded)
    return header + (0x18538067).to_bytes(4, "big") + _size(len(body)) + body


class MediaServer:
    """Serves files from memory with range requests, as a video host does."""

    def __init__(self) -> None:
        blank = b"<!doctype html><title>media</title>"
        self.files: dict[str, tuple[bytes, str]] = {"/": (blank, "text/html")}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                entry = files.get(self.path)
                if entry is None:
                    self.send_error(404)
                    return
                data, ctype = entry
                start, end = 0, len(data) - 1
                m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                if m and (m[1] or m[2]):
                    if m[1]:
                        start = int(m[1])
                        end = min(end, int(m[2])) if m[2] else end
                    else:
                        start = max(0, len(data) - int(m[2]))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data[start : end + 1])  # unless the browser has enough

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def recording(browser: Browser) -> Iterator[str]:
    """The address of a 10 s seekable WebM test recording showing its own time."""
    server = MediaServer()
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(server.base + "/")  # WebCodecs needs a secure context: http://127.0.0.1 is
        out = page.evaluate(ENCODE_JS, {"w": 320, "h": 180, "fps": 10, "seconds": 10})
        assert out["failure"] is None, out["failure"]
        frames = [(c["ts"], c["key"], base64.b64decode(c["data"])) for c in out["chunks"]]
        assert len(frames) == 100
        server.files["/clock.webm"] = (webm(frames, 320, 180, 10_000), "video/webm")
    finally:
        ctx.close()
    yield server.base + "/clock.webm"
    server.close()


# ---- helpers ---------------------------------------------------------------------------------
def api(live: LiveSystem, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        f"{live.base_url}/api{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {STAFF}"},
        method=method,
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def record(
    live: LiveSystem, room: str, schedule: list[tuple[float, str, str]], end_at: float
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Broadcast ``schedule`` ((seconds from the start, text, mode)) in ``room``; return the
    broadcast id and its exported comments by text."""
    client = live.client(room, "fan")
    bc = api(live, "POST", f"/rooms/{room}/broadcasts", {"title": "Replay test"})
    t0 = time.monotonic()
    for at, text, mode in schedule:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        live.comment(client, text, mode=mode)
    time.sleep(max(0.0, t0 + end_at - time.monotonic()))
    api(live, "POST", f"/rooms/{room}/broadcasts/{bc['id']}/end")
    deadline = time.monotonic() + 10
    while True:  # the worker records what it commits: wait for the last one
        doc = api(live, "GET", f"/rooms/{room}/broadcasts/{bc['id']}/danmaku?format=json")
        if doc["count"] == len(schedule) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    by_text = {c["text"]: c for c in doc["comments"]}
    assert sorted(by_text) == sorted(text for _, text, _ in schedule)
    offsets = [c["offset_ms"] for c in doc["comments"]]
    assert offsets == sorted(offsets)
    return bc["id"], by_text


def open_replay(
    players: Players, room: str, bid: str, src: str, extra: str = ""
) -> tuple[Page, list[str]]:
    """A replay page; also returns the WebSocket addresses it tried (it should try none)."""
    ctx = players.new_context()
    sockets: list[str] = []

    def refuse(ws: WebSocketRoute) -> None:
        sockets.append(ws.url)
        ws.close()

    ctx.route_web_socket(re.compile(".*"), refuse)
    page = players.open(
        room,
        ctx,
        query=f"&broadcast={bid}&src={quote(src, safe='')}{extra}",
        wait_connected=False,
    )
    page.wait_for_function("() => window.danmaku.replay() && window.danmaku.replay().loaded")
    return page, sockets


def media_ms(page: Page, selector: str = "#video") -> float:
    ms: float = page.eval_on_selector(selector, "v => v.currentTime * 1000")
    return ms


def on_screen(page: Page) -> list[str]:
    ids: list[str] = page.evaluate("() => window.danmaku.onScreen().sort()")
    return ids


def wait_on_screen(page: Page, ids: list[str]) -> None:
    try:
        page.wait_for_function(
            "ids => JSON.stringify(window.danmaku.onScreen().sort()) === JSON.stringify(ids)",
            arg=sorted(ids),
            timeout=5000,
        )
    except Exception as exc:
        raise AssertionError(f"on screen {on_screen(page)}, expected {sorted(ids)}") from exc


def seek(page: Page, seconds: float) -> None:
    """Seek with the replay bar's slider, as a viewer dragging it does; wait until done."""
    page.eval_on_selector(
        "#rp-seek",
        """(el, v) => { el.value = v;
            el.dispatchEvent(new Event('input', {bubbles: true}));
            el.dispatchEvent(new Event('change', {bubbles: true})); }""",
        str(seconds),
    )
    page.wait_for_function(
        """t => Math.abs(window.danmaku.replay().mediaMs - t) < 60
                && !document.getElementById('video').seeking""",
        arg=seconds * 1000,
    )


def expected_at(by_text: dict[str, dict[str, Any]], t_ms: float) -> list[str]:
    """The comments a viewer who played up to t_ms sees: sent in the last LIFE_MS."""
    return sorted(c["id"] for c in by_text.values() if t_ms - LIFE_MS < c["offset_ms"] <= t_ms)


def clear_of_edges(by_text: dict[str, dict[str, Any]], t_ms: float) -> bool:
    """t_ms is not within 300 ms of a comment's arrival or departure (a robust check)."""
    return all(
        abs(t_ms - c["offset_ms"]) > 300 and abs(t_ms - LIFE_MS - c["offset_ms"]) > 300
        for c in by_text.values()
    )


INSTALL_OBSERVER_JS = """() => {
  window.__appeared = {};
  const video = document.getElementById('video');
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) {
      if (n.dataset && n.dataset.id && !(n.dataset.id in window.__appeared)) {
        window.__appeared[n.dataset.id] = video.currentTime * 1000;
      }
    }
  }).observe(document.getElementById('overlay'), {childList: true});
}"""

SAMPLE_JS = """id => {
  const n = document.querySelector(`#overlay > .dm[data-id="${id}"]`);
  return n ? [performance.now(), n.getBoundingClientRect().x] : null;
}"""


def wall_speed(page: Page, cid: str, span_ms: int = 600) -> float:
    """How fast comment ``cid`` moves across the screen, in px per wall-clock second."""
    a = page.evaluate(SAMPLE_JS, cid)
    page.wait_for_timeout(span_ms)
    b = page.evaluate(SAMPLE_JS, cid)
    assert a and b, "the comment left the screen while being measured"
    speed: float = (a[1] - b[1]) / (b[0] - a[0]) * 1000
    return speed


def id_fraction(cid: str) -> float:
    """The player's density sample: FNV-1a of the id (ASCII) scaled to [0, 1)."""
    h = 0x811C9DC5
    for ch in cid:
        h = ((h ^ ord(ch)) * 0x01000193) & 0xFFFFFFFF
    return h / 2**32


def settle(page: Page) -> None:
    """Let the player draw two more frames (it follows the media clock once a frame)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def boxes(page: Page) -> list[tuple[str, float, float]]:
    out: list[list[Any]] = page.evaluate(
        """() => Array.from(document.querySelectorAll('#overlay > .dm'), n => {
             const r = n.getBoundingClientRect(); return [n.dataset.id, r.x, r.y]; })"""
    )
    return sorted((str(i), round(x, 1), round(y, 1)) for i, x, y in out)


# ---- tests -----------------------------------------------------------------------------------
SCHEDULE = [  # (seconds after the broadcast starts, text, mode)
    (0.3, "early scroll", "scroll"),
    (0.6, "early top", "top"),
    (2.6, "middle scroll", "scroll"),
    (2.9, "middle bottom", "bottom"),
    (5.2, "late scroll", "scroll"),
    (5.5, "late 弹幕 second", "scroll"),
]


def test_replay_shows_comments_at_their_offsets_following_seek_pause_and_rate(
    live: LiveSystem, players: Players, recording: str
) -> None:
    bid, by_text = record(live, "show", SCHEDULE, end_at=5.8)
    ids = {text: c["id"] for text, c in by_text.items()}
    page, sockets = open_replay(players, "show", bid, recording)

    # Replay mode: status says so, sending is off, the video plays, no WebSocket at all.
    expect(page.locator("#conn")).to_have_attribute("data-state", "replay")
    expect(page.locator("#conn-text")).to_have_text("replay")
    expect(page.locator("#replay-title")).to_have_text("Replay test")
    expect(page.locator("#rp-count")).to_have_text("6 comments")
    expect(page.locator("#send-button")).to_be_disabled()
    expect(page.locator("#send-text")).to_be_disabled()
    expect(page.locator("#nick-form")).to_be_hidden()
    expect(page.locator("#online")).to_be_hidden()
    expect(page.locator("#video")).to_be_visible()
    expect(page.locator("#pattern")).to_be_hidden()
    page.wait_for_function("() => document.getElementById('video').duration === 10")
    # Display speed 2: every comment stays LIFE_MS on screen (scrolling ones cross in it).
    page.eval_on_selector(
        "#set-speed",
        "el => { el.value = '2'; el.dispatchEvent(new Event('input', {bubbles: true})); }",
    )

    # From the start at 1x: each comment appears when the recording passes its offset.
    page.wait_for_function("() => !window.danmaku.replay().paused")  # it plays on its own
    page.click("#rp-play")
    page.wait_for_function("() => window.danmaku.replay().paused")
    seek(page, 0)
    assert on_screen(page) == []
    page.evaluate(INSTALL_OBSERVER_JS)
    page.click("#rp-play")
    page.wait_for_function("id => id in window.__appeared", arg=ids["early scroll"])
    v1 = wall_speed(page, ids["early scroll"])
    page.wait_for_function("id => id in window.__appeared", arg=ids["middle bottom"])
    assert ids["late scroll"] not in page.evaluate("() => window.__appeared")
    # At 2x the recording and the comments go twice as fast.
    page.select_option("#rp-rate", "2")
    page.wait_for_function("() => document.getElementById('video').playbackRate === 2")
    v2 = wall_speed(page, ids["middle scroll"])
    # (wall-clock samples: a starved renderer on a shared machine skews one of them a bit)
    assert 1.5 < v2 / v1 < 2.6, (v1, v2)
    page.wait_for_function("id => id in window.__appeared", arg=ids["late 弹幕 second"])
    appeared: dict[str, float] = page.evaluate("() => window.__appeared")
    shown = dict(page.evaluate("() => window.danmaku.replay().shown"))
    for text, c in by_text.items():
        rate = 2 if text.startswith("late") else 1
        # not before its offset (the page's own clock), and within a few frames after
        assert c["offset_ms"] <= shown[c["id"]] <= c["offset_ms"] + 120 * rate, (text, shown, c)
        # the media element agrees (its interpolated time may lag the frame's by a hair)
        assert c["offset_ms"] - 30 <= appeared[c["id"]] <= c["offset_ms"] + 150 * rate, (
            text,
            appeared,
            c,
        )

    # Pause: the comments freeze where they are, the recording too.
    page.click("#rp-play")
    page.wait_for_function("() => document.getElementById('video').paused")
    expect(page.locator("#rp-play")).to_have_attribute("aria-label", "play")
    settle(page)
    before, t_before = boxes(page), media_ms(page)
    assert before, "nothing on screen to watch"
    page.wait_for_timeout(700)
    assert boxes(page) == before
    assert media_ms(page) == t_before

    # Seek: the screen shows what playing up to there shows, none from other times.
    late_t = 6.0
    early_t = 1.2
    for t in (early_t, late_t):
        assert clear_of_edges(by_text, t * 1000), "the recorded offsets drifted too far"
    seek(page, early_t)
    wait_on_screen(page, expected_at(by_text, early_t * 1000))
    assert sorted(on_screen(page)) == sorted([ids["early scroll"], ids["early top"]])
    seek(page, late_t)
    wait_on_screen(page, expected_at(by_text, late_t * 1000))
    assert ids["early scroll"] not in on_screen(page) and ids["late scroll"] in on_screen(page)
    # ...part-way across as if played: the older scrolling comment is further left.
    xs = {i: x for i, x, _ in boxes(page)}
    assert xs[ids["middle scroll"]] < xs[ids["late scroll"]] < xs[ids["late 弹幕 second"]]
    page.screenshot(path="/tmp/replay.png")
    seek(page, early_t)  # and back: the later ones are gone again
    wait_on_screen(page, expected_at(by_text, early_t * 1000))

    # The live display controls apply: blocked words, bottom comments off.
    seek(page, late_t)
    wait_on_screen(page, expected_at(by_text, late_t * 1000))
    page.click("summary")
    page.fill("#set-words", "弹幕")
    page.dispatch_event("#set-words", "change")
    page.uncheck("#set-bottom")
    hidden = {ids["late 弹幕 second"], ids["middle bottom"]}
    rest = [i for i in expected_at(by_text, late_t * 1000) if i not in hidden]
    wait_on_screen(page, rest)
    seek(page, late_t - 0.1)  # and they stay out when the screen is put up again
    wait_on_screen(page, rest)
    # Density samples in the player (the recording is unsampled): a stable share by id.
    page.select_option("#set-density", "0.25")
    wait_on_screen(page, [i for i in rest if id_fraction(i) < 0.25])
    page.select_option("#set-density", "1")
    wait_on_screen(page, rest)
    assert sockets == []
    assert page.evaluate("() => window.danmaku.connects") == []


def test_replay_without_media_runs_the_test_pattern_as_the_recording_clock(
    live: LiveSystem, players: Players
) -> None:
    schedule = [(0.3, "first", "scroll"), (2.2, "second", "top")]
    bid, by_text = record(live, "clock", schedule, end_at=2.6)
    page, sockets = open_replay(players, "clock", bid, "recording")
    expect(page.locator("#conn-text")).to_have_text("replay")
    expect(page.locator("#video")).to_be_hidden()
    expect(page.locator("#pattern")).to_be_visible()
    assert page.evaluate("() => window.danmaku.replay().clock") is True
    # the clock runs from the broadcast's start to its end
    meta = api(live, "GET", f"/rooms/clock/broadcasts/{bid}")
    duration = page.evaluate("() => window.danmaku.replay().duration")
    assert abs(duration * 1000 - (meta["end"] - meta["start"])) < 1
    expect(page.locator("#rp-time")).to_have_text(re.compile(r"/ 0:02$"))
    page.wait_for_function("() => !window.danmaku.replay().paused")  # it plays on its own
    first = by_text["first"]["id"]
    page.wait_for_function("id => window.danmaku.onScreen().includes(id)", arg=first)
    shown = dict(page.evaluate("() => window.danmaku.replay().shown"))
    assert by_text["first"]["offset_ms"] <= shown[by_text["first"]["id"]]

    # pause: the clock, the picture and the comments stop
    page.click("#rp-play")
    page.wait_for_function("() => window.danmaku.replay().paused")
    settle(page)
    t0 = page.evaluate("() => window.danmaku.replay().mediaMs")
    picture = page.eval_on_selector("#pattern", "c => c.toDataURL()")
    before = boxes(page)
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.danmaku.replay().mediaMs") == t0
    assert page.eval_on_selector("#pattern", "c => c.toDataURL()") == picture
    assert boxes(page) == before

    # seek before the first comment: nothing (no comment from later on); then past both
    seek(page, 0.1)
    wait_on_screen(page, [])
    seek(page, 2.5)
    wait_on_screen(page, [by_text["first"]["id"], by_text["second"]["id"]])

    # rate 2: the clock runs twice as fast
    seek(page, 0)
    page.select_option("#rp-rate", "2")
    page.click("#rp-play")
    a = page.evaluate("() => [performance.now(), window.danmaku.replay().mediaMs]")
    page.wait_for_timeout(500)
    b = page.evaluate("() => [performance.now(), window.danmaku.replay().mediaMs]")
    assert 1.6 < (b[1] - a[1]) / (b[0] - a[0]) < 2.4
    assert sockets == []

    # an unknown broadcast is said so
    players.allow_console(r"404")
    missing = players.open("clock", query="&broadcast=abc&src=recording", wait_connected=False)
    expect(missing.locator("#conn-text")).to_have_text("error · no such broadcast")
    expect(missing.locator("#conn")).to_have_attribute("data-state", "error")
