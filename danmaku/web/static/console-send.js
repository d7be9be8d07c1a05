/* danmaku console: staff chat as themselves (issue 19).
 *
 * A moderator or streamer comments into the room from the console with the console's own
 * token, over a WebSocket to the gateway (GET /api/config: ws_urls, limits), as
 * docs/protocol.md says: `?room=&token=`, then `{"type":"comment","text","nonce"}`,
 * answered by `ack` (or `ack` with code `held`) or `error`. The gateway stamps the
 * comment with the sender's role (the frame item's `role`), and the console's live feed
 * shows it like any other comment.
 *
 * The socket opens on the first send and stays open; a closed one is opened again on the
 * next send (never in a loop). A changed token (log in as someone else) opens a new one.
 * Frames that arrive on it are dropped: the feed reads the room's stored comments.
 * Replies are shown in the console's own words; server text is never shown as is.
 */
"use strict";

(() => {
  const { $ } = window.DanmakuCommon;
  const C = window.dmConsoleApi;
  if (!C || !window.dmConsole) return;
  const t = window.DanmakuI18n.t; // the catalogue (i18n.js): every string shown here
  const HANDSHAKE_MS = 8000;      // no welcome by then: give up on this send
  const REPLY_MS = 10000;         // no ack/error by then: say so (the comment may be lost)
  const el = {
    form: $("send-form"), text: $("send-text"), go: $("send-go"), status: $("send-status"),
  };
  if (!el.form) return;

  const S = {
    config: null,   // /api/config
    ws: null,
    wsToken: "",    // the token the open socket was opened with
    welcomed: false,
    opening: null,  // a promise while a socket is being opened
    pending: new Map(), // nonce -> {text, timer}
    seq: 0,
    sent: 0,        // acks received (for tests)
    lastCode: "",   // the last reply's code ("ack", "held", or an error code)
  };

  function status(text, kind) {
    el.status.textContent = text;
    el.status.className = `send-status small-text ${kind}`;
    el.status.dataset.kind = kind;
  }

  const secs = (ms) => Math.max(1, Math.ceil(Number(ms) / 1000));

  /** An error reply in the console's words. */
  function errorWords(msg) {
    const wait = Number(msg.retry_after_ms) > 0 ? t("con.sd_wait", { s: secs(msg.retry_after_ms) }) : "";
    switch (msg.code) {
      case "rate_limited": return t("con.sd_rate_limited", { wait });
      case "slow_mode": return t("con.sd_slow_mode", { wait });
      case "too_long": {
        const n = S.config && S.config.limits ? Number(S.config.limits.max_text_chars) : 0;
        return n > 0 ? t("con.sd_too_long_n", { n }) : t("con.sd_too_long");
      }
      case "banned": {
        const until = Number(msg.until);
        const left = until > 0 ? t("con.sd_for_more", { d: C.fmtDuration((until - Date.now()) / 1000) }) : "";
        return t("con.sd_banned", { left });
      }
      case "overloaded": return t("con.sd_overloaded", { wait: wait || t("con.sd_shortly") });
      case "empty": case "blocked": case "duplicate": case "muted": case "unauthorized":
      case "login_required": case "unavailable": case "review_full": case "bad_request":
        return t(`con.sd_${msg.code}`);
      default: return t("con.sd_other", { code: String(msg.code || "error").slice(0, 40) });
    }
  }

  async function loadConfig() {
    if (S.config) return S.config;
    const r = await fetch("/api/config", { cache: "no-store" });
    if (!r.ok) throw new Error(t("con.sd_config", { status: r.status }));
    const data = await r.json();
    S.config = data && typeof data === "object" ? data : {};
    const n = S.config.limits ? Number(S.config.limits.max_text_chars) : 0;
    if (n > 0) el.text.maxLength = n;
    return S.config;
  }

  function gateways(config) {
    const listed = Array.isArray(config.ws_urls) ? config.ws_urls.filter((u) => typeof u === "string" && u) : [];
    if (!listed.length && typeof config.ws_url === "string" && config.ws_url) listed.push(config.ws_url);
    return listed;
  }

  function closeSocket() {
    const ws = S.ws;
    S.ws = null;
    S.welcomed = false;
    S.wsToken = "";
    if (ws) { try { ws.close(1000, "console"); } catch { /* already closed */ } }
  }

  /** Open a socket to one gateway; resolves once welcomed, rejects with words. */
  function openOne(url, token) {
    return new Promise((resolve, reject) => {
      const u = new URL(url, location.href);
      u.searchParams.set("room", window.dmConsole.room);
      u.searchParams.set("token", token);
      let ws;
      try {
        ws = new WebSocket(u.href);
      } catch {
        reject(new Error(t("con.sd_bad_address")));
        return;
      }
      let settled = false;
      let handshakeError = null;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        try { ws.close(); } catch { /* ignore */ }
        reject(new Error(t("con.sd_no_answer")));
      }, HANDSHAKE_MS);
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        if (!msg || typeof msg !== "object") return;
        if (!settled) {
          if (msg.type === "welcome") {
            settled = true;
            clearTimeout(timer);
            resolve(ws);
          } else if (msg.type === "error") {
            handshakeError = msg;
          }
          return;
        }
        onMessage(ws, msg);
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          if (handshakeError) reject(new Error(errorWords(handshakeError)));
          else if (ev.code === 1008) reject(new Error(t("con.sd_refused")));
          else reject(new Error(t("con.sd_unreachable")));
          return;
        }
        onClose(ws, ev);
      };
    });
  }

  async function ensureSocket(token) {
    if (S.ws && S.welcomed && S.wsToken === token && S.ws.readyState === WebSocket.OPEN) return S.ws;
    if (S.opening) return S.opening;
    closeSocket();
    S.opening = (async () => {
      const config = await loadConfig();
      const urls = gateways(config);
      if (!urls.length) throw new Error(t("con.sd_no_gateway"));
      let last = null;
      for (const url of urls) {
        try {
          const ws = await openOne(url, token);
          S.ws = ws;
          S.wsToken = token;
          S.welcomed = true;
          return ws;
        } catch (err) {
          last = err;
          // a refused token is refused by every gateway: do not go on
          if (/token|banned|logged-in/.test(String(err.message))) break;
        }
      }
      throw last || new Error(t("con.sd_unreachable"));
    })();
    try {
      return await S.opening;
    } finally {
      S.opening = null;
    }
  }

  function settle(nonce) {
    const entry = S.pending.get(nonce);
    if (!entry) return null;
    clearTimeout(entry.timer);
    S.pending.delete(nonce);
    return entry;
  }

  function onMessage(ws, msg) {
    if (ws !== S.ws) return;
    if (msg.type === "ack" && typeof msg.nonce === "string") {
      const entry = settle(msg.nonce);
      if (!entry) return;
      S.sent += 1;
      if (msg.code === "held") {
        S.lastCode = "held";
        status(t("con.sd_held"), "info");
      } else {
        S.lastCode = "ack";
        status(t("con.sd_sent"), "ok");
      }
    } else if (msg.type === "error") {
      const entry = typeof msg.nonce === "string" ? settle(msg.nonce) : null;
      S.lastCode = String(msg.code || "error");
      // give the text back to edit or resend, unless something new was typed
      if (entry && !el.text.value) el.text.value = entry.text;
      status(errorWords(msg), "bad");
    }
    // frames, notices, pings: the feed and the figures show the room already
  }

  function onClose(ws, ev) {
    if (ws !== S.ws) return;
    S.ws = null;
    S.welcomed = false;
    S.wsToken = "";
    const lost = S.pending.size;
    for (const nonce of [...S.pending.keys()]) settle(nonce);
    if (lost) status(t("con.sd_lost"), "bad");
    else if (ev.code === 1008) status(t("con.sd_closed_1008"), "bad");
  }

  async function send() {
    const text = el.text.value.trim();
    if (!text) { status(t("con.sd_type"), "bad"); return; }
    const token = C.token();
    if (!token || !C.canModerate()) { status(t("con.sd_login"), "bad"); return; }
    el.go.disabled = true;
    status(t("con.sd_sending"), "info");
    let ws;
    try {
      ws = await ensureSocket(token);
    } catch (err) {
      status(t("con.sd_not_sent", { why: String(err && err.message ? err.message : err) }), "bad");
      el.go.disabled = false;
      return;
    }
    S.seq += 1;
    const nonce = `c-${Date.now().toString(36)}-${S.seq}`;
    const timer = setTimeout(() => {
      if (settle(nonce)) status(t("con.sd_no_reply"), "bad");
    }, REPLY_MS);
    S.pending.set(nonce, { text, timer });
    try {
      ws.send(JSON.stringify({ type: "comment", text, nonce }));
      el.text.value = "";
    } catch {
      settle(nonce);
      status(t("con.sd_conn_closed"), "bad");
    }
    el.go.disabled = false;
    el.text.focus();
  }

  el.form.addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
  // the gateway's length limit for the input at once (a failure is tried again on send)
  loadConfig().catch(() => {});
  // a new token (or a log-out) ends the socket of the old one
  setInterval(() => {
    if (S.ws && S.wsToken !== C.token()) closeSocket();
  }, 1000);

  window.dmConsoleSend = Object.freeze({
    get sent() { return S.sent; },
    get lastCode() { return S.lastCode; },
    get open() { return Boolean(S.ws && S.welcomed); },
  });
})();
