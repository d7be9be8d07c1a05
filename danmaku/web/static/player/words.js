/* Errors and bans in the viewer's own words (the server's text is never shown as is). */

import { S, numberLocale, tr } from "./state.js";

/** A duration in the viewer's words: "10 min", "3 h". */
export function durationWords(ms) {
  const sec = Math.max(1, Math.round(ms / 1000));
  if (sec < 90) return tr("dur.s", { n: sec });
  if (sec < 90 * 60) return tr("dur.min", { n: Math.round(sec / 60) });
  if (sec < 48 * 3600) return tr("dur.h", { n: Math.round(sec / 3600) });
  return tr("dur.d", { n: Math.round(sec / 86400) });
}

/** A ban in the viewer's words: "Timed out for 10 min: spam" (the reason a moderator
 *  gave, when there is one), or banned for good. */
export function banWords(msg) {
  const reason = typeof msg.reason === "string" && msg.reason.trim()
    ? `: ${msg.reason.trim().slice(0, 200)}` : "";
  if (msg.until === null) return `${tr("err.banned_for_good")}${reason}.`;
  const until = Number(msg.until);
  if (Number.isFinite(until) && until > 0) {
    const when = new Date(until).toLocaleTimeString(numberLocale(),
      { hour: "2-digit", minute: "2-digit" });
    return `${tr("err.timed_out_for", { d: durationWords(until - Date.now()) })}${reason}. `
      + tr("err.banned_until", { until: when });
  }
  return reason ? `${tr("err.banned_for_good")}${reason}.` : tr("err.banned");
}

/** The player's own words for an error code (server text is never shown as is). */
export function errorWords(msg) {
  const wait = Number(msg.retry_after_ms) > 0
    ? ` ${tr("err.try_again_in", { s: Math.max(1, Math.ceil(msg.retry_after_ms / 1000)) })}` : "";
  switch (msg.code) {
    case "rate_limited": return `${tr("err.rate_limited")}${wait}`;
    case "slow_mode": return `${tr("err.slow_mode")}${wait}`;
    case "banned": return banWords(msg);
    case "too_long": return tr("err.too_long", { n: S.limits.max_text_chars });
    case "blocked": case "empty": case "unauthorized": case "login_required": case "duplicate":
    case "overloaded": case "unavailable": case "bad_room": case "bad_request":
      return tr(`err.${msg.code}`);
    default: return tr("err.other", { code: String(msg.code || "?").slice(0, 40) });
  }
}
