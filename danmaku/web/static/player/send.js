/* Sending: the comment box (count, colour, position), the nickname that starts a guest
 * session, the staff sign-in, the countdown of a rate limit or slow mode, and un-acked
 * comments resent with the same nonce after a reconnect.
 */

import {
  COLOR_RE, R, ROOM_RE, S, SEND_KEY, STAFF_ROLES, assignSession, assignStaffToken, codePoints,
  currentToken, el, newNonce, normText, pending, room, save, sendPrefs, session, staffToken,
  tr, utf8Len,
} from "./state.js";
import { chat } from "./actions.js";
import { link, reconnectNow } from "./connection.js";
import { Session } from "./session.js";
import { Staff } from "./staff.js";
import { errorWords } from "./words.js";

let errorIsCooldown = false;

export function showSendError(text, bad) {
  errorIsCooldown = false;
  el.sendError.textContent = text;
  el.sendError.classList.toggle("bad", Boolean(bad));
}

export function clearSendError() {
  errorIsCooldown = false;
  el.sendError.textContent = "";
}

export function renderCooldown() {
  const left = S.cooldownUntil - Date.now();
  if (left <= 0) {
    S.cooldownUntil = 0;
    el.sendButton.textContent = tr("send.send");
    if (errorIsCooldown) clearSendError();
    return;
  }
  // rounded up to a tenth: never "0.0 s" while there is still a wait
  const secs = (Math.ceil(left / 100) / 10).toFixed(1);
  el.sendButton.textContent = tr("send.seconds", { s: Math.ceil(left / 1000) });
  errorIsCooldown = true;
  el.sendError.classList.remove("bad");
  el.sendError.textContent = tr(S.cooldownCode === "slow_mode" ? "cool.slow_mode"
    : "cool.rate_limited", { s: secs });
}

export function transmit(entry) {
  if (!link.open) {
    showSendError(tr("err.not_connected"), false);
    return;
  }
  entry.tries += 1;
  link.send({ type: "comment", text: entry.text, nonce: entry.nonce, color: entry.color,
    mode: entry.mode });
}

function sendComment() {
  if (R.on) return; // a recording takes no comments
  const text = normText(el.sendText.value);
  if (!text) {
    showSendError(tr("err.empty"), false);
    return;
  }
  if (S.cooldownUntil) {
    // while the button still shows the countdown, Enter waits with it (the button is
    // back to "Send" at the moment the wait ends: the timer set with the cooldown)
    renderCooldown();
    return;
  }
  if (!currentToken() && !link.open) {
    showSendError(errorWords({ code: "unauthorized" }), true);
    return;
  }
  const color = COLOR_RE.test(el.sendColor.value) ? el.sendColor.value.toLowerCase() : "#ffffff";
  const mode = ["scroll", "top", "bottom"].includes(el.sendMode.value) ? el.sendMode.value : "scroll";
  const entry = { nonce: newNonce(), text, color, mode, created: Date.now(), tries: 0 };
  pending.set(entry.nonce, entry);
  el.sendText.value = "";
  updateCount();
  clearSendError();
  transmit(entry);
}

export function updateCount() {
  const text = normText(el.sendText.value);
  const n = codePoints(text);
  el.sendCount.textContent = `${n}/${S.limits.max_text_chars}`;
  el.sendCount.classList.toggle("over",
    n > S.limits.max_text_chars || utf8Len(text) > S.limits.max_text_bytes);
}

export function setSession(value) {
  assignSession(value);
  renderWho();
}

export function setStaff(token) {
  assignStaffToken(token);
  if (token) Staff.save(token);
  else Staff.clear();
  renderWho();
}

export function renderWho() {
  // staff: the name and role the server confirmed in welcome (else the token's, unverified)
  const claims = staffToken ? Staff.claims(staffToken) || {} : null;
  const staffUser = staffToken && S.user && S.connects.length && S.connects.at(-1).staff
    ? S.user : claims;
  if (staffToken) {
    el.whoNick.textContent = String(staffUser.nick || staffUser.uid || staffUser.sub || "?");
    const role = STAFF_ROLES.has(staffUser.role) ? staffUser.role : "";
    el.whoRole.hidden = !role;
    el.whoRole.className = `chat-badge role-${role}`;
    el.whoRole.textContent = role ? tr(`role.${role}`) : "";
    el.who.hidden = false;
    el.nickForm.hidden = true;
    el.whoChange.hidden = true;
    el.staffOut.hidden = false;
    el.staff.hidden = true;
  } else if (session) {
    el.whoNick.textContent = session.user.nick;
    el.who.hidden = false;
    el.nickForm.hidden = true;
  } else {
    el.who.hidden = true;
    el.nickForm.hidden = false;
  }
  if (!staffToken) {
    el.whoRole.hidden = true;
    el.whoChange.hidden = false;
    el.staffOut.hidden = true;
    el.staff.hidden = false;
  }
}

export function bindStaff() {
  el.staffForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = el.staffToken.value.trim();
    el.staffToken.value = "";
    if (!Staff.valid(token)) {
      showSendError(tr("staff.bad_token"), true);
      return;
    }
    el.staff.open = false;
    setStaff(token);
    clearSendError();
    reconnectNow(); // the role token goes with the handshake; since= keeps our place
  });
  el.staffOut.addEventListener("click", () => {
    setStaff(null);
    reconnectNow();
  });
}

async function join(nick) {
  el.nickInput.disabled = true;
  try {
    const got = await Session.start(nick, ROOM_RE.test(room) ? room : "", tr);
    S.sessionRefusal = got.code || "";
    if (got.error) {
      showSendError(got.error, true);
      return;
    }
    setSession({ token: got.token, user: got.user });
    clearSendError();
    reconnectNow(); // the token goes with the handshake; since= keeps our place
    el.sendText.focus();
  } finally {
    el.nickInput.disabled = false;
  }
}

export function bindSending() {
  el.sendColor.value = COLOR_RE.test(sendPrefs.color) ? sendPrefs.color : "#ffffff";
  el.sendMode.value = ["scroll", "top", "bottom"].includes(sendPrefs.mode) ? sendPrefs.mode : "scroll";
  const savePrefs = () => save(SEND_KEY, { color: el.sendColor.value, mode: el.sendMode.value,
    nick: el.nickInput.value || sendPrefs.nick || "" });
  el.sendColor.addEventListener("change", savePrefs);
  el.sendMode.addEventListener("change", savePrefs);
  el.sendForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sendComment();
  });
  el.sendText.addEventListener("input", updateCount);
  el.nickInput.value = typeof sendPrefs.nick === "string" ? sendPrefs.nick : "";
  el.nickForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const nick = normText(el.nickInput.value);
    if (!nick) {
      showSendError(tr("err.type_nick"), false);
      return;
    }
    sendPrefs.nick = nick;
    savePrefs();
    join(nick);
  });
  el.whoChange.addEventListener("click", () => {
    el.nickInput.value = session ? session.user.nick : "";
    el.who.hidden = true;
    el.nickForm.hidden = false;
    el.nickInput.focus();
  });
}
