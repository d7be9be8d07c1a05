/* Notices: the pinned banner (text or a paid/gift card), room notices and settings
 * changes in the chat list, and the room's rules in force beside the comment box.
 */

import {
  BROADCAST_RE, I18N, S, STAFF_ROLES, broadcast, el, numberLocale, room, toast, tr,
} from "./state.js";
import { chat } from "./actions.js";
import { Cards } from "./cards.js";
import { readRoomInfo } from "./connection.js";
import { readRecordings } from "./replays.js";

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
  el.banner.style.setProperty("--card", Cards.color(pin));
  el.bannerText.replaceChildren(Cards.build(pin, tr, numberLocale()));
  S.cardPin = pin; // rebuilt in the viewer's words when the language changes
}

/** The banner links the replay of the broadcast that just ended (for a minute). The
 *  words are the room switcher's block of the catalogue (rooms.*, from branch h24). */
function showReplayLink(msg) {
  const title = typeof msg.title === "string" && msg.title ? msg.title : tr("rp.untitled", { id: msg.id });
  showBanner(tr("rooms.replay_tag"), "", 60000);
  const a = document.createElement("a");
  a.id = "replay-link";
  a.href = `/?room=${encodeURIComponent(room)}&broadcast=${encodeURIComponent(msg.id)}`;
  a.target = "_blank";
  a.rel = "noopener";
  a.textContent = tr("rooms.replay_link", { title });
  el.bannerText.replaceChildren(a);
  chat.notice(tr("rooms.replay_tag"), title, "event");
}

export function hideBanner() {
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

export function onNotice(msg) {
  const ev = typeof msg.event === "string" ? msg.event : "";
  if (ev === "resume_failed") {
    // a fresh start: the connection (danmaku-overlay.js) took the notice's seq and epoch
    toast(tr("toast.missed"));
    return;
  }
  if (ev === "pin" || ev === "pinned") {
    const pin = msg.pin && typeof msg.pin === "object" ? msg.pin : null;
    if (pin && Cards.kindOf(pin)) {
      showCardBanner(pin, noticeTtl(msg));
      chat.notice(tr("notice.pinned"), Cards.summary(pin, tr, numberLocale()), "pin");
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
  if (ev === "broadcast") { // issue 24: a broadcast ended: link its replay
    if (msg.state === "ended" && BROADCAST_RE.test(String(msg.id))) {
      showReplayLink(msg);
      readRecordings(); // and the top bar's link to the newest recording
    }
    return;
  }
  const text = noticeText(msg);
  const tag = I18N.has("en", `notice.${ev}`) ? tr(`notice.${ev}`) : tr("notice.notice");
  if (text) {
    showBanner(tag, text, noticeTtl(msg) || 10000);
    chat.notice(tag, text, ev === "room_notice" ? "notice" : "event");
  }
}

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
export function renderRoomStatus() {
  const rs = S.roomSettings || {};
  const parts = [];
  if (rs.shield) parts.push(tr("room.shield_on"));
  if (Number(rs.slow_mode_s) > 0) parts.push(tr("room.slow_on", { s: Number(rs.slow_mode_s) }));
  if (rs.mute) parts.push(tr("room.mute_on"));
  if (rs.guests === "watch" || rs.guests === "off") parts.push(tr("room.guests_watch"));
  el.roomStatus.textContent = parts.join(" · ");
  el.roomStatus.hidden = !parts.length;
}

/** The pinned card again, in the viewer's words (after a language switch). */
export function relabelBanner() {
  if (S.cardPin && !el.banner.hidden) {
    el.bannerTag.textContent = tr("notice.pinned");
    el.bannerText.replaceChildren(Cards.build(S.cardPin, tr, numberLocale()));
  }
}
