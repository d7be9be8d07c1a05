/* danmaku console: the room's guest policy and IP bans (issue 19).
 *
 * Uses the console's own API helpers (window.dmConsoleApi, from console.js): the same
 * token, the same words for errors. The guest policy is read back from
 * GET /api/rooms/{room} (settings.guests, else the server default in effective), IP bans
 * from GET /ip-bans, every BANS_EVERY_MS. Text from the network is set with textContent.
 */
"use strict";

(() => {
  const { $ } = window.DanmakuCommon;
  const C = window.dmConsoleApi;
  if (!C) return;
  const BANS_EVERY_MS = 5000;
  const t = window.DanmakuI18n.t; // the catalogue (i18n.js): every string shown here
  const GUEST_WORDS = { comment: t("con.sw_guests_comment"), watch: t("con.sw_guests_watch"),
    off: t("con.sw_guests_off") };
  const UID_RE = /^[A-Za-z0-9_.:@-]{1,64}$/;
  const el = {
    guestsForm: $("guests-form"), setGuests: $("set-guests"), nowGuests: $("now-guests"),
    ipbanForm: $("ipban-form"), target: $("ipban-target"), duration: $("ipban-duration"),
    reason: $("ipban-reason"), list: $("ipbans-list"), empty: $("ipbans-empty"),
  };
  let guestsDirty = false;

  const room = () => (window.dmConsole ? window.dmConsole.room : "");

  async function refreshGuests() {
    if (!room()) return;
    let data;
    try {
      const r = await fetch(`/api/rooms/${encodeURIComponent(room())}`, { cache: "no-store" });
      if (!r.ok) return;
      data = await r.json();
    } catch {
      return;
    }
    const policy = (data.settings && data.settings.guests) || (data.effective && data.effective.guests) || "comment";
    el.nowGuests.textContent = t("con.id_now", { v: GUEST_WORDS[policy] || policy });
    if (!guestsDirty && document.activeElement !== el.setGuests) el.setGuests.value = policy;
  }

  async function applyGuests() {
    const want = el.setGuests.value;
    const res = await C.act("PATCH", "/settings", { guests: want }, t("con.settings_changed", { what: GUEST_WORDS[want] }));
    if (res.ok) {
      guestsDirty = false;
      refreshGuests();
    }
  }

  function describe(ban) {
    return ban.uid ? t("con.id_address_of", { uid: ban.uid }) : ban.network;
  }

  function render(bans) {
    const frag = document.createDocumentFragment();
    const now = Date.now() / 1000;
    for (const ban of bans) {
      const li = C.node("li", "ban ipban");
      li.dataset.id = ban.id;
      const who = C.node(ban.uid ? "span" : "code", "ban-uid", describe(ban));
      const left = C.node("span", "muted", t("con.ban_left", { d: C.fmtDuration(Math.max(0, ban.until - now)) }));
      li.append(who, left);
      if (ban.reason) li.append(C.node("span", "muted ban-reason", `: ${ban.reason}`));
      const b = C.node("button", "small unban", t("con.id_lift"));
      b.type = "button";
      b.dataset.id = ban.id;
      li.append(C.node("span", "spacer"), b);
      frag.appendChild(li);
    }
    el.list.replaceChildren(frag);
    el.empty.hidden = bans.length > 0;
  }

  async function refreshIpBans() {
    if (!C.canModerate()) return;
    const res = await C.api("GET", "/ip-bans");
    if (res.ok && Array.isArray(res.data)) render(res.data.filter((b) => b && typeof b.id === "string"));
  }

  async function addIpBan() {
    const target = el.target.value.trim();
    if (!target) {
      C.fail(t("con.id_give"));
      return;
    }
    // An address or network has a dot or a colon; a user id is banned by its last address.
    const isIp = /^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(target) && /[.:]/.test(target);
    const body = { duration_s: Number(el.duration.value), reason: el.reason.value.trim() };
    if (isIp) body.ip = target;
    else if (UID_RE.test(target)) body.uid = target;
    else {
      C.fail(t("con.id_neither"));
      return;
    }
    const what = isIp ? target : t("con.id_network_of", { uid: target });
    const res = await C.act("POST", "/ip-bans", body,
      t("con.id_banned", { what, d: C.fmtDuration(body.duration_s) }));
    if (res.ok) {
      el.target.value = "";
      el.reason.value = "";
      refreshIpBans();
    }
  }

  async function lift(id) {
    const res = await C.act("DELETE", `/ip-bans/${encodeURIComponent(id)}`, undefined, t("con.id_lifted"));
    if (res.ok || res.status === 404) refreshIpBans();
  }

  el.setGuests.addEventListener("change", () => { guestsDirty = true; });
  el.guestsForm.addEventListener("submit", (ev) => { ev.preventDefault(); applyGuests(); });
  el.ipbanForm.addEventListener("submit", (ev) => { ev.preventDefault(); addIpBan(); });
  el.list.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.unban");
    if (b && b.dataset.id) lift(b.dataset.id);
  });
  const tick = () => { refreshGuests(); refreshIpBans(); };
  setTimeout(tick, 300);
  setInterval(tick, BANS_EVERY_MS);
})();
