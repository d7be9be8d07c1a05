/* danmaku web player: plain modern JS, no build step, nothing fetched from elsewhere.
 *
 * - Connects to the gateway the hint names (GET /api/rooms/{room}/gateway: its urls in
 *   order; /api/config's ws_urls when it does not answer), asked again after every
 *   failure, with ?room=&token=&since=&density=; reconnects with jittered exponential
 *   backoff, resuming after the last frame seq it saw.
 * - Frames: items are spread evenly over the tick, de-duplicated by id (and frames by seq),
 *   filtered by the viewer's block lists, and placed in lanes: a scrolling comment takes a
 *   lane only when it will not catch the one ahead; top/bottom comments stay still.
 * - Comments are DOM elements moved by the Web Animations API (CSS transforms, on the
 *   compositor). Text from the network is only ever set with textContent.
 * - Sending: a guest token from POST /api/session; an ack shows the own comment at once;
 *   un-acked comments are resent with the same nonce after a reconnect.
 * - Replay (?room=R&broadcast=ID[&src=URL]): no WebSocket and no sending. The broadcast's
 *   comments are fetched once from its JSON export and shown on the recording's clock with
 *   the same lanes, rendering and display settings as live (see "replay" below).
 * - window.danmaku is a small read-only hook for tests and debugging.
 */
"use strict";

(() => {
  // the helpers this page shares with the console (common.js, loaded first)
  const { ROOM_RE, COLOR_RE, $, load, save } = window.DanmakuCommon;
  // every string the viewer reads comes from the catalogue (i18n.js)
  const I18N = window.DanmakuI18n;
  const tr = I18N.t;

  // ---- constants ----------------------------------------------------------------------------
  const SETTINGS_KEY = "danmaku.settings.v1";
  const SESSION_KEY = "danmaku.session.v1";
  const SEND_KEY = "danmaku.send.v1";
  const AREAS = { full: 1, half: 0.5, quarter: 0.25 };
  const DENSITIES = [1, 0.5, 0.25]; // the menu before the first welcome (and in replay)
  const DEFAULTS = Object.freeze({
    on: true, opacity: 1, speed: 1, fontSize: 24, area: "full", density: 1,
    showTop: true, showBottom: true, blockWords: [], blockUsers: [],
  });
  const SCROLL_MS = 8000;        // time to cross the stage at speed 1
  const FIXED_MS = 4000;         // how long a top/bottom comment stays
  const GAP_PX = 24;             // least gap between two comments in a lane
  const MAX_WAIT_MS = 4000;      // a comment that finds no lane this long is skipped
  const STARVE_MS = 800;         // one waiting this long goes before those behind it
  const MAX_WAITING = 300;       // comments waiting for a lane (oldest ordinary dropped)
  const MAX_BACKLOG_MS = 1500;   // beyond this, a frame is shown at once, not spread
  const SEEN_CAP = 20000;        // ids remembered for de-duplication
  const RENDERED_CAP = 5000;     // ids remembered for the test hook
  const MIRROR_CAP = 12;         // entries of the screen-reader mirror
  const PING_EVERY_MS = 15000;
  // no message at all this long: the socket is dead (?dead_after_ms= overrides it, for tests)
  const DEAD_AFTER_MS = (() => {
    const v = Number(new URLSearchParams(location.search).get("dead_after_ms"));
    return Number.isFinite(v) && v >= 1000 ? v : 35000;
  })();
  const ROOM_INFO_FIRST_MS = 1200; // after the gateway's presence round has counted us
  const ROOM_INFO_EVERY_MS = 10000; // a quiet room sends no frames: read the count instead
  const BACKOFF_BASE_MS = 400;
  const BACKOFF_MAX_MS = 15000;
  const STABLE_MS = 3000;        // a connection this old resets the backoff
  const PENDING_TTL_MS = 120000; // un-acked comments are resent within this window
  const AUTO_RETRY_CODES = new Set(["overloaded", "unavailable"]);
  const BROADCAST_RE = /^[0-9a-f]{1,16}$/;
  const JUMP_MS = 1500;          // replay: a clock jump bigger than this is taken as a seek
  const REPLAY_RATES = [0.5, 0.75, 1, 1.25, 1.5, 2];
  const REPORT_REASONS = ["spam", "harassment", "hate", "sexual", "other"];
  const STAFF_ROLES = new Set(["moderator", "streamer", "admin"]);
  const TIMEOUT_S = 600;         // the chat menu's "time out 10 min"
  const CHAT_CAP = 300;          // rows kept in the chat list

  const el = {
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
  };
  const VIDEO = window.DanmakuVideo;
  const CARDS = window.DanmakuCards;     // paid, gift and system items (cards.js)
  const DENSITY = window.DanmakuDensity; // the density menu from welcome.densities
  // prefers-reduced-motion: nothing flies; a scrolling comment is shown still, at the top
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

  // ---- stored settings ----------------------------------------------------------------------
  const clamp = (x, lo, hi, dflt) => (Number.isFinite(x) ? Math.min(hi, Math.max(lo, x)) : dflt);
  const strList = (v) => (Array.isArray(v) ? v : [])
    .filter((s) => typeof s === "string").map((s) => s.trim()).filter(Boolean).slice(0, 200);

  function sanitizeSettings(raw) {
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
  const params = new URLSearchParams(location.search);
  const room = params.get("room") || "lobby";
  const broadcast = params.get("broadcast"); // set: replay mode
  let settings = sanitizeSettings(load(SETTINGS_KEY, null));
  let session = load(SESSION_KEY, null);
  if (!session || typeof session.token !== "string" || !session.user) session = null;
  // a staff member's role token (staff.js): this tab only, used before the guest session
  const STAFF = window.DanmakuStaff;
  let staffToken = STAFF.load();
  /** The token this viewer connects and calls the API with: staff, else guest, else none. */
  const currentToken = () => staffToken || (session ? session.token : null);
  const sendPrefs = load(SEND_KEY, null) || {};

  const S = {
    state: "connecting", detail: "", config: null, ws: null, connId: 0, welcomed: false,
    openedAt: 0, lastRx: 0, attempts: 0, reconnectTimer: 0, reconnectAt: 0, gateway: -1,
    handshakeError: null, lastSeq: null, online: null, user: null, tickMs: 100,
    limits: { max_text_chars: 100, max_text_bytes: 300 },
    cooldownUntil: 0, cooldownCode: "", nonceCounter: 0,
    frameOnlineAt: 0, roomInfoTimer: 0, roomInfoAt: 0, epoch: "", densities: DENSITIES,
    sessionRefusal: "", cardPin: null,
    route: null, routeStale: true, gatewayUrl: "", failedUrls: new Set(), // the gateway hint
    stats: { frames: 0, items: 0, dupFrames: 0, dupItems: 0, gaps: 0, dropped: 0,
      skipped: 0, blocked: 0, retracted: 0, rendered: 0 },
    connects: [], reports: [],
  };
  const pending = new Map();     // nonce -> {nonce, text, color, mode, created, tries}
  const seen = new Set();        // ids accepted for display (insertion-ordered, capped)
  const retracted = new Set();   // ids deleted by moderators
  const rendered = [];           // ids put on screen, in order (for the test hook)
  const liveEls = new Map();     // id -> element on screen
  let incoming = [];             // {item, own, due}: waiting for their time in the tick
  let waiting = [];              // {item, own, enq, node, w}: waiting for a lane
  let spreadCursor = 0;
  const scrollLanes = [];        // per lane: {start, dur, w, W} of its last comment
  const topLanes = [];           // per lane: time it is free again
  const bottomLanes = [];
  const rowScroll = [];          // per row: {start, dur, w, W} of scrolling comments on it
  const rowHeld = [];            // per row: until when a still comment holds it
  const R = {                   // replay mode (see "replay" below)
    on: broadcast !== null, media: null, clock: null, comments: [], loaded: false,
    cursor: 0, now: 0, last: null, resync: true, meta: null, attempts: 0,
    running: new Map(), // node -> {anim, start, end} on the media clock
    shown: [],          // [id, media ms] of comments put on screen (test hook)
  };

  // ---- the chat list (chatlist.js) and what its menu does -----------------------------------
  const chat = new window.DanmakuChatList({
    list: el.chatList, pill: el.chatMore, menu: el.chatMenu, t: tr, locale: () => numberLocale(),
    cap: CHAT_CAP,
    actions: {
      isOwn: (item) => isOwn(item),
      canModerate: () => Boolean(staffToken && S.user && STAFF_ROLES.has(S.user.role)),
      reasons: () => {
        const listed = S.config && Array.isArray(S.config.report_reasons)
          ? S.config.report_reasons.filter((r) => typeof r === "string" && I18N.has("en", `reason.${r}`))
          : [];
        return listed.length ? listed : REPORT_REASONS;
      },
      copy: (item) => copyText(item.text),
      block: (item) => blockUser(item),
      report: (item, reason) => report(item, reason),
      remove: (item) => staffCall("DELETE", `comments/${encodeURIComponent(item.id)}`, null,
        () => { retract([item.id]); toast(tr("act.deleted")); }),
      timeout: (item) => staffCall("POST", "bans",
        { uid: item.uid, duration_s: TIMEOUT_S, reason: "" },
        () => toast(tr("act.timed_out", { nick: item.nick || item.uid }))),
    },
  });

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      toast(tr("act.copied"));
    } catch {
      // no clipboard permission (an insecure page, an old browser): a selected textarea
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      let ok = false;
      try { ok = document.execCommand("copy"); } catch { ok = false; }
      area.remove();
      toast(tr(ok ? "act.copied" : "act.copy_failed"));
    }
  }

  /** Block a user on this device: kept in the display settings (localStorage) by uid. */
  function blockUser(item) {
    if (typeof item.uid !== "string" || !item.uid) return;
    if (!settings.blockUsers.includes(item.uid)) {
      updateSettings({ blockUsers: [...settings.blockUsers, item.uid] });
    }
    chat.removeUser(item.uid);
    toast(tr("act.blocked", { nick: item.nick || item.uid }));
  }

  const roomPath = (rest) => `/api/rooms/${encodeURIComponent(room)}/${rest}`;

  /** POST /api/rooms/{room}/reports with the viewer's token; answers in the viewer's words. */
  async function report(item, reason) {
    if (!currentToken()) {
      toast(tr("act.report_login"), 6000);
      return;
    }
    let r;
    try {
      r = await fetch(roomPath("reports"), {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${currentToken()}` },
        body: JSON.stringify({ comment_id: item.id, reason }),
      });
    } catch {
      toast(tr("act.net"));
      return;
    }
    S.reports.push({ id: item.id, reason, status: r.status });
    if (S.reports.length > 50) S.reports.shift();
    if (r.ok) toast(tr("act.reported"));
    else if (r.status === 429) {
      const s = Math.max(1, Number(r.headers.get("Retry-After")) || 1);
      toast(tr("act.report_wait", { s }), 6000);
    } else toast(tr("act.report_failed", { status: r.status }), 6000);
  }

  /** A moderation call with the signed-in staff token (the existing moderation API). */
  async function staffCall(method, rest, body, onOk) {
    if (!staffToken) return;
    let r;
    try {
      r = await fetch(roomPath(rest), {
        method,
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${staffToken}` },
        body: body === null ? undefined : JSON.stringify(body),
      });
    } catch {
      toast(tr("act.net"));
      return;
    }
    if (r.ok) onOk();
    else toast(tr("act.staff_failed", { status: r.status }), 6000);
  }

  // ---- small helpers ------------------------------------------------------------------------
  const normText = (t) => String(t).split(/\s+/).filter(Boolean).join(" ");
  const codePoints = (t) => Array.from(t).length;
  const utf8Len = (t) => new TextEncoder().encode(t).length;

  function newNonce() {
    const b = new Uint8Array(12);
    crypto.getRandomValues(b);
    S.nonceCounter += 1;
    return `c${S.nonceCounter.toString(36)}-${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
  }

  function remember(id) {
    seen.add(id);
    if (seen.size > SEEN_CAP) {
      const it = seen.values();
      for (let i = 0; i < SEEN_CAP / 4; i++) seen.delete(it.next().value);
    }
  }

  function isDark(hex) {
    const n = parseInt(hex.slice(1), 16);
    const r = (n >> 16) & 255, g = (n >> 8) & 255, b = n & 255;
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255 < 0.15; // black, navy: a light outline
  }

  let toastTimer = 0;
  function toast(text, ms = 4000) {
    el.toast.textContent = text;
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.toast.hidden = true; }, ms);
  }

  const numberLocale = I18N.locale;
  /** The room's settings as GET /api/rooms/{room} gives them (``effective``: with the
   *  server defaults): the stream to play, unless ?src= chose one. */
  function onRoomSettings(roomSettings, effective) {
    S.roomSettings = roomSettings;
    renderRoomStatus();
    const pick = (o) => (o && typeof o.stream_url === "string" ? o.stream_url : "");
    const url = pick(roomSettings) || pick(effective);
    if (!params.get("src") && url !== V.url) playVideo(url);
  }

  // ---- connection state ---------------------------------------------------------------------
  function setState(state, detail = "") {
    S.state = state;
    S.detail = detail;
    el.conn.dataset.state = state;
    const word = tr(`state.${state}`);
    el.connText.textContent = detail ? `${word} · ${detail}` : word;
  }

  function setOnline(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return;
    // a connected viewer is one of those online, whatever a stale count says
    if (S.welcomed) n = Math.max(1, n);
    S.online = n;
    el.onlineN.textContent = n.toLocaleString(numberLocale());
  }

  /** GET /api/rooms/{room}: the online count over all gateways (a quiet room sends no
   *  frames to carry it) and the room's settings (stream_url). Failures are ignored: the
   *  next round or frame tries again. */
  async function readRoomInfo() {
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

  async function connect() {
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

  function reconnectNow() {
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

  function renderReconnect() {
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
    if (!accepted.length) return;
    const now = performance.now();
    let start = Math.max(now, spreadCursor);
    if (start - now > MAX_BACKLOG_MS) start = now; // a replayed burst: no spreading
    const step = S.tickMs / accepted.length;
    accepted.forEach((item, i) => {
      incoming.push({ item, own: isOwn(item), due: start + i * step });
    });
    spreadCursor = start + S.tickMs;
  }

  const isOwn = (item) => Boolean(S.user && item.uid === S.user.uid);

  /** Validate, de-duplicate and filter an item. True when it should be shown. */
  function accept(item, own) {
    if (!item || typeof item !== "object") return false;
    if (typeof item.id !== "string" || typeof item.text !== "string") return false;
    if (seen.has(item.id)) {
      S.stats.dupItems += 1;
      return false;
    }
    remember(item.id);
    S.stats.items += 1;
    if (retracted.has(item.id)) return false;
    if (!own && blockedItem(item)) {
      S.stats.blocked += 1;
      return false;
    }
    if (!R.on) chat.add(item, own); // the list: what was delivered, whatever the overlay shows
    return shows(item, own);
  }

  /** The viewer's filters: block lists, danmaku on/off, top/bottom. True when it shows. */
  function shows(item, own) {
    if (!own && blockedItem(item)) {
      S.stats.blocked += 1;
      return false;
    }
    if (!settings.on || document.hidden) return false;
    const mode = modeOf(item);
    if ((mode === "top" && !settings.showTop) || (mode === "bottom" && !settings.showBottom)) {
      return false;
    }
    return true;
  }

  const modeOf = (item) => (item.mode === "top" || item.mode === "bottom" ? item.mode
    : reducedMotion.matches ? "top" : "scroll");

  function blockedItem(item) {
    if (settings.blockUsers.length) {
      const nick = typeof item.nick === "string" ? item.nick.toLowerCase() : "";
      const uid = typeof item.uid === "string" ? item.uid.toLowerCase() : "";
      for (const u of settings.blockUsers) {
        const x = u.toLowerCase();
        if (x === nick || x === uid) return true;
      }
    }
    if (settings.blockWords.length) {
      const text = item.text.toLowerCase();
      for (const w of settings.blockWords) {
        if (text.includes(w.toLowerCase())) return true;
      }
    }
    return false;
  }

  function retract(ids) {
    const gone = new Set(ids.filter((x) => typeof x === "string"));
    if (!gone.size) return;
    for (const id of gone) {
      retracted.add(id);
      const node = liveEls.get(id);
      if (node) removeNode(node);
      S.stats.retracted += 1;
    }
    incoming = incoming.filter((e) => !gone.has(e.item.id));
    waiting = waiting.filter((e) => {
      if (!gone.has(e.item.id)) return true;
      e.node.remove();
      return false;
    });
    for (const p of Array.from(el.live.children)) {
      if (gone.has(p.dataset.id)) p.remove();
    }
    chat.retract(gone);
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
    if (accept(item, true)) incoming.push({ item, own: true, due: performance.now() });
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

  /** A duration in the viewer's words: "10 min", "3 h". */
  function durationWords(ms) {
    const sec = Math.max(1, Math.round(ms / 1000));
    if (sec < 90) return tr("dur.s", { n: sec });
    if (sec < 90 * 60) return tr("dur.min", { n: Math.round(sec / 60) });
    if (sec < 48 * 3600) return tr("dur.h", { n: Math.round(sec / 3600) });
    return tr("dur.d", { n: Math.round(sec / 86400) });
  }

  /** A ban in the viewer's words: "Timed out for 10 min: spam" (the reason a moderator
   *  gave, when there is one), or banned for good. */
  function banWords(msg) {
    const reason = typeof msg.reason === "string" && msg.reason.trim()
      ? `: ${msg.reason.trim().slice(0, 200)}` : "";
    if (msg.until === null) return `${tr("err.banned_for_good")}${reason}.`;
    const until = Number(msg.until);
    if (Number.isFinite(until) && until > 0) {
      const when = new Date(until).toLocaleTimeString(numberLocale(),
        { hour: "2-digit", minute: "2-digit" });
      return `${tr("err.timed_out_for", { d: durationWords(until - Date.now()) })}${reason}. `
        + tr("err.banned_until", { until: when });
    }
    return reason ? `${tr("err.banned_for_good")}${reason}.` : tr("err.banned");
  }

  /** The player's own words for an error code (server text is never shown as is). */
  function errorWords(msg) {
    const wait = Number(msg.retry_after_ms) > 0
      ? ` ${tr("err.try_again_in", { s: Math.max(1, Math.ceil(msg.retry_after_ms / 1000)) })}` : "";
    switch (msg.code) {
      case "rate_limited": return `${tr("err.rate_limited")}${wait}`;
      case "slow_mode": return `${tr("err.slow_mode")}${wait}`;
      case "banned": return banWords(msg);
      case "too_long": return tr("err.too_long", { n: S.limits.max_text_chars });
      case "blocked": case "empty": case "unauthorized": case "login_required": case "duplicate":
      case "overloaded": case "unavailable": case "bad_room": case "bad_request":
        return tr(`err.${msg.code}`);
      default: return tr("err.other", { code: String(msg.code || "?").slice(0, 40) });
    }
  }

  // ---- notices and the banner -----------------------------------------------------------------
  let bannerTimer = 0;
  function showBanner(tag, text, ms) {
    el.banner.classList.remove("paid");
    S.cardPin = null;
    el.bannerTag.textContent = tag;
    el.bannerText.textContent = text;
    el.banner.hidden = false;
    clearTimeout(bannerTimer);
    if (ms > 0) bannerTimer = setTimeout(hideBanner, ms);
  }
  /** A paid or gift pin: its card in the banner until the pin's ``until``. */
  function showCardBanner(pin, ms) {
    showBanner(tr("notice.pinned"), "", ms);
    el.banner.classList.add("paid");
    el.banner.style.setProperty("--card", CARDS.color(pin));
    el.bannerText.replaceChildren(CARDS.build(pin, tr, numberLocale()));
    S.cardPin = pin; // rebuilt in the viewer's words when the language changes
  }
  function hideBanner() {
    clearTimeout(bannerTimer);
    el.banner.hidden = true;
    el.banner.classList.remove("paid");
    S.cardPin = null;
    el.bannerText.textContent = "";
  }
  /** Who a notice is from: its role ("Moderator") when it carries one, never a raw
   *  ``role:uid``; else the nick. */
  function who(o) {
    if (typeof o.role === "string" && STAFF_ROLES.has(o.role)) {
      const nick = typeof o.by === "string" && o.by && !o.by.includes(":") ? ` ${o.by}` : "";
      return `${tr(`role.${o.role}`)}${nick}`;
    }
    for (const key of ["nick", "by"]) {
      if (typeof o[key] === "string" && o[key] && !/^[a-z]+:/.test(o[key])) return o[key];
    }
    return "";
  }
  function noticeText(msg) {
    for (const key of ["text", "message"]) {
      if (typeof msg[key] === "string" && msg[key]) {
        return who(msg) ? `${who(msg)}: ${msg[key]}` : msg[key];
      }
    }
    const c = msg.comment || msg.pin;
    if (c && typeof c === "object" && typeof c.text === "string") {
      return who(c) ? `${who(c)}: ${c.text}` : c.text;
    }
    return "";
  }
  function noticeTtl(msg) {
    // The gateway's pin: {event: "pin", pin: {text, by, ts, until}} (until in ms, or null)
    if (msg.pin && typeof msg.pin === "object" && Number(msg.pin.until) > 0) {
      return Math.max(1, Number(msg.pin.until) - Date.now());
    }
    if (Number(msg.ttl_ms) > 0) return Number(msg.ttl_ms);
    if (Number(msg.ttl_s) > 0) return Number(msg.ttl_s) * 1000;
    const exp = Number(msg.expires_at);
    if (exp > 0) return Math.max(1, (exp > 1e12 ? exp : exp * 1000) - Date.now());
    return 0;
  }
  function onNotice(msg) {
    const ev = typeof msg.event === "string" ? msg.event : "";
    if (ev === "resume_failed") {
      // a fresh start: live frames follow the notice's seq in its epoch (no false gap)
      if (typeof msg.seq === "number") S.lastSeq = msg.seq;
      if (typeof msg.epoch === "string" && msg.epoch) S.epoch = msg.epoch;
      toast(tr("toast.missed"));
      return;
    }
    if (ev === "pin" || ev === "pinned") {
      const pin = msg.pin && typeof msg.pin === "object" ? msg.pin : null;
      if (pin && CARDS.kindOf(pin)) {
        showCardBanner(pin, noticeTtl(msg));
        chat.notice(tr("notice.pinned"), CARDS.summary(pin, tr, numberLocale()), "pin");
        return;
      }
      const text = noticeText(msg);
      if (text) {
        showBanner(tr("notice.pinned"), text, noticeTtl(msg));
        chat.notice(tr("notice.pinned"), text, "pin");
      } else {
        hideBanner();
      }
      return;
    }
    if (ev === "unpin" || ev === "unpinned") {
      hideBanner();
      return;
    }
    const changes = msg.changes && typeof msg.changes === "object" ? msg.changes : null;
    if (ev === "settings" && changes) {
      if (Object.hasOwn(changes, "stream_url")) readRoomInfo(); // read the new stream whole
      S.roomSettings = { ...(S.roomSettings || {}), ...changes };
      renderRoomStatus();
      for (const line of settingsWords(changes)) chat.notice(tr("notice.settings"), line, "event");
      return;
    }
    const text = noticeText(msg);
    const tag = I18N.has("en", `notice.${ev}`) ? tr(`notice.${ev}`) : tr("notice.notice");
    if (text) {
      showBanner(tag, text, noticeTtl(msg) || 10000);
      chat.notice(tag, text, ev === "room_notice" ? "notice" : "event");
    }
  }

  // ---- the room's rules, in words (settings notices and the line beside the input) -----------
  /** What changed, one sentence each: {slow_mode_s: 10, mute: null} -> [...]. Only the
   *  settings viewers feel; the others (budget, ceilings) stay the staff's business. */
  function settingsWords(changes) {
    const out = [];
    for (const [key, v] of Object.entries(changes)) {
      if (key === "slow_mode_s") {
        out.push(Number(v) > 0 ? tr("room.slow_on", { s: Number(v) }) : tr("room.slow_off"));
      } else if (key === "mute") out.push(tr(v ? "room.mute_on" : "room.mute_off"));
      else if (key === "guests") {
        out.push(tr(v === "watch" || v === "off" ? "room.guests_watch" : "room.guests_comment"));
      } else if (key === "shield") out.push(tr(v ? "room.shield_on" : "room.shield_off"));
      else if (key === "stream_url") out.push(tr("room.stream"));
    }
    return out;
  }

  /** The rules in force now, beside the comment box (empty when there are none). */
  function renderRoomStatus() {
    const rs = S.roomSettings || {};
    const parts = [];
    if (rs.shield) parts.push(tr("room.shield_on"));
    if (Number(rs.slow_mode_s) > 0) parts.push(tr("room.slow_on", { s: Number(rs.slow_mode_s) }));
    if (rs.mute) parts.push(tr("room.mute_on"));
    if (rs.guests === "watch" || rs.guests === "off") parts.push(tr("room.guests_watch"));
    el.roomStatus.textContent = parts.join(" · ");
    el.roomStatus.hidden = !parts.length;
  }

  // ---- sending --------------------------------------------------------------------------------
  let errorIsCooldown = false;
  function showSendError(text, bad) {
    errorIsCooldown = false;
    el.sendError.textContent = text;
    el.sendError.classList.toggle("bad", Boolean(bad));
  }
  function clearSendError() {
    errorIsCooldown = false;
    el.sendError.textContent = "";
  }

  function renderCooldown() {
    const left = S.cooldownUntil - Date.now();
    if (left <= 0) {
      S.cooldownUntil = 0;
      el.sendButton.textContent = tr("send.send");
      if (errorIsCooldown) clearSendError();
      return;
    }
    // rounded up to a tenth: never "0.0 s" while there is still a wait
    const secs = (Math.ceil(left / 100) / 10).toFixed(1);
    el.sendButton.textContent = tr("send.seconds", { s: Math.ceil(left / 1000) });
    errorIsCooldown = true;
    el.sendError.classList.remove("bad");
    el.sendError.textContent = tr(S.cooldownCode === "slow_mode" ? "cool.slow_mode"
      : "cool.rate_limited", { s: secs });
  }

  function transmit(entry) {
    const ws = S.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !S.welcomed) {
      showSendError(tr("err.not_connected"), false);
      return;
    }
    entry.tries += 1;
    ws.send(JSON.stringify({ type: "comment", text: entry.text, nonce: entry.nonce,
      color: entry.color, mode: entry.mode }));
  }

  function sendComment() {
    if (R.on) return; // a recording takes no comments
    const text = normText(el.sendText.value);
    if (!text) {
      showSendError(tr("err.empty"), false);
      return;
    }
    if (S.cooldownUntil) {
      // while the button still shows the countdown, Enter waits with it (the button is
      // back to "Send" at the moment the wait ends: the timer set with the cooldown)
      renderCooldown();
      return;
    }
    if (!currentToken() && !(S.ws && S.welcomed)) {
      showSendError(errorWords({ code: "unauthorized" }), true);
      return;
    }
    const color = COLOR_RE.test(el.sendColor.value) ? el.sendColor.value.toLowerCase() : "#ffffff";
    const mode = ["scroll", "top", "bottom"].includes(el.sendMode.value) ? el.sendMode.value : "scroll";
    const entry = { nonce: newNonce(), text, color, mode, created: Date.now(), tries: 0 };
    pending.set(entry.nonce, entry);
    el.sendText.value = "";
    updateCount();
    clearSendError();
    transmit(entry);
  }

  function updateCount() {
    const text = normText(el.sendText.value);
    const n = codePoints(text);
    el.sendCount.textContent = `${n}/${S.limits.max_text_chars}`;
    el.sendCount.classList.toggle("over",
      n > S.limits.max_text_chars || utf8Len(text) > S.limits.max_text_bytes);
  }

  function setSession(value) {
    session = value;
    save(SESSION_KEY, value);
    renderWho();
  }

  function setStaff(token) {
    staffToken = token;
    if (token) STAFF.save(token);
    else STAFF.clear();
    renderWho();
  }

  function renderWho() {
    // staff: the name and role the server confirmed in welcome (else the token's, unverified)
    const claims = staffToken ? STAFF.claims(staffToken) || {} : null;
    const staffUser = staffToken && S.user && S.connects.length && S.connects.at(-1).staff
      ? S.user : claims;
    if (staffToken) {
      el.whoNick.textContent = String(staffUser.nick || staffUser.uid || staffUser.sub || "?");
      const role = STAFF_ROLES.has(staffUser.role) ? staffUser.role : "";
      el.whoRole.hidden = !role;
      el.whoRole.className = `chat-badge role-${role}`;
      el.whoRole.textContent = role ? tr(`role.${role}`) : "";
      el.who.hidden = false;
      el.nickForm.hidden = true;
      el.whoChange.hidden = true;
      el.staffOut.hidden = false;
      el.staff.hidden = true;
    } else if (session) {
      el.whoNick.textContent = session.user.nick;
      el.who.hidden = false;
      el.nickForm.hidden = true;
    } else {
      el.who.hidden = true;
      el.nickForm.hidden = false;
    }
    if (!staffToken) {
      el.whoRole.hidden = true;
      el.whoChange.hidden = false;
      el.staffOut.hidden = true;
      el.staff.hidden = false;
    }
  }

  function bindStaff() {
    el.staffForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = el.staffToken.value.trim();
      el.staffToken.value = "";
      if (!STAFF.valid(token)) {
        showSendError(tr("staff.bad_token"), true);
        return;
      }
      el.staff.open = false;
      setStaff(token);
      clearSendError();
      reconnectNow(); // the role token goes with the handshake; since= keeps our place
    });
    el.staffOut.addEventListener("click", () => {
      setStaff(null);
      reconnectNow();
    });
  }

  async function join(nick) {
    el.nickInput.disabled = true;
    try {
      const got = await window.DanmakuSession.start(nick, ROOM_RE.test(room) ? room : "", tr);
      S.sessionRefusal = got.code || "";
      if (got.error) {
        showSendError(got.error, true);
        return;
      }
      setSession({ token: got.token, user: got.user });
      clearSendError();
      reconnectNow(); // the token goes with the handshake; since= keeps our place
      el.sendText.focus();
    } finally {
      el.nickInput.disabled = false;
    }
  }

  // ---- rendering ------------------------------------------------------------------------------
  const geo = { W: 0, H: 0, laneH: 32 };
  const measure = document.createElement("div");
  measure.className = "overlay measure";
  measure.setAttribute("aria-hidden", "true");
  el.stage.appendChild(measure);
  measure.style.visibility = "hidden";

  function updateGeometry() {
    geo.W = el.stage.clientWidth;
    geo.H = el.stage.clientHeight;
    const line = Math.round(settings.fontSize * 1.25);
    geo.laneH = line + 6; // 2 px border top and bottom plus 2 px between lanes
    const root = document.documentElement.style;
    root.setProperty("--dm-font", `${settings.fontSize}px`);
    root.setProperty("--dm-line", `${line}px`);
  }

  function laneCount() {
    return Math.max(1, Math.floor((geo.H * AREAS[settings.area]) / geo.laneH));
  }

  function makeNode(item, own) {
    const node = document.createElement("div");
    node.className = "dm";
    node.dataset.id = item.id;
    node.dataset.mode = modeOf(item);
    if (typeof item.uid === "string") node.dataset.uid = item.uid;
    if (typeof item.nick === "string") node.dataset.nick = item.nick;
    const color = typeof item.color === "string" && COLOR_RE.test(item.color)
      ? item.color.toLowerCase() : "#ffffff";
    node.style.color = color;
    if (isDark(color)) node.classList.add("dark");
    if (own) node.classList.add("own");
    const prio = Number(item.prio) || 0;
    if (prio >= 2) node.classList.add("prio2");
    else if (prio >= 1) node.classList.add("prio1");
    if (CARDS.kindOf(item)) { // paid, gift, system: a card in its lane, not plain text
      node.classList.add("dm-card", `kind-${CARDS.kindOf(item)}`);
      node.appendChild(CARDS.build(item, tr, numberLocale()));
      return node;
    }
    node.appendChild(document.createTextNode(item.text));
    const count = Number(item.count);
    if (Number.isInteger(count) && count >= 2) {
      const c = document.createElement("span");
      c.className = "count";
      c.textContent = `×${count}`;
      node.appendChild(c);
    }
    return node;
  }

  /** Will a scrolling comment of width w, started now, stay clear of the lane's last one? */
  function scrollLaneFree(last, w, now, dur) {
    if (!last) return true;
    const elapsed = now - last.start;
    const vPrev = (last.W + last.w) / last.dur;
    if (elapsed * vPrev < last.w + GAP_PX) return false; // its tail is not in yet
    const remain = last.start + last.dur - now; // until it has left the stage
    if (remain <= 0) return true;
    const vNew = (geo.W + w) / dur;
    return geo.W - remain * vNew >= GAP_PX; // we would still be behind it when it leaves
  }

  /** Pixels of [X, X+w] that scrolling comments on ``row`` sweep over between now and until. */
  function sweptOverlap(row, X, w, now, until) {
    let cost = 0;
    for (const r of rowScroll[row] || []) {
      const end = r.start + r.dur;
      if (end <= now) continue;
      const v = (r.W + r.w) / r.dur;
      const x0 = r.W - (now - r.start) * v;
      const x1 = r.W - (Math.min(until, end) - r.start) * v;
      cost += Math.max(0, Math.min(Math.max(x0, x1) + r.w, X + w) - Math.max(Math.min(x0, x1), X));
    }
    return cost;
  }

  function place(entry, now) {
    const mode = modeOf(entry.item);
    const lanes = laneCount();
    const { W, H, laneH } = geo;
    const rows = Math.max(1, Math.floor(H / laneH));
    const w = entry.w;
    const node = entry.node;
    if (mode === "scroll") {
      const dur = SCROLL_MS / settings.speed;
      let lane = -1;
      for (let i = 0; i < lanes; i++) {
        if (rowHeld[i] > now) continue; // a still comment is shown on this row
        if (scrollLaneFree(scrollLanes[i], w, now, dur)) { lane = i; break; }
      }
      if (lane < 0) return false;
      const rec = { start: now, dur, w, W };
      scrollLanes[lane] = rec;
      rowScroll[lane] = (rowScroll[lane] || []).filter((r) => r.start + r.dur > now);
      rowScroll[lane].push(rec);
      const y = lane * laneH + 2;
      node.dataset.lane = String(lane);
      node.style.transform = `translate3d(${W}px, ${y}px, 0)`;
      show(entry, node);
      const anim = node.animate(
        [{ transform: `translate3d(${W}px, ${y}px, 0)` },
          { transform: `translate3d(${-w - 8}px, ${y}px, 0)` }],
        { duration: dur, easing: "linear", fill: "forwards" },
      );
      run(anim, node, now, dur); // on the same timeline the lane rule used
      return true;
    }
    // A still comment: top lanes count down from the first row, bottom lanes up from the
    // last, on the grid the scrolling lanes use. Among the first few free lanes, take the
    // one that scrolling comments cross least while it is shown, and keep new scrolling
    // comments off that row meanwhile.
    const table = mode === "top" ? topLanes : bottomLanes;
    const rowOf = (i) => (mode === "top" ? i : Math.max(0, rows - 1 - i));
    const x = Math.max(0, Math.round((W - w) / 2));
    let lane = -1;
    let best = Infinity;
    let candidates = 0;
    for (let i = 0; i < lanes && candidates < 4; i++) {
      if (table[i] > now) continue;
      candidates += 1;
      const cost = sweptOverlap(rowOf(i), x, w, now, now + FIXED_MS) + i * laneH;
      if (cost < best) { best = cost; lane = i; }
    }
    if (lane < 0) return false;
    table[lane] = now + FIXED_MS;
    const row = rowOf(lane);
    rowHeld[row] = Math.max(rowHeld[row] || 0, now + FIXED_MS);
    const y = row * laneH + 2;
    node.dataset.lane = String(lane);
    node.style.transform = `translate3d(${x}px, ${y}px, 0)`;
    show(entry, node);
    const anim = node.animate([{ opacity: 1 }, { opacity: 1, offset: 0.92 }, { opacity: 0 }],
      { duration: FIXED_MS, fill: "forwards" });
    run(anim, node, now, FIXED_MS);
    return true;
  }

  /** Start a comment's animation at ``start`` on the lane clock: the document timeline
   * live; in replay, the recording's clock (the animation is held and moved to the media
   * time each frame, so pause, seek and playback rate are followed exactly). */
  function run(anim, node, start, dur) {
    if (R.on) {
      anim.pause();
      anim.currentTime = Math.max(0, R.now - start);
      R.running.set(node, { anim, start, end: start + dur });
      return;
    }
    anim.startTime = start;
    anim.onfinish = () => removeNode(node);
  }

  function show(entry, node) {
    el.overlay.appendChild(node);
    liveEls.set(entry.item.id, node);
    rendered.push(entry.item.id);
    if (rendered.length > RENDERED_CAP) rendered.splice(0, rendered.length - RENDERED_CAP);
    S.stats.rendered += 1;
    if (R.on) {
      R.shown.push([entry.item.id, Math.round(R.now)]);
      if (R.shown.length > RENDERED_CAP) R.shown.splice(0, R.shown.length - RENDERED_CAP);
    }
    mirror(entry.item);
  }

  function removeNode(node) {
    if (liveEls.get(node.dataset.id) === node) liveEls.delete(node.dataset.id);
    R.running.delete(node);
    for (const a of node.getAnimations()) a.cancel();
    node.remove();
  }

  function clearScreen() {
    for (const node of Array.from(liveEls.values())) removeNode(node);
    for (const e of waiting) e.node.remove();
    waiting = [];
    incoming = [];
    for (const table of [scrollLanes, topLanes, bottomLanes, rowScroll, rowHeld]) table.length = 0;
  }

  function mirror(item) {
    const p = document.createElement("p");
    p.dataset.id = item.id;
    const who = typeof item.nick === "string" && item.nick ? `${item.nick}: ` : "";
    const count = Number(item.count) >= 2 ? ` (×${item.count})` : "";
    p.textContent = CARDS.kindOf(item) ? CARDS.summary(item, tr, numberLocale())
      : `${who}${item.text}${count}`;
    el.live.appendChild(p);
    while (el.live.childElementCount > MIRROR_CAP) el.live.firstElementChild.remove();
  }

  function pump(now) {
    if (incoming.length) {
      const due = [];
      const later = [];
      for (const e of incoming) (e.due <= now ? due : later).push(e);
      incoming = later;
      const fresh = [];
      for (const e of due) {
        const node = makeNode(e.item, e.own);
        measure.appendChild(node);
        const entry = { item: e.item, own: e.own, enq: now, node, w: 0 };
        fresh.push(entry);
        // own comments go first: the sender expects to see theirs at once
        if (e.own) waiting.unshift(entry);
        else waiting.push(entry);
      }
      for (const entry of fresh) entry.w = entry.node.offsetWidth; // one layout for all
    }
    if (!waiting.length) return;
    const still = [];
    let blocked = false;
    for (const entry of waiting) {
      // A long comment needs more room than a short one; without this, short ones behind
      // it would take every lane as it frees and starve it. So once an own comment, or
      // one that has waited a while, finds no lane, those behind it wait their turn.
      if (!blocked && place(entry, now)) continue;
      if (!blocked && (entry.own || now - entry.enq > STARVE_MS)) blocked = true;
      if (!entry.own && now - entry.enq > MAX_WAIT_MS) {
        entry.node.remove();
        S.stats.skipped += 1;
        continue;
      }
      still.push(entry);
    }
    while (still.length > MAX_WAITING) {
      const i = still.findIndex((e) => !e.own);
      const [gone] = still.splice(i < 0 ? 0 : i, 1);
      gone.node.remove();
      S.stats.skipped += 1;
    }
    waiting = still;
  }

  // ---- the test pattern -----------------------------------------------------------------------
  const pattern = { ctx: el.pattern.getContext("2d"), last: 0, w: 0, h: 0, dpr: 1, on: true };

  function resizePattern() {
    const dpr = Math.min(2, window.devicePixelRatio || 1);
    const w = Math.max(1, Math.round(el.stage.clientWidth * dpr));
    const h = Math.max(1, Math.round(el.stage.clientHeight * dpr));
    if (w !== pattern.w || h !== pattern.h) {
      el.pattern.width = w;
      el.pattern.height = h;
      Object.assign(pattern, { w, h, dpr });
    }
  }

  const BARS = ["#c0c0c0", "#c0c000", "#00c0c0", "#00c000", "#c000c0", "#c00000", "#0000c0"];
  function drawPattern(now) {
    if (!pattern.on || now - pattern.last < 33) return;
    pattern.last = now;
    const { ctx, w, h } = pattern;
    const clock = R.on ? R.clock : null; // replay without media: the pattern is the recording
    const t = clock ? clock.currentTime : now / 1000;
    const g = ctx.createLinearGradient(0, 0, w, h);
    const hue = (t * 12) % 360;
    g.addColorStop(0, `hsl(${hue}, 45%, 16%)`);
    g.addColorStop(1, `hsl(${(hue + 70) % 360}, 45%, 9%)`);
    ctx.fillStyle = g;
    ctx.fillRect(0, 0, w, h);
    // a faint grid drifting left
    const cell = Math.max(24, Math.round(h / 9));
    const off = (t * cell * 0.25) % cell;
    ctx.strokeStyle = "rgba(255,255,255,0.06)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let x = -off; x < w; x += cell) { ctx.moveTo(x, 0); ctx.lineTo(x, h); }
    for (let y = 0; y < h; y += cell) { ctx.moveTo(0, y); ctx.lineTo(w, y); }
    ctx.stroke();
    // muted colour bars along the bottom
    const barH = Math.round(h * 0.14);
    const bw = w / BARS.length;
    ctx.globalAlpha = 0.55;
    BARS.forEach((c, i) => { ctx.fillStyle = c; ctx.fillRect(i * bw, h - barH, bw + 1, barH); });
    ctx.globalAlpha = 1;
    // a ball bouncing around, so motion is obvious
    const r = Math.round(h * 0.06);
    const bx = r + (Math.abs(((t * 0.23) % 2) - 1)) * (w - 2 * r);
    const by = r + (Math.abs(((t * 0.37) % 2) - 1)) * (h - barH - 2 * r);
    const rg = ctx.createRadialGradient(bx - r / 3, by - r / 3, r / 6, bx, by, r);
    rg.addColorStop(0, "#ffd27a");
    rg.addColorStop(1, "#e0652f");
    ctx.fillStyle = rg;
    ctx.beginPath();
    ctx.arc(bx, by, r, 0, Math.PI * 2);
    ctx.fill();
    // caption and a clock
    ctx.fillStyle = "rgba(255,255,255,0.55)";
    ctx.font = `600 ${Math.round(h * 0.045)}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    ctx.fillText(clock ? tr("pattern.replay") : tr("pattern.test"),
      w / 2, h * 0.46);
    ctx.font = `${Math.round(h * 0.035)}px ui-monospace, monospace`;
    if (clock) {
      ctx.fillText(`${room} · ${clockText(t, true)} / ${clockText(clock.duration, true)}`,
        w / 2, h * 0.46 + h * 0.06);
      return;
    }
    const d = new Date();
    ctx.fillText(`${room} · ${d.toLocaleTimeString(numberLocale(), { hour12: false })}.${Math.floor(d.getMilliseconds() / 100)}`,
      w / 2, h * 0.46 + h * 0.06);
  }

  /** The ?src= video address (http, https or blob), or null after telling the viewer why. */
  function videoUrl(src) {
    let url;
    try {
      url = new URL(src, location.href);
    } catch {
      toast(tr("toast.bad_src"));
      return null;
    }
    if (!["http:", "https:", "blob:"].includes(url.protocol)) {
      toast(tr("toast.only_http"));
      return null;
    }
    return url;
  }

  // ---- the video: ?src=, else the room's stream_url (video.js plays HLS and files) ----------
  const V = { url: "", handle: null };

  function showPattern() {
    el.video.hidden = true;
    el.pattern.hidden = false;
    pattern.on = true;
    el.stage.classList.remove("has-video");
    renderControls();
  }

  /** Play ``src`` (an address; "" = none: the test pattern) in the stage. */
  function playVideo(src) {
    if (V.handle) V.handle.destroy();
    V.handle = null;
    V.url = src || "";
    if (!src) {
      showPattern();
      return;
    }
    const url = videoUrl(src);
    if (!url) {
      showPattern();
      return;
    }
    el.video.hidden = false;
    el.pattern.hidden = true;
    pattern.on = false;
    el.stage.classList.add("has-video");
    const handle = VIDEO.load(el.video, url.href, {
      onFatal: () => {
        if (V.handle !== handle) return;
        showPattern();
        toast(tr("toast.video_failed"), 6000);
      },
    });
    V.handle = handle;
    if (handle.kind === "file") el.video.play().catch(() => { /* the play button starts it */ });
    renderControls();
  }

  function setupVideo() {
    const src = params.get("src");
    if (src) playVideo(src);
  }

  function renderControls() {
    const v = el.video;
    const playing = !v.paused && !v.ended;
    el.vcPlay.textContent = playing ? "❚❚" : "▶";
    const playWord = tr(playing ? "video.pause" : "video.play");
    el.vcPlay.title = playWord;
    el.vcPlay.setAttribute("aria-label", playWord);
    const muted = v.muted || v.volume === 0;
    el.vcMute.textContent = muted ? "🔇" : "🔊";
    el.vcMute.setAttribute("aria-pressed", String(muted));
    const muteWord = tr(muted ? "video.unmute" : "video.mute");
    el.vcMute.title = muteWord;
    el.vcMute.setAttribute("aria-label", muteWord);
    if (document.activeElement !== el.vcVolume) el.vcVolume.value = String(muted ? 0 : v.volume);
    el.vcPip.hidden = !(el.stage.classList.contains("has-video") && VIDEO.canPip(v));
    el.vcFull.hidden = !VIDEO.canFullscreen();
  }

  function toggleFullscreen() {
    VIDEO.fullscreen(el.player).catch(() => { /* refused (no user gesture): nothing to do */ });
  }

  function bindControls() {
    const v = el.video;
    el.vcPlay.addEventListener("click", () => {
      if (v.paused || v.ended) v.play().catch(() => {});
      else v.pause();
    });
    el.vcMute.addEventListener("click", () => {
      v.muted = !(v.muted || v.volume === 0) ? true : false;
      if (!v.muted && v.volume === 0) v.volume = 0.5;
      renderControls();
    });
    el.vcVolume.addEventListener("input", () => {
      v.volume = Number(el.vcVolume.value);
      v.muted = v.volume === 0;
      renderControls();
    });
    el.vcSettings.addEventListener("click", () => { el.settings.open = !el.settings.open; });
    el.vcPip.addEventListener("click", () => { VIDEO.pip(v).catch(() => {}); });
    el.vcFull.addEventListener("click", toggleFullscreen);
    for (const ev of ["play", "pause", "ended", "volumechange", "loadedmetadata", "emptied"]) {
      v.addEventListener(ev, renderControls);
    }
    document.addEventListener("fullscreenchange", () => {
      el.player.classList.toggle("fullscreen", Boolean(document.fullscreenElement));
    });
    // keys: d danmaku on/off, f fullscreen, Enter to the comment box (not while typing)
    document.addEventListener("keydown", (ev) => {
      const tag = ev.target && ev.target.tagName;
      if (ev.ctrlKey || ev.metaKey || ev.altKey || ["INPUT", "SELECT", "TEXTAREA"].includes(tag)) {
        return;
      }
      if (ev.key === "d" || ev.key === "D") updateSettings({ on: !settings.on });
      else if (ev.key === "f" || ev.key === "F") toggleFullscreen();
      else if (ev.key === "Enter" && tag !== "BUTTON" && tag !== "SUMMARY" && !R.on) {
        el.sendText.focus();
      } else return;
      ev.preventDefault();
    });
    renderControls();
  }

  // ---- replay -----------------------------------------------------------------------------------
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

  function clockText(secs, tenths) {
    const s = Math.max(0, Number.isFinite(secs) ? secs : 0);
    const m = Math.floor(s / 60);
    const rest = s - m * 60;
    const ss = tenths ? rest.toFixed(1).padStart(4, "0")
      : String(Math.floor(rest)).padStart(2, "0");
    return `${m}:${ss}`;
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
    clearScreen();
    R.resync = false;
    R.cursor = indexAfter(t);
    if (!settings.on) return;
    const life = Math.max(SCROLL_MS / settings.speed, FIXED_MS);
    const fresh = [];
    for (let i = indexAfter(t - life); i < R.cursor; i++) {
      const item = R.comments[i];
      if (!replayShows(item)) continue;
      const node = makeNode(item, false);
      measure.appendChild(node);
      fresh.push({ item, own: false, enq: item.offset_ms, node, w: 0 });
    }
    for (const entry of fresh) entry.w = entry.node.offsetWidth; // one layout for all
    for (const entry of fresh) {
      // as if placed at its own time: part-way across, on the lane it would have had
      if (!place(entry, entry.item.offset_ms)) waiting.push(entry);
    }
  }

  function replayTick() {
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
        if (replayShows(item)) incoming.push({ item, own: false, due: item.offset_ms });
      }
    }
    pump(t);
    if (t !== R.last) { // paused: nothing moves (new ones were set by place())
      for (const [node, c] of Array.from(R.running)) {
        if (t >= c.end) removeNode(node);
        else c.anim.currentTime = t - c.start;
      }
    }
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

  function setupReplay() {
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
    el.rpPlay.disabled = false;
    el.rpSeek.disabled = false;
    if (S.state !== "error") setState("replay");
    R.media.play().catch(() => { /* autoplay refused: the play button starts it */ });
  }

  // ---- the animation loop ---------------------------------------------------------------------
  function loop(now) {
    try {
      drawPattern(now);
      if (R.on) replayTick();
      else pump(now);
    } finally {
      requestAnimationFrame(loop);
    }
  }

  // ---- settings UI ----------------------------------------------------------------------------
  function renderSettings() {
    el.setOn.checked = settings.on;
    el.toggleOn.setAttribute("aria-pressed", String(settings.on));
    el.setOpacity.value = String(settings.opacity);
    el.outOpacity.textContent = `${Math.round(settings.opacity * 100)}%`;
    el.setSpeed.value = String(settings.speed);
    el.outSpeed.textContent = `${settings.speed.toFixed(1)}×`;
    el.setFont.value = String(settings.fontSize);
    el.outFont.textContent = `${settings.fontSize}px`;
    el.setArea.value = settings.area;
    DENSITY.render(el.setDensity, S.densities, settings.density, tr);
    el.setTop.checked = settings.showTop;
    el.setBottom.checked = settings.showBottom;
    if (document.activeElement !== el.setWords) el.setWords.value = settings.blockWords.join(", ");
    if (document.activeElement !== el.setUsers) el.setUsers.value = settings.blockUsers.join(", ");
    el.overlay.style.setProperty("--dm-opacity", String(settings.opacity));
    el.overlay.classList.toggle("off", !settings.on);
  }

  /** welcome.densities: the menu offers the gateway's levels; a stored share it does not
   *  serve is snapped to the level the gateway serves for it. */
  function onDensities(list) {
    S.densities = DENSITY.levels(list, DENSITIES);
    const level = DENSITY.pick(S.densities, settings.density);
    if (level !== settings.density) {
      settings = sanitizeSettings({ ...settings, density: level });
      save(SETTINGS_KEY, settings); // the gateway serves this level for the old share
    }
    renderSettings();
  }

  const splitList = (s) => s.split(/[,\n]/).map((x) => x.trim()).filter(Boolean);

  function updateSettings(changes) {
    const before = settings;
    settings = sanitizeSettings({ ...settings, ...changes });
    save(SETTINGS_KEY, settings);
    renderSettings();
    if (before.fontSize !== settings.fontSize) {
      updateGeometry();
      clearScreen(); // lanes change height: start over rather than overlap
    }
    if (!settings.on && before.on) clearScreen();
    if (!settings.showTop || !settings.showBottom || settings.blockWords.length
        || settings.blockUsers.length) {
      for (const node of Array.from(liveEls.values())) {
        const mode = node.dataset.mode;
        if ((mode === "top" && !settings.showTop) || (mode === "bottom" && !settings.showBottom)) {
          removeNode(node);
        } else if (!node.classList.contains("own") && blockedItem({
          text: node.firstChild ? node.firstChild.nodeValue || "" : "",
          uid: node.dataset.uid, nick: node.dataset.nick,
        })) {
          removeNode(node);
        }
      }
    }
    if (before.density !== settings.density && S.ws) reconnectNow(); // density goes on connect
    if (R.on && (before.density !== settings.density || before.fontSize !== settings.fontSize
        || (settings.on && !before.on))) {
      R.resync = true; // replay: put up again what this position shows with the new settings
    }
  }

  function bindSettings() {
    el.setOn.addEventListener("change", () => updateSettings({ on: el.setOn.checked }));
    el.toggleOn.addEventListener("click", () => updateSettings({ on: !settings.on }));
    el.setOpacity.addEventListener("input", () => updateSettings({ opacity: Number(el.setOpacity.value) }));
    el.setSpeed.addEventListener("input", () => updateSettings({ speed: Number(el.setSpeed.value) }));
    el.setFont.addEventListener("change", () => updateSettings({ fontSize: Number(el.setFont.value) }));
    el.setFont.addEventListener("input", () => { el.outFont.textContent = `${el.setFont.value}px`; });
    el.setArea.addEventListener("change", () => updateSettings({ area: el.setArea.value }));
    el.setDensity.addEventListener("change", () => updateSettings({ density: Number(el.setDensity.value) }));
    el.setTop.addEventListener("change", () => updateSettings({ showTop: el.setTop.checked }));
    el.setBottom.addEventListener("change", () => updateSettings({ showBottom: el.setBottom.checked }));
    el.setWords.addEventListener("change", () => updateSettings({ blockWords: splitList(el.setWords.value) }));
    el.setUsers.addEventListener("change", () => updateSettings({ blockUsers: splitList(el.setUsers.value) }));
    // back to the defaults of the display; the viewer's block lists stay
    el.setReset.addEventListener("click", () => updateSettings({ ...DEFAULTS,
      blockWords: settings.blockWords, blockUsers: settings.blockUsers }));
    el.setClose.addEventListener("click", () => { el.settings.open = false; });
  }

  function bindSending() {
    el.sendColor.value = COLOR_RE.test(sendPrefs.color) ? sendPrefs.color : "#ffffff";
    el.sendMode.value = ["scroll", "top", "bottom"].includes(sendPrefs.mode) ? sendPrefs.mode : "scroll";
    const savePrefs = () => save(SEND_KEY, { color: el.sendColor.value, mode: el.sendMode.value,
      nick: el.nickInput.value || sendPrefs.nick || "" });
    el.sendColor.addEventListener("change", savePrefs);
    el.sendMode.addEventListener("change", savePrefs);
    el.sendForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      sendComment();
    });
    el.sendText.addEventListener("input", updateCount);
    el.nickInput.value = typeof sendPrefs.nick === "string" ? sendPrefs.nick : "";
    el.nickForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const nick = normText(el.nickInput.value);
      if (!nick) {
        showSendError(tr("err.type_nick"), false);
        return;
      }
      sendPrefs.nick = nick;
      savePrefs();
      join(nick);
    });
    el.whoChange.addEventListener("click", () => {
      el.nickInput.value = session ? session.user.nick : "";
      el.who.hidden = true;
      el.nickForm.hidden = false;
      el.nickInput.focus();
    });
  }

  // ---- language -------------------------------------------------------------------------------
  function renderLanguage() {
    I18N.apply();
    renderSettings();
    chat.relabel();
    if (S.cardPin && !el.banner.hidden) {
      el.bannerTag.textContent = tr("notice.pinned");
      el.bannerText.replaceChildren(CARDS.build(S.cardPin, tr, numberLocale()));
    }
    if (!S.cooldownUntil) el.sendButton.textContent = tr("send.send");
    if (R.on) el.sendText.placeholder = tr("send.placeholder_replay");
    el.rpMute.textContent = tr(el.video.muted ? "rp.sound_off" : "rp.sound_on");
    renderControls();
    renderRoomStatus();
    setState(S.state, S.detail); // the detail keeps the language it was made in until it changes
    if (S.online !== null) setOnline(S.online);
  }
  el.langSwitch.addEventListener("click", () => I18N.setLang(I18N.lang === "zh" ? "en" : "zh"));
  I18N.onChange(renderLanguage);

  // ---- start ----------------------------------------------------------------------------------
  I18N.apply();
  el.sendButton.textContent = tr("send.send");
  el.rpMute.textContent = tr("rp.sound_off");
  el.roomName.textContent = room;
  document.title = `danmaku · ${room}`;
  renderSettings();
  bindSettings();
  bindSending();
  bindControls();
  bindStaff();
  updateGeometry();
  resizePattern();
  updateCount();
  if (R.on) {
    setupReplay();
  } else {
    renderWho();
    setupVideo();
  }
  new ResizeObserver(() => { updateGeometry(); resizePattern(); }).observe(el.stage);

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
  requestAnimationFrame(loop);
  if (!R.on) connect(); // a replay needs no connection

  // ---- the hook for tests and the curious ------------------------------------------------------
  window.danmaku = Object.freeze({
    get state() { return S.state; },
    get lastSeq() { return S.lastSeq; },
    get online() { return S.online; },
    get user() { return S.user ? { ...S.user } : null; },
    get epoch() { return S.epoch; },
    get densities() { return S.densities.slice(); },
    get sessionRefusal() { return S.sessionRefusal || ""; },
    get room() { return room; },
    get connects() { return S.connects.map((c) => ({ ...c })); },
    get pending() { return Array.from(pending.keys()); },
    shownIds: () => rendered.slice(),
    onScreen: () => Array.from(liveEls.keys()),
    stats: () => ({ ...S.stats, waiting: waiting.length, incoming: incoming.length,
      lanes: laneCount() }),
    settings: () => JSON.parse(JSON.stringify(settings)),
    get lang() { return I18N.lang; },
    get reports() { return S.reports.map((x) => ({ ...x })); },
    chatSize: () => chat.size,
    /** The video: what plays it ("hls.js", "native"), its address and clock. */
    video: () => ({ url: V.url, engine: V.handle ? V.handle.engine : "",
      currentTime: el.video.currentTime, paused: el.video.paused, hidden: el.video.hidden }),
    /** Replay mode: where the recording is and what it has shown; null when live. */
    replay: () => (R.on ? {
      loaded: R.loaded, count: R.comments.length, mediaMs: Math.round(R.now),
      paused: Boolean(R.media && R.media.paused), rate: R.media ? R.media.playbackRate : 1,
      clock: Boolean(R.clock), duration: R.media ? R.media.duration : 0, shown: R.shown.map((x) => x.slice()),
    } : null),
    /** Close the socket as a network failure would (the player reconnects on its own). */
    dropConnection: () => { if (S.ws) S.ws.close(4001, "test"); },
  });
})();
