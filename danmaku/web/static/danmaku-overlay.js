/* danmaku-overlay.js: bullet comments over any site's own <video>. No build step, no
 * dependency, nothing fetched but the gateway's WebSocket.
 *
 *   <script src="https://DANMAKU-WEB/static/danmaku-overlay.js"></script>
 *   const dm = DanmakuOverlay.attach(document.querySelector("video"), {
 *     ws: "wss://DANMAKU-GATEWAY/ws", room: "lobby", token: null, density: 1 });
 *   dm.on("state", (s) => ...);   // "connecting" | "connected" | "reconnecting" | "closed"
 *   dm.on("error", (e) => ...);   // {code, retry_after_ms?, until?, reason?}
 *   dm.on("comment", (item) => ...); // each comment delivered ({id, uid, nick, text, ...})
 *   await dm.send("hello", {color: "#ff8800", mode: "scroll"}); // needs a token
 *   dm.set({opacity: 0.8, fontSize: 28, speed: 1.2, on: true, density: 0.5});
 *   dm.detach();
 *
 * What it promises:
 * - a layer the size of the video, laid over it (a sibling in the same positioned
 *   ancestor, following the video's box as it resizes); it never takes clicks;
 * - one WebSocket for ``room`` to the gateway the web app's hint names
 *   (``GET /api/rooms/{room}/gateway``: ``urls`` tried in order), asked before connecting
 *   and again after every failure; when the hint does not answer (no endpoint, another
 *   origin: the web app sends no CORS headers) ``ws``, else ``/api/config``'s ``ws_urls``.
 *   The hint is asked at ``api`` (the web app's address) if given, else at the origin this
 *   script was loaded from when it is the page's own;
 * - it reconnects with jittered backoff and resumes
 *   after the last frame it saw (``since``, with the room's ``epoch``); frames and ids
 *   seen before are skipped; moderators' retracts leave the screen;
 * - comments in lanes: a scrolling one takes a lane only when it will not catch the one
 *   ahead, top/bottom ones stay still for a while; text is only ever set as text;
 * - ``send`` resolves with ``{id}`` on the server's ack (``{id, held: true}`` when it is held
 *   for review) and rejects with the ``error`` message (``{code, ...}``);
 * - the gateway's Origin check applies: the site's origin must be in the gateway's
 *   ``DANMAKU_ALLOWED_ORIGINS``.
 * A fullscreen video element hides any page layer over it: put the video and the overlay
 * in one container and make that container fullscreen.
 */
(function (global) {
  "use strict";

  const COLOR_RE = /^#[0-9a-fA-F]{6}$/;
  const DENSITIES = [1, 0.5, 0.25];
  const SCROLL_MS = 8000;
  const FIXED_MS = 4000;
  const GAP_PX = 24;
  const SEEN_CAP = 5000;
  const MAX_ON_SCREEN = 200;
  const PING_MS = 15000;
  const DEAD_MS = 35000;

  const STYLE = `
.dmo-layer{position:absolute;overflow:hidden;pointer-events:none;z-index:2147483000;contain:strict}
.dmo-layer.off{visibility:hidden}
.dmo-item{position:absolute;left:0;top:0;white-space:pre;font-weight:700;padding:0 4px;
will-change:transform;font-family:"Helvetica Neue",Arial,"PingFang SC","Microsoft YaHei",
"WenQuanYi Micro Hei",sans-serif;text-shadow:1px 0 1px #000,-1px 0 1px #000,0 1px 1px #000,
0 -1px 1px #000}
.dmo-item.own{outline:2px solid #36b6ff;border-radius:4px}
.dmo-item .dmo-count{font-size:.7em;margin-left:.35em;color:#ffe27a}`;

  function injectStyle() {
    if (document.getElementById("danmaku-overlay-style")) return;
    const style = document.createElement("style");
    style.id = "danmaku-overlay-style";
    style.textContent = STYLE;
    document.head.appendChild(style);
  }

  // where this script came from: the danmaku web app, whose API gives the gateway hint
  const SCRIPT_ORIGIN = (() => {
    try {
      return document.currentScript ? new URL(document.currentScript.src).origin : "";
    } catch {
      return "";
    }
  })();

  /** The WebSocket addresses in ``list`` (ws: or wss:, absolute), ``first`` before them,
   *  without repeats; at most 16. */
  function wsList(list, first) {
    const out = [];
    for (const u of [first, ...(Array.isArray(list) ? list : [])]) {
      if (typeof u !== "string" || out.includes(u) || out.length >= 16) continue;
      try {
        if (["ws:", "wss:"].includes(new URL(u).protocol)) out.push(u);
      } catch { /* not an address */ }
    }
    return out;
  }

  /** Where to connect for ``room``: the gateway hint ``GET {api}/api/rooms/{room}/gateway``
   *  (``{url, urls, ttl_s}``, ``url`` first) when it answers with addresses, else
   *  ``fallback()`` (a list of ws addresses, e.g. /api/config's ``ws_urls``). Resolves with
   *  ``{urls, via: "hint" | "config"}``; rejects only when ``fallback`` does. ``api`` null:
   *  no hint is asked. */
  async function gatewayUrls(api, room, fallback) {
    if (api !== null && api !== undefined) {
      try {
        const where = new URL(`/api/rooms/${encodeURIComponent(room)}/gateway`, api || location.href);
        const r = await fetch(where, { cache: "no-store" });
        if (r.ok) {
          const body = await r.json();
          const urls = body && typeof body === "object" ? wsList(body.urls, body.url) : [];
          if (urls.length) return { urls, via: "hint" };
        }
      } catch { /* no endpoint, another origin without CORS, no network: the fallback */ }
    }
    return { urls: await fallback(), via: "config" };
  }

  const clamp = (x, lo, hi, d) => (Number.isFinite(Number(x))
    ? Math.min(hi, Math.max(lo, Number(x))) : d);

  function attach(video, options) {
    if (!video || !video.parentNode) throw new Error("DanmakuOverlay.attach: a <video> in the page");
    const opt = options || {};
    if (!opt.room) throw new Error("DanmakuOverlay.attach: a room is required");
    injectStyle();
    const view = {
      on: opt.on !== false,
      opacity: clamp(opt.opacity, 0.1, 1, 1),
      fontSize: Math.round(clamp(opt.fontSize, 12, 64, 24)),
      speed: clamp(opt.speed, 0.5, 2, 1),
      area: clamp(opt.area, 0.25, 1, 1),
      density: DENSITIES.includes(Number(opt.density)) ? Number(opt.density) : 1,
    };
    const listeners = { state: [], error: [], comment: [], online: [] };
    const layer = document.createElement("div");
    layer.className = "dmo-layer";
    layer.setAttribute("aria-hidden", "true");
    video.parentNode.insertBefore(layer, video.nextSibling);

    const st = {
      state: "connecting", ws: null, conn: 0, attempts: 0, timer: 0, lastSeq: null, epoch: "",
      lastRx: 0, welcomed: false, user: null, online: null, detached: false, nonce: 0,
      route: null, stale: true, resolving: false, url: "",
    };
    const seen = new Set();
    const pending = new Map(); // nonce -> {resolve, reject, text, color, mode}
    const lanes = []; // per lane: {start, dur, w, W} of its last scrolling comment
    const still = { top: [], bottom: [] }; // per lane: free again at
    const onScreen = new Map(); // id -> element

    function emit(kind, value) {
      for (const fn of listeners[kind] || []) {
        try { fn(value); } catch (e) { setTimeout(() => { throw e; }); }
      }
    }
    function setState(s) {
      if (st.state === s) return;
      st.state = s;
      emit("state", s);
    }

    // ---- the layer follows the video's box ----------------------------------------------
    function place() {
      layer.style.left = `${video.offsetLeft}px`;
      layer.style.top = `${video.offsetTop}px`;
      layer.style.width = `${video.offsetWidth}px`;
      layer.style.height = `${video.offsetHeight}px`;
      layer.style.opacity = String(view.opacity);
      layer.classList.toggle("off", !view.on);
    }
    const resize = new ResizeObserver(place);
    resize.observe(video);
    window.addEventListener("resize", place);
    place();

    // ---- rendering ----------------------------------------------------------------------
    const laneH = () => Math.round(view.fontSize * 1.25) + 4;
    const laneCount = () => Math.max(1, Math.floor((layer.clientHeight * view.area) / laneH()));

    function show(item, own) {
      if (!view.on || document.hidden || onScreen.size >= MAX_ON_SCREEN) return;
      const node = document.createElement("div");
      node.className = own ? "dmo-item own" : "dmo-item";
      node.style.fontSize = `${view.fontSize}px`;
      node.style.lineHeight = `${laneH() - 4}px`;
      node.style.color = COLOR_RE.test(item.color) ? item.color : "#ffffff";
      node.appendChild(document.createTextNode(item.text));
      const count = Number(item.count);
      if (Number.isInteger(count) && count >= 2) {
        const c = document.createElement("span");
        c.className = "dmo-count";
        c.textContent = `×${count}`;
        node.appendChild(c);
      }
      node.dataset.id = item.id;
      node.dataset.mode = item.mode === "top" || item.mode === "bottom" ? item.mode : "scroll";
      node.style.visibility = "hidden";
      layer.appendChild(node);
      const w = node.offsetWidth;
      const W = layer.clientWidth;
      const now = performance.now();
      const n = laneCount();
      const mode = node.dataset.mode;
      let anim;
      if (mode === "scroll") {
        const dur = SCROLL_MS / view.speed;
        let lane = -1;
        for (let i = 0; i < n; i++) {
          const last = lanes[i];
          if (!last) { lane = i; break; }
          const elapsed = now - last.start;
          const vPrev = (last.W + last.w) / last.dur;
          if (elapsed * vPrev < last.w + GAP_PX) continue;
          const remain = last.start + last.dur - now;
          if (remain <= 0 || W - remain * ((W + w) / dur) >= GAP_PX) { lane = i; break; }
        }
        if (lane < 0) { node.remove(); return; } // the screen is full: skipped
        lanes[lane] = { start: now, dur, w, W };
        const y = lane * laneH();
        anim = node.animate([{ transform: `translate3d(${W}px,${y}px,0)` },
          { transform: `translate3d(${-w - 8}px,${y}px,0)` }], { duration: dur, easing: "linear" });
      } else {
        const table = still[mode];
        let lane = -1;
        for (let i = 0; i < n; i++) if (!(table[i] > now)) { lane = i; break; }
        if (lane < 0) { node.remove(); return; }
        table[lane] = now + FIXED_MS;
        const rows = Math.max(1, Math.floor(layer.clientHeight / laneH()));
        const y = (mode === "top" ? lane : rows - 1 - lane) * laneH();
        node.style.transform = `translate3d(${Math.max(0, (W - w) / 2)}px,${y}px,0)`;
        anim = node.animate([{ opacity: 1 }, { opacity: 1, offset: 0.9 }, { opacity: 0 }],
          { duration: FIXED_MS });
      }
      node.style.visibility = "";
      onScreen.set(item.id, node);
      anim.onfinish = () => { node.remove(); onScreen.delete(item.id); };
    }

    function clear() {
      for (const node of onScreen.values()) node.remove();
      onScreen.clear();
      lanes.length = 0;
      still.top.length = 0;
      still.bottom.length = 0;
    }

    function accept(item, own) {
      if (!item || typeof item.id !== "string" || typeof item.text !== "string") return;
      if (seen.has(item.id)) return;
      seen.add(item.id);
      if (seen.size > SEEN_CAP) seen.delete(seen.values().next().value);
      emit("comment", { ...item, own });
      show(item, own);
    }

    // ---- the connection -----------------------------------------------------------------
    // The gateway hint is asked at the danmaku web app: ``api`` if given, else the origin
    // this script came from when that is the page's own (another origin answers only with
    // CORS, which the web app does not send: there ``ws`` is the address).
    const api = typeof opt.api === "string" ? opt.api
      : SCRIPT_ORIGIN && SCRIPT_ORIGIN === location.origin ? SCRIPT_ORIGIN : null;
    const failed = new Set(); // addresses that failed since the last welcome

    async function fallbackUrls() {
      if (opt.ws) return [new URL(opt.ws, location.href).href];
      const r = await fetch(new URL("/api/config", api || location.href), { cache: "no-store" });
      const cfg = r.ok ? await r.json() : null;
      const urls = cfg && typeof cfg === "object" ? wsList(cfg.ws_urls, cfg.ws_url) : [];
      if (!urls.length) throw new Error("no gateway address");
      return urls;
    }

    async function connect() {
      if (st.detached || st.ws || st.resolving) return;
      setState(st.attempts ? "reconnecting" : "connecting");
      if (!st.route || st.stale) { // first, and after every failure: ask where to go
        st.resolving = true;
        let got = null;
        try { got = await gatewayUrls(api, opt.room, fallbackUrls); } catch { got = null; }
        st.resolving = false;
        if (st.detached || st.ws) return;
        if (!got || !got.urls.length) { retry(); return; }
        st.route = got;
        st.stale = false;
      }
      // the first address in order that has not failed since the last welcome
      let target = st.route.urls.find((u) => !failed.has(u));
      if (!target) {
        failed.clear();
        [target] = st.route.urls;
      }
      st.url = target;
      const id = ++st.conn;
      const url = new URL(target, location.href);
      url.searchParams.set("room", opt.room);
      if (opt.token) url.searchParams.set("token", opt.token);
      if (st.lastSeq !== null) {
        url.searchParams.set("since", String(st.lastSeq));
        if (st.epoch) url.searchParams.set("epoch", st.epoch);
      }
      url.searchParams.set("density", String(view.density));
      let ws;
      try {
        ws = new WebSocket(url.href);
      } catch {
        retry();
        return;
      }
      st.ws = ws;
      st.welcomed = false;
      st.lastRx = Date.now();
      ws.onmessage = (ev) => {
        if (id !== st.conn) return;
        st.lastRx = Date.now();
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        if (msg && typeof msg === "object") onMessage(msg);
      };
      ws.onclose = () => {
        if (id !== st.conn) return;
        st.ws = null;
        st.welcomed = false;
        retry();
      };
    }

    function retry() {
      if (st.detached) return;
      if (st.url) failed.add(st.url);
      st.stale = true; // ask the hint again before the next try
      const cap = Math.min(15000, 400 * 2 ** Math.min(st.attempts, 10));
      st.attempts += 1;
      setState("reconnecting");
      clearTimeout(st.timer);
      st.timer = setTimeout(connect, cap / 2 + Math.random() * (cap / 2));
    }

    function drop() {
      const ws = st.ws;
      st.ws = null;
      st.conn += 1;
      st.welcomed = false;
      if (ws) try { ws.close(1000); } catch { /* closed */ }
    }

    function onMessage(msg) {
      if (msg.type === "welcome") {
        st.welcomed = true;
        st.attempts = 0;
        failed.clear();
        st.user = msg.user && typeof msg.user === "object" ? msg.user : null;
        if (typeof msg.epoch === "string" && msg.epoch) {
          if (st.epoch && st.epoch !== msg.epoch && typeof msg.seq === "number") st.lastSeq = msg.seq;
          st.epoch = msg.epoch;
        }
        if (st.lastSeq === null && typeof msg.seq === "number") st.lastSeq = msg.seq;
        setOnline(msg.online);
        setState("connected");
        for (const [nonce, p] of pending) transmit(nonce, p); // same nonce: no double post
      } else if (msg.type === "frame") {
        if (typeof msg.seq !== "number" || (st.lastSeq !== null && msg.seq <= st.lastSeq)) return;
        st.lastSeq = msg.seq;
        setOnline(msg.online);
        if (Array.isArray(msg.retract)) {
          for (const rid of msg.retract) {
            seen.add(rid);
            const node = onScreen.get(rid);
            if (node) { node.remove(); onScreen.delete(rid); }
          }
        }
        for (const item of Array.isArray(msg.items) ? msg.items : []) accept(item, false);
      } else if (msg.type === "ack") {
        const p = pending.get(msg.nonce);
        if (!p) return;
        pending.delete(msg.nonce);
        if (msg.code === "held") {
          p.resolve({ id: msg.id, held: true });
          return;
        }
        p.resolve({ id: msg.id });
        const u = st.user || {};
        accept({ id: msg.id, uid: u.uid, nick: u.nick, text: p.text, color: p.color,
          mode: p.mode, ts: Date.now(), prio: 0 }, true);
      } else if (msg.type === "error") {
        const err = { code: typeof msg.code === "string" ? msg.code : "error" };
        for (const k of ["retry_after_ms", "until", "reason"]) if (k in msg) err[k] = msg[k];
        const p = msg.nonce ? pending.get(msg.nonce) : null;
        if (p) {
          pending.delete(msg.nonce);
          p.reject(err);
        }
        emit("error", err);
      }
    }

    function setOnline(n) {
      if (typeof n !== "number" || !Number.isFinite(n)) return;
      st.online = n;
      emit("online", n);
    }

    function transmit(nonce, p) {
      if (!st.ws || !st.welcomed || st.ws.readyState !== WebSocket.OPEN) return;
      st.ws.send(JSON.stringify({ type: "comment", text: p.text, nonce, color: p.color,
        mode: p.mode }));
    }

    const timer = setInterval(() => {
      if (st.ws && st.welcomed && Date.now() - st.lastRx > DEAD_MS) {
        drop();
        retry();
      }
    }, 1000);
    const pinger = setInterval(() => {
      if (st.ws && st.welcomed && st.ws.readyState === WebSocket.OPEN) {
        st.ws.send(JSON.stringify({ type: "ping", nonce: `p${Date.now().toString(36)}` }));
      }
    }, PING_MS);

    connect();

    return Object.freeze({
      get state() { return st.state; },
      get online() { return st.online; },
      get user() { return st.user ? { ...st.user } : null; },
      get lastSeq() { return st.lastSeq; },
      /** The gateway address in use and how it was chosen ("hint" or "config"). */
      get gateway() { return { url: st.url, via: st.route ? st.route.via : "" }; },
      onScreen: () => Array.from(onScreen.keys()),
      on(kind, fn) {
        if (!listeners[kind] || typeof fn !== "function") throw new Error(`unknown event ${kind}`);
        listeners[kind].push(fn);
        return () => { listeners[kind] = listeners[kind].filter((f) => f !== fn); };
      },
      send(text, o = {}) {
        const clean = String(text).split(/\s+/).filter(Boolean).join(" ");
        if (!clean) return Promise.reject({ code: "empty" });
        if (!opt.token) return Promise.reject({ code: "unauthorized" });
        const color = COLOR_RE.test(o.color) ? o.color.toLowerCase() : "#ffffff";
        const mode = ["scroll", "top", "bottom"].includes(o.mode) ? o.mode : "scroll";
        st.nonce += 1;
        const nonce = `o${st.nonce}-${Math.random().toString(36).slice(2, 10)}`;
        return new Promise((resolve, reject) => {
          const p = { resolve, reject, text: clean, color, mode };
          pending.set(nonce, p);
          transmit(nonce, p); // not connected: sent on the next welcome
        });
      },
      set(changes) {
        const c = changes || {};
        const density = view.density;
        if ("on" in c) view.on = Boolean(c.on);
        if ("opacity" in c) view.opacity = clamp(c.opacity, 0.1, 1, view.opacity);
        if ("fontSize" in c) view.fontSize = Math.round(clamp(c.fontSize, 12, 64, view.fontSize));
        if ("speed" in c) view.speed = clamp(c.speed, 0.5, 2, view.speed);
        if ("area" in c) view.area = clamp(c.area, 0.25, 1, view.area);
        if ("density" in c && DENSITIES.includes(Number(c.density))) view.density = Number(c.density);
        if (!view.on) clear();
        place();
        if (density !== view.density && st.ws) { drop(); connect(); } // density goes on connect
      },
      detach() {
        st.detached = true;
        clearTimeout(st.timer);
        clearInterval(timer);
        clearInterval(pinger);
        drop();
        resize.disconnect();
        window.removeEventListener("resize", place);
        clear();
        layer.remove();
        for (const p of pending.values()) p.reject({ code: "detached" });
        pending.clear();
        setState("closed");
      },
    });
  }

  global.DanmakuOverlay = Object.freeze({ attach, gatewayUrls, version: "1" });
})(window);
