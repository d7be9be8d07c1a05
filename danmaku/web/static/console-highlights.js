/* The console's highlights panel: the paid messages and gifts among the room's recent
 * comments (published by the platform's server API), newest first, with their tier's
 * colour -- a list for staff to see and thank, not a revenue report (no totals).
 *
 * - Loaded after console.js (deferred, in document order); uses the token console.js keeps
 *   in localStorage and the page's ?room=. Reads GET /api/rooms/{room}/comments (the
 *   moderation history, staff token) every few seconds and keeps the items whose `kind`
 *   is `paid` or `gift`. Text from the server is set as text, never as HTML.
 * - window.dmHighlights is a small read-only hook for tests.
 */
"use strict";

(() => {
  const { ROOM_RE, COLOR_RE, load } = window.DanmakuCommon;
  const TOKEN_KEY = "danmaku.console.token.v1"; // console.js's key
  const POLL_MS = 5000;
  const SHOWN = 50;
  const room = new URLSearchParams(location.search).get("room") || "lobby";
  if (!ROOM_RE.test(room)) return;

  const make = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    Object.assign(node, props);
    node.append(...children);
    return node;
  };
  const I18N = window.DanmakuI18n; // the catalogue (i18n.js): every string shown here
  const t = I18N.t;
  const list = make("ul", { id: "hl-list", className: "list" });
  list.setAttribute("aria-label", t("con.hl_list_label"));
  const empty = make("p", { id: "hl-empty", className: "empty muted" }, t("con.hl_none"));
  const heading = make("h2", { id: "hl-heading" }, t("con.hl_heading"));
  const panel = make("section", { id: "highlights", className: "panel" }, heading, list, empty);
  panel.setAttribute("aria-labelledby", "hl-heading");
  const cols = document.querySelectorAll("main .col");
  (cols.length ? cols[cols.length - 1] : document.body).append(panel);

  const S = { items: [], loaded: false };

  function amountOf(item) {
    if (item.kind === "gift" && item.gift) {
      return `${item.gift.name} × ${item.gift.count}`;
    }
    const n = typeof item.amount === "number" ? item.amount : 0;
    const cur = typeof item.currency === "string" ? item.currency : "";
    try {
      return cur ? new Intl.NumberFormat(I18N.locale(), { style: "currency", currency: cur }).format(n) : String(n);
    } catch {
      return `${n} ${cur}`.trim();
    }
  }

  function render() {
    list.replaceChildren(...S.items.slice(0, SHOWN).map((item) => {
      const tier = item.tier && typeof item.tier === "object" ? item.tier : null;
      const color = tier && COLOR_RE.test(tier.color) ? tier.color : "#888888";
      const li = make("li", { className: "row hl-item" });
      li.dataset.id = item.id;
      li.dataset.kind = item.kind;
      li.style.borderLeft = `4px solid ${color}`;
      li.style.paddingLeft = "6px";
      li.append(
        make("strong", { className: "hl-nick" }, String(item.nick || item.uid || "?")), " ",
        make("span", { className: "hl-amount" }, amountOf(item)), " ",
        make("span", { className: "muted small-text hl-tier" }, tier ? String(tier.name) : ""), " ",
        make("span", { className: "hl-text" }, String(item.text || "")),
      );
      return li;
    }));
    empty.hidden = S.items.length > 0;
  }

  async function refresh() {
    const token = load(TOKEN_KEY, "");
    if (!token) return;
    try {
      const res = await fetch(`/api/rooms/${encodeURIComponent(room)}/comments?limit=500`, {
        cache: "no-store", headers: { Authorization: `Bearer ${token}` },
      });
      if (!res.ok) return; // console.js says what is wrong with the token
      const data = await res.json();
      const items = Array.isArray(data.items) ? data.items : [];
      S.items = items.filter((c) => c && (c.kind === "paid" || c.kind === "gift"));
      S.loaded = true;
      render();
    } catch { /* the server is away: the next poll tries again */ }
  }

  refresh();
  setInterval(refresh, POLL_MS);

  window.dmHighlights = Object.freeze({
    get loaded() { return S.loaded; },
    ids: () => S.items.map((c) => c.id),
    refresh,
  });
})();
