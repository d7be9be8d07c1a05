/* danmaku web player: the entry module. Plain browser ES modules, no build step, nothing
 * fetched from elsewhere (player.html loads this with <script type="module">).
 *
 * The parts, each a module of player/ named for what it holds:
 * - state.js: constants, the page's elements, the stored settings, session and staff token,
 *   the connection's and replay's state;
 * - connection.js: the player's side of the one WebSocket client (danmaku-overlay.js'
 *   Connection: gateway hint, backoff, resume with since/epoch): welcome, frames, acks,
 *   errors and the connection's state in the viewer's words;
 * - stage.js: what shows (de-duplication, retracts, block lists, filters) and the
 *   comments over the video, drawn by danmaku-overlay.js' Renderer: the same lanes and
 *   moving elements as the embeddable overlay, one renderer for both;
 * - actions.js + chatlist.js: the chat list and its menu (copy, block, report, staff
 *   delete and time out); cards.js: paid, gift and system items;
 * - send.js (the comment box, guest session via session.js, staff sign-in via staff.js),
 *   words.js (errors in the viewer's words), notices.js (the banner and room rules),
 *   settings.js (the popover; density menu via density.js), media.js (video via video.js,
 *   controls, keys), pattern.js (the test pattern), replay.js (?broadcast=: a recording
 *   with its comments on the media clock), replays.js (the link to the room's last
 *   recording).
 * Strings come from the catalogue (i18n.js, a classic script shared with the console).
 * window.danmaku is a small read-only hook for tests and debugging.
 */

import { I18N, R, S, el, pending, rendered, room, settings, tr } from "./player/state.js";
import { chat } from "./player/actions.js";
import { link, setOnline, setState, startConnection } from "./player/connection.js";
import { V, bindControls, renderControls, setupVideo } from "./player/media.js";
import { relabelBanner, renderRoomStatus } from "./player/notices.js";
import { drawPattern, resizePattern } from "./player/pattern.js";
import { replayTick, setupReplay } from "./player/replay.js";
import { renderReplayLink } from "./player/replays.js";
import { bindSending, bindStaff, renderWho, updateCount } from "./player/send.js";
import { bindSettings, renderSettings } from "./player/settings.js";
import { renderer, updateGeometry } from "./player/stage.js";

// ---- language -------------------------------------------------------------------------------
function renderLanguage() {
  I18N.apply();
  renderSettings();
  chat.relabel();
  relabelBanner();
  if (!S.cooldownUntil) el.sendButton.textContent = tr("send.send");
  if (R.on) el.sendText.placeholder = tr("send.placeholder_replay");
  el.rpMute.textContent = tr(el.video.muted ? "rp.sound_off" : "rp.sound_on");
  renderControls();
  renderRoomStatus();
  renderReplayLink();
  setState(S.state, S.detail); // the detail keeps the language it was made in until it changes
  if (S.online !== null) setOnline(S.online);
}
el.langSwitch.addEventListener("click", () => I18N.setLang(I18N.lang === "zh" ? "en" : "zh"));
I18N.onChange(renderLanguage);

// ---- the animation loop ---------------------------------------------------------------------
function loop(now) {
  try {
    drawPattern(now);
    if (R.on) replayTick();
    else renderer.pump(now);
  } finally {
    requestAnimationFrame(loop);
  }
}

// ---- start ----------------------------------------------------------------------------------
I18N.apply();
el.sendButton.textContent = tr("send.send");
el.rpMute.textContent = tr("rp.sound_off");
el.roomName.textContent = room;
document.title = `danmaku · ${room}`;
renderSettings();
bindSettings();
bindSending();
bindControls();
bindStaff();
updateGeometry();
resizePattern();
updateCount();
if (R.on) {
  setupReplay();
} else {
  renderWho();
  setupVideo();
}
new ResizeObserver(() => { updateGeometry(); resizePattern(); }).observe(el.stage);
requestAnimationFrame(loop);
startConnection(); // each welcome also reads the room's recordings (the replay link)

// ---- the hook for tests and the curious ------------------------------------------------------
window.danmaku = Object.freeze({
  get state() { return S.state; },
  get lastSeq() { return link.lastSeq; },
  get online() { return S.online; },
  get user() { return S.user ? { ...S.user } : null; },
  get epoch() { return link.epoch; },
  get densities() { return S.densities.slice(); },
  get sessionRefusal() { return S.sessionRefusal || ""; },
  get room() { return room; },
  get connects() { return S.connects.map((c) => ({ ...c })); },
  get pending() { return Array.from(pending.keys()); },
  shownIds: () => rendered.slice(),
  onScreen: () => Array.from(renderer.live.keys()),
  stats: () => ({ ...S.stats, waiting: renderer.waiting.length,
    incoming: renderer.incoming.length, lanes: renderer.laneCount() }),
  settings: () => JSON.parse(JSON.stringify(settings)),
  get lang() { return I18N.lang; },
  get reports() { return S.reports.map((x) => ({ ...x })); },
  chatSize: () => chat.size,
  /** The video: what plays it ("hls.js", "native"), its address and clock. */
  video: () => ({ url: V.url, engine: V.handle ? V.handle.engine : "",
    currentTime: el.video.currentTime, paused: el.video.paused, hidden: el.video.hidden }),
  /** Replay mode: where the recording is and what it has shown; null when live. */
  replay: () => (R.on ? {
    loaded: R.loaded, count: R.comments.length, mediaMs: Math.round(R.now),
    paused: Boolean(R.media && R.media.paused), rate: R.media ? R.media.playbackRate : 1,
    clock: Boolean(R.clock), duration: R.media ? R.media.duration : 0, shown: R.shown.map((x) => x.slice()),
  } : null),
  /** Close the socket as a network failure would (the player reconnects on its own). */
  dropConnection: () => { if (link.socket) link.socket.close(4001, "test"); },
});
