/* Replay: ?room=R&broadcast=ID[&src=URL] plays a recording with its comments (no
 * WebSocket, no sending).
 */

import {
  $, BACKOFF_BASE_MS, BACKOFF_MAX_MS, BROADCAST_RE, JUMP_MS, R, REPLAY_RATES, ROOM_RE, S,
  broadcast, clockText, el, numberLocale, params, retracted, room, settings, toast, tr,
} from "./state.js";
import { setState } from "./connection.js";
import { videoUrl } from "./media.js";
import { pattern } from "./pattern.js";
import { clearScreen, renderer, shows } from "./stage.js";

/* ?room=R&broadcast=ID&src=SRC plays a recording with its comments.
 *
 * SRC is the recording's address (http, https or blob), played by the <video> element, so
 * seeking, pausing and the playback rate are the browser's own. Its time 0 is taken to be
 * the broadcast's start (the offsets are from there). src=recording, or no src, means
 * there is no media to play: the test pattern becomes the recording, driven by a
 * RecordingClock (below) that has the <video> element's interface and runs from the
 * broadcast's start to its end.
 *
 * The comments come once from GET /api/rooms/R/broadcasts/ID/danmaku?format=json (sorted
 * by offset_ms). Each frame reads the media time and puts up those whose offset it has
 * just passed, through the live player's filters, lanes and rendering. Animations are
 * held and set to the media time every frame: a paused recording freezes them, a faster
 * one moves them faster. A seek (or any jump of the clock) clears the screen and puts
 * back, part-way across, the comments of the last few seconds before the new position,
 * as if it had been played up to there. The server sends every kept comment (replay is
 * unsampled), so the density setting samples here: a stable hash of the id, and comments
 * with a priority always show. */

/** A stand-in for a <video> element when there is no media: a clock of the recording. */
class RecordingClock extends EventTarget {
  constructor() {
    super();
    this.duration = 0;
    this.paused = true;
    this.seeking = false;
    this.readyState = 4;
    this._pos = 0;
    this._at = performance.now();
    this._rate = 1;
  }
  get currentTime() {
    if (this.paused) return this._pos;
    const t = this._pos + ((performance.now() - this._at) * this._rate) / 1000;
    return Math.min(this.duration, t);
  }
  set currentTime(s) {
    this._pos = Math.min(this.duration, Math.max(0, Number(s) || 0));
    this._at = performance.now();
    this.dispatchEvent(new Event("seeking"));
    this.dispatchEvent(new Event("seeked"));
  }
  get playbackRate() { return this._rate; }
  set playbackRate(r) {
    this._pos = this.currentTime;
    this._at = performance.now();
    this._rate = Number(r) > 0 ? Number(r) : 1;
    this.dispatchEvent(new Event("ratechange"));
  }
  play() {
    if (this.paused) {
      if (this._pos >= this.duration) this.currentTime = 0;
      this._at = performance.now();
      this.paused = false;
      this.dispatchEvent(new Event("play"));
    }
    return Promise.resolve();
  }
  pause() {
    if (this.paused) return;
    this._pos = this.currentTime;
    this.paused = true;
    this.dispatchEvent(new Event("pause"));
  }
  /** Called every frame: stop at the end as a video does. */
  tick() {
    if (!this.paused && this.currentTime >= this.duration) {
      this.pause();
      this.dispatchEvent(new Event("ended"));
    }
  }
}

/** A stable number in [0, 1) from a comment id: the density sample keeps id below it. */
function idFraction(id) {
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) / 4294967296;
}

function replayShows(item) {
  if (retracted.has(item.id)) return false;
  const sampledOut = settings.density < 1 && !(Number(item.prio) >= 1)
    && idFraction(item.id) >= settings.density;
  if (sampledOut) return false;
  return shows(item, false);
}

/** First index whose offset is above ms (the comments are sorted by offset). */
function indexAfter(ms) {
  let lo = 0;
  let hi = R.comments.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (R.comments[mid].offset_ms <= ms) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Media time in ms, never running backwards while playing (a seek says so itself). */
function mediaTime() {
  const m = R.media;
  const t = Math.max(0, (Number(m.currentTime) || 0) * 1000);
  if (m.paused || m.seeking || R.last === null || R.resync) return t;
  return t < R.last && R.last - t < 250 ? R.last : t; // jitter of the interpolated time
}

/** Clear the screen and put up what playing up to ``t`` would show now. */
function resyncAt(t) {
  R.resync = false;
  R.cursor = indexAfter(t);
  if (!settings.on) {
    clearScreen();
    return;
  }
  const { SCROLL_MS, FIXED_MS } = window.DanmakuOverlay.RENDER;
  const life = Math.max(SCROLL_MS / settings.speed, FIXED_MS);
  const items = [];
  for (let i = indexAfter(t - life); i < R.cursor; i++) {
    const item = R.comments[i];
    if (replayShows(item)) items.push({ item, at: item.offset_ms });
  }
  // as if placed at its own time: part-way across, on the lane it would have had
  renderer.resync(items, t);
}

export function replayTick() {
  const m = R.media;
  if (R.clock) R.clock.tick();
  if (!R.loaded) return;
  const t = mediaTime();
  R.now = t;
  const jumped = R.last === null || t < R.last - 250
    || t - R.last > JUMP_MS * Math.max(1, m.playbackRate);
  if (R.resync || jumped) {
    resyncAt(t);
  } else {
    while (R.cursor < R.comments.length && R.comments[R.cursor].offset_ms <= t) {
      const item = R.comments[R.cursor++];
      if (replayShows(item)) renderer.add(item, false, item.offset_ms);
    }
  }
  renderer.pump(t);
  if (t !== R.last) renderer.advance(t); // paused: nothing moves (new ones were just set)
  R.last = t;
  renderReplayBar(t);
}

let seekDragging = false;

function renderReplayBar(t) {
  const m = R.media;
  const dur = Number.isFinite(m.duration) ? m.duration : 0;
  el.rpTime.textContent = `${clockText(t / 1000, false)} / ${clockText(dur, false)}`;
  if (el.rpSeek.max !== String(dur)) el.rpSeek.max = String(dur);
  if (!seekDragging) el.rpSeek.value = String(t / 1000);
  const label = tr(m.paused ? "rp.play" : "rp.pause");
  if (el.rpPlay.getAttribute("aria-label") !== label) {
    el.rpPlay.setAttribute("aria-label", label);
    el.rpPlay.textContent = m.paused ? "▶" : "❚❚";
  }
  const rate = String(m.playbackRate);
  if (el.rpRate.value !== rate && REPLAY_RATES.includes(m.playbackRate)) el.rpRate.value = rate;
}

function togglePlay() {
  const m = R.media;
  if (m.paused) m.play().catch(() => toast(tr("toast.recording_play")));
  else m.pause();
}

const CONTROLS = ["INPUT", "SELECT", "TEXTAREA", "BUTTON", "SUMMARY", "VIDEO"];

function bindReplayBar() {
  const m = R.media;
  el.rpPlay.addEventListener("click", togglePlay);
  el.rpSeek.addEventListener("pointerdown", () => { seekDragging = true; });
  el.rpSeek.addEventListener("pointerup", () => { seekDragging = false; });
  el.rpSeek.addEventListener("input", () => { m.currentTime = Number(el.rpSeek.value); });
  el.rpSeek.addEventListener("change", () => { seekDragging = false; });
  el.rpRate.addEventListener("change", () => { m.playbackRate = Number(el.rpRate.value); });
  for (const ev of ["seeking", "seeked"]) m.addEventListener(ev, () => { R.resync = true; });
  el.rpMute.addEventListener("click", () => {
    el.video.muted = !el.video.muted;
    el.rpMute.setAttribute("aria-pressed", String(el.video.muted));
    el.rpMute.textContent = tr(el.video.muted ? "rp.sound_off" : "rp.sound_on");
  });
  document.addEventListener("keydown", (ev) => {
    const tag = ev.target && ev.target.tagName;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || CONTROLS.includes(tag)) return;
    if (ev.key === " " || ev.key === "k") togglePlay();
    else if (ev.key === "ArrowLeft") m.currentTime = Math.max(0, m.currentTime - 5);
    else if (ev.key === "ArrowRight") m.currentTime = Math.min(m.duration || 0,
      m.currentTime + 5);
    else return;
    ev.preventDefault();
  });
}

export function setupReplay() {
  el.online.hidden = true;
  el.nickForm.hidden = true;
  el.who.hidden = true;
  el.replayBar.hidden = false;
  for (const c of [el.sendText, el.sendColor, el.sendMode, el.sendButton]) c.disabled = true;
  el.sendText.placeholder = tr("send.placeholder_replay");
  el.sendText.removeAttribute("data-i18n-placeholder");
  el.chat.hidden = true; // a recording's comments are not a chat
  el.controls.classList.add("replay"); // the replay bar plays and seeks
  setState("replay", tr("why.loading"));
  const src = params.get("src");
  const url = src && src !== "recording" ? videoUrl(src) : null;
  if (url) {
    el.video.loop = false;
    el.video.autoplay = false;
    el.video.src = url.href;
    el.video.hidden = false;
    el.pattern.hidden = true;
    pattern.on = false;
    el.rpMute.hidden = false;
    R.media = el.video;
    el.video.addEventListener("error", () => {
      toast(tr("toast.recording_load"), 8000);
      setState("error", tr("why.recording_not_loaded"));
    }, { once: true });
  } else {
    R.clock = new RecordingClock();
    R.media = R.clock;
  }
  bindReplayBar();
  if (!ROOM_RE.test(room)) {
    setState("error", tr("why.room_rule"));
    return;
  }
  if (!BROADCAST_RE.test(broadcast)) {
    setState("error", tr("why.broadcast_rule"));
    return;
  }
  loadReplay();
}

/** Seconds from ?t= ("90", "90.5", "1:30", "1:02:03"); 0 when absent or not a time. */
function momentOf(raw) {
  if (!raw || !/^\d+(\.\d+)?$|^(\d+:)?\d{1,2}:\d{1,2}(\.\d+)?$/.test(raw)) return 0;
  return raw.split(":").reduce((acc, part) => acc * 60 + Number(part), 0);
}

async function loadReplay() {
  const path = `/api/rooms/${encodeURIComponent(room)}/broadcasts/`
    + `${encodeURIComponent(broadcast)}/danmaku?format=json`;
  let doc;
  try {
    const r = await fetch(path, { cache: "no-store" });
    if (r.status === 404) {
      setState("error", tr("why.no_broadcast"));
      return;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    doc = await r.json();
  } catch {
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(R.attempts, 10));
    R.attempts += 1;
    setState("replay", tr("why.comments_retry", { s: Math.ceil(cap / 1000) }));
    setTimeout(loadReplay, cap);
    return;
  }
  const list = doc && Array.isArray(doc.comments) ? doc.comments : [];
  R.comments = list
    .filter((c) => c && typeof c === "object" && typeof c.id === "string"
      && typeof c.text === "string" && Number.isFinite(c.offset_ms) && c.offset_ms >= 0)
    .sort((a, b) => a.offset_ms - b.offset_ms);
  const meta = doc && doc.broadcast && typeof doc.broadcast === "object" ? doc.broadcast : {};
  R.meta = meta;
  const title = typeof meta.title === "string" && meta.title
    ? meta.title : tr("rp.untitled", { id: broadcast });
  el.replayTitle.textContent = title;
  el.replayInfo.hidden = false;
  document.title = `danmaku · ${room} · ${title} (${tr("state.replay")})`;
  el.rpCount.textContent = tr("rp.comments", { n: R.comments.length.toLocaleString(numberLocale()) });
  if (R.clock) {
    const last = R.comments.length ? R.comments[R.comments.length - 1].offset_ms : 0;
    const span = Number(meta.end) > 0 && Number(meta.start) > 0
      ? Number(meta.end) - Number(meta.start)
      : Number(meta.start) > 0 ? Date.now() - Number(meta.start) : 0;
    R.clock.duration = Math.max(span, last) / 1000; // the broadcast, or up to its last comment
  }
  R.loaded = true;
  R.resync = true;
  const start = momentOf(params.get("t")); // a link to a moment: ?t=90, ?t=1:30 (issue 24)
  if (start > 0) R.media.currentTime = start;
  el.rpPlay.disabled = false;
  el.rpSeek.disabled = false;
  if (S.state !== "error") setState("replay");
  R.media.play().catch(() => { /* autoplay refused: the play button starts it */ });
}
