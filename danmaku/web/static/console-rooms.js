/* The console's room switcher (issue 24): for staff of more than one room, a list of rooms
 * next to the room box; choosing one opens the console on it (?room=).
 *
 * - Loaded after console.js (deferred, in document order); uses the token console.js keeps
 *   in localStorage and the page's ?room=.
 * - An admin token valid in every room (or a server token) reads the room directory,
 *   GET /api/rooms (live rooms, busiest first, with viewers and comments/s), again every
 *   REFRESH_MS. Another token is refused there (403): its rooms are then those its `room`
 *   claim lists, when it lists more than one. A token of one room shows nothing.
 * - Words from window.DanmakuI18n (keys "rooms.*") when the page has it, else English.
 *   Room names are set as text (and are checked against ROOM_RE) -- never as HTML.
 * - window.dmRooms is a small read-only hook for tests.
 */
"use strict";

(() => {
  const { ROOM_RE, load } = window.DanmakuCommon;
  const TOKEN_KEY = "danmaku.console.token.v1"; // console.js's key
  const REFRESH_MS = 10000;
  const LIMIT = 200; // the directory's page size at most
  const room = new URLSearchParams(location.search).get("room") || "lobby";
  if (!ROOM_RE.test(room)) return;

  const EN = {
    "rooms.label": "rooms",
    "rooms.choose": "Switch to another room",
    "rooms.this": "{room} (this room)",
    "rooms.line": "{room} · {online} online · {rate}/s",
    "rooms.none": "no other live rooms",
    "rooms.failed": "The room list could not be loaded",
  };
  const I18N = window.DanmakuI18n;
  const tr = (key, vars = {}) => {
    const raw = I18N && I18N.has(I18N.lang, key) ? I18N.t(key) : EN[key] || key;
    return raw.replace(/\{(\w+)\}/g, (m, k) => (Object.hasOwn(vars, k) ? String(vars[k]) : m));
  };

  const S = { source: "", rooms: [], loaded: false, error: "", timer: 0 };

  const label = document.createElement("label");
  label.htmlFor = "rooms-select";
  label.className = "visually-hidden";
  const select = document.createElement("select");
  select.id = "rooms-select";
  select.className = "rooms-select";
  const box = document.createElement("span");
  box.id = "rooms-switcher";
  box.hidden = true;
  box.append(label, select);
  const form = document.getElementById("room-form");
  if (form) form.after(box);
  else document.body.prepend(box);

  function token() {
    const t = load(TOKEN_KEY, "");
    return typeof t === "string" ? t : "";
  }

  /** A token's claims, unverified (the server decides what it may do); {} if unreadable. */
  function claimsOf(tok) {
    try {
      const part = tok.split(".")[1] || "";
      const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, "=")));
      return claims && typeof claims === "object" ? claims : {};
    } catch {
      return {};
    }
  }

  /** The rooms a token's `room` claim lists. */
  function claimedRooms(claims) {
    const list = Array.isArray(claims.room) ? claims.room : [];
    return list.filter((r) => typeof r === "string" && ROOM_RE.test(r));
  }

  /** Tokens the directory takes: an admin's valid in every room, the server API's. */
  const forDirectory = (c) => (c.role === "admin" && !c.room) || c.role === "server";

  function useClaimed(claims) {
    const mine = claimedRooms(claims);
    S.source = mine.length > 1 ? "token" : "";
    S.rooms = mine.map((name) => ({ room: name, online: null, rate: 0 }));
    S.error = "";
  }

  function render() {
    label.textContent = tr("rooms.label");
    select.title = tr("rooms.choose");
    const opts = [];
    const here = document.createElement("option");
    here.value = room;
    here.textContent = tr("rooms.this", { room });
    opts.push(here);
    for (const r of S.rooms) {
      if (r.room === room) continue;
      const o = document.createElement("option");
      o.value = r.room;
      o.textContent = r.online === null ? r.room
        : tr("rooms.line", { room: r.room, online: r.online, rate: r.rate });
      opts.push(o);
    }
    if (opts.length === 1) {
      const o = document.createElement("option");
      o.disabled = true;
      o.textContent = S.error || tr("rooms.none");
      opts.push(o);
    }
    select.replaceChildren(...opts);
    select.value = room;
    box.hidden = !S.source;
  }

  async function refresh() {
    const tok = token();
    const claims = claimsOf(tok);
    if (!tok || !forDirectory(claims)) { // (asking would be a 403): the token's own rooms
      useClaimed(claims);
      S.loaded = true;
      render();
      return;
    }
    try {
      const r = await fetch(`/api/rooms?sort=online&order=desc&limit=${LIMIT}`, {
        cache: "no-store", headers: { Authorization: `Bearer ${tok}` },
      });
      if (r.status === 401 || r.status === 403) {
        useClaimed(claims);
      } else if (r.ok) {
        const data = await r.json();
        const list = data && Array.isArray(data.rooms) ? data.rooms : [];
        S.source = "directory";
        S.rooms = list
          .filter((x) => x && typeof x.room === "string" && ROOM_RE.test(x.room))
          .map((x) => ({ room: x.room, online: Math.max(0, Math.round(Number(x.online) || 0)),
            rate: (Number(x.comments_per_s) || 0).toFixed(1) }));
        S.error = "";
        S.timer = setTimeout(refresh, REFRESH_MS);
      } else {
        throw new Error(`HTTP ${r.status}`);
      }
    } catch {
      S.error = tr("rooms.failed");
      if (S.source) S.timer = setTimeout(refresh, REFRESH_MS);
    }
    S.loaded = true;
    render();
  }

  select.addEventListener("change", () => {
    const next = select.value;
    if (ROOM_RE.test(next) && next !== room) location.search = `?room=${encodeURIComponent(next)}`;
  });
  window.addEventListener("storage", (ev) => { // a token pasted in this or another tab
    if (ev.key === TOKEN_KEY) { clearTimeout(S.timer); refresh(); }
  });
  if (I18N && I18N.onChange) I18N.onChange(render);

  window.dmRooms = Object.freeze({
    get loaded() { return S.loaded; },
    get source() { return S.source; },
    rooms: () => S.rooms.map((r) => r.room),
    refresh: () => { clearTimeout(S.timer); return refresh(); },
  });
  refresh();
})();
