/* danmaku moderation console: plain modern JS, no build step, nothing fetched from elsewhere.
 *
 * - Auth: a moderator/streamer/admin token, pasted (kept in localStorage) or passed as
 *   #token=... in the URL (stored, then removed from the address bar). Every API call sends
 *   it as `Authorization: Bearer`; a 401/403 stops the polling and says why in words.
 * - Live figures from GET /api/rooms/{room} every second, with 60 s inline-SVG sparklines.
 * - The live feed: GET /feed?after=<cursor> twice a second (at once again while a page
 *   comes back full). At most FEED_ROWS rows in the DOM (oldest removed), a bounded
 *   in-memory buffer behind them for re-filtering; pausing freezes the list, polling goes
 *   on and counts what arrives ("N new"), resuming shows it under a divider.
 * - Text from the network is only ever set with textContent.
 * - window.dmConsole is a small read-only hook for tests and debugging.
 */
"use strict";

(() => {
  // the helpers this page shares with the player (common.js, loaded first)
  const { ROOM_RE, COLOR_RE, $, load, save } = window.DanmakuCommon;
  // every string the staff member reads comes from the catalogue (i18n.js, loaded first)
  const I18N = window.DanmakuI18n;
  const t = I18N.t;

  // ---- constants ----------------------------------------------------------------------------
  const UID_RE = /^[A-Za-z0-9_.:@-]{1,64}$/;
  const TOKEN_KEY = "danmaku.console.token.v1";
  const ROOMS_KEY = "danmaku.console.rooms.v1";
  const FEED_ROWS = 300;          // rows kept in the DOM
  const BUFFER_MAX = 5000;        // comments kept in memory (re-filtering, resume)
  const FEED_PAGE = 1000;         // ?limit= of one feed poll
  const FEED_EVERY_MS = 500;
  const FIGURES_EVERY_MS = 1000;
  const AUDIT_EVERY_MS = 3000;
  const BANS_EVERY_MS = 5000;
  const SPARK_POINTS = 60;
  const TIMEOUT_S = 600;
  const HISTORY_PAGE = 100;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const el = {
    roomForm: $("room-form"), roomInput: $("room-input"), roomList: $("room-list"),
    playerLink: $("player-link"), who: $("who"), whoNick: $("who-nick"), whoRole: $("who-role"),
    playerMe: $("player-me"),
    tokenChange: $("token-change"), logout: $("logout"),
    login: $("login"), loginRoom: $("login-room"), loginForm: $("login-form"),
    tokenInput: $("token-input"), msg: $("msg"),
    figures: $("figures"), figExtra: $("fig-extra"), figStatus: $("fig-status"),
    feed: $("feed"), feedEmpty: $("feed-empty"), feedRate: $("feed-rate"), feedNew: $("feed-new"),
    feedPause: $("feed-pause"), feedCount: $("feed-count"), feedOlder: $("feed-older"),
    filterForm: $("filter-form"), filterUser: $("filter-user"), filterText: $("filter-text"),
    filterClear: $("filter-clear"),
    selected: $("selected"), selNick: $("sel-nick"), selUid: $("sel-uid"), selTime: $("sel-time"),
    selState: $("sel-state"), selText: $("sel-text"), selClose: $("sel-close"),
    selCloseConns: $("sel-close-conns"),
    actDelete: $("act-delete"), actTimeout: $("act-timeout"), actBan: $("act-ban"),
    actHighlight: $("act-highlight"), actUnhighlight: $("act-unhighlight"),
    actFilter: $("act-filter"),
    settingsForm: $("settings-form"), settingsReset: $("settings-reset"),
    settingsLoading: $("settings-loading"), settingsActions: document.querySelector("#settings-form .form-actions"),
    wordsForm: $("words-form"), wordsInput: $("words-input"), wordsList: $("words-list"),
    wordsGlobal: $("words-global"),
    pinCurrent: $("pin-current"), pinForm: $("pin-form"), pinText: $("pin-text"),
    pinDuration: $("pin-duration"), pinUnset: $("pin-unset"),
    noticeForm: $("notice-form"), noticeText: $("notice-text"),
    banForm: $("ban-form"), banUid: $("ban-uid"), banDuration: $("ban-duration"),
    bansList: $("bans-list"), bansEmpty: $("bans-empty"),
    auditList: $("audit-list"), auditEmpty: $("audit-empty"), auditRefresh: $("audit-refresh"),
  };

  // ---- small helpers ------------------------------------------------------------------------
  function node(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  const pad = (n) => String(n).padStart(2, "0");
  // formatters made once (a language switch reloads the page): a row of the feed costs a
  // format call, not a new Intl object (the feed takes thousands of rows a second)
  const timeFormat = new Intl.DateTimeFormat(I18N.locale(),
    { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  const numberFormats = [0, 1, 2].map((digits) => new Intl.NumberFormat(I18N.locale(),
    { maximumFractionDigits: digits, minimumFractionDigits: 0 }));
  function clock(ms) {
    return timeFormat.format(new Date(Number(ms) || 0));
  }
  function fmtNum(x, digits = 0) {
    if (typeof x !== "number" || !Number.isFinite(x)) return "–";
    return numberFormats[Math.min(2, Math.max(0, digits))].format(x);
  }
  function fmtRate(x) {
    if (typeof x !== "number" || !Number.isFinite(x)) return "–";
    return fmtNum(x, x < 10 ? 1 : 0);
  }
  function fmtDuration(s) {
    s = Math.max(0, Math.round(s));
    const two = (a, b) => (b ? t("con.dur_two", { a, b }) : a);
    if (s < 60) return t("dur.s", { n: s });
    if (s < 3600) return two(t("dur.min", { n: Math.floor(s / 60) }), s % 60 ? t("dur.s", { n: s % 60 }) : "");
    if (s < 86400) {
      return two(t("dur.h", { n: Math.floor(s / 3600) }),
        s % 3600 >= 60 ? t("dur.min", { n: Math.floor((s % 3600) / 60) }) : "");
    }
    return two(t("dur.d", { n: Math.floor(s / 86400) }),
      s % 86400 >= 3600 ? t("dur.h", { n: Math.floor((s % 86400) / 3600) }) : "");
  }
  /** Stream ids ("ms-seq") in order. */
  function idCmp(a, b) {
    const [am, as] = String(a).split("-").map(Number);
    const [bm, bs] = String(b).split("-").map(Number);
    return am - bm || (as || 0) - (bs || 0);
  }
  const str = (x) => (typeof x === "string" ? x : "");

  /** The claims of a JWT, for display only (the server checks the signature). */
  function claimsOf(token) {
    try {
      const part = token.split(".")[1];
      const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
      const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
      const json = new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
      const claims = JSON.parse(json);
      return claims && typeof claims === "object" ? claims : null;
    } catch {
      return null;
    }
  }

  // ---- state --------------------------------------------------------------------------------
  const params = new URLSearchParams(location.search);
  const room = params.get("room") || "lobby";
  const roomOk = ROOM_RE.test(room);

  const S = {
    token: "",
    claims: null,
    auth: "none",      // none | checking | ok | rejected | forbidden
    figures: null,
    series: {},        // figure key -> last SPARK_POINTS values
    settings: {},      // the room's moderator-set settings (from the figures)
    effective: {},     // every setting's value in force (the room's, else the default)
    schema: [],        // GET /api/room-settings: what the settings form is built from
    settingsDirty: false,
    pin: null,         // {text, by, ts, until} or null
    pinTs: 0,          // when the shown pin state was decided (ms), so older news is ignored
    bans: new Map(),   // uid -> until (s) or null
    auditTop: "",
    words: { room: [], global: [] },
    errors: 0,
    lastError: "",
  };
  const feed = {
    cursor: null,      // the last id read from /feed (kept through pauses)
    buffer: [],        // the newest BUFFER_MAX comments, oldest first (up to the pause)
    held: [],          // what arrived while paused (bounded the same way), oldest first
    paused: false,
    pauseAt: null,     // the newest id read when paused (where the divider goes)
    divider: null,     // {at, text} of the last resume's divider, kept through re-renders
    newCount: 0,       // comments matching the filter that arrived while paused
    received: 0,       // all comments read since the page loaded
    arrivals: [],      // [ms, count] of recent polls (the feed's rate)
    deleted: new Set(),
    selected: null,    // the selected comment (a copy)
    timer: 0,
    busy: false,
    generation: 0,     // bumped on a token change: answers to older polls are dropped
    olderCursor: null, // history paging (?before=)
    polls: 0,
  };

  // ---- messages -------------------------------------------------------------------------------
  let msgTimer = 0;
  function say(text, kind = "ok") {
    el.msg.textContent = text;
    el.msg.className = `msg ${kind}`;
    clearTimeout(msgTimer);
    if (kind === "ok") msgTimer = setTimeout(() => { el.msg.textContent = ""; el.msg.className = "msg"; }, 6000);
  }
  function fail(text) {
    S.errors += 1;
    S.lastError = text;
    say(text, "bad");
  }

  /** An API failure in words. */
  function errorWords(status, data) {
    const detail = data && data.detail;
    // the server's own detail, in brackets after the console's words (it is English)
    const why = typeof detail === "string" ? t("con.err_detail", { d: detail }) : "";
    switch (status) {
      case 0: return t("con.err_unreachable");
      case 401: return t("con.err_401", { why });
      case 403: return t("con.err_403", { room, why });
      case 404: return typeof detail === "string" ? t("con.err_404_detail", { d: detail }) : t("con.err_404");
      case 413: return t("con.err_413");
      case 422: {
        if (Array.isArray(detail) && detail.length) {
          return detail.map((d) => {
            const loc = Array.isArray(d.loc) ? d.loc.filter((p) => !["body", "query", "path"].includes(p)) : [];
            const field = loc.length ? loc.join(".") : t("con.err_request");
            return t("con.err_invalid", { field, msg: str(d.msg) || t("con.err_not_valid") });
          }).join(" ");
        }
        return t("con.err_invalid", { field: t("con.err_request"),
          msg: typeof detail === "string" ? detail : t("con.err_not_valid") });
      }
      case 503: return t("con.err_503");
      default:
        return t("con.err_status", { status, why: typeof detail === "string" ? `: ${detail}` : "" });
    }
  }

  // ---- the API --------------------------------------------------------------------------------
  const roomPath = `/api/rooms/${encodeURIComponent(room)}`;

  /** Call the moderation API; resolves to {ok, status, data, error} (never throws). */
  async function api(method, path, body) {
    if (!S.token) return { ok: false, status: 401, data: null, error: t("con.paste_first") };
    const gen = feed.generation;
    const init = { method, cache: "no-store", headers: { Authorization: `Bearer ${S.token}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(`${roomPath}${path}`, init);
    } catch {
      return { ok: false, status: 0, data: null, error: errorWords(0, null) };
    }
    let data = null;
    if (r.status !== 204) {
      try { data = await r.json(); } catch { data = null; }
    }
    if (gen !== feed.generation) return { ok: false, status: -1, data: null, error: "", stale: true };
    if (r.ok) {
      if (S.auth !== "ok") setAuth("ok");
      return { ok: true, status: r.status, data, error: "" };
    }
    const error = errorWords(r.status, data);
    if (r.status === 401) setAuth("rejected", error);
    else if (r.status === 403) setAuth("forbidden", error);
    return { ok: false, status: r.status, data, error };
  }

  /** A user action: run it, say what happened, refresh the audit log. */
  async function act(method, path, body, okText) {
    const res = await api(method, path, body);
    if (res.stale) return res;
    if (res.ok) {
      say(okText, "ok");
      refreshAudit();
    } else {
      fail(res.error);
    }
    return res;
  }

  // ---- auth ---------------------------------------------------------------------------------
  const canModerate = () => Boolean(S.token) && (S.auth === "ok" || S.auth === "checking");

  function setAuth(state, error = "") {
    const was = S.auth;
    S.auth = state;
    document.body.dataset.auth = state;
    const bad = state === "rejected" || state === "forbidden" || state === "none";
    el.login.hidden = !bad;
    el.logout.hidden = !S.token;
    renderWho();
    if (error) fail(error);
    if (bad) stopPolling();
    else if (state === "ok" && was !== "ok") startPolling();
  }

  function renderWho() {
    const c = S.claims;
    el.who.hidden = !S.token;
    el.playerMe.hidden = !S.token;
    if (!S.token) return;
    el.playerMe.href = `/?room=${encodeURIComponent(room)}#token=${encodeURIComponent(S.token)}`;
    el.who.dataset.state = S.auth;
    el.whoNick.textContent = c ? str(c.nick) || str(c.sub) || "?" : t("con.unreadable_token");
    const bits = [];
    if (c && c.role) bits.push(str(c.role));
    if (c && Array.isArray(c.room)) bits.push(t("con.who_rooms", { rooms: c.room.map(str).join(", ") }));
    else if (c && c.room) bits.push(t("con.who_room", { room: str(c.room) }));
    if (c && Number(c.exp) * 1000 < Date.now()) bits.push(t("con.who_expired"));
    el.whoRole.textContent = bits.length ? `(${bits.join(" · ")})` : "";
  }

  function useToken(token) {
    token = String(token || "").trim().replace(/^bearer\s+/i, "");
    feed.generation += 1;
    stopPolling();
    S.token = token;
    S.claims = token ? claimsOf(token) : null;
    save(TOKEN_KEY, token || null);
    if (window.dmRooms) window.dmRooms.refresh(); // the room switcher (console-rooms.js)
    el.tokenInput.value = "";
    if (!token) {
      setAuth("none");
      say(t("con.paste_to_moderate"), "info");
      return;
    }
    S.auth = "checking";
    document.body.dataset.auth = "checking";
    renderWho();
    el.logout.hidden = false;
    el.msg.textContent = "";
    el.msg.className = "msg";
    checkToken();
  }

  async function checkToken() {
    const res = await loadWords();
    if (res.stale) return;
    if (res.ok) {
      if (S.auth !== "ok") setAuth("ok");
      say(t("con.moderating", { room }), "ok");
    } else if (res.status !== 401 && res.status !== 403) {
      // the server is down or Redis is: keep the token, try again
      fail(res.error);
      setTimeout(() => { if (S.auth === "checking") checkToken(); }, 3000);
    }
  }

  // ---- polling ------------------------------------------------------------------------------
  const timers = { audit: 0, bans: 0 };

  function startPolling() {
    stopPolling();
    feed.cursor = null;
    feed.buffer = [];
    feed.held = [];
    feed.paused = false;
    feed.newCount = 0;
    feed.olderCursor = null;
    el.feed.replaceChildren();
    renderFeedMeta();
    seedFeed().then(() => { if (canModerate()) pollFeed(); });
    refreshBans();
    refreshAudit();
    timers.audit = setInterval(refreshAudit, AUDIT_EVERY_MS);
    timers.bans = setInterval(refreshBans, BANS_EVERY_MS);
  }

  function stopPolling() {
    clearTimeout(feed.timer);
    feed.timer = 0;
    clearInterval(timers.audit);
    clearInterval(timers.bans);
    timers.audit = timers.bans = 0;
  }

  // ---- figures ------------------------------------------------------------------------------
  const FIGS = [
    { key: "online", label: t("con.fig_online"), fmt: (v) => fmtNum(v), unit: "" },
    { key: "comments_per_s", label: t("con.fig_in"), fmt: fmtRate, unit: "" },
    { key: "shown_per_s", label: t("con.fig_shown"), fmt: fmtRate, unit: "" },
    { key: "dropped_per_s", label: t("con.fig_dropped"), fmt: fmtRate, unit: "" },
    { key: "shed_per_s", label: t("con.fig_shed"), fmt: fmtRate, unit: "" },
    { key: "latency_p99_ms", label: t("con.fig_p99"), fmt: (v) => fmtNum(v), unit: t("con.unit_ms") },
  ];
  const figEls = {};

  function buildFigures() {
    for (const f of FIGS) {
      const card = node("div", "fig");
      card.id = `fig-${f.key.replace(/_/g, "-")}`;
      card.dataset.key = f.key;
      const label = node("span", "fig-label", f.label);
      const value = node("span", "fig-value", "–");
      value.id = `${card.id}-v`;
      const unit = node("span", "fig-unit", f.unit);
      const top = node("div", "fig-top");
      const num = node("span", "fig-num");
      num.append(value, unit);
      top.append(label, num);
      const svg = document.createElementNS(SVG_NS, "svg");
      svg.setAttribute("class", "spark");
      svg.setAttribute("viewBox", `0 0 ${SPARK_POINTS - 1} 30`);
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("aria-hidden", "true");
      const base = document.createElementNS(SVG_NS, "line");
      base.setAttribute("class", "spark-base");
      base.setAttribute("x1", "0");
      base.setAttribute("x2", String(SPARK_POINTS - 1));
      base.setAttribute("y1", "29.5");
      base.setAttribute("y2", "29.5");
      base.setAttribute("vector-effect", "non-scaling-stroke");
      const area = document.createElementNS(SVG_NS, "polygon");
      area.setAttribute("class", "spark-area");
      const line = document.createElementNS(SVG_NS, "polyline");
      line.setAttribute("class", "spark-line");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(base, area, line);
      const peak = node("span", "fig-peak muted", "");
      card.append(top, svg, peak);
      el.figures.appendChild(card);
      figEls[f.key] = { card, value, line, area, peak };
      S.series[f.key] = [];
    }
  }

  function drawSpark(key) {
    const values = S.series[key];
    const { line, area, peak } = figEls[key];
    const max = Math.max(...values, 0);
    const scale = max > 0 ? 27 / max : 0;
    const x0 = SPARK_POINTS - values.length;
    const pts = values.map((v, i) => `${x0 + i},${(29 - v * scale).toFixed(2)}`);
    line.setAttribute("points", pts.join(" "));
    area.setAttribute("points", pts.length
      ? `${x0},30 ${pts.join(" ")} ${SPARK_POINTS - 1},30` : "");
    peak.textContent = values.length > 1 ? t("con.fig_peak", { v: FIGS.find((f) => f.key === key).fmt(max) }) : "";
  }

  async function pollFigures() {
    let data = null;
    let error = "";
    try {
      const r = await fetch(roomPath, { cache: "no-store" });
      if (r.ok) data = await r.json();
      else error = errorWords(r.status, await r.json().catch(() => null));
    } catch {
      error = errorWords(0, null);
    }
    if (data && typeof data === "object") {
      S.figures = data;
      for (const f of FIGS) {
        const v = Number(data[f.key]);
        const series = S.series[f.key];
        series.push(Number.isFinite(v) ? v : 0);
        if (series.length > SPARK_POINTS) series.shift();
        figEls[f.key].value.textContent = f.fmt(v);
        figEls[f.key].card.classList.toggle("hot", f.key === "shed_per_s" ? v > 0 : false);
        drawSpark(f.key);
      }
      el.figExtra.textContent = t("con.fig_extra", { seq: fmtNum(Number(data.seq)),
        stored: fmtNum(Number(data.comments_stored)), tick: fmtNum(Number(data.tick_ms)) });
      el.figStatus.textContent = "";
      el.figStatus.className = "fig-status";
      applyRoomSettings(data.settings && typeof data.settings === "object" ? data.settings : {},
        data.effective && typeof data.effective === "object" ? data.effective : {});
    } else {
      el.figStatus.textContent = t("con.fig_error", { error });
      el.figStatus.className = "fig-status bad";
    }
    setTimeout(pollFigures, FIGURES_EVERY_MS);
  }

  // ---- the feed -----------------------------------------------------------------------------
  function filterOf() {
    return {
      user: el.filterUser.value.trim().toLowerCase(),
      text: el.filterText.value.trim().toLowerCase(),
    };
  }
  function matches(item, f) {
    if (f.user) {
      const uid = str(item.uid).toLowerCase();
      const nick = str(item.nick).toLowerCase();
      if (uid !== f.user && !nick.includes(f.user) && !uid.includes(f.user)) return false;
    }
    if (f.text && !str(item.text).toLowerCase().includes(f.text)) return false;
    return true;
  }

  function validItem(item) {
    return item && typeof item === "object" && typeof item.id === "string"
      && typeof item.text === "string";
  }

  function rowFor(item) {
    const li = node("li", "row");
    li.dataset.id = item.id;
    li.dataset.uid = str(item.uid);
    li.tabIndex = 0;
    if (feed.deleted.has(item.id)) li.classList.add("deleted");
    if (feed.selected && feed.selected.id === item.id) li.classList.add("selected");
    if (S.bans.has(str(item.uid))) li.classList.add("banned");
    const time = node("time", "t", clock(item.ts));
    const swatch = node("span", "sw");
    if (COLOR_RE.test(str(item.color)) && item.color.toLowerCase() !== "#ffffff") {
      swatch.style.background = item.color;
    }
    const who = node("span", "nick", str(item.nick) || str(item.uid));
    who.title = str(item.uid);
    const text = node("span", "text", item.text);
    li.append(time, swatch, who);
    const prio = Number(item.prio);
    if (prio === 2) li.append(node("span", "tag staff", t("con.tag_staff")));
    // the role a staff comment was sent with (issue 19): console-review.js badges the name
    if (["moderator", "streamer", "admin"].includes(item.role)) li.dataset.role = item.role;
    else if (prio === 1) li.append(node("span", "tag hl", t("con.tag_hl")));
    li.append(text);
    return li;
  }

  /** Put new rows on top (newest first) and trim the list to FEED_ROWS. */
  function prependRows(items) {
    if (!items.length) return;
    const recent = items.length > FEED_ROWS ? items.slice(-FEED_ROWS) : items;
    const frag = document.createDocumentFragment();
    for (let i = recent.length - 1; i >= 0; i--) frag.appendChild(rowFor(recent[i]));
    el.feed.prepend(frag);
    trimRows(FEED_ROWS);
  }
  function trimRows(max) {
    let extra = el.feed.childElementCount - max;
    while (extra-- > 0) el.feed.lastElementChild.remove();
  }

  /** Rebuild the list from the buffer (filter changed, resumed). While paused, the
   *  buffer holds only what came before the pause, so the list stays put. The divider
   *  of the last resume stays where it is through later rebuilds (a filter typed just
   *  before resuming re-renders after it) until the next pause. */
  function renderAll() {
    const dividerAfter = feed.divider ? feed.divider.at : null;
    const dividerText = feed.divider ? feed.divider.text : "";
    const f = filterOf();
    const out = [];
    for (let i = feed.buffer.length - 1; i >= 0 && out.length < FEED_ROWS; i--) {
      const item = feed.buffer[i];
      if (matches(item, f)) out.push(item);
    }
    const frag = document.createDocumentFragment();
    let divided = false;
    for (const item of out) {
      if (!divided && dividerAfter !== null && idCmp(item.id, dividerAfter) <= 0) {
        frag.appendChild(node("li", "divider", dividerText));
        divided = true;
      }
      frag.appendChild(rowFor(item));
    }
    el.feed.replaceChildren(frag);
    renderFeedMeta();
  }

  function ingest(items) {
    const fresh = items.filter(validItem);
    if (!fresh.length) return;
    const into = feed.paused ? feed.held : feed.buffer;
    for (const item of fresh) into.push(item);
    if (into.length > BUFFER_MAX * 1.2) into.splice(0, into.length - BUFFER_MAX);
    feed.received += fresh.length;
    const f = filterOf();
    const shown = fresh.filter((item) => matches(item, f));
    if (feed.paused) {
      feed.newCount += shown.length;
    } else {
      prependRows(shown);
    }
  }

  function renderFeedMeta() {
    const rows = el.feed.querySelectorAll(".row").length;
    el.feedEmpty.hidden = rows > 0;
    el.feedEmpty.textContent = !canModerate() ? t("con.feed_login")
      : (filterOf().user || filterOf().text) ? t("con.feed_no_match") : t("con.feed_none");
    el.feedCount.textContent = t("con.feed_count", { rows: fmtNum(rows), max: fmtNum(FEED_ROWS),
      kept: fmtNum(feed.buffer.length + feed.held.length), read: fmtNum(feed.received) });
    el.feedNew.hidden = !feed.paused;
    el.feedNew.textContent = t("con.feed_new", { n: fmtNum(feed.newCount) });
    el.feedPause.textContent = feed.paused ? t("con.resume") : t("con.pause");
    el.feedPause.setAttribute("aria-pressed", String(feed.paused));
    el.feedPause.classList.toggle("primary", feed.paused);
    document.body.classList.toggle("paused", feed.paused);
    const now = Date.now();
    feed.arrivals = feed.arrivals.filter(([t]) => now - t < 5000);
    const n = feed.arrivals.reduce((a, [, c]) => a + c, 0);
    const span = feed.arrivals.length ? Math.max(1, (now - feed.arrivals[0][0]) / 1000 + FEED_EVERY_MS / 1000) : 1;
    el.feedRate.textContent = feed.paused ? t("con.paused") : t("con.per_s", { n: fmtRate(n / span) });
  }

  /** The room's recent comments first, so the feed is not empty on arrival. */
  async function seedFeed() {
    const res = await api("GET", `/comments?limit=${HISTORY_PAGE}`);
    if (!res.ok || !res.data || !Array.isArray(res.data.items)) {
      if (!res.ok && !res.stale) fail(res.error);
      return;
    }
    const items = res.data.items.filter(validItem).reverse(); // oldest first
    feed.olderCursor = items.length ? items[0].id : null;
    // read on from the newest comment seen; from the start of an empty history, never "$"
    // (that would skip what arrives between this read and the first poll)
    feed.cursor = items.length ? items[items.length - 1].id : "0-0";
    ingest(items);
    renderFeedMeta();
  }

  async function pollFeed() {
    clearTimeout(feed.timer);
    feed.timer = 0;
    if (!canModerate() || feed.busy) return;
    feed.busy = true;
    let delay = FEED_EVERY_MS;
    try {
      const after = feed.cursor || "$";
      const res = await api("GET", `/feed?after=${encodeURIComponent(after)}&limit=${FEED_PAGE}`);
      if (res.stale) return;
      feed.polls += 1;
      if (res.ok && res.data) {
        const items = Array.isArray(res.data.items) ? res.data.items : [];
        if (typeof res.data.next === "string") feed.cursor = res.data.next;
        feed.arrivals.push([Date.now(), items.length]);
        ingest(items);
        if (items.length >= FEED_PAGE) delay = 0; // behind: catch up at once
        if (S.lastError && el.msg.classList.contains("bad") && S.lastError.startsWith(t("con.feed_error", { error: "" }))) {
          el.msg.textContent = "";
          el.msg.className = "msg";
          S.lastError = "";
        }
      } else {
        delay = 2000;
        if (res.status !== 401 && res.status !== 403) fail(t("con.feed_error", { error: res.error }));
      }
      renderFeedMeta();
    } finally {
      feed.busy = false;
      if (canModerate()) feed.timer = setTimeout(pollFeed, delay);
    }
  }

  function setPaused(paused) {
    if (paused === feed.paused) return;
    if (paused) {
      feed.paused = true;
      feed.divider = null;
      feed.pauseAt = feed.buffer.length ? feed.buffer.at(-1).id : "0-0";
      feed.newCount = 0;
      renderFeedMeta();
    } else {
      const n = feed.newCount;
      const at = feed.pauseAt;
      feed.paused = false;
      feed.pauseAt = null;
      feed.newCount = 0;
      for (const item of feed.held) feed.buffer.push(item);
      feed.held = [];
      if (feed.buffer.length > BUFFER_MAX) feed.buffer.splice(0, feed.buffer.length - BUFFER_MAX);
      feed.divider = n > 0 ? { at, text: t("con.feed_divider", { n: fmtNum(n) }) } : null;
      renderAll();
    }
  }

  async function loadOlder() {
    if (!canModerate()) return;
    setPaused(true);
    const rows = el.feed.querySelectorAll(".row");
    const oldest = rows.length ? rows[rows.length - 1].dataset.id : feed.olderCursor;
    const f = filterOf();
    const q = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (oldest) q.set("before", oldest);
    if (f.user && UID_RE.test(el.filterUser.value.trim())) q.set("uid", el.filterUser.value.trim());
    if (f.text) q.set("q", el.filterText.value.trim().slice(0, 100));
    const res = await api("GET", `/comments?${q}`);
    if (!res.ok) { if (!res.stale) fail(res.error); return; }
    const items = Array.isArray(res.data.items) ? res.data.items.filter(validItem) : [];
    const frag = document.createDocumentFragment();
    for (const item of items) if (matches(item, f)) frag.appendChild(rowFor(item));
    el.feed.appendChild(frag);
    trimRows(FEED_ROWS * 4);
    if (!res.data.next) el.feedOlder.disabled = true;
    say(items.length ? t("con.older_loaded", { n: fmtNum(items.length) }) : t("con.older_none"), "info");
    renderFeedMeta();
  }

  // ---- the selected comment -------------------------------------------------------------------
  function select(item) {
    feed.selected = { ...item };
    for (const r of el.feed.querySelectorAll(".row.selected")) r.classList.remove("selected");
    const row = el.feed.querySelector(`.row[data-id="${CSS.escape(item.id)}"]`);
    if (row) row.classList.add("selected");
    el.selNick.textContent = str(item.nick) || str(item.uid);
    el.selUid.textContent = str(item.uid);
    el.selTime.textContent = clock(item.ts);
    el.selText.textContent = item.text;
    renderSelectedState();
    el.selected.hidden = false;
  }
  function renderSelectedState() {
    const item = feed.selected;
    if (!item) return;
    const gone = feed.deleted.has(item.id);
    const banned = S.bans.has(str(item.uid));
    el.selState.textContent = gone ? t("con.sel_deleted") : banned ? t("con.sel_banned") : "";
    el.selState.hidden = !gone && !banned;
    el.actDelete.disabled = gone;
  }
  function unselect() {
    feed.selected = null;
    el.selected.hidden = true;
    for (const r of el.feed.querySelectorAll(".row.selected")) r.classList.remove("selected");
  }
  function itemById(id) {
    for (const list of [feed.buffer, feed.held]) {
      for (let i = list.length - 1; i >= 0; i--) if (list[i].id === id) return list[i];
    }
    return null;
  }
  function rowItem(row) {
    const found = itemById(row.dataset.id);
    if (found) return found;
    // a row loaded from history (not in the buffer): read it back from the row
    return {
      id: row.dataset.id, uid: row.dataset.uid,
      nick: row.querySelector(".nick")?.textContent || "", text: row.querySelector(".text")?.textContent || "",
      ts: 0,
    };
  }
  const nameOf = (item) => str(item.nick) || str(item.uid);

  async function deleteSelected() {
    const item = feed.selected;
    if (!item) return;
    const res = await act("DELETE", `/comments/${encodeURIComponent(item.id)}`, undefined,
      t("con.deleted", { name: nameOf(item) }));
    if (res.ok || res.status === 404) {
      feed.deleted.add(item.id);
      for (const row of el.feed.querySelectorAll(`.row[data-id="${CSS.escape(item.id)}"]`)) row.classList.add("deleted");
      renderSelectedState();
    }
  }

  async function ban(uid, durationS, close, label) {
    const body = { uid, close, reason: "from the console" };
    if (durationS) body.duration_s = durationS;
    const what = durationS ? t("con.what_timed_out", { d: fmtDuration(durationS) }) : t("con.what_banned");
    const res = await act("POST", "/bans", body, t(close ? "con.banned_closed" : "con.banned_msg",
      { label, what }));
    if (res.ok) {
      S.bans.set(uid, res.data && res.data.until ? res.data.until : null);
      markBanned();
      renderBans();
      refreshBans();
    }
    return res;
  }
  function markBanned() {
    for (const row of el.feed.querySelectorAll(".row")) {
      row.classList.toggle("banned", S.bans.has(row.dataset.uid));
    }
    renderSelectedState();
  }

  // ---- settings -------------------------------------------------------------------------------
  // The form is built from GET /api/room-settings (issue 23): one row per setting, by kind
  // (number: a number input with the schema's bounds; flag: a checkbox; choice: a select;
  // text: a text input; not writable: shown only). A new setting in the schema shows up
  // here with no change to this page. The names below only make the words nicer; the ids
  // of the older hand-written inputs are kept (set-slow, now-slow, ...).
  const SETTING_WORDS = {
    slow_mode_s: { id: "slow" },
    budget: { id: "budget" },
    ingest_ceiling: { id: "ceiling" },
    smooth_window_s: { id: "window" },
    max_wait_s: { id: "max-wait" },
    mute: { id: "mute" },
    review: {},
    first_chat_min: {},
    guests: {},
    stream_url: { id: "stream" },
    shield: { id: "shield" },
  };
  // the label and the name in a sentence: con.set_label.NAME, con.set_name.NAME
  const wordsOf = (name) => SETTING_WORDS[name] || {};
  const labelOf = (name) => (I18N.has("en", `con.set_label.${name}`) ? t(`con.set_label.${name}`)
    : name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()));
  const nameOfSetting = (name) => (I18N.has("en", `con.set_name.${name}`)
    ? t(`con.set_name.${name}`) : name.replace(/_/g, " "));
  const idOf = (name) => wordsOf(name).id || `room-${name.replace(/_/g, "-")}`;
  const specOf = (name) => S.schema.find((s) => s.name === name);
  const unitText = (unit) => (!unit ? "" : unit.startsWith("/") ? unit : ` ${unit}`);
  const inputOf = (spec) => $(`set-${idOf(spec.name)}`);
  const nowOf = (spec) => $(`now-${idOf(spec.name)}`);

  /** A value as the console shows it: "30 s", "off", "on", "all". */
  function valueWords(spec, v) {
    if (!spec) return typeof v === "number" ? fmtNum(v, 2) : String(v);
    switch (spec.kind) {
      case "number":
        if (typeof v !== "number") return "–";
        if (spec.name === "slow_mode_s" && v === 0) return t("con.off");
        return `${fmtNum(v, 2)}${unitText(spec.unit)}`;
      case "flag": return v ? t("con.on") : t("con.off");
      case "text": return v ? String(v) : t("con.default");
      default: return String(v);
    }
  }

  /** {slow_mode_s: 30, mute: null} -> "slow mode 30 s, mute reset to default" */
  function settingWords(changes) {
    return Object.entries(changes).map(([k, v]) => {
      const spec = specOf(k);
      const name = nameOfSetting(k);
      if (v === null) return t("con.sw_reset", { name });
      if (k === "mute") return v ? t("con.sw_muted") : t("con.sw_unmuted");
      if (k === "guests") {
        return ["comment", "watch", "off"].includes(v) ? t(`con.sw_guests_${v}`) : t("con.sw_value", { name, v });
      }
      if (k === "stream_url") return v ? t("con.sw_stream_set") : t("con.sw_stream_reset");
      if (k === "slow_mode_s") return Number(v) > 0 ? t("con.sw_slow", { s: v }) : t("con.sw_slow_off");
      if (spec && spec.kind === "number" && typeof v === "number") {
        return t("con.sw_value", { name, v: `${fmtNum(v, 2)}${unitText(spec.unit)}` });
      }
      if (typeof v === "boolean") return t("con.sw_value", { name, v: v ? t("con.on") : t("con.off") });
      return t("con.sw_value", { name, v });
    }).join(t("con.list_sep"));
  }

  /** One row of the form (label, the input, the "now" column) for a setting of the schema. */
  function settingRow(spec) {
    const id = idOf(spec.name);
    const label = node("label", "", labelOf(spec.name));
    const field = node("span", "field");
    const now = node("span", "now muted");
    now.id = `now-${id}`;
    const help = str(spec.help);
    label.title = help;
    if (!spec.writable) {
      // shown only (shield: its own button and endpoint)
      const out = node("output", "", valueWords(spec, spec.default));
      out.id = `now-${id}`;
      out.dataset.setting = spec.name;
      label.htmlFor = out.id;
      now.id = "";
      field.append(out, node("span", "", t("con.read_only")));
      field.title = help;
      return [label, field, now];
    }
    let input;
    if (spec.kind === "number") {
      input = node("input");
      input.type = "number";
      if (typeof spec.min === "number") input.min = String(spec.min);
      if (typeof spec.max === "number") input.max = String(spec.max);
      // whole steps where the bounds are whole, else tenths (seconds of a window)
      input.step = Number.isInteger(spec.min ?? 0) && Number.isInteger(spec.max ?? 0) ? "1" : "0.1";
      input.placeholder = t("con.default");
    } else if (spec.kind === "flag") {
      input = node("input");
      input.type = "checkbox";
    } else if (spec.kind === "choice") {
      input = node("select");
      for (const c of Array.isArray(spec.choices) ? spec.choices : []) {
        const o = node("option", "", String(c));
        o.value = String(c);
        input.appendChild(o);
      }
    } else {
      input = node("input");
      input.type = spec.name.endsWith("_url") ? "url" : "text";
      if (Number(spec.max_length) > 0) input.maxLength = Number(spec.max_length);
      input.placeholder = t("con.empty_default");
      input.spellcheck = false;
    }
    input.id = `set-${id}`;
    input.dataset.setting = spec.name;
    input.dataset.kind = spec.kind;
    input.title = help;
    label.htmlFor = input.id;
    field.append(input);
    if (spec.kind === "flag") field.append(node("span", "", help));
    else if (spec.unit) field.append(node("span", "", spec.unit));
    return [label, field, now];
  }

  function buildSettingsForm(schema) {
    S.schema = schema.filter((s) => s && typeof s === "object" && typeof s.name === "string"
      && ["number", "flag", "choice", "text"].includes(s.kind));
    const frag = document.createDocumentFragment();
    for (const spec of S.schema) frag.append(...settingRow(spec));
    el.settingsLoading.remove();
    el.settingsForm.insertBefore(frag, el.settingsActions);
    applyRoomSettings(S.settings, S.effective);
  }

  async function loadSettingsSchema() {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch("/api/room-settings", { cache: "no-store" });
        if (r.ok) {
          const data = await r.json();
          if (Array.isArray(data)) { buildSettingsForm(data); return; }
        }
      } catch { /* the server is down: try again below */ }
      el.settingsLoading.textContent = t("con.settings_retry");
      await new Promise((res) => setTimeout(res, Math.min(10000, 1000 * 2 ** attempt)));
    }
  }

  function applyRoomSettings(settings, effective) {
    S.settings = settings;
    S.effective = effective;
    for (const spec of S.schema) {
      const now = nowOf(spec);
      if (!now) continue;
      const has = spec.name in effective;
      const v = has ? effective[spec.name] : settings[spec.name];
      const words = v === undefined ? "–" : valueWords(spec, v);
      const set = spec.name in settings;
      if (!spec.writable) {
        now.textContent = words;
        now.classList.toggle("on", v === true);
        continue;
      }
      now.textContent = t("con.now", { v: spec.kind === "text" && v ? t("con.now_set") : words });
      now.title = `${set ? t("con.set_here") : t("con.server_default")}${spec.kind === "text" && v ? `: ${v}` : ""}`;
      now.classList.toggle("default", !set);
    }
    if (!S.settingsDirty) fillSettingsForm();
  }

  function fillSettingsForm() {
    for (const spec of S.schema) {
      if (!spec.writable) continue;
      const input = inputOf(spec);
      if (!input || document.activeElement === input) continue;
      const set = S.settings[spec.name];
      const eff = spec.name in S.effective ? S.effective[spec.name] : spec.default;
      if (spec.kind === "number") {
        // the room's own value; empty when it takes the default (shown as the placeholder)
        input.value = typeof set === "number" && !(spec.name === "slow_mode_s" && set === 0) ? String(set) : "";
      } else if (spec.kind === "flag") {
        input.checked = Boolean(eff);
      } else if (spec.kind === "choice") {
        input.value = String(eff);
      } else {
        input.value = typeof set === "string" ? set : "";
      }
    }
  }

  /** What the form would change: only the settings whose input differs from the room. */
  function settingsChanges() {
    const body = {};
    for (const spec of S.schema) {
      if (!spec.writable) continue;
      const input = inputOf(spec);
      if (!input) continue;
      const set = S.settings[spec.name];
      const eff = spec.name in S.effective ? S.effective[spec.name] : spec.default;
      if (spec.kind === "number") {
        const raw = input.value.trim();
        const current = typeof set === "number" ? set : null;
        let want = raw === "" ? null : Number(raw);
        if (raw !== "" && !Number.isFinite(want)) want = raw; // the server says what is wrong
        if (spec.name === "slow_mode_s" && want === 0) want = null;
        if (want !== current) body[spec.name] = want;
      } else if (spec.kind === "flag") {
        const want = input.checked;
        // back to the default is a reset, so a changed server default applies again
        if (want !== Boolean(eff)) body[spec.name] = want === Boolean(spec.default) ? null : want;
      } else if (spec.kind === "choice") {
        if (input.value !== String(eff)) body[spec.name] = input.value;
      } else {
        const want = input.value.trim();
        if (want !== (typeof set === "string" ? set : "")) body[spec.name] = want;
      }
    }
    return body;
  }

  async function submitSettings() {
    const body = settingsChanges();
    if (!Object.keys(body).length) {
      say(t("con.nothing_to_change"), "info");
      S.settingsDirty = false;
      return;
    }
    const res = await act("PATCH", "/settings", body, t("con.settings_changed", { what: settingWords(body) }));
    if (res.ok && res.data && typeof res.data === "object") {
      S.settingsDirty = false;
      S.settings = res.data;
      pollSettingsNow();
    }
  }

  async function resetSettings() {
    const body = {};
    for (const spec of S.schema) if (spec.writable) body[spec.name] = null;
    const res = await act("PATCH", "/settings", body, t("con.settings_reset"));
    if (res.ok && res.data) {
      S.settingsDirty = false;
      S.settings = res.data;
      pollSettingsNow();
    }
  }

  /** Read the room back at once after a change (settings and the effective values). */
  async function pollSettingsNow() {
    try {
      const r = await fetch(roomPath, { cache: "no-store" });
      if (!r.ok) return;
      const data = await r.json();
      if (data && typeof data === "object") {
        applyRoomSettings(data.settings && typeof data.settings === "object" ? data.settings : {},
          data.effective && typeof data.effective === "object" ? data.effective : {});
        fillSettingsForm();
      }
    } catch { /* the next poll of the figures tries again */ }
  }

  // ---- blocked words ----------------------------------------------------------------------------
  async function loadWords() {
    const res = await api("GET", "/words");
    if (res.ok && res.data) renderWords(res.data);
    return res;
  }
  function renderWords(data) {
    S.words = {
      room: Array.isArray(data.room) ? data.room.filter((w) => typeof w === "string") : [],
      global: Array.isArray(data.global) ? data.global.filter((w) => typeof w === "string") : [],
    };
    const frag = document.createDocumentFragment();
    for (const w of S.words.room) {
      const li = node("li", "chip");
      li.dataset.word = w;
      const b = node("button", "chip-x", "×");
      b.type = "button";
      b.dataset.word = w;
      b.setAttribute("aria-label", t("con.unblock_word", { w }));
      b.title = t("con.unblock");
      li.append(node("span", "chip-text", w), b);
      frag.appendChild(li);
    }
    if (!S.words.room.length) frag.appendChild(node("li", "chip-none muted", t("con.none")));
    el.wordsList.replaceChildren(frag);
    el.wordsGlobal.textContent = S.words.global.length ? S.words.global.join(", ") : t("con.none");
  }
  async function addWords() {
    // A "re:" pattern is one entry, commas and all ({2,5}); words are split on commas.
    const typed = el.wordsInput.value.trim();
    const words = typed.startsWith("re:") ? [typed] : typed.split(/[,\n]/).map((w) => w.trim()).filter(Boolean);
    if (!words.length) { fail(t("con.type_word")); return; }
    const res = await act("PATCH", "/words", { add: words, remove: [] },
      t(words.length > 1 ? "con.blocked_words" : "con.blocked_word",
        { words: words.map((w) => t("con.quoted", { w })).join(t("con.list_sep")) }));
    if (res.ok) {
      el.wordsInput.value = "";
      renderWords(res.data);
    }
  }
  async function removeWord(word) {
    const res = await act("PATCH", "/words", { add: [], remove: [word] }, t("con.unblocked", { w: word }));
    if (res.ok) renderWords(res.data);
  }

  // ---- pin and notices ------------------------------------------------------------------------
  function setPin(pin, ts) {
    if (ts < S.pinTs) return;
    S.pinTs = ts;
    S.pin = pin && typeof pin === "object" && typeof pin.text === "string" ? pin : null;
    renderPin();
  }
  function renderPin() {
    const p = S.pin;
    const live = p && (!p.until || Number(p.until) > Date.now());
    el.pinCurrent.replaceChildren();
    el.pinCurrent.classList.toggle("on", Boolean(live));
    if (!live) {
      el.pinCurrent.textContent = p ? t("con.pin_expired") : t("con.pin_none");
      return;
    }
    const tag = node("span", "tag pin", t("con.pinned_tag"));
    const text = node("strong", "pin-text", p.text);
    const left = p.until ? t("con.pin_left", { d: fmtDuration((Number(p.until) - Date.now()) / 1000) })
      : t("con.pin_until_unpinned");
    const meta = node("span", "muted", t("con.pin_meta", { by: str(p.by) || "?", left }));
    el.pinCurrent.append(tag, " ", text, meta);
  }
  async function pinIt() {
    const text = el.pinText.value.trim();
    if (!text) { fail(t("con.type_pin")); return; }
    const body = { text };
    if (el.pinDuration.value) body.duration_s = Number(el.pinDuration.value);
    const res = await act("PUT", "/pin", body, t("con.pinned_msg"));
    if (res.ok) {
      el.pinText.value = "";
      setPin(res.data, Date.now());
    }
  }
  async function unpin() {
    const res = await act("DELETE", "/pin", undefined, t("con.unpinned_msg"));
    if (res.ok) setPin(null, Date.now());
  }
  async function sendNotice() {
    const text = el.noticeText.value.trim();
    if (!text) { fail(t("con.type_notice")); return; }
    const res = await act("POST", "/notices", { text }, t("con.notice_sent"));
    if (res.ok) el.noticeText.value = "";
  }

  // ---- bans -----------------------------------------------------------------------------------
  async function refreshBans() {
    if (!canModerate()) return;
    const res = await api("GET", "/bans");
    if (!res.ok || !Array.isArray(res.data)) return;
    S.bans = new Map(res.data.filter((b) => b && typeof b.uid === "string")
      .map((b) => [b.uid, typeof b.until === "number" ? b.until : null]));
    renderBans();
    markBanned();
  }
  function renderBans() {
    const frag = document.createDocumentFragment();
    const now = Date.now() / 1000;
    for (const [uid, until] of [...S.bans.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      const li = node("li", "ban");
      li.dataset.uid = uid;
      const who = node("code", "ban-uid", uid);
      const left = until ? t("con.ban_left", { d: fmtDuration(until - now) }) : t("con.ban_permanent");
      const meta = node("span", until ? "muted" : "tag perm", left);
      const b = node("button", "small unban", t("con.unban"));
      b.type = "button";
      b.dataset.uid = uid;
      li.append(who, meta, node("span", "spacer"), b);
      frag.appendChild(li);
    }
    el.bansList.replaceChildren(frag);
    el.bansEmpty.hidden = S.bans.size > 0;
  }
  async function unban(uid) {
    const res = await act("DELETE", `/bans/${encodeURIComponent(uid)}`, undefined, t("con.unbanned", { uid }));
    if (res.ok || res.status === 404) {
      S.bans.delete(uid);
      renderBans();
      markBanned();
    }
  }

  // ---- audit ----------------------------------------------------------------------------------
  function describe(entry) {
    const d = entry.detail && typeof entry.detail === "object" ? entry.detail : {};
    switch (entry.action) {
      case "ban": {
        const until = Number(d.until);
        const how = until > 0 ? t("con.what_timed_out", { d: fmtDuration(until - Number(entry.ts) / 1000) })
          : t("con.what_banned");
        return `${how}${d.close ? t("con.audit_closed") : ""}${d.reason ? t("con.err_detail", { d: d.reason }) : ""}`;
      }
      case "unban": return t("con.a_unban");
      case "delete": return typeof d.text === "string" ? t("con.a_delete_text", { w: d.text }) : t("con.a_delete");
      case "words": {
        const parts = [];
        if (Array.isArray(d.add) && d.add.length) parts.push(t("con.a_blocked", { w: d.add.join(", ") }));
        if (Array.isArray(d.remove) && d.remove.length) parts.push(t("con.a_unblocked", { w: d.remove.join(", ") }));
        return parts.join("; ") || t("con.a_words");
      }
      case "settings": return settingWords(d);
      case "pin": return d.until ? t("con.a_pin_until", { w: str(d.text), until: clock(d.until) })
        : t("con.a_pin", { w: str(d.text) });
      case "unpin": return t("con.a_unpin");
      case "notice": return t("con.a_notice", { w: str(d.text) });
      case "highlight": return t("con.a_highlight");
      case "unhighlight": return t("con.a_unhighlight");
      case "staff_grant": return t("con.a_staff_grant", { role: str(d.role) });
      case "staff_revoke": return t("con.a_staff_revoke");
      default: return Object.keys(d).length ? JSON.stringify(d) : "";
    }
  }

  async function refreshAudit() {
    if (!canModerate()) return;
    const res = await api("GET", "/audit?limit=50");
    if (!res.ok || !Array.isArray(res.data)) return;
    const entries = res.data.filter((e) => e && typeof e === "object");
    const top = entries.length ? `${entries[0].id}/${entries.length}` : "";
    // the newest pin/unpin tells what is pinned now
    const pinEntry = entries.find((e) => e.action === "pin" || e.action === "unpin");
    if (pinEntry) setPin(pinEntry.action === "pin" ? pinEntry.detail : null, Number(pinEntry.ts) || 0);
    else renderPin();
    if (top === S.auditTop) return;
    S.auditTop = top;
    const frag = document.createDocumentFragment();
    for (const e of entries) {
      const li = node("li", `audit-entry a-${str(e.action).replace(/[^a-z_]/g, "")}`);
      li.dataset.action = str(e.action);
      li.append(
        node("time", "t", clock(e.ts)),
        node("span", "by", str(e.by)),
        node("span", "action", str(e.action)),
        node("code", "target", str(e.target)),
        node("span", "detail", describe(e)),
      );
      frag.appendChild(li);
    }
    el.auditList.replaceChildren(frag);
    el.auditEmpty.hidden = entries.length > 0;
  }

  // ---- wiring ---------------------------------------------------------------------------------
  function bind() {
    el.roomForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const next = el.roomInput.value.trim();
      if (!ROOM_RE.test(next)) {
        fail(t("con.room_rule"));
        return;
      }
      if (next !== room) location.search = `?room=${encodeURIComponent(next)}`;
    });
    el.loginForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = el.tokenInput.value.trim();
      if (!t) { fail(I18N.t("con.paste_token")); return; }
      useToken(t);
    });
    el.tokenChange.addEventListener("click", () => {
      el.login.hidden = false;
      el.tokenInput.focus();
    });
    el.logout.addEventListener("click", () => useToken(""));

    el.feedPause.addEventListener("click", () => setPaused(!feed.paused));
    el.feedOlder.addEventListener("click", loadOlder);
    let filterTimer = 0;
    const onFilter = () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => { el.feedOlder.disabled = false; renderAll(); }, 120);
    };
    el.filterUser.addEventListener("input", onFilter);
    el.filterText.addEventListener("input", onFilter);
    el.filterForm.addEventListener("submit", (ev) => { ev.preventDefault(); renderAll(); });
    el.filterClear.addEventListener("click", () => {
      el.filterUser.value = "";
      el.filterText.value = "";
      el.feedOlder.disabled = false;
      renderAll();
    });
    const pick = (ev) => {
      const row = ev.target.closest(".row");
      if (row && el.feed.contains(row)) select(rowItem(row));
    };
    el.feed.addEventListener("click", pick);
    el.feed.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(ev); }
    });
    el.selClose.addEventListener("click", unselect);
    el.actDelete.addEventListener("click", deleteSelected);
    el.actTimeout.addEventListener("click", () => {
      const it = feed.selected;
      if (it) ban(str(it.uid), TIMEOUT_S, el.selCloseConns.checked, nameOf(it));
    });
    el.actBan.addEventListener("click", () => {
      const it = feed.selected;
      if (it) ban(str(it.uid), null, el.selCloseConns.checked, nameOf(it));
    });
    el.actHighlight.addEventListener("click", () => {
      const it = feed.selected;
      if (it) act("PUT", `/highlights/${encodeURIComponent(str(it.uid))}`, undefined,
        t("con.highlighted", { name: nameOf(it) }));
    });
    el.actUnhighlight.addEventListener("click", () => {
      const it = feed.selected;
      if (it) act("DELETE", `/highlights/${encodeURIComponent(str(it.uid))}`, undefined,
        t("con.unhighlighted", { name: nameOf(it) }));
    });
    el.actFilter.addEventListener("click", () => {
      const it = feed.selected;
      if (!it) return;
      el.filterUser.value = str(it.uid);
      renderAll();
    });

    el.settingsForm.addEventListener("input", () => { S.settingsDirty = true; });
    el.settingsForm.addEventListener("submit", (ev) => { ev.preventDefault(); submitSettings(); });
    el.settingsReset.addEventListener("click", resetSettings);
    el.wordsForm.addEventListener("submit", (ev) => { ev.preventDefault(); addWords(); });
    el.wordsList.addEventListener("click", (ev) => {
      const b = ev.target.closest("button.chip-x");
      if (b) removeWord(b.dataset.word);
    });
    el.pinForm.addEventListener("submit", (ev) => { ev.preventDefault(); pinIt(); });
    el.pinUnset.addEventListener("click", unpin);
    el.noticeForm.addEventListener("submit", (ev) => { ev.preventDefault(); sendNotice(); });
    el.banForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const uid = el.banUid.value.trim();
      if (!UID_RE.test(uid)) { fail(t("con.uid_rule")); return; }
      const d = el.banDuration.value ? Number(el.banDuration.value) : null;
      ban(uid, d, true, uid).then((res) => { if (res.ok) el.banUid.value = ""; });
    });
    el.bansList.addEventListener("click", (ev) => {
      const b = ev.target.closest("button.unban");
      if (b) unban(b.dataset.uid);
    });
    el.auditRefresh.addEventListener("click", () => { S.auditTop = ""; refreshAudit(); });
  }

  function rememberRoom() {
    const rooms = load(ROOMS_KEY, []);
    const list = (Array.isArray(rooms) ? rooms : []).filter((r) => typeof r === "string" && ROOM_RE.test(r) && r !== room);
    list.unshift(room);
    save(ROOMS_KEY, list.slice(0, 12));
    const frag = document.createDocumentFragment();
    for (const r of list.slice(0, 12)) {
      const o = document.createElement("option");
      o.value = r;
      frag.appendChild(o);
    }
    el.roomList.replaceChildren(frag);
  }

  // ---- start ----------------------------------------------------------------------------------
  document.title = t("con.title", { room });
  I18N.apply();
  // a language switch: the page again in the other language (token and room are kept)
  const langSwitch = $("lang-switch");
  if (langSwitch) {
    langSwitch.addEventListener("click", () => I18N.setLang(I18N.lang === "zh" ? "en" : "zh"));
  }
  I18N.onChange(() => location.reload());
  el.roomInput.value = room;
  el.loginRoom.textContent = roomOk ? room : t("con.room_placeholder");
  el.playerLink.href = `/?room=${encodeURIComponent(room)}`;
  buildFigures();
  loadSettingsSchema();
  bind();
  renderFeedMeta();
  renderPin();
  setInterval(() => {
    renderFeedMeta();
    if (S.pin) renderPin();
    if (S.bans.size) renderBans();
    renderWho();
  }, 1000);

  // a token in the fragment (#token=...): keep it, and take it out of the address bar
  const frag = new URLSearchParams(location.hash.replace(/^#/, ""));
  const fromUrl = frag.get("token");
  if (fromUrl) history.replaceState(null, "", location.pathname + location.search);

  if (!roomOk) {
    fail(t("con.room_invalid"));
    el.login.hidden = true;
  } else {
    rememberRoom();
    pollFigures();
    const stored = load(TOKEN_KEY, "");
    useToken(fromUrl || (typeof stored === "string" ? stored : ""));
  }

  // ---- the hook for tests and the curious ------------------------------------------------------
  // For console-identity.js (issue 19): the API helpers of this page, nothing else.
  // token(): the staff token, for console-send.js to open its WebSocket with (issue 19).
  window.dmConsoleApi = Object.freeze({ api, act, say, fail, canModerate, fmtDuration, fmtNum,
    clock, node, t, token: () => S.token });

  window.dmConsole = Object.freeze({
    get room() { return room; },
    get auth() { return S.auth; },
    get paused() { return feed.paused; },
    get newCount() { return feed.newCount; },
    get cursor() { return feed.cursor; },
    get polls() { return feed.polls; },
    get received() { return feed.received; },
    get errors() { return S.errors; },
    figures: () => (S.figures ? JSON.parse(JSON.stringify(S.figures)) : null),
    series: (key) => (S.series[key] || []).slice(),
    rowIds: () => Array.from(el.feed.querySelectorAll(".row"), (r) => r.dataset.id),
    bufferSize: () => feed.buffer.length + feed.held.length,
  });
})();
