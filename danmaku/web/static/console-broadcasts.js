/* The console's broadcasts panel: start and end a broadcast (the unit of recording for
 * replay) with a title, and the room's recordings with their replay and export links.
 *
 * - Loaded after console.js (deferred, in document order): it uses the token console.js
 *   keeps in localStorage (read at every call, so a token change applies at once) and the
 *   room of the page's ?room=. It builds its own panel at the end of the last column.
 * - API: GET/POST /api/rooms/{room}/broadcasts, POST .../{id}/end (staff token);
 *   replay: the player's /?room=R&broadcast=ID; exports: .../{id}/danmaku?format=json|xml|ass.
 * - Data from the server is set as text (textContent), never as HTML.
 * - window.dmBroadcasts is a small read-only hook for tests.
 */
"use strict";

(() => {
  const { ROOM_RE, load } = window.DanmakuCommon;
  const TOKEN_KEY = "danmaku.console.token.v1"; // console.js's key
  const POLL_MS = 5000;
  const room = new URLSearchParams(location.search).get("room") || "lobby";
  if (!ROOM_RE.test(room)) return;
  const base = `/api/rooms/${encodeURIComponent(room)}/broadcasts`;
  const I18N = window.DanmakuI18n; // the catalogue (i18n.js): every string shown here
  const t = I18N.t;

  // ---- the panel ------------------------------------------------------------------------------
  const make = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    Object.assign(node, props);
    node.append(...children);
    return node;
  };
  const title = make("input", {
    id: "bc-title", className: "grow", maxLength: 200, placeholder: t("con.bc_title_placeholder"),
  });
  const start = make("button", { id: "bc-start", type: "submit", className: "primary" }, t("con.bc_start"));
  const form = make("form", { id: "bc-form", className: "row-form", autocomplete: "off" },
    make("label", { className: "visually-hidden", htmlFor: "bc-title" }, t("con.bc_title_label")), title, start);
  const liveText = make("span", { id: "bc-live-text" });
  const end = make("button", { id: "bc-end", type: "button", className: "danger" }, t("con.bc_end"));
  const live = make("p", { id: "bc-live", className: "pin-row", hidden: true }, liveText, " ", end);
  const msg = make("p", { id: "bc-msg", className: "muted small-text", role: "status" });
  const list = make("ul", { id: "bc-list", className: "list" });
  list.setAttribute("aria-label", t("con.bc_list_label"));
  const empty = make("p", { id: "bc-empty", className: "empty muted" }, t("con.bc_none"));
  const heading = make("h2", { id: "bc-heading" }, t("con.bc_heading"));
  const panel = make("section", { id: "broadcasts", className: "panel" }, heading, form, live, msg, list, empty);
  panel.setAttribute("aria-labelledby", "bc-heading");
  const cols = document.querySelectorAll("main .col");
  (cols.length ? cols[cols.length - 1] : document.body).append(panel);

  // ---- API ------------------------------------------------------------------------------------
  const S = { items: [], loaded: false, busy: false };

  async function call(method, path, body) {
    const token = load(TOKEN_KEY, "");
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const init = { method, cache: "no-store", headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const res = await fetch(base + path, init);
      const data = await res.json().catch(() => null);
      return { ok: res.ok, status: res.status, data };
    } catch {
      return { ok: false, status: 0, data: null };
    }
  }

  function say(text) { msg.textContent = text; }

  function problem(r, what) {
    if (r.status === 401) return t("con.bc_401", { what });
    if (r.status === 403) return t("con.bc_403", { what, room });
    if (r.status === 0) return t("con.bc_0", { what });
    const detail = r.data && typeof r.data.detail === "string" ? t("con.err_detail", { d: r.data.detail }) : "";
    return t("con.bc_failed", { what, status: r.status, detail });
  }

  // ---- rendering ------------------------------------------------------------------------------
  const clock = (ms) => new Date(ms).toLocaleString(I18N.locale(), { dateStyle: "medium", timeStyle: "short" });

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    const two = (a, b) => t("con.dur_two", { a, b });
    return h ? two(t("dur.h", { n: h }), t("dur.min", { n: m }))
      : m ? two(t("dur.min", { n: m }), t("dur.s", { n: s % 60 })) : t("dur.s", { n: s });
  }

  function link(text, href, extra = {}) {
    return make("a", { href, className: "linkish", ...extra }, text);
  }

  function render() {
    const onAir = S.items.find((b) => b.end === null);
    live.hidden = !onAir;
    if (onAir) liveText.textContent = t("con.bc_on_air", { title: onAir.title || t("con.bc_untitled"), since: clock(onAir.start) });
    list.replaceChildren(...S.items.map((b) => {
      const li = make("li", { className: "row bc-item" });
      li.dataset.id = b.id;
      const name = make("strong", { className: "bc-name" }, b.title || t("con.bc_untitled"));
      const when = make("span", { className: "muted small-text" },
        ` ${clock(b.start)} · ${b.end === null ? t("con.bc_live") : duration(b.end - b.start)} `);
      const replay = `/?room=${encodeURIComponent(room)}&broadcast=${encodeURIComponent(b.id)}`;
      const files = ["json", "xml", "ass"].map((f) =>
        link(f.toUpperCase(), `${base}/${encodeURIComponent(b.id)}/danmaku?format=${f}`,
          { download: `${room}-${b.id}.${f}`, className: `linkish bc-export bc-${f}` }));
      li.append(name, when, link(t("con.bc_replay"), replay, { target: "_blank", rel: "noopener", className: "linkish bc-replay" }),
        " ", ...files.flatMap((a) => [a, " "]));
      return li;
    }));
    empty.hidden = S.items.length > 0;
    start.disabled = end.disabled = S.busy;
  }

  async function refresh() {
    const r = await call("GET", "");
    if (r.ok && Array.isArray(r.data)) {
      S.items = r.data;
      S.loaded = true;
      render();
    } else if (r.status !== 0) {
      say(problem(r, t("con.bc_reading")));
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    S.busy = true; render();
    const r = await call("POST", "", { title: title.value.trim() });
    S.busy = false;
    if (r.ok) { title.value = ""; say(t("con.bc_started", { title: r.data.title || t("con.bc_untitled") })); }
    else say(problem(r, t("con.bc_starting")));
    await refresh();
  });

  end.addEventListener("click", async () => {
    const onAir = S.items.find((b) => b.end === null);
    if (!onAir) return;
    S.busy = true; render();
    const r = await call("POST", `/${encodeURIComponent(onAir.id)}/end`);
    S.busy = false;
    say(r.ok ? t("con.bc_ended", { title: onAir.title || t("con.bc_untitled") }) : problem(r, t("con.bc_ending")));
    await refresh();
  });

  refresh();
  setInterval(refresh, POLL_MS);

  window.dmBroadcasts = Object.freeze({
    get loaded() { return S.loaded; },
    ids: () => S.items.map((b) => b.id),
    refresh,
  });
})();
