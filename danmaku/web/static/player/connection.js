/* The connection and resume: where to connect (the gateway hint, else /api/config), the
 * WebSocket with jittered exponential backoff, resuming after the last frame seq it saw
 * (since, with the room's epoch), frames de-duplicated by seq, the connection's state in
 * words, the online count (frames, else GET /api/rooms/R in a quiet room), pings and the
 * silent-socket check.
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

/** Where to connect. The gateway hint's ``urls`` in order, skipping those that failed
 *  since the last welcome; /api/config's list: a random one first, then the next one
 *  after every failure. Either way a dead gateway is left behind without a balancer. */
function pickGateway() {
  const { urls, via } = S.route;
  if (via === "hint") {
    const fresh = urls.find((u) => !S.failedUrls.has(u));
    if (fresh) return fresh;
    S.failedUrls.clear();
    return urls[0];
  }
  if (S.gateway < 0) S.gateway = Math.floor(Math.random() * urls.length);
  return urls[S.gateway % urls.length];
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

export async function connect() {
  clearTimeout(S.reconnectTimer);
  S.reconnectTimer = 0;
  if (!ROOM_RE.test(room)) {
    setState("error", tr("why.room_rule"));
    return;
  }
  if (S.ws) return;
  const id = ++S.connId;
  if (!S.config || S.attempts >= 3) { // after repeated failures the gateway may have moved
    try {
      S.config = await fetchConfig();
    } catch {
      if (id !== S.connId) return;
      if (!S.config) { scheduleReconnect(tr("why.unreachable")); return; }
    }
    if (id !== S.connId) return;
  }
  if (!S.route || S.routeStale) { // first, and after every failure: ask where to go
    S.route = await window.DanmakuOverlay.gatewayUrls("", room, async () => configUrls());
    S.routeStale = false;
    if (id !== S.connId) return;
  }
  let url;
  try {
    url = new URL(pickGateway(), location.href);
  } catch {
    url = new URL(defaultWsUrl());
  }
  S.gatewayUrl = url.href;
  url.searchParams.set("room", room);
  if (currentToken()) url.searchParams.set("token", currentToken());
  if (S.lastSeq !== null) {
    url.searchParams.set("since", String(S.lastSeq));
    // the room's history numbering this seq belongs to (welcome.epoch): a reset room
    // answers resume_failed rather than replaying frames of another numbering
    if (S.epoch) url.searchParams.set("epoch", S.epoch);
  }
  url.searchParams.set("density", String(settings.density));
  setState(S.attempts ? "reconnecting" : "connecting");
  let ws;
  try {
    ws = new WebSocket(url.href);
  } catch {
    scheduleReconnect(tr("why.bad_gateway"));
    return;
  }
  S.ws = ws;
  S.welcomed = false;
  S.handshakeError = null;
  S.lastRx = Date.now();
  S.connects.push({ since: S.lastSeq, density: settings.density, token: Boolean(currentToken()),
    staff: Boolean(staffToken),
    gateway: url.host, via: S.route.via, at: Date.now() });
  if (S.connects.length > 50) S.connects.shift();
  ws.onmessage = (ev) => {
    if (id !== S.connId) return;
    S.lastRx = Date.now();
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg && typeof msg === "object") onMessage(msg);
  };
  ws.onclose = (ev) => {
    if (id !== S.connId) return;
    onClose(ev.code, ev.reason);
  };
  ws.onerror = () => { /* a close event follows */ };
}

/** Drop the current socket without triggering the close handler's reconnect. */
function detach(code = 1000, reason = "") {
  const ws = S.ws;
  S.ws = null;
  S.connId += 1;
  S.welcomed = false;
  if (ws) {
    try { ws.close(code, reason); } catch { /* already closed */ }
  }
}

export function reconnectNow() {
  detach();
  S.attempts = 0;
  connect();
}

function scheduleReconnect(why) {
  clearTimeout(S.reconnectTimer);
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(S.attempts, 10));
  const delay = Math.round(cap / 2 + Math.random() * (cap / 2)); // "equal jitter"
  S.attempts += 1;
  if (S.gateway >= 0) S.gateway += 1; // try the next gateway (when there are several)
  if (S.gatewayUrl) S.failedUrls.add(S.gatewayUrl);
  S.routeStale = true; // ask the hint again before the next try
  S.reconnectAt = Date.now() + delay;
  S.reconnectWhy = why || "";
  renderReconnect();
  S.reconnectTimer = setTimeout(connect, delay);
}

export function renderReconnect() {
  const secs = Math.max(0, Math.ceil((S.reconnectAt - Date.now()) / 1000));
  const why = S.reconnectWhy ? `${S.reconnectWhy}; ` : "";
  setState(navigator.onLine === false ? "offline" : "reconnecting",
    `${why}${tr("why.retry_in", { s: secs })}`);
}

function onClose(code, reason) {
  S.ws = null;
  const wasWelcomed = S.welcomed;
  S.welcomed = false;
  if (wasWelcomed && Date.now() - S.openedAt > STABLE_MS) S.attempts = 0;
  const refusal = S.handshakeError;
  if (refusal && refusal.code === "bad_room") {
    setState("error", tr("why.bad_room_name"));
    return;
  }
  if (refusal && refusal.code === "unauthorized" && staffToken) {
    setStaff(null); // a bad or expired role token: back to the guest session, if any
    showSendError(tr("staff.bad_token"), true);
  } else if (refusal && refusal.code === "unauthorized" && session) {
    // the stored token expired or is for another room: watch anonymously
    setSession(null);
    showSendError(tr("err.expired"), true);
  } else if (refusal && refusal.code === "bad_request" && S.lastSeq !== null) {
    S.lastSeq = null;
  } else if (refusal && refusal.code === "banned") {
    showSendError(errorWords(refusal), true);
  }
  let why = tr("why.lost");
  if (code === 1013) why = tr("why.restarting");
  else if (code === 4000) why = tr("why.slow");
  else if (code === 1008) why = refusal ? errorWords(refusal) : tr("why.refused");
  else if (code === 1009) why = tr("why.too_big");
  scheduleReconnect(why);
}

function onMessage(msg) {
  switch (msg.type) {
    case "welcome": return onWelcome(msg);
    case "frame": return onFrame(msg);
    case "ack": return onAck(msg);
    case "error": return onError(msg);
    case "notice": return onNotice(msg);
    default: return undefined; // pong and anything newer
  }
}

function onWelcome(msg) {
  S.welcomed = true;
  S.failedUrls.clear();
  S.openedAt = Date.now();
  if (typeof msg.tick_ms === "number" && msg.tick_ms > 0) S.tickMs = msg.tick_ms;
  if (msg.limits && typeof msg.limits === "object") applyLimits(msg.limits);
  S.user = msg.user && typeof msg.user === "object" ? msg.user : null;
  if (typeof msg.epoch === "string" && msg.epoch) {
    // another epoch: the room's history was reset, its seqs are a new numbering
    if (S.epoch && msg.epoch !== S.epoch && typeof msg.seq === "number") S.lastSeq = msg.seq;
    S.epoch = msg.epoch; // resume with it
  }
  if (staffToken) renderWho();
  if (S.lastSeq === null && typeof msg.seq === "number") S.lastSeq = msg.seq;
  onDensities(msg.densities);
  setOnline(msg.online);
  setState("connected");
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

function onFrame(msg) {
  if (typeof msg.seq !== "number") return;
  if (S.lastSeq !== null && msg.seq <= S.lastSeq) {
    S.stats.dupFrames += 1;
    return;
  }
  if (S.lastSeq !== null && msg.seq > S.lastSeq + 1) S.stats.gaps += 1;
  S.lastSeq = msg.seq;
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

function onError(msg) {
  const code = typeof msg.code === "string" ? msg.code : "error";
  if (!S.welcomed && !msg.nonce) {
    S.handshakeError = msg; // the close that follows decides what to do
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

/** The timers: cooldown and reconnect countdowns, the quiet room's count, the dead-socket
 *  check, pings; and reconnecting when the network or the tab comes back. */
export function startConnection() {
  setInterval(() => {
    if (S.cooldownUntil) renderCooldown();
    if (S.reconnectTimer && S.state !== "connected") renderReconnect();
    if (S.welcomed && Date.now() - S.roomInfoAt > ROOM_INFO_EVERY_MS) {
      S.roomInfoAt = Date.now();
      if (Date.now() - S.frameOnlineAt > ROOM_INFO_EVERY_MS / 2) readRoomInfo();
    }
    // a socket that has gone silent (no frame, no pong) is dead: start over
    const ws = S.ws;
    if (ws && S.welcomed && Date.now() - S.lastRx > DEAD_AFTER_MS) {
      detach(4001, "no data");
      scheduleReconnect(tr("why.lost"));
    }
  }, 250);
  setInterval(() => {
    const ws = S.ws;
    if (ws && S.welcomed && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "ping", nonce: `p${Date.now().toString(36)}` }));
    }
  }, PING_EVERY_MS);
  window.addEventListener("online", () => { if (!S.ws && !R.on) reconnectNow(); });
  window.addEventListener("offline", () => { if (!S.ws && !R.on) renderReconnect(); });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !S.ws && S.reconnectTimer) reconnectNow();
  });
  if (!R.on) connect(); // a replay needs no connection
}
