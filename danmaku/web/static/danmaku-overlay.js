/* danmaku-overlay.js: bullet comments over any site's own <video>. No build step, no
 * dependency, nothing fetched but the gateway's WebSocket.
 *
 *   <script src="https://DANMAKU-WEB/static/danmaku-overlay.js"></script>
 *   const dm = DanmakuOverlay.attach(document.querySelector("video"), {
 *     ws: "wss://DANMAKU-GATEWAY/ws", room: "lobby", token: null, density: 1 });
 *   dm.on("state", (s) => ...);   // "connecting" | "connected" | "reconnecting" | "closed"
 *   dm.on("error", (e) => ...);   // {code, retry_after_ms?, until?, reason?}
 *   dm.on("comment", (item) => ...); // each comment delivered ({id, uid, nick, text, ...})
 *   dm.on("notice", (msg) => ...);   // room notices (resume_failed, pins, ...)
 *   dm.connection.on("frame", (msg, {gap}) => ...); // the client underneath, every event
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
 *   seen before are skipped; moderators' retracts leave the screen; a socket silent for
 *   ``deadAfterMs`` (35 s; it pings every 15 s) is replaced. The client is
 *   ``DanmakuOverlay.Connection`` (below), which the project's own player uses too;
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
  const SEEN_CAP = 5000;

  const STYLE = `
.dmo-layer{position:absolute;overflow:hidden;pointer-events:none;z-index:2147483000;contain:strict}
.dmo-layer.off{visibility:hidden}
.dmo-item{position:absolute;left:0;top:0;white-space:pre;font-weight:700;padding:0 4px;
font-size:var(--dmo-font,24px);line-height:var(--dmo-line,30px);
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

  // ---- the renderer: lanes and moving comments (the player's too) ------------------------
  const RENDER = Object.freeze({
    SCROLL_MS: 8000,      // time to cross the stage at speed 1
    FIXED_MS: 4000,       // how long a top/bottom comment stays
    GAP_PX: 24,           // least gap between two comments in a lane
    MAX_WAIT_MS: 4000,    // a comment that finds no lane this long is skipped
    STARVE_MS: 800,       // one waiting this long goes before those behind it
    MAX_WAITING: 300,     // comments waiting for a lane (oldest ordinary dropped)
    MAX_BACKLOG_MS: 1500, // beyond this, a frame is shown at once, not spread
  });

  function isDark(hex) {
    const n = parseInt(hex.slice(1), 16);
    const r = (n >> 16) & 255, g = (n >> 8) & 255, b = n & 255;
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255 < 0.15; // black, navy: a light outline
  }

  /** Bullet comments in lanes over a stage, as DOM elements moved by the Web Animations
   *  API (CSS transforms, on the compositor). One class for the overlay and the player.
   *
   *  It promises: a scrolling comment takes a lane only when it will not catch the one
   *  ahead; a top/bottom one stays still for FIXED_MS on the free lane that scrolling
   *  comments cross least, and keeps new scrolling ones off its row meanwhile; a comment
   *  that finds no lane waits (own ones first, a long-waiting one before those behind it)
   *  and is skipped after MAX_WAIT_MS; a frame's items are spread over its tick; text from
   *  the network is only ever set as text. ``held``: animations are not run by the
   *  document timeline but set to ``advance(t)``'s time (a recording's clock).
   *
   *  Options: ``classes`` {item, count}; ``modeOf(item)``; ``content(item, node)`` (fills
   *  a node itself, returns true: cards); ``onShow(item, node)``; ``onSkip(item)``;
   *  ``measure`` (a hidden element in the stage's font context to measure widths in). */
  class Renderer {
    constructor(layer, o = {}) {
      this.layer = layer;
      this.o = o;
      this.classes = { item: "dm", count: "count", ...(o.classes || {}) };
      this.measure = o.measure || layer;
      this.held = Boolean(o.held);
      this.view = { speed: 1, area: 1 };
      this.geo = { W: 0, H: 0, laneH: 32 };
      this.now = 0;            // held: the clock's time
      this.live = new Map();   // id -> element on screen
      this.incoming = [];      // {item, own, due}: waiting for their time in the tick
      this.waiting = [];       // {item, own, enq, node, w}: waiting for a lane
      this.spreadCursor = 0;
      this.scrollLanes = [];   // per lane: {start, dur, w, W} of its last comment
      this.topLanes = [];      // per lane: time it is free again
      this.bottomLanes = [];
      this.rowScroll = [];     // per row: {start, dur, w, W} of scrolling comments on it
      this.rowHeld = [];       // per row: until when a still comment holds it
      this.running = new Map(); // held: node -> {anim, start, end}
    }

    /** The stage's size and the lanes' height (px). */
    resize(W, H, laneH) { Object.assign(this.geo, { W, H, laneH }); }

    /** speed (0.5-2) and area (the share of the height scrolling lanes use). */
    setView(v) { Object.assign(this.view, v); }

    laneCount() {
      return Math.max(1, Math.floor((this.geo.H * this.view.area) / this.geo.laneH));
    }

    modeOf(item) {
      if (this.o.modeOf) return this.o.modeOf(item);
      return item.mode === "top" || item.mode === "bottom" ? item.mode : "scroll";
    }

    /** Items of one frame, spread evenly over ``tickMs`` from now (not after a backlog). */
    frame(entries, tickMs) {
      if (!entries.length) return;
      const now = performance.now();
      let start = Math.max(now, this.spreadCursor);
      if (start - now > RENDER.MAX_BACKLOG_MS) start = now; // a replayed burst: no spreading
      const step = tickMs / entries.length;
      entries.forEach(([item, own], i) => this.incoming.push({ item, own, due: start + i * step }));
      this.spreadCursor = start + tickMs;
    }

    /** One item, due at ``due`` (default: at once). */
    add(item, own, due = performance.now()) { this.incoming.push({ item, own, due }); }

    makeNode(item, own) {
      const node = document.createElement("div");
      node.className = this.classes.item;
      node.dataset.id = item.id;
      node.dataset.mode = this.modeOf(item);
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
      if (this.o.content && this.o.content(item, node)) return node;
      node.appendChild(document.createTextNode(item.text));
      const count = Number(item.count);
      if (Number.isInteger(count) && count >= 2) {
        const c = document.createElement("span");
        c.className = this.classes.count;
        c.textContent = `×${count}`;
        node.appendChild(c);
      }
      return node;
    }

    /** Will a scrolling comment of width w, started now, stay clear of the lane's last one? */
    scrollLaneFree(last, w, now, dur) {
      if (!last) return true;
      const elapsed = now - last.start;
      const vPrev = (last.W + last.w) / last.dur;
      if (elapsed * vPrev < last.w + RENDER.GAP_PX) return false; // its tail is not in yet
      const remain = last.start + last.dur - now; // until it has left the stage
      if (remain <= 0) return true;
      const vNew = (this.geo.W + w) / dur;
      return this.geo.W - remain * vNew >= RENDER.GAP_PX; // still behind it when it leaves
    }

    /** Pixels of [X, X+w] that scrolling comments on ``row`` sweep between now and until. */
    sweptOverlap(row, X, w, now, until) {
      let cost = 0;
      for (const r of this.rowScroll[row] || []) {
        const end = r.start + r.dur;
        if (end <= now) continue;
        const v = (r.W + r.w) / r.dur;
        const x0 = r.W - (now - r.start) * v;
        const x1 = r.W - (Math.min(until, end) - r.start) * v;
        cost += Math.max(0, Math.min(Math.max(x0, x1) + r.w, X + w) - Math.max(Math.min(x0, x1), X));
      }
      return cost;
    }

    place(entry, now) {
      const mode = this.modeOf(entry.item);
      const lanes = this.laneCount();
      const { W, H, laneH } = this.geo;
      const rows = Math.max(1, Math.floor(H / laneH));
      const { w, node } = entry;
      if (mode === "scroll") {
        const dur = RENDER.SCROLL_MS / this.view.speed;
        let lane = -1;
        for (let i = 0; i < lanes; i++) {
          if (this.rowHeld[i] > now) continue; // a still comment is shown on this row
          if (this.scrollLaneFree(this.scrollLanes[i], w, now, dur)) { lane = i; break; }
        }
        if (lane < 0) return false;
        const rec = { start: now, dur, w, W };
        this.scrollLanes[lane] = rec;
        this.rowScroll[lane] = (this.rowScroll[lane] || []).filter((r) => r.start + r.dur > now);
        this.rowScroll[lane].push(rec);
        const y = lane * laneH + 2;
        node.dataset.lane = String(lane);
        node.style.transform = `translate3d(${W}px, ${y}px, 0)`;
        this.show(entry, node);
        const anim = node.animate(
          [{ transform: `translate3d(${W}px, ${y}px, 0)` },
            { transform: `translate3d(${-w - 8}px, ${y}px, 0)` }],
          { duration: dur, easing: "linear", fill: "forwards" },
        );
        this.run(anim, node, now, dur); // on the same timeline the lane rule used
        return true;
      }
      // A still comment: top lanes count down from the first row, bottom lanes up from the
      // last, on the grid the scrolling lanes use. Among the first few free lanes, take
      // the one that scrolling comments cross least while it is shown, and keep new
      // scrolling comments off that row meanwhile.
      const table = mode === "top" ? this.topLanes : this.bottomLanes;
      const rowOf = (i) => (mode === "top" ? i : Math.max(0, rows - 1 - i));
      const x = Math.max(0, Math.round((W - w) / 2));
      let lane = -1;
      let best = Infinity;
      let candidates = 0;
      for (let i = 0; i < lanes && candidates < 4; i++) {
        if (table[i] > now) continue;
        candidates += 1;
        const cost = this.sweptOverlap(rowOf(i), x, w, now, now + RENDER.FIXED_MS) + i * laneH;
        if (cost < best) { best = cost; lane = i; }
      }
      if (lane < 0) return false;
      table[lane] = now + RENDER.FIXED_MS;
      const row = rowOf(lane);
      this.rowHeld[row] = Math.max(this.rowHeld[row] || 0, now + RENDER.FIXED_MS);
      const y = row * laneH + 2;
      node.dataset.lane = String(lane);
      node.style.transform = `translate3d(${x}px, ${y}px, 0)`;
      this.show(entry, node);
      const anim = node.animate([{ opacity: 1 }, { opacity: 1, offset: 0.92 }, { opacity: 0 }],
        { duration: RENDER.FIXED_MS, fill: "forwards" });
      this.run(anim, node, now, RENDER.FIXED_MS);
      return true;
    }

    /** Start an animation at ``start`` on the lane clock: the document timeline, or (held)
     *  the clock ``advance`` moves, so pause, seek and playback rate are followed exactly. */
    run(anim, node, start, dur) {
      if (this.held) {
        anim.pause();
        anim.currentTime = Math.max(0, this.now - start);
        this.running.set(node, { anim, start, end: start + dur });
        return;
      }
      anim.startTime = start;
      anim.onfinish = () => this.removeNode(node);
    }

    show(entry, node) {
      this.layer.appendChild(node);
      this.live.set(entry.item.id, node);
      if (this.o.onShow) this.o.onShow(entry.item, node);
    }

    removeNode(node) {
      if (this.live.get(node.dataset.id) === node) this.live.delete(node.dataset.id);
      this.running.delete(node);
      for (const a of node.getAnimations()) a.cancel();
      node.remove();
    }

    /** Take these ids off the screen and out of the queues. */
    retract(gone) {
      for (const id of gone) {
        const node = this.live.get(id);
        if (node) this.removeNode(node);
      }
      this.incoming = this.incoming.filter((e) => !gone.has(e.item.id));
      this.waiting = this.waiting.filter((e) => {
        if (!gone.has(e.item.id)) return true;
        e.node.remove();
        return false;
      });
    }

    clear() {
      for (const node of Array.from(this.live.values())) this.removeNode(node);
      for (const e of this.waiting) e.node.remove();
      this.waiting = [];
      this.incoming = [];
      for (const table of [this.scrollLanes, this.topLanes, this.bottomLanes, this.rowScroll,
        this.rowHeld]) table.length = 0;
    }

    skip(entry) {
      entry.node.remove();
      if (this.o.onSkip) this.o.onSkip(entry.item);
    }

    /** Measure new nodes in one layout and queue them for a lane. */
    enqueue(list, now) {
      const fresh = [];
      for (const e of list) {
        const node = this.makeNode(e.item, e.own);
        this.measure.appendChild(node);
        fresh.push({ item: e.item, own: e.own, enq: e.enq ?? now, at: e.at, node, w: 0 });
      }
      for (const entry of fresh) entry.w = entry.node.offsetWidth; // one layout for all
      return fresh;
    }

    /** Every animation frame: put up what is due and what finds a lane. */
    pump(now) {
      this.now = now;
      if (this.incoming.length) {
        const due = [];
        const later = [];
        for (const e of this.incoming) (e.due <= now ? due : later).push(e);
        this.incoming = later;
        for (const entry of this.enqueue(due, now)) {
          // own comments go first: the sender expects to see theirs at once
          if (entry.own) this.waiting.unshift(entry);
          else this.waiting.push(entry);
        }
      }
      if (!this.waiting.length) return;
      const still = [];
      let blocked = false;
      for (const entry of this.waiting) {
        // A long comment needs more room than a short one; without this, short ones
        // behind it would take every lane as it frees and starve it. So once an own
        // comment, or one that has waited a while, finds no lane, those behind it wait.
        if (!blocked && this.place(entry, now)) continue;
        if (!blocked && (entry.own || now - entry.enq > RENDER.STARVE_MS)) blocked = true;
        if (!entry.own && now - entry.enq > RENDER.MAX_WAIT_MS) {
          this.skip(entry);
          continue;
        }
        still.push(entry);
      }
      while (still.length > RENDER.MAX_WAITING) {
        const i = still.findIndex((e) => !e.own);
        const [gone] = still.splice(i < 0 ? 0 : i, 1);
        this.skip(gone);
      }
      this.waiting = still;
    }

    /** Held: clear and put up ``items`` ({item, at}: its time on the clock) as if played
     *  up to ``now``: part-way across, on the lanes they would have had. */
    resync(items, now) {
      this.clear();
      this.now = now;
      for (const entry of this.enqueue(items.map(({ item, at }) => ({ item, own: false, enq: at })), now)) {
        if (!this.place(entry, entry.enq)) this.waiting.push(entry);
      }
    }

    /** Held: move every animation to the clock's ``t``; those past their end leave. */
    advance(t) {
      for (const [node, c] of Array.from(this.running)) {
        if (t >= c.end) this.removeNode(node);
        else c.anim.currentTime = t - c.start;
      }
    }
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
      if (typeof u !== "string" || out.length >= 16) continue;
      try {
        const url = new URL(u);
        if (["ws:", "wss:"].includes(url.protocol) && !out.includes(url.href)) out.push(url.href);
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
        // a web app that hangs must not hold the connection up: the fallback after 5 s
        const r = await fetch(where, { cache: "no-store", signal: AbortSignal.timeout(5000) });
        if (r.ok) {
          const body = await r.json();
          const urls = body && typeof body === "object" ? wsList(body.urls, body.url) : [];
          if (urls.length) return { urls, via: "hint" };
        }
      } catch { /* no endpoint, another origin without CORS, no network: the fallback */ }
    }
    return { urls: await fallback(), via: "config" };
  }

  /** Plain-value-or-function options: a function is asked on every connect. */
  const valueOf = (v) => (typeof v === "function" ? v() : v);

  /** The one client of a gateway's WebSocket, for the overlay and the project's player.
   *
   *  It promises: where to connect comes from ``gatewayUrls`` (the hint, else
   *  ``fallback()``), asked first and again after every failure; with the hint, its
   *  ``urls`` in order, skipping those that failed since the last welcome; with the
   *  fallback's list, a random one first, then the next after every failure. It resumes
   *  after the last frame it saw (``since``, with the room's ``epoch``); a new epoch in
   *  ``welcome`` or a ``resume_failed`` notice restarts the numbering (no false gap);
   *  frames at or below the last seq are dropped (event ``duplicate``). It reconnects with
   *  equal-jitter exponential backoff (reset after a connection lived ``stableMs``); a
   *  socket that brings nothing (no frame, no pong) for ``deadAfterMs`` is dropped and
   *  replaced; it pings every ``pingMs``. A handshake refusal ``bad_room`` stops it (state
   *  "failed"); ``bad_request`` while resuming forgets the resume point.
   *
   *  Options: ``room``; ``token`` and ``density`` (values, or functions asked on each
   *  connect); ``api`` (where the hint is asked, "" = this page's origin, null = not at
   *  all); ``fallback`` (async, a list of ws addresses); ``prepare`` (async, awaited before
   *  each attempt; a rejection counts as a failed attempt); ``pingMs`` (15000),
   *  ``deadAfterMs`` (35000), ``backoffBaseMs`` (400), ``backoffMaxMs`` (15000),
   *  ``stableMs`` (3000).
   *
   *  Events (``on(kind, fn)`` returns an unsubscribe function): ``state`` (state, detail:
   *  "connecting" | "connected" | "reconnecting" {at, delay} | "failed" | "closed"),
   *  ``connecting`` {url, via, since, density, token}, ``welcome`` (msg), ``frame`` (msg,
   *  {gap}), ``duplicate`` (msg), ``notice`` (msg), ``ack`` (msg), ``error`` (msg,
   *  {handshake}), ``close`` {code, reason, refusal, welcomed}, ``message`` (any other
   *  message, e.g. pong). ``comment()`` sends a comment and answers with a promise. */
  class Connection {
    constructor(o) {
      if (!o || !o.room) throw new Error("DanmakuOverlay.Connection: a room is required");
      this.o = {
        pingMs: 15000, deadAfterMs: 35000, backoffBaseMs: 400, backoffMaxMs: 15000,
        stableMs: 3000, api: "", ...o,
      };
      this.listeners = new Map();
      this.state = "idle";
      this.ws = null;
      this.id = 0;
      this.welcomed = false;
      this.openedAt = 0;
      this.lastRx = 0;
      this.attempts = 0;
      this.timer = 0;
      this.reconnectAt = 0;
      this.lastSeq = null;
      this.epoch = "";
      this.user = null;
      this.route = null;
      this.stale = true;
      this.url = "";
      this.rotate = -1;          // fallback lists: the index tried, moved on after failures
      this.failed = new Set();   // hint addresses that failed since the last welcome
      this.refusal = null;       // the handshake's error, decided on at the close
      this.stopped = true;
      this.ticker = 0;
      this.pinger = 0;
      this.pending = new Map();  // nonce -> {msg, resolve, reject}: comments not answered
      this.nonces = 0;
    }

    on(kind, fn) {
      if (typeof fn !== "function") throw new Error("DanmakuOverlay.Connection.on: a function");
      if (!this.listeners.has(kind)) this.listeners.set(kind, []);
      this.listeners.get(kind).push(fn);
      return () => {
        this.listeners.set(kind, (this.listeners.get(kind) || []).filter((f) => f !== fn));
      };
    }

    emit(kind, ...args) {
      for (const fn of this.listeners.get(kind) || []) {
        try { fn(...args); } catch (e) { setTimeout(() => { throw e; }); }
      }
    }

    setState(s, detail) {
      if (this.state === s && s !== "reconnecting") return;
      this.state = s;
      this.emit("state", s, detail || {});
    }

    /** The open, welcomed socket (or null): for tests that cut it. */
    get socket() { return this.ws; }
    get open() { return Boolean(this.ws && this.welcomed && this.ws.readyState === WebSocket.OPEN); }
    get via() { return this.route ? this.route.via : ""; }

    /** Start (or restart after ``stop``): timers and the first connect. */
    start() {
      if (!this.stopped) return;
      this.stopped = false;
      const every = Math.max(100, Math.min(1000, this.o.deadAfterMs / 4));
      this.ticker = setInterval(() => {
        // a socket that has gone silent (no frame, no pong) is dead: start over
        if (this.ws && this.welcomed && Date.now() - this.lastRx > this.o.deadAfterMs) {
          this.drop(4001, "no data");
          this.emit("close", { code: 4001, reason: "no data", refusal: null, welcomed: true });
          this.retry();
        }
      }, every);
      this.pinger = setInterval(() => {
        if (this.open) this.ws.send(JSON.stringify({ type: "ping", nonce: `p${Date.now().toString(36)}` }));
      }, this.o.pingMs);
      this.connect();
    }

    /** Close and stay closed (state "closed"). */
    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this.timer = 0;
      clearInterval(this.ticker);
      clearInterval(this.pinger);
      this.drop();
      for (const p of this.pending.values()) p.reject({ code: "detached" });
      this.pending.clear();
      this.setState("closed");
    }

    /** Drop the socket (if any) and connect again at once, keeping the resume point. */
    reconnect() {
      if (this.stopped) return;
      this.drop();
      this.attempts = 0;
      clearTimeout(this.timer);
      this.timer = 0;
      this.connect();
    }

    /** Waiting for the backoff to end? */
    get waiting() { return Boolean(this.timer) && !this.ws; }

    /** Send a message on the welcomed socket; false when there is none. */
    send(msg) {
      if (!this.open) return false;
      this.ws.send(JSON.stringify(msg));
      return true;
    }

    /** Send a comment (``{text, color, mode}``, optional ``nonce``): resolves with the
     *  server's ``ack`` message (``code: "held"`` when held for review), rejects with its
     *  ``error`` message (``{code, ...}``) or ``{code: "detached"}`` on ``stop``. Not
     *  connected: sent on the next welcome; unanswered ones are sent again after every
     *  welcome with the same nonce (the server posts a nonce once). */
    comment(fields) {
      this.nonces += 1;
      const nonce = typeof fields.nonce === "string" && fields.nonce ? fields.nonce
        : `o${this.nonces}-${Math.random().toString(36).slice(2, 10)}`;
      return new Promise((resolve, reject) => {
        const p = { msg: { ...fields, type: "comment", nonce }, resolve, reject };
        this.pending.set(nonce, p);
        this.send(p.msg);
      });
    }

    pick() {
      const { urls, via } = this.route;
      if (via === "hint") {
        const fresh = urls.find((u) => !this.failed.has(u));
        if (fresh) return fresh;
        this.failed.clear();
        return urls[0];
      }
      if (this.rotate < 0) this.rotate = Math.floor(Math.random() * urls.length);
      return urls[this.rotate % urls.length];
    }

    async connect() {
      clearTimeout(this.timer);
      this.timer = 0;
      if (this.stopped || this.ws) return;
      const id = ++this.id;
      this.setState(this.attempts ? "reconnecting" : "connecting", {});
      try {
        if (this.o.prepare) await this.o.prepare(this.attempts);
        if (id !== this.id || this.stopped) return;
        if (!this.route || this.stale) { // first, and after every failure: ask where to go
          const got = await gatewayUrls(this.o.api, this.o.room, this.o.fallback);
          if (id !== this.id || this.stopped) return;
          if (!got || !got.urls.length) throw new Error("no gateway address");
          this.route = got;
          this.stale = false;
        }
      } catch {
        if (id !== this.id || this.stopped) return;
        this.emit("close", { code: 0, reason: "unreachable", refusal: null, welcomed: false });
        this.retry();
        return;
      }
      let url;
      try {
        url = new URL(this.pick(), location.href);
      } catch {
        url = null;
      }
      if (!url) { this.retry(); return; }
      this.url = url.href;
      const token = valueOf(this.o.token);
      const density = valueOf(this.o.density);
      url.searchParams.set("room", this.o.room);
      if (token) url.searchParams.set("token", token);
      if (this.lastSeq !== null) {
        url.searchParams.set("since", String(this.lastSeq));
        // the room's history numbering this seq belongs to (welcome.epoch): a reset room
        // answers resume_failed rather than replaying frames of another numbering
        if (this.epoch) url.searchParams.set("epoch", this.epoch);
      }
      if (density !== undefined && density !== null) url.searchParams.set("density", String(density));
      let ws;
      try {
        ws = new WebSocket(url.href);
      } catch {
        this.emit("close", { code: 0, reason: "bad address", refusal: null, welcomed: false });
        this.retry();
        return;
      }
      this.ws = ws;
      this.welcomed = false;
      this.refusal = null;
      this.lastRx = Date.now();
      this.emit("connecting", { url: url.href, host: url.host, via: this.route.via,
        since: this.lastSeq, density, token: Boolean(token) });
      ws.onmessage = (ev) => {
        if (id !== this.id) return;
        this.lastRx = Date.now();
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        if (msg && typeof msg === "object") this.onMessage(msg);
      };
      ws.onclose = (ev) => {
        if (id !== this.id) return;
        this.onClose(ev.code, ev.reason);
      };
      ws.onerror = () => { /* a close event follows */ };
    }

    /** Drop the current socket without the close handler's reconnect. */
    drop(code = 1000, reason = "") {
      const ws = this.ws;
      this.ws = null;
      this.id += 1;
      this.welcomed = false;
      if (ws) try { ws.close(code, reason); } catch { /* already closed */ }
    }

    retry() {
      if (this.stopped) return;
      clearTimeout(this.timer);
      const cap = Math.min(this.o.backoffMaxMs, this.o.backoffBaseMs * 2 ** Math.min(this.attempts, 10));
      const delay = Math.round(cap / 2 + Math.random() * (cap / 2)); // "equal jitter"
      this.attempts += 1;
      if (this.rotate >= 0) this.rotate += 1; // the next gateway of a fallback list
      if (this.url) this.failed.add(this.url);
      this.stale = true; // ask the hint again before the next try
      this.reconnectAt = Date.now() + delay;
      this.timer = setTimeout(() => this.connect(), delay);
      this.setState("reconnecting", { at: this.reconnectAt, delay });
    }

    onClose(code, reason) {
      this.ws = null;
      const welcomed = this.welcomed;
      this.welcomed = false;
      if (welcomed && Date.now() - this.openedAt > this.o.stableMs) this.attempts = 0;
      const refusal = this.refusal;
      if (refusal && refusal.code === "bad_request" && this.lastSeq !== null) this.lastSeq = null;
      this.emit("close", { code, reason, refusal, welcomed });
      if (this.stopped || this.ws) return; // a listener stopped or reconnected it
      if (refusal && refusal.code === "bad_room") {
        clearInterval(this.ticker);
        clearInterval(this.pinger);
        this.stopped = true;
        this.setState("failed", { refusal });
        return;
      }
      this.retry();
    }

    onMessage(msg) {
      switch (msg.type) {
        case "welcome": {
          this.welcomed = true;
          this.failed.clear();
          this.openedAt = Date.now();
          this.user = msg.user && typeof msg.user === "object" ? msg.user : null;
          if (typeof msg.epoch === "string" && msg.epoch) {
            // another epoch: the room's history was reset, its seqs are a new numbering
            if (this.epoch && msg.epoch !== this.epoch && typeof msg.seq === "number") this.lastSeq = msg.seq;
            this.epoch = msg.epoch;
          }
          if (this.lastSeq === null && typeof msg.seq === "number") this.lastSeq = msg.seq;
          this.setState("connected", {});
          this.emit("welcome", msg);
          for (const p of this.pending.values()) this.send(p.msg); // same nonce: posted once
          return;
        }
        case "frame": {
          if (typeof msg.seq !== "number") return;
          if (this.lastSeq !== null && msg.seq <= this.lastSeq) {
            this.emit("duplicate", msg);
            return;
          }
          const gap = this.lastSeq !== null && msg.seq > this.lastSeq + 1;
          this.lastSeq = msg.seq;
          this.emit("frame", msg, { gap });
          return;
        }
        case "notice":
          if (msg.event === "resume_failed") {
            // a fresh start: live frames follow the notice's seq in its epoch (no false gap)
            if (typeof msg.seq === "number") this.lastSeq = msg.seq;
            if (typeof msg.epoch === "string" && msg.epoch) this.epoch = msg.epoch;
          }
          this.emit("notice", msg);
          return;
        case "ack": {
          const p = this.pending.get(msg.nonce);
          if (p) {
            this.pending.delete(msg.nonce);
            p.resolve(msg);
          }
          this.emit("ack", msg);
          return;
        }
        case "error": {
          const handshake = !this.welcomed && !msg.nonce;
          if (handshake) this.refusal = msg; // the close that follows decides what to do
          const p = msg.nonce ? this.pending.get(msg.nonce) : null;
          if (p) {
            this.pending.delete(msg.nonce);
            p.reject(msg);
          }
          this.emit("error", msg, { handshake });
          return;
        }
        default:
          this.emit("message", msg);
      }
    }
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
    const listeners = { state: [], error: [], comment: [], online: [], notice: [] };
    const layer = document.createElement("div");
    layer.className = "dmo-layer";
    layer.setAttribute("aria-hidden", "true");
    video.parentNode.insertBefore(layer, video.nextSibling);

    const st = { user: null, online: null, detached: false, tickMs: 100 };
    const seen = new Set();

    function emit(kind, value) {
      for (const fn of listeners[kind] || []) {
        try { fn(value); } catch (e) { setTimeout(() => { throw e; }); }
      }
    }

    // ---- the layer follows the video's box ----------------------------------------------
    function place() {
      layer.style.left = `${video.offsetLeft}px`;
      layer.style.top = `${video.offsetTop}px`;
      layer.style.width = `${video.offsetWidth}px`;
      layer.style.height = `${video.offsetHeight}px`;
      layer.style.opacity = String(view.opacity);
      layer.classList.toggle("off", !view.on);
      geometry();
    }
    const resize = new ResizeObserver(() => place());
    resize.observe(video);
    window.addEventListener("resize", place);

    // ---- rendering: the Renderer above, pumped every animation frame --------------------
    const measure = document.createElement("div"); // new comments, measured out of sight
    measure.style.cssText = "position:absolute;left:0;top:0;visibility:hidden";
    layer.appendChild(measure);
    const renderer = new Renderer(layer, { classes: { item: "dmo-item", count: "dmo-count" },
      measure });
    function geometry() {
      const line = Math.round(view.fontSize * 1.25);
      layer.style.setProperty("--dmo-font", `${view.fontSize}px`);
      layer.style.setProperty("--dmo-line", `${line}px`);
      renderer.resize(layer.clientWidth, layer.clientHeight, line + 6);
      renderer.setView({ speed: view.speed, area: view.area });
    }
    let raf = 0;
    const loop = (now) => {
      raf = requestAnimationFrame(loop);
      renderer.pump(now);
    };
    raf = requestAnimationFrame(loop);
    place();

    function clear() { renderer.clear(); }

    /** A new, valid item: told to listeners, and (danmaku on, page visible) to the screen;
     *  returns it when it should be shown. */
    function accept(item, own) {
      if (!item || typeof item.id !== "string" || typeof item.text !== "string") return null;
      if (seen.has(item.id)) return null;
      seen.add(item.id);
      if (seen.size > SEEN_CAP) seen.delete(seen.values().next().value);
      emit("comment", { ...item, own });
      return view.on && !document.hidden ? item : null;
    }

    // ---- the connection: DanmakuOverlay.Connection --------------------------------------
    // The gateway hint is asked at the danmaku web app: ``api`` if given, else the origin
    // this script came from when that is the page's own (another origin answers only with
    // CORS, which the web app does not send: there ``ws`` is the address).
    const api = typeof opt.api === "string" ? opt.api
      : SCRIPT_ORIGIN && SCRIPT_ORIGIN === location.origin ? SCRIPT_ORIGIN : null;

    async function fallbackUrls() {
      if (opt.ws) return [new URL(opt.ws, location.href).href];
      const r = await fetch(new URL("/api/config", api || location.href), { cache: "no-store" });
      const cfg = r.ok ? await r.json() : null;
      const urls = cfg && typeof cfg === "object" ? wsList(cfg.ws_urls, cfg.ws_url) : [];
      if (!urls.length) throw new Error("no gateway address");
      return urls;
    }

    const conn = new Connection({
      room: opt.room, token: opt.token || null, density: () => view.density, api,
      fallback: fallbackUrls,
      ...(Number(opt.deadAfterMs) >= 1000 ? { deadAfterMs: Number(opt.deadAfterMs) } : {}),
    });
    let told = "connecting";
    conn.on("state", (s) => { // "failed" (a refused room) ends it, as "closed" does
      const word = s === "failed" ? "closed" : s;
      if (word !== told) emit("state", (told = word));
    });
    conn.on("welcome", (msg) => {
      st.user = conn.user;
      if (Number(msg.tick_ms) > 0) st.tickMs = Number(msg.tick_ms);
      setOnline(msg.online);
    });
    conn.on("frame", (msg) => {
      setOnline(msg.online);
      if (Array.isArray(msg.retract)) {
        const gone = new Set(msg.retract.filter((x) => typeof x === "string"));
        for (const rid of gone) seen.add(rid);
        renderer.retract(gone);
      }
      const shown = [];
      for (const item of Array.isArray(msg.items) ? msg.items : []) {
        if (accept(item, false)) shown.push([item, false]);
      }
      renderer.frame(shown, st.tickMs); // spread over the tick, as the server sent them
    });
    conn.on("notice", (msg) => emit("notice", msg));
    /** An error message as the overlay's listeners and send() get it. */
    function errorOf(msg) {
      const err = { code: typeof msg.code === "string" ? msg.code : "error" };
      for (const k of ["retry_after_ms", "until", "reason"]) if (k in msg) err[k] = msg[k];
      return err;
    }
    conn.on("error", (msg) => emit("error", errorOf(msg)));

    function setOnline(n) {
      if (typeof n !== "number" || !Number.isFinite(n)) return;
      st.online = n;
      emit("online", n);
    }

    conn.start();

    return Object.freeze({
      get state() { return conn.state === "failed" ? "closed" : conn.state; },
      get online() { return st.online; },
      get user() { return st.user ? { ...st.user } : null; },
      get lastSeq() { return conn.lastSeq; },
      get epoch() { return conn.epoch; },
      /** The gateway address in use and how it was chosen ("hint" or "config"). */
      get gateway() { return { url: conn.url, via: conn.via }; },
      /** The DanmakuOverlay.Connection underneath (its events: welcome, frame, ...). */
      get connection() { return conn; },
      onScreen: () => Array.from(renderer.live.keys()),
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
        // not connected: sent on the next welcome (the connection keeps it until answered)
        return conn.comment({ text: clean, color, mode }).then((ack) => {
          if (ack.code === "held") return { id: ack.id, held: true }; // not shown to anyone yet
          const u = st.user || {};
          const own = accept({ id: ack.id, uid: u.uid, nick: u.nick, text: clean, color, mode,
            ts: Date.now(), prio: 0 }, true);
          if (own) renderer.add(own, true);
          return { id: ack.id };
        }, (msg) => { throw errorOf(msg); });
      },
      set(changes) {
        const c = changes || {};
        const { density, fontSize } = view;
        if ("on" in c) view.on = Boolean(c.on);
        if ("opacity" in c) view.opacity = clamp(c.opacity, 0.1, 1, view.opacity);
        if ("fontSize" in c) view.fontSize = Math.round(clamp(c.fontSize, 12, 64, view.fontSize));
        if ("speed" in c) view.speed = clamp(c.speed, 0.5, 2, view.speed);
        if ("area" in c) view.area = clamp(c.area, 0.25, 1, view.area);
        if ("density" in c && DENSITIES.includes(Number(c.density))) view.density = Number(c.density);
        if (!view.on || fontSize !== view.fontSize) clear(); // lanes change height: start over
        place();
        if (density !== view.density && conn.socket) conn.reconnect(); // density goes on connect
      },
      detach() {
        st.detached = true;
        cancelAnimationFrame(raf);
        conn.stop();
        resize.disconnect();
        window.removeEventListener("resize", place);
        clear();
        layer.remove();
      },
    });
  }

  global.DanmakuOverlay = Object.freeze({ attach, gatewayUrls, Connection, Renderer, RENDER,
    version: "1" });
})(window);
