/* The video under the comments: ?src=, else the room's stream_url (video.js plays HLS
 * and files), the test pattern when there is none, the player's controls (play, volume,
 * picture in picture, fullscreen with the comments and the input inside) and its keys.
 */

import { R, S, el, params, settings, toast, tr } from "./state.js";
import { renderRoomStatus } from "./notices.js";
import { pattern } from "./pattern.js";
import { updateSettings } from "./settings.js";
import { Video } from "./video.js";

/** The ?src= video address (http, https or blob), or null after telling the viewer why. */
export function videoUrl(src) {
  let url;
  try {
    url = new URL(src, location.href);
  } catch {
    toast(tr("toast.bad_src"));
    return null;
  }
  if (!["http:", "https:", "blob:"].includes(url.protocol)) {
    toast(tr("toast.only_http"));
    return null;
  }
  return url;
}

export const V = { url: "", handle: null };

function showPattern() {
  el.video.hidden = true;
  el.pattern.hidden = false;
  pattern.on = true;
  el.stage.classList.remove("has-video");
  renderControls();
}

/** Play ``src`` (an address; "" = none: the test pattern) in the stage. */
function playVideo(src) {
  if (V.handle) V.handle.destroy();
  V.handle = null;
  V.url = src || "";
  if (!src) {
    showPattern();
    return;
  }
  const url = videoUrl(src);
  if (!url) {
    showPattern();
    return;
  }
  el.video.hidden = false;
  el.pattern.hidden = true;
  pattern.on = false;
  el.stage.classList.add("has-video");
  const handle = Video.load(el.video, url.href, {
    onFatal: () => {
      if (V.handle !== handle) return;
      showPattern();
      toast(tr("toast.video_failed"), 6000);
    },
  });
  V.handle = handle;
  if (handle.kind === "file") el.video.play().catch(() => { /* the play button starts it */ });
  renderControls();
}

/** The room's settings as GET /api/rooms/{room} gives them (``effective``: with the
 *  server defaults): the stream to play, unless ?src= chose one. */
export function onRoomSettings(roomSettings, effective) {
  S.roomSettings = roomSettings;
  renderRoomStatus();
  const pick = (o) => (o && typeof o.stream_url === "string" ? o.stream_url : "");
  const url = pick(roomSettings) || pick(effective);
  if (!params.get("src") && url !== V.url) playVideo(url);
}

export function setupVideo() {
  const src = params.get("src");
  if (src) playVideo(src);
}

export function renderControls() {
  const v = el.video;
  const playing = !v.paused && !v.ended;
  el.vcPlay.textContent = playing ? "❚❚" : "▶";
  const playWord = tr(playing ? "video.pause" : "video.play");
  el.vcPlay.title = playWord;
  el.vcPlay.setAttribute("aria-label", playWord);
  const muted = v.muted || v.volume === 0;
  el.vcMute.textContent = muted ? "🔇" : "🔊";
  el.vcMute.setAttribute("aria-pressed", String(muted));
  const muteWord = tr(muted ? "video.unmute" : "video.mute");
  el.vcMute.title = muteWord;
  el.vcMute.setAttribute("aria-label", muteWord);
  if (document.activeElement !== el.vcVolume) el.vcVolume.value = String(muted ? 0 : v.volume);
  el.vcPip.hidden = !(el.stage.classList.contains("has-video") && Video.canPip(v));
  el.vcFull.hidden = !Video.canFullscreen();
}

function toggleFullscreen() {
  Video.fullscreen(el.player).catch(() => { /* refused (no user gesture): nothing to do */ });
}

export function bindControls() {
  const v = el.video;
  el.vcPlay.addEventListener("click", () => {
    if (v.paused || v.ended) v.play().catch(() => {});
    else v.pause();
  });
  el.vcMute.addEventListener("click", () => {
    v.muted = !(v.muted || v.volume === 0) ? true : false;
    if (!v.muted && v.volume === 0) v.volume = 0.5;
    renderControls();
  });
  el.vcVolume.addEventListener("input", () => {
    v.volume = Number(el.vcVolume.value);
    v.muted = v.volume === 0;
    renderControls();
  });
  el.vcSettings.addEventListener("click", () => { el.settings.open = !el.settings.open; });
  el.vcPip.addEventListener("click", () => { Video.pip(v).catch(() => {}); });
  el.vcFull.addEventListener("click", toggleFullscreen);
  for (const ev of ["play", "pause", "ended", "volumechange", "loadedmetadata", "emptied"]) {
    v.addEventListener(ev, renderControls);
  }
  document.addEventListener("fullscreenchange", () => {
    el.player.classList.toggle("fullscreen", Boolean(document.fullscreenElement));
  });
  // keys: d danmaku on/off, f fullscreen, Enter to the comment box (not while typing)
  document.addEventListener("keydown", (ev) => {
    const tag = ev.target && ev.target.tagName;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ["INPUT", "SELECT", "TEXTAREA"].includes(tag)) {
      return;
    }
    if (ev.key === "d" || ev.key === "D") updateSettings({ on: !settings.on });
    else if (ev.key === "f" || ev.key === "F") toggleFullscreen();
    else if (ev.key === "Enter" && tag !== "BUTTON" && tag !== "SUMMARY" && !R.on) {
      el.sendText.focus();
    } else return;
    ev.preventDefault();
  });
  renderControls();
}
