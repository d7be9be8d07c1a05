/* The chat list (chatlist.js) and what its menu does: copy, block this user (on this
 * device), report (the moderation API's reasons), and for signed-in staff delete and
 * time out, each answered in the viewer's words.
 */

import {
  CHAT_CAP, I18N, REPORT_REASONS, S, STAFF_ROLES, TIMEOUT_S, currentToken, el, isOwn,
  numberLocale, roomPath, settings, staffToken, toast, tr,
} from "./state.js";
import { ChatList } from "./chatlist.js";
import { updateSettings } from "./settings.js";
import { retract } from "./stage.js";

export const chat = new ChatList({
  list: el.chatList, pill: el.chatMore, menu: el.chatMenu, t: tr, locale: () => numberLocale(),
  cap: CHAT_CAP,
  actions: {
    isOwn: (item) => isOwn(item),
    canModerate: () => Boolean(staffToken && S.user && STAFF_ROLES.has(S.user.role)),
    reasons: () => {
      const listed = S.config && Array.isArray(S.config.report_reasons)
        ? S.config.report_reasons.filter((r) => typeof r === "string" && I18N.has("en", `reason.${r}`))
        : [];
      return listed.length ? listed : REPORT_REASONS;
    },
    copy: (item) => copyText(item.text),
    block: (item) => blockUser(item),
    report: (item, reason) => report(item, reason),
    remove: (item) => staffCall("DELETE", `comments/${encodeURIComponent(item.id)}`, null,
      () => { retract([item.id]); toast(tr("act.deleted")); }),
    timeout: (item) => staffCall("POST", "bans",
      { uid: item.uid, duration_s: TIMEOUT_S, reason: "" },
      () => toast(tr("act.timed_out", { nick: item.nick || item.uid }))),
  },
});

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast(tr("act.copied"));
  } catch {
    // no clipboard permission (an insecure page, an old browser): a selected textarea
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
    toast(tr(ok ? "act.copied" : "act.copy_failed"));
  }
}

/** Block a user on this device: kept in the display settings (localStorage) by uid. */
function blockUser(item) {
  if (typeof item.uid !== "string" || !item.uid) return;
  if (!settings.blockUsers.includes(item.uid)) {
    updateSettings({ blockUsers: [...settings.blockUsers, item.uid] });
  }
  chat.removeUser(item.uid);
  toast(tr("act.blocked", { nick: item.nick || item.uid }));
}

/** POST /api/rooms/{room}/reports with the viewer's token; answers in the viewer's words. */
async function report(item, reason) {
  if (!currentToken()) {
    toast(tr("act.report_login"), 6000);
    return;
  }
  let r;
  try {
    r = await fetch(roomPath("reports"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${currentToken()}` },
      body: JSON.stringify({ comment_id: item.id, reason }),
    });
  } catch {
    toast(tr("act.net"));
    return;
  }
  S.reports.push({ id: item.id, reason, status: r.status });
  if (S.reports.length > 50) S.reports.shift();
  if (r.ok) toast(tr("act.reported"));
  else if (r.status === 429) {
    const s = Math.max(1, Number(r.headers.get("Retry-After")) || 1);
    toast(tr("act.report_wait", { s }), 6000);
  } else toast(tr("act.report_failed", { status: r.status }), 6000);
}

/** A moderation call with the signed-in staff token (the existing moderation API). */
async function staffCall(method, rest, body, onOk) {
  if (!staffToken) return;
  let r;
  try {
    r = await fetch(roomPath(rest), {
      method,
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${staffToken}` },
      body: body === null ? undefined : JSON.stringify(body),
    });
  } catch {
    toast(tr("act.net"));
    return;
  }
  if (r.ok) onOk();
  else toast(tr("act.staff_failed", { status: r.status }), 6000);
}
