/* The player's shared state: its constants, the page's elements, the room from the address,
 * the viewer's stored settings, session and staff token, and the connection's and replay's
 * state objects. Every other module of the player imports from here; this one imports
 * none of them but staff.js (so it is evaluated first and holds no cycle).
 *
 * ``settings``, ``session`` and ``staffToken`` are live bindings: other modules read them
 * and change them only through ``assignSettings``, ``assignSession``, ``assignStaffToken``.
 */

import { Staff } from "./staff.js";

// the helpers this page shares with the console (common.js, a classic script loaded first)
export const { ROOM_RE, COLOR_RE, $, load, save } = window.DanmakuCommon;
// every string the viewer reads comes from the catalogue (i18n.js, a classic script)
export const I18N = window.DanmakuI18n;
export const tr = I18N.t;
export const numberLocale = I18N.locale;

// ---- constants ----------------------------------------------------------------------------
export const SETTINGS_KEY = "danmaku.settings.v1";
export const SESSION_KEY = "danmaku.session.v1";
export const SEND_KEY = "danmaku.send.v1";
export const AREAS = { full: 1, half: 0.5, quarter: 0.25 };
export const DENSITIES = [1, 0.5, 0.25]; // the menu before the first welcome (and in replay)
export const DEFAULTS = Object.freeze({
  on: true, opacity: 1, speed: 1, fontSize: 24, area: "full", density: 1,
  showTop: true, showBottom: true, blockWords: [], blockUsers: [],
});
export const SEEN_CAP = 20000;        // ids remembered for de-duplication
export const RENDERED_CAP = 5000;     // ids remembered for the test hook
export const MIRROR_CAP = 12;         // entries of the screen-reader mirror
export const PING_EVERY_MS = 15000;
// no message at all this long: the socket is dead (?dead_after_ms= overrides it, for tests)
export const DEAD_AFTER_MS = (() => {
  const v = Number(new URLSearchParams(location.search).get("dead_after_ms"));
  return Number.isFinite(v) && v >= 1000 ? v : 35000;
})();
export const ROOM_INFO_FIRST_MS = 1200; // after the gateway's presence round has counted us
export const ROOM_INFO_EVERY_MS = 10000; // a quiet room sends no frames: read the count instead
export const BACKOFF_BASE_MS = 400;
export const BACKOFF_MAX_MS = 15000;
export const STABLE_MS = 3000;        // a connection this old resets the backoff
export const PENDING_TTL_MS = 120000; // un-acked comments are resent within this window
export const AUTO_RETRY_CODES = new Set(["overloaded", "unavailable"]);
export const BROADCAST_RE = /^[0-9a-f]{1,16}$/;
export const JUMP_MS = 1500;          // replay: a clock jump bigger than this is taken as a seek
export const REPLAY_RATES = [0.5, 0.75, 1, 1.25, 1.5, 2];
export const REPORT_REASONS = ["spam", "harassment", "hate", "sexual", "other"];
export const STAFF_ROLES = new Set(["moderator", "streamer", "admin"]);
export const TIMEOUT_S = 600;         // the chat menu's "time out 10 min"
export const CHAT_CAP = 300;          // rows kept in the chat list

export const el = {
  roomName: $("room-name"), online: $("online"), onlineN: $("online-n"), conn: $("conn"),
  connText: $("conn-text"),
  stage: $("stage"), pattern: $("pattern"), video: $("video"), overlay: $("overlay"),
  banner: $("banner"), bannerTag: $("banner-tag"), bannerText: $("banner-text"),
  toast: $("toast"), live: $("live"),
  nickForm: $("nick-form"), nickInput: $("nick-input"), who: $("who"), whoNick: $("who-nick"),
  whoChange: $("who-change"), sendForm: $("send-form"), sendText: $("send-text"),
  sendColor: $("send-color"), sendMode: $("send-mode"), sendCount: $("send-count"),
  sendButton: $("send-button"), sendError: $("send-error"), toggleOn: $("toggle-on"),
  setOn: $("set-on"), setOpacity: $("set-opacity"), setSpeed: $("set-speed"),
  setFont: $("set-font"), setArea: $("set-area"), setDensity: $("set-density"),
  setTop: $("set-top"), setBottom: $("set-bottom"), setWords: $("set-words"),
  setUsers: $("set-users"), outOpacity: $("out-opacity"), outSpeed: $("out-speed"),
  outFont: $("out-font"),
  replayInfo: $("replay-info"), replayTitle: $("replay-title"), replayBar: $("replay-bar"),
  rpPlay: $("rp-play"), rpSeek: $("rp-seek"), rpTime: $("rp-time"), rpRate: $("rp-rate"),
  rpMute: $("rp-mute"), rpCount: $("rp-count"),
  chat: $("chat"), chatList: $("chat-list"), chatMore: $("chat-more"), chatMenu: $("chat-menu"),
  langSwitch: $("lang-switch"), player: $("player"), settings: $("settings"),
  whoRole: $("who-role"), staffOut: $("staff-out"), staff: $("staff"), staffForm: $("staff-form"),
  staffToken: $("staff-token"), roomStatus: $("room-status"),
  setReset: $("set-reset"), setClose: $("set-close"), controls: $("controls"),
  vcPlay: $("vc-play"), vcMute: $("vc-mute"), vcVolume: $("vc-volume"),
  vcSettings: $("vc-settings"), vcPip: $("vc-pip"), vcFull: $("vc-full"),
  replayLink: $("replay-latest"),
};
// prefers-reduced-motion: nothing flies; a scrolling comment is shown still, at the top
export const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

// ---- stored settings ----------------------------------------------------------------------
export const clamp = (x, lo, hi, dflt) => (Number.isFinite(x) ? Math.min(hi, Math.max(lo, x)) : dflt);
const strList = (v) => (Array.isArray(v) ? v : [])
  .filter((s) => typeof s === "string").map((s) => s.trim()).filter(Boolean).slice(0, 200);

export function sanitizeSettings(raw) {
  const s = raw && typeof raw === "object" ? raw : {};
  return {
    on: typeof s.on === "boolean" ? s.on : DEFAULTS.on,
    opacity: clamp(Number(s.opacity), 0.1, 1, DEFAULTS.opacity),
    speed: clamp(Number(s.speed), 0.5, 2, DEFAULTS.speed),
    fontSize: Math.round(clamp(Number(s.fontSize), 14, 48, DEFAULTS.fontSize)),
    area: Object.hasOwn(AREAS, s.area) ? s.area : DEFAULTS.area,
    // a level the gateway offered (welcome.densities); snapped to its levels on welcome
    density: Number(s.density) > 0 && Number(s.density) <= 1 ? Number(s.density)
      : DEFAULTS.density,
    showTop: typeof s.showTop === "boolean" ? s.showTop : DEFAULTS.showTop,
    showBottom: typeof s.showBottom === "boolean" ? s.showBottom : DEFAULTS.showBottom,
    blockWords: strList(s.blockWords),
    blockUsers: strList(s.blockUsers),
  };
}

// ---- state --------------------------------------------------------------------------------
export const params = new URLSearchParams(location.search);
export const room = params.get("room") || "lobby";
export const broadcast = params.get("broadcast"); // set: replay mode

export let settings = sanitizeSettings(load(SETTINGS_KEY, null));
/** Replace the display settings (sanitized) and keep them. */
export function assignSettings(next) {
  settings = sanitizeSettings(next);
  save(SETTINGS_KEY, settings);
  return settings;
}

export let session = (() => {
  const s = load(SESSION_KEY, null);
  return s && typeof s.token === "string" && s.user ? s : null;
})();
/** The guest session ({token, user}) or null, kept across visits. */
export function assignSession(value) {
  session = value;
  save(SESSION_KEY, value);
}

// a staff member's role token (staff.js): this tab only, used before the guest session
export let staffToken = Staff.load();
export function assignStaffToken(token) { staffToken = token; }

/** The token this viewer connects and calls the API with: staff, else guest, else none. */
export const currentToken = () => staffToken || (session ? session.token : null);
export const sendPrefs = load(SEND_KEY, null) || {};

// the socket, its resume point (lastSeq, epoch) and the gateway choice live in the
// connection (connection.js' ``link``, a DanmakuOverlay.Connection)
export const S = {
  state: "connecting", detail: "", config: null, welcomed: false,
  reconnectAt: 0, reconnectWhy: "", online: null, user: null, tickMs: 100,
  limits: { max_text_chars: 100, max_text_bytes: 300 },
  cooldownUntil: 0, cooldownCode: "", nonceCounter: 0,
  frameOnlineAt: 0, roomInfoTimer: 0, roomInfoAt: 0, densities: DENSITIES,
  sessionRefusal: "", cardPin: null,
  stats: { frames: 0, items: 0, dupFrames: 0, dupItems: 0, gaps: 0, dropped: 0,
    skipped: 0, blocked: 0, retracted: 0, rendered: 0 },
  connects: [], reports: [],
};
export const pending = new Map();     // nonce -> {nonce, text, color, mode, created, tries}
export const seen = new Set();        // ids accepted for display (insertion-ordered, capped)
export const retracted = new Set();   // ids deleted by moderators
export const rendered = [];           // ids put on screen, in order (for the test hook)
export const R = {                   // replay mode (see replay.js)
  on: broadcast !== null, media: null, clock: null, comments: [], loaded: false,
  cursor: 0, now: 0, last: null, resync: true, meta: null, attempts: 0,
  shown: [],          // [id, media ms] of comments put on screen (test hook)
};

// ---- small helpers ------------------------------------------------------------------------
export const normText = (t) => String(t).split(/\s+/).filter(Boolean).join(" ");
export const codePoints = (t) => Array.from(t).length;
export const utf8Len = (t) => new TextEncoder().encode(t).length;
export const roomPath = (rest) => `/api/rooms/${encodeURIComponent(room)}/${rest}`;
export const isOwn = (item) => Boolean(S.user && item.uid === S.user.uid);
export const modeOf = (item) => (item.mode === "top" || item.mode === "bottom" ? item.mode
  : reducedMotion.matches ? "top" : "scroll");

export function newNonce() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  S.nonceCounter += 1;
  return `c${S.nonceCounter.toString(36)}-${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
}

export function remember(id) {
  seen.add(id);
  if (seen.size > SEEN_CAP) {
    const it = seen.values();
    for (let i = 0; i < SEEN_CAP / 4; i++) seen.delete(it.next().value);
  }
}

let toastTimer = 0;
export function toast(text, ms = 4000) {
  el.toast.textContent = text;
  el.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.toast.hidden = true; }, ms);
}

/** m:ss (or m:ss.s) of a time in seconds. */
export function clockText(secs, tenths) {
  const s = Math.max(0, Number.isFinite(secs) ? secs : 0);
  const m = Math.floor(s / 60);
  const rest = s - m * 60;
  const ss = tenths ? rest.toFixed(1).padStart(4, "0")
    : String(Math.floor(rest)).padStart(2, "0");
  return `${m}:${ss}`;
}
