/* A guest session for a room: POST /api/session {"nick", "room"} (docs/protocol.md,
 * "Connecting"). With ``room`` the server applies the room's guest policy, IP bans and
 * nick rules first.
 *
 * Session.start(nick, room, t) promises a result, never a throw:
 * - ``{token, user}`` on success;
 * - ``{error, code}`` otherwise, ``error`` in the viewer's words (``t``: the player's
 *   strings), ``code`` one of: "guests_off" (403: guests cannot join this room: log in),
 *   "banned" (403 with detail.code "banned": the address is banned), "nick_staff" (409:
 *   the nick looks like a staff member's), "wait" (429: too many sessions; the wait is
 *   Retry-After), "nick_bad" (422), "http", "bad_answer", "net".
 * The server's own sentences are never shown.
 */
async function detail(r) {
  try {
    const body = await r.json();
    return body && typeof body === "object" ? body.detail : undefined;
  } catch {
    return undefined;
  }
}

async function refusal(r, t) {
  if (r.status === 422) return { code: "nick_bad", error: t("err.nick_bad") };
  if (r.status === 409) return { code: "nick_staff", error: t("err.nick_staff") };
  if (r.status === 429) {
    const s = Math.max(1, Math.ceil(Number(r.headers.get("Retry-After")) || 60));
    return { code: "wait", error: t("err.session_wait", { s }) };
  }
  if (r.status === 403) {
    const d = await detail(r);
    if (d && typeof d === "object" && d.code === "banned") {
      return { code: "banned", error: t("err.session_banned") };
    }
    return { code: "guests_off", error: t("err.session_guests_off") };
  }
  return { code: "http", error: t("err.session_http", { status: r.status }) };
}

async function start(nick, room, t) {
  let r;
  try {
    r = await fetch("/api/session", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(room ? { nick, room } : { nick }),
    });
  } catch {
    return { code: "net", error: t("err.session_net") };
  }
  if (!r.ok) return refusal(r, t);
  let body;
  try {
    body = await r.json();
  } catch {
    body = null;
  }
  if (!body || typeof body.token !== "string" || !body.user || typeof body.user !== "object") {
    return { code: "bad_answer", error: t("err.session_bad") };
  }
  return { token: body.token, user: body.user };
}

export const Session = Object.freeze({ start });
