/* The stage: comments over the video, drawn by danmaku-overlay.js' Renderer (the same
 * lanes and moving elements the embeddable overlay uses), and what decides whether an
 * item shows: de-duplication, moderators' retracts, the viewer's block lists and filters.
 * Also the screen-reader mirror of what is shown.
 */

import {
  AREAS, MIRROR_CAP, R, RENDERED_CAP, S, el, isOwn, modeOf, numberLocale, remember, rendered,
  retracted, seen, settings, tr,
} from "./state.js";
import { chat } from "./actions.js";
import { Cards } from "./cards.js";

const measure = document.createElement("div");
measure.className = "overlay measure";
measure.setAttribute("aria-hidden", "true");
el.stage.appendChild(measure);
measure.style.visibility = "hidden";

/** The one renderer of the page: live on the document timeline, in replay on the
 *  recording's clock (held animations moved every frame). */
export const renderer = new window.DanmakuOverlay.Renderer(el.overlay, {
  held: R.on,
  measure,
  modeOf,
  classes: { item: "dm", count: "count" },
  content: (item, node) => { // paid, gift, system: a card in its lane, not plain text
    if (!Cards.kindOf(item)) return false;
    node.classList.add("dm-card", `kind-${Cards.kindOf(item)}`);
    node.appendChild(Cards.build(item, tr, numberLocale()));
    return true;
  },
  onShow: (item) => {
    rendered.push(item.id);
    if (rendered.length > RENDERED_CAP) rendered.splice(0, rendered.length - RENDERED_CAP);
    S.stats.rendered += 1;
    if (R.on) {
      R.shown.push([item.id, Math.round(R.now)]);
      if (R.shown.length > RENDERED_CAP) R.shown.splice(0, R.shown.length - RENDERED_CAP);
    }
    mirror(item);
  },
  onSkip: () => { S.stats.skipped += 1; },
});

/** The stage's size and the display settings, told to the renderer and the stylesheet. */
export function updateGeometry() {
  const line = Math.round(settings.fontSize * 1.25);
  // 2 px border top and bottom plus 2 px between lanes
  renderer.resize(el.stage.clientWidth, el.stage.clientHeight, line + 6);
  renderer.setView({ speed: settings.speed, area: AREAS[settings.area] });
  const root = document.documentElement.style;
  root.setProperty("--dm-font", `${settings.fontSize}px`);
  root.setProperty("--dm-line", `${line}px`);
}

/** Validate, de-duplicate and filter an item. True when it should be shown. */
export function accept(item, own) {
  if (!item || typeof item !== "object") return false;
  if (typeof item.id !== "string" || typeof item.text !== "string") return false;
  if (seen.has(item.id)) {
    S.stats.dupItems += 1;
    return false;
  }
  remember(item.id);
  S.stats.items += 1;
  if (retracted.has(item.id)) return false;
  if (!own && blockedItem(item)) {
    S.stats.blocked += 1;
    return false;
  }
  if (!R.on) chat.add(item, own); // the list: what was delivered, whatever the overlay shows
  return shows(item, own);
}

/** The viewer's filters: block lists, danmaku on/off, top/bottom. True when it shows. */
export function shows(item, own) {
  if (!own && blockedItem(item)) {
    S.stats.blocked += 1;
    return false;
  }
  if (!settings.on || document.hidden) return false;
  const mode = modeOf(item);
  if ((mode === "top" && !settings.showTop) || (mode === "bottom" && !settings.showBottom)) {
    return false;
  }
  return true;
}

export function blockedItem(item) {
  if (settings.blockUsers.length) {
    const nick = typeof item.nick === "string" ? item.nick.toLowerCase() : "";
    const uid = typeof item.uid === "string" ? item.uid.toLowerCase() : "";
    for (const u of settings.blockUsers) {
      const x = u.toLowerCase();
      if (x === nick || x === uid) return true;
    }
  }
  if (settings.blockWords.length) {
    const text = item.text.toLowerCase();
    for (const w of settings.blockWords) {
      if (text.includes(w.toLowerCase())) return true;
    }
  }
  return false;
}

/** A frame's accepted items: spread over the tick, own ones marked. */
export function showFrame(items) {
  renderer.frame(items.map((item) => [item, isOwn(item)]), S.tickMs);
}

/** Moderators deleted these: off the screen, the queues, the mirror and the list. */
export function retract(ids) {
  const gone = new Set(ids.filter((x) => typeof x === "string"));
  if (!gone.size) return;
  for (const id of gone) {
    retracted.add(id);
    S.stats.retracted += 1;
  }
  renderer.retract(gone);
  for (const p of Array.from(el.live.children)) {
    if (gone.has(p.dataset.id)) p.remove();
  }
  chat.retract(gone);
}

export function clearScreen() { renderer.clear(); }

/** Take off the screen what the display settings now hide (modes, block lists). */
export function refilter() {
  for (const node of Array.from(renderer.live.values())) {
    const mode = node.dataset.mode;
    if ((mode === "top" && !settings.showTop) || (mode === "bottom" && !settings.showBottom)) {
      renderer.removeNode(node);
    } else if (!node.classList.contains("own") && blockedItem({
      text: node.firstChild ? node.firstChild.nodeValue || "" : "",
      uid: node.dataset.uid, nick: node.dataset.nick,
    })) {
      renderer.removeNode(node);
    }
  }
}

function mirror(item) {
  const p = document.createElement("p");
  p.dataset.id = item.id;
  const who = typeof item.nick === "string" && item.nick ? `${item.nick}: ` : "";
  const count = Number(item.count) >= 2 ? ` (×${item.count})` : "";
  p.textContent = Cards.kindOf(item) ? Cards.summary(item, tr, numberLocale())
    : `${who}${item.text}${count}`;
  el.live.appendChild(p);
  while (el.live.childElementCount > MIRROR_CAP) el.live.firstElementChild.remove();
}
