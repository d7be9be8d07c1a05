/* The replay link: when the room has a finished recording (GET /api/rooms/{room}/broadcasts,
 * newest first), the top bar links to the newest one's replay page
 * (/?room=R&broadcast=ID). Read when the page starts and after every welcome; a failure
 * leaves the link as it was.
 */

import { BROADCAST_RE, R, ROOM_RE, broadcast, el, room, roomPath, tr } from "./state.js";

let latest = null; // the newest ended broadcast: {id, title, start, end, comments}

/** Ask the room's recordings; show or hide the link. */
export async function readRecordings() {
  if (R.on || !ROOM_RE.test(room)) return;
  let list;
  try {
    const r = await fetch(roomPath("broadcasts"), { cache: "no-store" });
    if (!r.ok) return;
    list = await r.json();
  } catch {
    return;
  }
  if (!Array.isArray(list)) return;
  latest = list.find((b) => b && typeof b === "object" && typeof b.id === "string"
    && BROADCAST_RE.test(b.id) && Number(b.end) > 0) || null;
  renderReplayLink();
}

/** The link in the viewer's words (again after a language switch). */
export function renderReplayLink() {
  el.replayLink.hidden = !latest;
  if (!latest) return;
  el.replayLink.href = `/?room=${encodeURIComponent(room)}&broadcast=${encodeURIComponent(latest.id)}`;
  const title = typeof latest.title === "string" && latest.title
    ? latest.title : tr("rp.untitled", { id: latest.id });
  el.replayLink.textContent = tr("page.replay_link");
  el.replayLink.title = tr("page.replay_link_title", { title });
}
