/* Staff sign-in in the player: a role token (moderator, streamer, admin) that the
 * operator's platform or `danmaku token` issued, kept for this tab only.
 *
 * Staff (an ES module export) promises:
 * - ``load()``: the token kept in sessionStorage (this tab; gone when it closes), after
 *   taking one from the address's fragment (``#token=...``, the console's "open player
 *   as me" link) and removing it from the address bar and history; null when none;
 * - ``save(token)`` / ``clear()``;
 * - ``claims(token)``: the token's payload as JSON, or null. Unverified: for showing a
 *   name before the server answers, never for deciding anything (the server's welcome
 *   says who the user is).
 */
const KEY = "danmaku.staff.v1";
const TOKEN_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

function save(token) {
  try { sessionStorage.setItem(KEY, token); } catch { /* not kept: this page only */ }
}

function clear() {
  try { sessionStorage.removeItem(KEY); } catch { /* nothing kept */ }
}

function fromFragment() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = hash.get("token");
  if (!token) return null;
  hash.delete("token");
  const rest = hash.toString();
  history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  return TOKEN_RE.test(token) ? token : null;
}

function load() {
  const given = fromFragment();
  if (given) save(given);
  let token = given;
  if (!token) {
    try { token = sessionStorage.getItem(KEY); } catch { token = null; }
  }
  return token && TOKEN_RE.test(token) ? token : null;
}

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(part),
      (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""));
    const out = JSON.parse(json);
    return out && typeof out === "object" ? out : null;
  } catch {
    return null;
  }
}

export const Staff = Object.freeze({ load, save, clear, claims, valid: (t) => TOKEN_RE.test(t) });
