/* The connection, in the player's words: the one WebSocket client is danmaku-overlay.js'
 * ``DanmakuOverlay.Connection`` (the gateway hint, else /api/config; jittered exponential
 * backoff; resume after the last frame seq with since/epoch and resume_failed; frames
 * de-duplicated by seq; pings and the silent-socket check). This module opens one (``link``)
 * and turns its events into the page: the connection's state in words, the staff token's
 * and session's refusals, welcome (limits, densities, pin, resends), frames onto the
 * stage, acks and errors of sent comments (cooldowns, automatic retries), and the online
 * count (frames, else GET /api/rooms/R in a quiet room).
 */

import {
  AUTO_RETRY_CODES, BACKOFF_BASE_MS, BACKOFF_MAX_MS, DEAD_AFTER_MS, PENDING_TTL_MS,
  PING_EVERY_MS, R, ROOM_INFO_EVERY_MS, ROOM_INFO_FIRST_MS, ROOM_RE, S, STABLE_MS, STAFF_ROLES,
  currentToken, el, numberLocale, pending, room, session, settings, staffToken, tr,
} from "./state.js";
import { onRoomSettings } from "./media.js";
import { onNotice } from "./notices.js";
import { readRecordings } from "./replays.js";
import {
  clearSendError, renderCooldown, renderWho, setSession, setStaff, showSendError, transmit,
  updateCount,
} from "./send.js";
import { onDensities } from "./settings.js";
import { accept, renderer, retract, showFrame } from "./stage.js";
import { errorWords } from "./words.js";

export function setState(state, detail = "") {
  S.state = state;
  S.detail = detail;
  el.conn.dataset.state = state;
  const word = tr(`state.${state}`);
  el.connText.textContent = detail ? `${word} · ${detail}` : word;
}

export function setOnline(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return;
  // a connected viewer is one of those online, whatever a stale count says
  if (S.welcomed) n = Math.max(1, n);
  S.online = n;
  el.onlineN.textContent = n.toLocaleString(numberLocale());
}

/** GET /api/rooms/{room}: the online count over all gateways (a quiet room sends no
 *  frames to carry it) and the room's settings (stream_url). Failures are ignored: the
 *  next round or frame tries again. */
export async function readRoomInfo() {
  if (!ROOM_RE.test(room)) return;
  let info;
  try {
    const r = await fetch(`/api/rooms/${encodeURIComponent(room)}`, { cache: "no-store" });
    if (!r.ok) return;
    info = await r.json();
  } catch {
    return;
  }
  if (!info || typeof info !== "object") return;
  // frames carry the count while the room is busy; in a quiet room the API is the truth
  if (S.welcomed && Date.now() - S.frameOnlineAt > ROOM_INFO_EVERY_MS / 2) setOnline(info.online);
  onRoomSettings(info.settings && typeof info.settings === "object" ? info.settings : {},
    info.effective && typeof info.effective === "object" ? info.effective : {});
}

/** The gateways /api/config lists (ws_urls, else ws_url): the hint's fallback. */
function configUrls() {
  const listed = Array.isArray(S.config.ws_urls) ? S.config.ws_urls.filter(Boolean) : [];
  return listed.length ? listed : [S.config.ws_url || defaultWsUrl()];
}

function defaultWsUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

async function fetchConfig() {
  const r = await fetch("/api/config", { cache: "no-store" });
  if (!r.ok) throw new Error(`config: HTTP ${r.status}`);
  const cfg = await r.json();
  if (cfg && typeof cfg === "object") {
    if (typeof cfg.tick_ms === "number") S.tickMs = cfg.tick_ms;
    if (cfg.limits) applyLimits(cfg.limits);
  }
  return cfg;
}

function applyLimits(limits) {
  if (typeof limits.max_text_chars === "number") S.limits.max_text_chars = limits.max_text_chars;
  if (typeof limits.max_text_bytes === "number") S.limits.max_text_bytes = limits.max_text_bytes;
  updateCount();
}

/** The player's one WebSocket: the overlay's client (danmaku-overlay.js' Connection), which
 *  does the gateway choice, backoff, resume with since/epoch, de-duplication of frames,
 *  pings and the silent-socket check; this module turns its events into the page. */
export const link = new window.DanmakuOverlay.Connection({
  room,
  token: () => currentToken(),
  density: () => settings.density,
  api: "", // the hint at this page's origin (the web app)
  fallback: async () => configUrls(),
  // /api/config first (limits, tick, report reasons), and again after repeated failures:
  // the gateways may have moved; a failure with none read yet counts as a failed attempt
  prepare: async (attempts) => {
    if (S.config && attempts < 3) return;
    try {
      S.config = await fetchConfig();
    } catch (e) {
      if (!S.config) throw e;
    }
  },
  pingMs: PING_EVERY_MS,
  deadAfterMs: DEAD_AFTER_MS,
  backoffBaseMs: BACKOFF_BASE_MS,
  backoffMaxMs: BACKOFF_MAX_MS,
  stableMs: STABLE_MS,
});

link.on("state", (state, detail) => {
  if (state === "connecting") setState("connecting");
  else if (state === "reconnecting" && detail.at) {
    S.reconnectAt = detail.at;
    renderReconnect();
  } else if (state === "reconnecting") setState("reconnecting");
  else if (state === "connected") setState("connected");
});

link.on("connecting", (c) => {
  S.welcomed = false;
  S.connects.push({ since: c.since, density: c.density, token: c.token,
    staff: Boolean(staffToken), gateway: c.host, via: c.via, at: Date.now() });
  if (S.connects.length > 50) S.connects.shift();
});

link.on("close", ({ code, reason, refusal }) => onClose(code, reason, refusal));
link.on("welcome", (msg) => onWelcome(msg));
link.on("frame", (msg, info) => onFrame(msg, info));
link.on("duplicate", () => { S.stats.dupFrames += 1; });
link.on("notice", (msg) => onNotice(msg));
link.on("ack", (msg) => onAck(msg));
link.on("error", (msg, info) => onError(msg, info));

export function reconnectNow() {
  S.welcomed = false;
  link.reconnect();
}

export function renderReconnect() {
  const secs = Math.max(0, Math.ceil((S.reconnectAt - Date.now()) / 1000));
  const why = S.reconnectWhy ? `${S.reconnectWhy}; ` : "";
  setState(navigator.onLine === false ? "offline" : "reconnecting",
    `${why}${tr("why.retry_in", { s: secs })}`);
}

function onClose(code, reason, refusal) {
  S.welcomed = false;
  if (refusal && refusal.code === "bad_room") {
    setState("error", tr("why.bad_room_name")); // the connection stops ("failed")
    return;
  }
  if (refusal && refusal.code === "unauthorized" && staffToken) {
    setStaff(null); // a bad or expired role token: back to the guest session, if any
    showSendError(tr("staff.bad_token"), true);
  } else if (refusal && refusal.code === "unauthorized" && session) {
    // the stored token expired or is for another room: watch anonymously
    setSession(null);
    showSendError(tr("err.expired"), true);
  } else if (refusal && refusal.code === "banned") {
    showSendError(errorWords(refusal), true);
  }
  let why = tr("why.lost");
  if (code === 0) why = tr(reason === "bad address" ? "why.bad_gateway" : "why.unreachable");
  else if (code === 1013) why = tr("why.restarting");
  else if (code === 4000) why = tr("why.slow");
  else if (code === 1008) why = refusal ? errorWords(refusal) : tr("why.refused");
  else if (code === 1009) why = tr("why.too_big");
  S.reconnectWhy = why; // the reconnecting state that follows shows it
}

function onWelcome(msg) {
  S.welcomed = true;
  if (typeof msg.tick_ms === "number" && msg.tick_ms > 0) S.tickMs = msg.tick_ms;
  if (msg.limits && typeof msg.limits === "object") applyLimits(msg.limits);
  S.user = link.user;
  if (staffToken) renderWho();
  onDensities(msg.densities);
  setOnline(msg.online);
  clearTimeout(S.roomInfoTimer);
  S.roomInfoAt = Date.now();
  S.roomInfoTimer = setTimeout(readRoomInfo, ROOM_INFO_FIRST_MS);
  if (msg.pin && typeof msg.pin === "object") onNotice({ event: "pin", pin: msg.pin });
  readRecordings(); // a broadcast may have ended while we were away
  // comments never answered on an earlier connection: same nonce, so no double post
  const now = Date.now();
  for (const entry of pending.values()) {
    if (now - entry.created > PENDING_TTL_MS) {
      pending.delete(entry.nonce);
      showSendError(tr("err.no_answer"), true);
    } else {
      transmit(entry);
    }
  }
}

function onFrame(msg, { gap }) {
  if (gap) S.stats.gaps += 1;
  S.stats.frames += 1;
  if (typeof msg.online === "number") S.frameOnlineAt = Date.now();
  setOnline(msg.online);
  if (typeof msg.dropped === "number") S.stats.dropped += msg.dropped;
  if (Array.isArray(msg.retract)) retract(msg.retract);
  const items = Array.isArray(msg.items) ? msg.items : [];
  const accepted = [];
  for (const item of items) {
    if (accept(item, false)) accepted.push(item);
  }
  showFrame(accepted); // spread over the tick, as the server sent them
}

function onAck(msg) {
  const entry = pending.get(msg.nonce);
  if (!entry) return;
  pending.delete(msg.nonce);
  if (typeof msg.id !== "string") return;
  const user = S.user || (session && session.user) || {};
  if (msg.code === "held") { // stored for review: not shown to the room (nor here) yet
    showSendError(tr("held"), false);
    return;
  }
  const item = { id: msg.id, uid: user.uid, nick: user.nick, text: entry.text,
    color: entry.color, mode: entry.mode, ts: Date.now(), prio: 0,
    role: STAFF_ROLES.has(user.role) ? user.role : undefined };
  if (accept(item, true)) renderer.add(item, true);
  if (!S.cooldownUntil) clearSendError();
}

function onError(msg, { handshake }) {
  const code = typeof msg.code === "string" ? msg.code : "error";
  if (handshake) { // a refusal: the close that follows (its ``refusal``) decides what to do
    setState("error", errorWords(msg));
    return;
  }
  const entry = msg.nonce ? pending.get(msg.nonce) : null;
  if (entry && AUTO_RETRY_CODES.has(code) && entry.tries < 4) {
    const wait = Math.max(250, Number(msg.retry_after_ms) || 1000);
    showSendError(`${errorWords(msg)} ${tr("err.retrying_in", { s: (wait / 1000).toFixed(1) })}`,
      false);
    setTimeout(() => { if (pending.has(entry.nonce)) transmit(entry); }, wait);
    return;
  }
  if (entry) {
    pending.delete(entry.nonce);
    if (["unauthorized", "rate_limited", "slow_mode", "too_long", "blocked",
      "login_required"].includes(code)
        && !el.sendText.value) {
      el.sendText.value = entry.text; // let the viewer edit or resend it
      updateCount();
    }
  }
  if ((code === "rate_limited" || code === "slow_mode") && Number(msg.retry_after_ms) > 0) {
    S.cooldownUntil = Date.now() + Number(msg.retry_after_ms);
    S.cooldownCode = code;
    renderCooldown();
    clearTimeout(S.cooldownTimer);
    S.cooldownTimer = setTimeout(renderCooldown, Number(msg.retry_after_ms) + 1);
    return;
  }
  showSendError(errorWords(msg), true);
}

/** The timers: cooldown and reconnect countdowns, the quiet room's count; and
 *  reconnecting when the network or the tab comes back. */
export function startConnection() {
  setInterval(() => {
    if (S.cooldownUntil) renderCooldown();
    if (link.waiting && S.state !== "connected") renderReconnect();
    if (S.welcomed && Date.now() - S.roomInfoAt > ROOM_INFO_EVERY_MS) {
      S.roomInfoAt = Date.now();
      if (Date.now() - S.frameOnlineAt > ROOM_INFO_EVERY_MS / 2) readRoomInfo();
    }
  }, 250);
  window.addEventListener("online", () => { if (!link.socket && !R.on) reconnectNow(); });
  window.addEventListener("offline", () => { if (!link.socket && !R.on) renderReconnect(); });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && link.waiting) reconnectNow();
  });
  if (R.on) return; // a replay needs no connection
  if (!ROOM_RE.test(room)) {
    setState("error", tr("why.room_rule"));
    return;
  }
  link.start();
}
