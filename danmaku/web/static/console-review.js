/* danmaku console, issue 19: held comments and reports, names instead of ids, the user
 * card, shield mode, and the live-feed filter searching the room's history on the server.
 *
 * Runs beside console.js (loaded after it) and shares only the page and the stored token:
 * - the review queue (GET /held) and the reports (GET /reports) every REVIEW_EVERY_MS while
 *   the console is logged in; approve, deny, dismiss, delete;
 * - names: every uid console.js shows (bans, audit log, feed) is decorated with the nick
 *   and a role badge (GET /names, cached; nicks seen in the feed are learnt from it), the
 *   uid on hover; a click on any name opens the user card;
 * - the user card (<dialog>): recent comments in this room (paged), bans and timeouts
 *   from the audit log, reports against them, actions (time-outs, ban, unban, purge) and
 *   the moderators' private note;
 * - shield mode: one button (PUT/DELETE /shield), its state read from the room's settings.
 * Text from the network is only ever set with textContent.
 */
"use strict";

(() => {
  const { ROOM_RE, $, load } = window.DanmakuCommon;
  const I18N = window.DanmakuI18n; // the catalogue (i18n.js): every string shown here
  const t = I18N.t;
  const TOKEN_KEY = "danmaku.console.token.v1"; // console.js keeps the token here
  const UID_RE = /^[A-Za-z0-9_.:@-]{1,64}$/;
  const COMMENT_ID_RE = /^\d+-\d+$/;
  const REVIEW_EVERY_MS = 2000;
  const SEARCH_DELAY_MS = 400;
  const CARD_PAGE = 20;
  const ROLE_WORDS = { moderator: t("role.moderator"), streamer: t("role.streamer"), admin: t("role.admin") };
  const REASON_WORDS = Object.fromEntries(["spam", "harassment", "hate", "sexual", "other"]
    .map((r) => [r, t(`con.rv_reason.${r}`)]));
  // audit actions whose target is a user (the others name a comment, a word list, ...)
  const USER_TARGETS = new Set(["ban", "unban", "highlight", "unhighlight", "staff_grant",
    "staff_revoke", "purge", "note"]);

  const room = new URLSearchParams(location.search).get("room") || "lobby";
  if (!ROOM_RE.test(room)) return;
  const roomPath = `/api/rooms/${encodeURIComponent(room)}`;

  const el = {
    msg: $("msg"), heldCount: $("held-count"), heldList: $("held-list"), heldEmpty: $("held-empty"),
    reportsCount: $("reports-count"), reportsList: $("reports-list"), reportsEmpty: $("reports-empty"),
    shield: $("shield-toggle"),
    reviewForm: $("review-form"), reviewMode: $("review-mode"), firstChat: $("first-chat"),
    rwordsForm: $("rwords-form"), rwordsInput: $("rwords-input"), rwordsList: $("rwords-list"),
    bansList: $("bans-list"), auditList: $("audit-list"), feed: $("feed"),
    filterUser: $("filter-user"), filterText: $("filter-text"), filterClear: $("filter-clear"),
    search: $("search"), searchStatus: $("search-status"), searchResults: $("search-results"),
    card: $("card"), cardNick: $("card-nick"), cardRole: $("card-role"), cardUid: $("card-uid"),
    cardState: $("card-state"), cardClose: $("card-close"), cardBan: $("card-ban"),
    cardUnban: $("card-unban"), cardReason: $("card-reason"), cardPurgeMin: $("card-purge-min"),
    cardPurge: $("card-purge"), cardComments: $("card-comments"), cardOlder: $("card-older"),
    cardHistory: $("card-history"), cardReports: $("card-reports"),
    cardReportsCount: $("card-reports-count"), cardNoteForm: $("card-note-form"),
    cardNote: $("card-note"), cardNoteMeta: $("card-note-meta"),
  };

  const R = {
    held: [],
    reports: [],
    names: new Map(),   // uid -> {nick, role}
    pending: new Set(), // uids to look up
    namesTimer: 0,
    settings: {},
    reviewDirty: false,
    card: null,         // the uid the card shows
    cardBefore: null,   // paging of its comments
    searchTimer: 0,
    searchGen: 0,
  };

  // ---- helpers ---------------------------------------------------------------------------------
  const str = (v) => (typeof v === "string" ? v : v === null || v === undefined ? "" : String(v));
  function node(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  }
  function button(text, cls, onClick) {
    const b = node("button", cls, text);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }
  const timeFormat = new Intl.DateTimeFormat(I18N.locale(),
    { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  function clock(ms) {
    return timeFormat.format(new Date(Number(ms) || 0));
  }
  function say(text, kind = "ok") {
    el.msg.textContent = text;
    el.msg.className = `msg ${kind}`;
  }
  const token = () => { const t = load(TOKEN_KEY, ""); return typeof t === "string" ? t : ""; };
  const authed = () => Boolean(window.dmConsole && window.dmConsole.auth === "ok");

  /** The moderation API of this room; resolves to {ok, status, data, error}, never throws. */
  async function api(method, path, body) {
    const init = { method, cache: "no-store", headers: { Authorization: `Bearer ${token()}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(`${roomPath}${path}`, init);
    } catch {
      return { ok: false, status: 0, data: null, error: t("con.rv_unreachable") };
    }
    let data = null;
    if (r.status !== 204) { try { data = await r.json(); } catch { data = null; } }
    const detail = data && typeof data.detail === "string" ? data.detail : "";
    const error = r.ok ? "" : r.status === 404
      ? t("con.rv_gone", { why: detail ? t("con.err_detail", { d: detail }) : "" })
      : r.status === 503 ? t("con.rv_503")
      : t("con.err_status", { status: r.status, why: detail ? `: ${detail}` : "" });
    return { ok: r.ok, status: r.status, data, error };
  }
  async function act(method, path, body, okText) {
    const res = await api(method, path, body);
    if (res.ok) say(okText, "ok"); else say(res.error, "bad");
    return res;
  }

  // ---- names -------------------------------------------------------------------------------------
  function learn(uid, nick, role) {
    if (!UID_RE.test(uid)) return;
    const known = R.names.get(uid) || {};
    R.names.set(uid, { nick: nick || known.nick || "", role: role || known.role || "" });
  }
  function want(uid) {
    if (!UID_RE.test(uid) || R.pending.has(uid)) return;
    const known = R.names.get(uid);
    if (known && known.role) return;
    R.pending.add(uid);
    clearTimeout(R.namesTimer);
    R.namesTimer = setTimeout(resolveNames, 150);
  }
  async function resolveNames() {
    const uids = [...R.pending].slice(0, 100);
    if (!uids.length || !authed()) return;
    const q = new URLSearchParams();
    for (const u of uids) q.append("uid", u);
    const res = await api("GET", `/names?${q}`);
    for (const u of uids) R.pending.delete(u);
    if (res.ok && res.data && typeof res.data === "object") {
      for (const [uid, v] of Object.entries(res.data)) {
        if (v && typeof v === "object") learn(uid, str(v.nick), str(v.role) || "viewer");
      }
      redecorate();
    }
    if (R.pending.size) R.namesTimer = setTimeout(resolveNames, 150);
  }
  /** Fill ``target`` with the user's name and role badge; the uid on hover; a click opens
   *  the card. */
  function paintName(target, uid, fallbackNick) {
    const known = R.names.get(uid) || {};
    const nick = known.nick || fallbackNick || uid;
    target.replaceChildren(document.createTextNode(nick));
    const role = ROLE_WORDS[known.role];
    if (role) target.append(node("span", "role-badge", role));
    target.classList.add("name");
    target.dataset.nameUid = uid;
    target.title = t("con.rv_name_title", { uid });
    target.tabIndex = 0;
  }
  function nameEl(uid, fallbackNick) {
    const span = node("span", "name");
    paintName(span, uid, fallbackNick);
    want(uid);
    return span;
  }

  /** Names for what console.js draws: the bans list, the audit log, the feed's rows. */
  function decorateBan(li) {
    const code = li.querySelector(".ban-uid");
    const uid = li.dataset.uid || "";
    if (code && UID_RE.test(uid)) { paintName(code, uid); want(uid); }
  }
  function decorateAudit(li) {
    const by = li.querySelector(".by");
    if (by && !by.dataset.nameUid) {
      const raw = by.textContent;
      const i = raw.indexOf(":");
      const role = i > 0 ? raw.slice(0, i) : "";
      const uid = i > 0 ? raw.slice(i + 1) : raw;
      if (UID_RE.test(uid)) {
        if (ROLE_WORDS[role]) learn(uid, "", role);
        paintName(by, uid);
        want(uid);
      }
    }
    const target = li.querySelector(".target");
    const uid = target ? target.textContent : "";
    if (target && !target.dataset.nameUid && USER_TARGETS.has(li.dataset.action)
        && UID_RE.test(uid) && !COMMENT_ID_RE.test(uid)) {
      paintName(target, uid);
      want(uid);
    }
  }
  function decorateRow(li) {
    const nick = li.querySelector(".nick");
    const uid = li.dataset.uid || "";
    if (!nick || !UID_RE.test(uid)) return;
    // a staff comment carries the role it was sent with (data-role, from its item)
    if (!nick.dataset.nameUid) learn(uid, nick.textContent === uid ? "" : nick.textContent, li.dataset.role || "");
    paintName(nick, uid, nick.textContent);
  }
  /** Names looked up since: every name on the page shows what is known now. */
  function redecorate() {
    for (const n of document.querySelectorAll("[data-name-uid]")) {
      paintName(n, n.dataset.nameUid, n.firstChild ? n.firstChild.textContent : "");
    }
  }
  function observe(list, decorate, selector) {
    new MutationObserver((records) => {
      for (const rec of records) {
        for (const n of rec.addedNodes) if (n.nodeType === 1 && n.matches(selector)) decorate(n);
      }
    }).observe(list, { childList: true });
  }

  // ---- the review queue and reports ----------------------------------------------------------------
  function renderHeld() {
    const frag = document.createDocumentFragment();
    for (const item of R.held) {
      const li = node("li", "q-item");
      li.dataset.id = item.id;
      li.append(node("time", "t", clock(item.held_at)), nameEl(str(item.uid), str(item.nick)));
      li.append(node("span", "spacer"));
      li.append(button(t("con.rv_approve"), "small primary approve", () => decide(item, "approve")));
      li.append(button(t("con.rv_deny"), "small danger deny", () => decide(item, "deny")));
      li.append(node("span", "q-text", str(item.text)));
      frag.appendChild(li);
    }
    el.heldList.replaceChildren(frag);
    el.heldEmpty.hidden = R.held.length > 0;
    el.heldCount.textContent = R.held.length ? String(R.held.length) : "";
  }
  async function decide(item, how) {
    const who = str(item.nick) || str(item.uid);
    const res = await act("POST", `/held/${encodeURIComponent(item.id)}/${how}`, undefined,
      how === "approve" ? t("con.rv_approved", { who }) : t("con.rv_denied", { who }));
    if (res.ok || res.status === 404) {
      R.held = R.held.filter((h) => h.id !== item.id);
      renderHeld();
    }
  }
  function reasonsText(reasons) {
    return Object.entries(reasons || {}).map(([r, n]) => `${REASON_WORDS[r] || r}${n > 1 ? ` ×${n}` : ""}`).join(t("con.list_sep"));
  }
  function renderReports() {
    const frag = document.createDocumentFragment();
    for (const rep of R.reports) {
      const c = rep.comment && typeof rep.comment === "object" ? rep.comment : {};
      const li = node("li", "q-item");
      li.dataset.id = rep.id;
      li.append(node("span", "tag perm", t(rep.count === 1 ? "con.rv_report_one" : "con.rv_reports",
        { n: rep.count })));
      li.append(nameEl(str(c.uid), str(c.nick)), node("span", "muted small-text", reasonsText(rep.reasons)));
      if (Number(rep.user_count) > Number(rep.count)) {
        li.append(node("span", "muted small-text user-count", t("con.rv_against_user", { n: rep.user_count })));
      }
      li.append(node("span", "spacer"));
      li.append(button(t("con.h.delete_comment"), "small danger", async () => {
        const res = await act("DELETE", `/comments/${encodeURIComponent(rep.id)}`, undefined,
          t("con.rv_deleted_reported"));
        if (res.ok || res.status === 404) await dismiss(rep, true);
      }));
      li.append(button(t("con.rv_dismiss"), "small dismiss", () => dismiss(rep, false)));
      li.append(node("span", "q-text", str(c.text)));
      frag.appendChild(li);
    }
    el.reportsList.replaceChildren(frag);
    el.reportsEmpty.hidden = R.reports.length > 0;
    const total = R.reports.reduce((a, r) => a + (Number(r.count) || 0), 0);
    el.reportsCount.textContent = total ? String(total) : "";
  }
  async function dismiss(rep, quiet) {
    const res = quiet ? await api("DELETE", `/reports/${encodeURIComponent(rep.id)}`)
      : await act("DELETE", `/reports/${encodeURIComponent(rep.id)}`, undefined, t("con.rv_dismissed"));
    if (res.ok || res.status === 404) {
      R.reports = R.reports.filter((r) => r.id !== rep.id);
      renderReports();
    }
  }

  async function pollReview() {
    try {
      if (!authed()) return;
      const [held, reports, info] = await Promise.all([
        api("GET", "/held"), api("GET", "/reports"),
        fetch(roomPath, { cache: "no-store" }).then((r) => (r.ok ? r.json() : null)).catch(() => null),
      ]);
      if (held.ok && Array.isArray(held.data)) {
        R.held = held.data.filter((h) => h && typeof h.id === "string");
        renderHeld();
      }
      if (reports.ok && Array.isArray(reports.data)) {
        R.reports = reports.data.filter((r) => r && typeof r.id === "string");
        renderReports();
      }
      if (info && info.effective) applySettings(info.effective);
    } finally {
      setTimeout(pollReview, REVIEW_EVERY_MS);
    }
  }

  // ---- review settings, review words, shield ----------------------------------------------------------
  function applySettings(eff) {
    R.settings = eff;
    const on = Boolean(eff.shield);
    el.shield.setAttribute("aria-pressed", String(on));
    el.shield.textContent = on ? t("con.rv_shield_on_label") : t("con.h.shield_mode");
    // the settings form is built from GET /api/room-settings (console.js): look it up now
    const nowShield = $("now-shield");
    if (nowShield) {
      nowShield.textContent = on ? t("con.on") : t("con.off");
      nowShield.classList.toggle("on", on);
    }
    if (!R.reviewDirty && document.activeElement !== el.reviewMode && document.activeElement !== el.firstChat) {
      el.reviewMode.value = ["off", "suspicious", "all"].includes(eff.review) ? eff.review : "off";
      el.firstChat.value = typeof eff.first_chat_min === "number" ? String(eff.first_chat_min) : "";
    }
  }
  async function applyReview() {
    const body = { review: el.reviewMode.value };
    const raw = el.firstChat.value.trim();
    body.first_chat_min = raw === "" ? null : Number(raw);
    const res = await act("PATCH", "/settings", body,
      t(raw !== "" ? "con.rv_review_first" : "con.rv_review",
        { what: el.reviewMode.selectedOptions[0].textContent, min: raw }));
    if (res.ok) R.reviewDirty = false;
  }
  async function toggleShield() {
    const on = el.shield.getAttribute("aria-pressed") === "true";
    const res = on ? await act("DELETE", "/shield", undefined, t("con.rv_shield_off"))
      : await act("PUT", "/shield", undefined, t("con.rv_shield_on"));
    if (res.ok && res.data) applySettings({ ...R.settings, ...res.data, shield: !on });
  }
  function renderReviewWords(words) {
    const frag = document.createDocumentFragment();
    for (const w of words.filter((x) => typeof x === "string")) {
      const li = node("li", "chip");
      li.append(node("span", "chip-text", w), button("×", "chip-x", async () => {
        const res = await act("PATCH", "/review-words", { add: [], remove: [w] }, t("con.rv_word_removed", { w }));
        if (res.ok && Array.isArray(res.data)) renderReviewWords(res.data);
      }));
      frag.appendChild(li);
    }
    if (!frag.childNodes.length) frag.appendChild(node("li", "chip-none muted", t("con.rv_no_words")));
    el.rwordsList.replaceChildren(frag);
  }
  async function addReviewWords() {
    const typed = el.rwordsInput.value.trim(); // a "re:" pattern is one entry, commas and all
    const words = typed.startsWith("re:") ? [typed] : typed.split(/[,\n]/).map((w) => w.trim()).filter(Boolean);
    if (!words.length) return;
    const res = await act("PATCH", "/review-words", { add: words, remove: [] },
      t("con.rv_words_added", { words: words.map((w) => t("con.quoted", { w })).join(t("con.list_sep")) }));
    if (res.ok && Array.isArray(res.data)) { el.rwordsInput.value = ""; renderReviewWords(res.data); }
  }

  // ---- the user card ------------------------------------------------------------------------------------
  function cardLine(parts) {
    const li = node("li");
    for (const p of parts) li.append(typeof p === "string" ? document.createTextNode(p) : p);
    return li;
  }
  function historyWords(e) {
    const d = e.detail && typeof e.detail === "object" ? e.detail : {};
    if (e.action === "ban") {
      const until = Number(d.until);
      const how = until > 0 ? t("con.rv_timed_out_until", { until: new Date(until * 1000).toLocaleString(I18N.locale()) })
        : t("con.what_banned");
      return `${how}${d.reason ? `: ${str(d.reason)}` : ""}`;
    }
    if (e.action === "purge") return t("con.rv_purged_n", { n: Number(d.deleted) || 0 });
    return str(e.action);
  }
  async function openCard(uid) {
    if (!UID_RE.test(uid)) return;
    R.card = uid;
    R.cardBefore = null;
    el.cardUid.textContent = uid;
    const known = R.names.get(uid) || {};
    el.cardNick.textContent = known.nick || uid;
    el.cardRole.textContent = ROLE_WORDS[known.role] || "";
    for (const list of [el.cardComments, el.cardHistory, el.cardReports]) list.replaceChildren();
    el.cardState.textContent = "";
    el.cardNote.value = "";
    el.cardNoteMeta.textContent = "";
    if (!el.card.open) el.card.showModal();
    await Promise.all([loadCard(), loadCardComments()]);
  }
  async function loadCard() {
    const uid = R.card;
    const res = await api("GET", `/users/${encodeURIComponent(uid)}`);
    if (!res.ok || !res.data || R.card !== uid) { if (!res.ok) say(res.error, "bad"); return; }
    const c = res.data;
    learn(uid, str(c.nick), str(c.role));
    el.cardNick.textContent = str(c.nick) || uid;
    el.cardRole.textContent = ROLE_WORDS[c.role] || t("con.rv_viewer");
    el.cardState.textContent = c.banned_until === false ? ""
      : c.banned_until === null ? t("con.what_banned")
        : t("con.rv_timed_out_until", { until: new Date(Number(c.banned_until) * 1000).toLocaleTimeString(I18N.locale()) });
    el.cardHistory.replaceChildren(...(c.moderation || []).map((e) => cardLine([
      node("time", "t", clock(e.ts)), " ", historyWords(e), t("con.rv_by"), nameEl(str(e.by).split(":").pop()),
    ])));
    if (!el.cardHistory.childNodes.length) el.cardHistory.append(node("li", "muted", t("con.none")));
    el.cardReportsCount.textContent = c.reports_count ? String(c.reports_count) : "";
    el.cardReports.replaceChildren(...(c.reports || []).map((r) => cardLine([
      node("span", "tag perm", String(r.count)), " ", reasonsText(r.reasons), ": ",
      node("span", "q-text", str(r.comment && r.comment.text)),
    ])));
    if (!el.cardReports.childNodes.length) el.cardReports.append(node("li", "muted", t("con.none")));
    const note = c.note && typeof c.note === "object" ? c.note : null;
    el.cardNote.value = note ? str(note.text) : "";
    el.cardNoteMeta.textContent = note ? t("con.rv_note_meta",
      { by: str(note.by), at: new Date(Number(note.ts)).toLocaleString(I18N.locale()) }) : "";
  }
  async function loadCardComments() {
    const uid = R.card;
    const q = new URLSearchParams({ uid, limit: String(CARD_PAGE) });
    if (R.cardBefore) q.set("before", R.cardBefore);
    const res = await api("GET", `/comments?${q}`);
    if (!res.ok || !res.data || R.card !== uid) return;
    const items = Array.isArray(res.data.items) ? res.data.items : [];
    for (const it of items) {
      const li = cardLine([node("time", "t", clock(it.ts)), " ", node("span", "text", str(it.text))]);
      li.dataset.id = str(it.id);
      el.cardComments.append(li);
    }
    if (!el.cardComments.childNodes.length) el.cardComments.append(node("li", "muted", t("con.rv_no_recent")));
    R.cardBefore = typeof res.data.next === "string" ? res.data.next : null;
    el.cardOlder.disabled = !R.cardBefore;
  }
  async function cardBan(durationS) {
    const uid = R.card;
    const body = { uid, close: true, reason: el.cardReason.value.trim() };
    if (durationS) body.duration_s = durationS;
    const who = el.cardNick.textContent;
    await act("POST", "/bans", body, durationS ? t("con.rv_is_timed_out", { who }) : t("con.rv_is_banned", { who }));
    await loadCard();
  }

  // ---- the live-feed filter, on the server's history ----------------------------------------------------------
  function scheduleSearch() {
    clearTimeout(R.searchTimer);
    R.searchTimer = setTimeout(search, SEARCH_DELAY_MS);
  }
  async function search() {
    const gen = ++R.searchGen;
    const user = el.filterUser.value.trim();
    const text = el.filterText.value.trim();
    if ((!user && !text) || !authed()) { el.search.hidden = true; return; }
    // a uid, or a nick seen: the server filters by uid; other text of the user field is
    // matched against nicks in the results
    let uid = "";
    for (const [u, v] of R.names) if (u === user || (v.nick && v.nick.toLowerCase() === user.toLowerCase())) { uid = u; break; }
    if (!uid && UID_RE.test(user)) uid = user;
    const q = new URLSearchParams({ limit: "50" });
    if (uid) q.set("uid", uid);
    if (text) q.set("q", text.slice(0, 100));
    const res = await api("GET", `/comments?${q}`);
    if (gen !== R.searchGen) return;
    el.search.hidden = false;
    if (!res.ok || !res.data) { el.searchStatus.textContent = res.error; return; }
    const lower = user.toLowerCase();
    const items = (Array.isArray(res.data.items) ? res.data.items : []).filter((it) => !user || uid
      || str(it.nick).toLowerCase().includes(lower));
    el.searchStatus.textContent = t(items.length === 1 ? "con.rv_match" : "con.rv_matches",
      { n: `${items.length}${res.data.next ? "+" : ""}` });
    el.searchResults.replaceChildren(...items.map((it) => {
      const li = node("li", "row");
      li.dataset.id = str(it.id);
      li.append(node("time", "t", clock(it.ts)), nameEl(str(it.uid), str(it.nick)), node("span", "text", str(it.text)));
      return li;
    }));
  }

  // ---- wiring ---------------------------------------------------------------------------------------
  observe(el.bansList, decorateBan, "li.ban");
  observe(el.auditList, decorateAudit, "li");
  observe(el.feed, decorateRow, "li.row");
  document.addEventListener("click", (ev) => {
    const n = ev.target.closest("[data-name-uid]");
    if (n) openCard(n.dataset.nameUid);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const n = ev.target.closest && ev.target.closest("[data-name-uid]");
    if (n) openCard(n.dataset.nameUid);
  });
  el.cardClose.addEventListener("click", () => el.card.close());
  for (const b of el.card.querySelectorAll(".card-timeout")) {
    b.addEventListener("click", () => cardBan(Number(b.dataset.s)));
  }
  el.cardBan.addEventListener("click", () => cardBan(null));
  el.cardUnban.addEventListener("click", async () => {
    await act("DELETE", `/bans/${encodeURIComponent(R.card)}`, undefined, t("con.unbanned", { uid: el.cardNick.textContent }));
    await loadCard();
  });
  el.cardPurge.addEventListener("click", async () => {
    const minutes = Number(el.cardPurgeMin.value);
    const res = await api("POST", "/purge", { uid: R.card, minutes });
    if (res.ok && res.data) {
      const n = Array.isArray(res.data.deleted) ? res.data.deleted.length : 0;
      say(t(n === 1 ? "con.rv_purged_one" : "con.rv_purged", { n, who: el.cardNick.textContent }));
      el.cardComments.replaceChildren();
      R.cardBefore = null;
      await Promise.all([loadCard(), loadCardComments()]);
    } else {
      say(res.error, "bad");
    }
  });
  el.cardOlder.addEventListener("click", loadCardComments);
  el.cardNoteForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await act("PUT", `/users/${encodeURIComponent(R.card)}/note`, { text: el.cardNote.value }, t("con.rv_note_saved"));
    await loadCard();
  });
  el.shield.addEventListener("click", toggleShield);
  el.reviewForm.addEventListener("input", () => { R.reviewDirty = true; });
  el.reviewForm.addEventListener("submit", (ev) => { ev.preventDefault(); applyReview(); });
  el.rwordsForm.addEventListener("submit", (ev) => { ev.preventDefault(); addReviewWords(); });
  el.filterUser.addEventListener("input", scheduleSearch);
  el.filterText.addEventListener("input", scheduleSearch);
  el.filterClear.addEventListener("click", () => { el.search.hidden = true; R.searchGen += 1; });

  /** The console's own user, from its token's claims (no signature check: only to name
   *  the moderator's own actions in the audit log before any lookup). */
  function learnSelf() {
    try {
      const part = token().split(".")[1] || "";
      const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
      const claims = JSON.parse(decodeURIComponent(escape(json)));
      if (claims && typeof claims.sub === "string") learn(claims.sub, str(claims.nick), str(claims.role));
    } catch { /* not a readable token: names come from the server */ }
  }

  // start once console.js has a verdict on the token
  (function waitForAuth() {
    if (authed()) {
      learnSelf();
      redecorate();
      pollReview();
      api("GET", "/review-words").then((res) => { if (res.ok && Array.isArray(res.data)) renderReviewWords(res.data); });
    } else {
      setTimeout(waitForAuth, 300);
    }
  }());

  // the hook for tests
  window.dmReview = Object.freeze({
    heldIds: () => R.held.map((h) => h.id),
    reportIds: () => R.reports.map((r) => r.id),
    name: (uid) => ({ ...(R.names.get(uid) || {}) }),
    get card() { return R.card; },
  });
})();
