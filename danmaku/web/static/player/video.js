/* The player's video: an HLS live stream, an MP4/WebM file, or none (the test pattern).
 *
 * Video (an ES module export) promises:
 * - ``isHls(url)``: the address names an HLS playlist (``.m3u8``);
 * - ``load(video, url, {onFatal})``: plays ``url`` in the <video> element. HLS goes through
 *   hls.js (vendored in /static/vendor/, loaded only when a stream needs it; never from
 *   a CDN) where the browser has Media Source Extensions, else through the browser's own
 *   HLS (Safari on iOS); files go to the element as they are. ``onFatal(kind)`` is called
 *   once when the video cannot be played (``kind``: "unsupported", "network", "media");
 *   hls.js' recoverable errors are retried as its documentation advises. Returns a handle
 *   whose ``destroy()`` stops it (a new stream_url, or leaving);
 * - ``fullscreen(el)``, ``pip(video)``: the browser's fullscreen and picture-in-picture,
 *   where it offers them (``canFullscreen()``, ``canPip(video)``).
 */
const HLS_SRC = "/static/vendor/hls.min.js";
let hlsLoading = null;

const isHls = (url) => {
  try {
    return /\.m3u8$/i.test(new URL(url, location.href).pathname);
  } catch {
    return false;
  }
};

function loadHlsJs() {
  if (window.Hls) return Promise.resolve(window.Hls);
  if (!hlsLoading) {
    hlsLoading = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = HLS_SRC;
      s.async = true;
      s.onload = () => (window.Hls ? resolve(window.Hls) : reject(new Error("no Hls")));
      s.onerror = () => { hlsLoading = null; reject(new Error("hls.js not loaded")); };
      document.head.appendChild(s);
    });
  }
  return hlsLoading;
}

function load(video, url, { onFatal = () => {} } = {}) {
  let hls = null;
  let done = false;
  const fatal = (kind) => {
    if (done) return;
    done = true;
    onFatal(kind);
  };
  const onError = () => fatal("media");
  video.addEventListener("error", onError);
  const handle = {
    kind: isHls(url) ? "hls" : "file",
    engine: "",
    destroy() {
      done = true;
      video.removeEventListener("error", onError);
      if (hls) hls.destroy();
      hls = null;
      video.removeAttribute("src");
      video.load();
    },
  };
  if (handle.kind === "file") {
    handle.engine = "native";
    video.src = url;
    return handle;
  }
  const native = video.canPlayType("application/vnd.apple.mpegurl") !== "";
  const mse = "MediaSource" in window || "ManagedMediaSource" in window;
  if (native && !mse) { // Safari on iPhone: its own HLS is the only way
    handle.engine = "native";
    video.src = url;
    return handle;
  }
  loadHlsJs().then((Hls) => {
    if (done) return;
    if (!Hls.isSupported()) {
      if (native) {
        handle.engine = "native";
        video.src = url;
      } else {
        fatal("unsupported");
      }
      return;
    }
    handle.engine = "hls.js";
    hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
    let mediaRetries = 0;
    hls.on(Hls.Events.ERROR, (_ev, data) => {
      if (!data || !data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRetries < 2) {
        mediaRetries += 1;
        hls.recoverMediaError();
      } else if (data.type === Hls.ErrorTypes.NETWORK_ERROR && mediaRetries < 2) {
        mediaRetries += 1;
        setTimeout(() => { if (hls) hls.startLoad(); }, 1000);
      } else {
        fatal(data.type === Hls.ErrorTypes.NETWORK_ERROR ? "network" : "media");
      }
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      video.play().catch(() => { /* autoplay refused: the play button starts it */ });
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  }).catch(() => fatal("unsupported"));
  return handle;
}

const canFullscreen = () => Boolean(document.fullscreenEnabled
  || document.webkitFullscreenEnabled);

function fullscreen(el) {
  if (document.fullscreenElement || document.webkitFullscreenElement) {
    return (document.exitFullscreen || document.webkitExitFullscreen).call(document);
  }
  const req = el.requestFullscreen || el.webkitRequestFullscreen;
  if (!req) return Promise.reject(new Error("no fullscreen"));
  const p = req.call(el, { navigationUI: "hide" });
  // phones: a landscape video wants a landscape screen (where the browser allows it)
  Promise.resolve(p).then(() => {
    if (screen.orientation && screen.orientation.lock && window.matchMedia("(pointer: coarse)").matches) {
      screen.orientation.lock("landscape").catch(() => {});
    }
  }).catch(() => {});
  return Promise.resolve(p);
}

const canPip = (video) => Boolean(document.pictureInPictureEnabled && video
  && !video.disablePictureInPicture);

function pip(video) {
  if (document.pictureInPictureElement) return document.exitPictureInPicture();
  return video.requestPictureInPicture();
}

export const Video = Object.freeze({ isHls, load, fullscreen, canFullscreen, pip, canPip });
