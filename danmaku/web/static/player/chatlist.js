/* The chat list beside the video: what this viewer was delivered, as a readable log.
 *
 * ChatList (an ES module export) is a class the player (player.js) makes once. It promises:
 * - a row per comment: time, role badge (from the item's ``role``, never from the nick),
 *   nick in the comment's colour, text, folded count (×N), highlighted styling (prio);
 *   paid messages, gifts and system announcements as cards (cards.js);
 *   notices and pins as rows of their own;
 * - at most ``cap`` rows (the oldest leave first), so a day-long stream stays small;
 * - autoscroll while the viewer is at the bottom; scrolled up, new rows wait below and a
 *   "new messages" pill says so (a click goes back down);
 * - ``retract(ids)`` and ``removeUser(uid)`` take rows out;
 * - a click on a row opens a small menu: copy, block this user, report (with a reason),
 *   and for staff, delete and time out. What those do is the player's (``actions``).
 * Text from the network is only ever set with textContent.
 */

import { Cards } from "./cards.js";

const ROLES = new Set(["moderator", "streamer", "admin"]);
const COLOR_RE = /^#[0-9a-fA-F]{6}$/;
const NEAR_BOTTOM_PX = 24;

class ChatList {
  /**
   * @param {object} o
   * @param {HTMLElement} o.list   the scrolling <ol>
   * @param {HTMLElement} o.pill   the "new messages" button
   * @param {HTMLElement} o.menu   the (hidden) menu element
   * @param {(key: string, vars?: object) => string} o.t   the player's strings
   * @param {() => string} o.locale
   * @param {object} o.actions  copy/block/report/remove/timeout(item[, arg]),
   *   canModerate(), reasons() -> [code]
   * @param {number} [o.cap]
   */
  constructor({ list, pill, menu, t, locale, actions, cap = 300 }) {
    this.list = list;
    this.pill = pill;
    this.menu = menu;
    this.t = t;
    this.locale = locale;
    this.actions = actions;
    this.cap = cap;
    this.rows = new Map(); // comment id -> {li, item}
    this.queue = []; // rows waiting for this frame's flush
    this.unseen = 0;
    this.menuFor = null;
    list.addEventListener("scroll", () => {
      if (this.atBottom()) this.hidePill();
    }, { passive: true });
    pill.addEventListener("click", () => this.scrollDown());
    list.addEventListener("click", (ev) => {
      const li = ev.target.closest ? ev.target.closest("li[data-id]") : null;
      if (li && this.rows.has(li.dataset.id)) this.openMenu(li.dataset.id, li);
    });
    list.addEventListener("keydown", (ev) => {
      const li = ev.target.closest ? ev.target.closest("li[data-id]") : null;
      if (li && (ev.key === "Enter" || ev.key === " ") && this.rows.has(li.dataset.id)) {
        ev.preventDefault();
        this.openMenu(li.dataset.id, li);
      }
    });
    document.addEventListener("pointerdown", (ev) => {
      if (!this.menu.hidden && !this.menu.contains(ev.target)
          && !(ev.target.closest && ev.target.closest("li[data-id]"))) this.closeMenu();
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && !this.menu.hidden) this.closeMenu();
    });
  }

  get size() { return this.list.childElementCount + this.queue.length; }

  atBottom() {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight <= NEAR_BOTTOM_PX;
  }

  time(ts) {
    const d = Number.isFinite(Number(ts)) && Number(ts) > 0 ? new Date(Number(ts)) : new Date();
    return d.toLocaleTimeString(this.locale(), { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  /** A comment row. ``own``: the viewer's own (acked) comment. */
  add(item, own = false) {
    if (!item || typeof item.id !== "string" || this.rows.has(item.id)) return;
    const li = document.createElement("li");
    li.className = "chat-row";
    li.dataset.id = item.id;
    li.tabIndex = 0;
    if (typeof item.uid === "string") li.dataset.uid = item.uid;
    if (own) li.classList.add("own");
    const prio = Number(item.prio) || 0;
    if (prio >= 2) li.classList.add("prio2");
    else if (prio >= 1) li.classList.add("prio1");
    const time = document.createElement("time");
    time.className = "chat-time";
    time.textContent = this.time(item.ts);
    li.appendChild(time);
    // paid messages, gifts and system announcements: a card (cards.js), not a line
    const cards = Cards;
    if (cards && cards.kindOf(item)) {
      li.classList.add("chat-card", `kind-${cards.kindOf(item)}`);
      li.appendChild(cards.build(item, this.t, this.locale()));
      this.rows.set(item.id, { li, item });
      this.append(li);
      return;
    }
    if (typeof item.role === "string" && ROLES.has(item.role)) {
      const badge = document.createElement("span");
      badge.className = `chat-badge role-${item.role}`;
      badge.textContent = this.t(`role.${item.role}`);
      li.appendChild(badge);
    }
    const nick = document.createElement("span");
    nick.className = "chat-nick";
    nick.textContent = typeof item.nick === "string" && item.nick ? item.nick : "?";
    if (typeof item.color === "string" && COLOR_RE.test(item.color)
        && item.color.toLowerCase() !== "#ffffff") {
      nick.style.color = item.color;
    }
    li.appendChild(nick);
    const text = document.createElement("span");
    text.className = "chat-text";
    text.textContent = item.text;
    li.appendChild(text);
    const count = Number(item.count);
    if (Number.isInteger(count) && count >= 2) {
      const c = document.createElement("span");
      c.className = "chat-count";
      c.textContent = `×${count}`;
      li.appendChild(c);
    }
    this.rows.set(item.id, { li, item });
    this.append(li);
  }

  /** A notice or pin row: ``tag`` (already in the viewer's words) and text. */
  notice(tag, text, kind = "notice") {
    const li = document.createElement("li");
    li.className = `chat-row chat-notice kind-${kind}`;
    const time = document.createElement("time");
    time.className = "chat-time";
    time.textContent = this.time(Date.now());
    const badge = document.createElement("span");
    badge.className = "chat-tag";
    badge.textContent = tag;
    const body = document.createElement("span");
    body.className = "chat-text";
    body.textContent = text;
    li.append(time, badge, body);
    this.append(li);
  }

  /** Rows of one frame go in together: one layout read and one scroll per batch,
   *  not per row (a frame may bring a hundred). */
  append(li) {
    this.queue.push(li);
    if (this.queue.length === 1) queueMicrotask(() => this.flush());
  }

  flush() {
    const rows = this.queue;
    this.queue = [];
    if (!rows.length) return;
    const follow = this.atBottom();
    const frag = document.createDocumentFragment();
    for (const li of rows) {
      // retracted or blocked before it was shown: it never appears
      if (li.dataset.id && this.rows.get(li.dataset.id)?.li !== li) continue;
      frag.appendChild(li);
    }
    this.list.appendChild(frag);
    while (this.list.childElementCount > this.cap) this.drop(this.list.firstElementChild);
    if (follow) {
      this.list.scrollTop = this.list.scrollHeight;
    } else {
      this.unseen += rows.length;
      this.pill.textContent = this.t("chat.new", { n: this.unseen });
      this.pill.hidden = false;
    }
  }

  drop(li) {
    if (li.dataset.id && this.rows.get(li.dataset.id)?.li === li) {
      this.rows.delete(li.dataset.id);
      if (this.menuFor === li.dataset.id) this.closeMenu();
    }
    li.remove();
  }

  retract(ids) {
    for (const id of ids) {
      const row = this.rows.get(id);
      if (row) this.drop(row.li);
    }
  }

  removeUser(uid) {
    for (const { li, item } of Array.from(this.rows.values())) {
      if (item.uid === uid) this.drop(li);
    }
  }

  scrollDown() {
    this.list.scrollTop = this.list.scrollHeight;
    this.hidePill();
  }

  hidePill() {
    this.unseen = 0;
    this.pill.hidden = true;
  }

  // ---- the row menu -------------------------------------------------------------------
  button(label, action, cls = "") {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "menuitem");
    b.className = `chat-menu-item ${cls}`.trim();
    b.textContent = label;
    b.addEventListener("click", (ev) => {
      ev.stopPropagation();
      action();
    });
    return b;
  }

  openMenu(id, li) {
    const row = this.rows.get(id);
    if (!row) return;
    const { item } = row;
    const a = this.actions;
    const m = this.menu;
    m.replaceChildren();
    const head = document.createElement("div");
    head.className = "chat-menu-head";
    head.textContent = typeof item.nick === "string" ? item.nick : "";
    m.appendChild(head);
    const done = (fn) => () => { this.closeMenu(); fn(); };
    m.appendChild(this.button(this.t("menu.copy"), done(() => a.copy(item)), "act-copy"));
    const mine = a.isOwn(item);
    if (!mine) {
      m.appendChild(this.button(this.t("menu.block"), done(() => a.block(item)), "act-block"));
      const report = this.button(this.t("menu.report"), () => {
        reasons.hidden = !reasons.hidden;
      }, "act-report");
      m.appendChild(report);
      const reasons = document.createElement("div");
      reasons.className = "chat-reasons";
      reasons.hidden = true;
      for (const reason of a.reasons()) {
        reasons.appendChild(this.button(this.t(`reason.${reason}`),
          done(() => a.report(item, reason)), `reason-${reason}`));
      }
      m.appendChild(reasons);
    }
    if (a.canModerate()) {
      m.appendChild(this.button(this.t("menu.delete"), done(() => a.remove(item)), "act-delete staff"));
      if (!mine) {
        m.appendChild(this.button(this.t("menu.timeout"), done(() => a.timeout(item)),
          "act-timeout staff"));
      }
    }
    this.menuFor = id;
    m.hidden = false;
    // beside the row, inside the chat panel
    const box = m.parentElement.getBoundingClientRect();
    const r = li.getBoundingClientRect();
    const top = Math.min(r.bottom - box.top, box.height - m.offsetHeight - 4);
    m.style.top = `${Math.max(4, top)}px`;
    const first = m.querySelector("button");
    if (first) first.focus({ preventScroll: true });
  }

  closeMenu() {
    this.menu.hidden = true;
    this.menuFor = null;
  }

  /** Re-label what is on screen after a language change (times keep their text). */
  relabel() {
    for (const badge of this.list.querySelectorAll(".chat-badge")) {
      const role = Array.from(badge.classList).find((c) => c.startsWith("role-"));
      if (role) badge.textContent = this.t(`role.${role.slice(5)}`);
    }
    // cards: "System" and the amounts' format follow the language
    const cards = Cards;
    for (const { li, item } of this.rows.values()) {
      const card = li.querySelector(":scope > .card");
      if (cards && card) card.replaceWith(cards.build(item, this.t, this.locale()));
    }
    if (!this.pill.hidden) this.pill.textContent = this.t("chat.new", { n: this.unseen });
    this.closeMenu();
  }
}

export { ChatList };
