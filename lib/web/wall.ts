// The camera wall (/wall): every camera the login opens on one page. Browsers keep about 6 connections per host,
// so only the focused camera streams (an RTSP camera as video through Media Source Extensions, live-video-page.ts;
// the others, or where the browser cannot play it, MJPEG); the others are snapshots refreshed every few seconds.
// A click on a camera focuses it and shows it full-screen.
import { htmlPage, STATUS_POLL_MS, VIDEO_TRIES } from "./page.ts";
import { LIVE_VIDEO_SCRIPT } from "./live-video-page.ts";

/** The other cameras' snapshots are this old at most (milliseconds). */
export const WALL_SNAPSHOT_MS = 3_000;
/** A camera that failed is asked again after this long (milliseconds). */
const WALL_RETRY_MS = 5_000;

const STYLE = `
:root { color-scheme: dark light; --fg: #e6e9ec; --muted: #9aa5b1; --bg: #0f1215; --tile: #1f252b; --accent: #4cc26b; }
@media (prefers-color-scheme: light) { :root { --fg: #1d232a; --muted: #5d6873; --bg: #f3f5f7; --tile: #fff; --accent: #1f8a3b; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1rem; align-items: baseline; padding: .6rem 1rem; }
h1 { font-size: 1.2rem; margin: 0; } header a { color: var(--muted); }
#wall { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 280px), 1fr)); gap: .6rem; padding: 0 1rem 1rem; }
.tile { position: relative; background: #000; aspect-ratio: 16 / 9; border-radius: 8px; overflow: hidden; cursor: zoom-in; border: 2px solid transparent; }
.tile.focused { grid-column: 1 / -1; border-color: var(--accent); }
.tile [hidden] { display: none !important; }
.tile video { display: block; width: 100%; height: 100%; object-fit: contain; }
.tile img { display: block; width: 100%; height: 100%; object-fit: contain; }
.tile .label { position: absolute; left: 0; bottom: 0; padding: .2rem .5rem; background: rgba(0, 0, 0, .6); color: #fff; font-size: .85rem; }
.tile:fullscreen { border: 0; border-radius: 0; cursor: zoom-out; }
.empty { color: var(--muted); padding: 1rem; }
`;

// Written without template literals or `${}` beyond the constants, as page.ts's script is.
const SCRIPT = `
"use strict";
var SNAPSHOT_MS = ${WALL_SNAPSHOT_MS}, POLL_MS = ${STATUS_POLL_MS}, RETRY_MS = ${WALL_RETRY_MS}, VIDEO_TRIES = ${VIDEO_TRIES};
${LIVE_VIDEO_SCRIPT}
var tiles = new Map();
var focused = "";

function stopVideo(t) {
  if (t.stopVideo) { t.stopVideo(); t.stopVideo = null; }
  if (t.video) { t.video.remove(); t.video = null; }
  t.img.hidden = false;
}

function showVideo(t, mode) {
  var video = document.createElement("video");
  video.className = "camera";
  video.muted = true; video.autoplay = true; video.playsInline = true;
  video.setAttribute("muted", ""); video.setAttribute("playsinline", "");
  video.onplaying = function () { if (t.video === video) t.videoFailures = 0; };
  t.video = video;
  t.img.hidden = true;
  t.root.prepend(video);
  t.stopVideo = playLive(video, t.camera.live, function (why, played) {
    if (t.video !== video) return;
    t.stopVideo = null;
    stopVideo(t);
    t.videoFailures++;
    if (/cannot play/.test(why) || t.videoFailures >= VIDEO_TRIES) { t.noVideo = mode; t.mode = ""; show(t); return; }
    t.timer = setTimeout(function () { if (t.mode === mode && !t.video) showVideo(t, mode); }, played ? 500 : RETRY_MS);
  });
}

function show(t) {
  var live = t.name === focused;
  var mode = (live ? "live " : "snapshot ") + t.camera.id;
  t.root.classList.toggle("focused", live);
  if (t.mode === mode) return;
  t.mode = mode;
  clearTimeout(t.timer);
  stopVideo(t);
  var img = t.img;
  img.src = "";
  if (live && t.camera.live && liveVideoPossible() && t.noVideo !== mode) { t.videoFailures = 0; showVideo(t, mode); return; }
  var base = live ? t.camera.mjpeg : t.camera.snapshot;
  var load = function () { if (t.mode === mode) img.src = base + "?t=" + Date.now(); };
  img.onload = function () { if (!live && t.mode === mode) t.timer = setTimeout(load, SNAPSHOT_MS); };
  img.onerror = function () { if (t.mode === mode) t.timer = setTimeout(load, RETRY_MS); };
  load();
}

function tile(p) {
  var t = tiles.get(p.name);
  if (t) { t.camera = p.camera; return t; }
  var root = document.createElement("div");
  root.className = "tile";
  root.dataset.printer = p.name;
  var img = document.createElement("img");
  img.className = "camera";
  img.alt = p.name + " camera";
  var label = document.createElement("span");
  label.className = "label";
  label.textContent = p.name;
  root.append(img, label);
  t = { name: p.name, root: root, img: img, camera: p.camera, mode: "", timer: 0, video: null, stopVideo: null, videoFailures: 0, noVideo: "" };
  root.onclick = function () {
    if (document.fullscreenElement) { document.exitFullscreen(); return; }
    focused = t.name;
    tiles.forEach(show);
    if (root.requestFullscreen) root.requestFullscreen().catch(function () {});
  };
  document.getElementById("wall").append(root);
  tiles.set(p.name, t);
  return t;
}

function render(printers) {
  var cameras = printers.filter(function (p) { return p.camera; });
  document.getElementById("empty").hidden = cameras.length > 0;
  var seen = new Set();
  cameras.forEach(function (p) { seen.add(p.name); tile(p); });
  tiles.forEach(function (t, name) {
    if (!seen.has(name)) { clearTimeout(t.timer); stopVideo(t); t.img.src = ""; t.root.remove(); tiles.delete(name); }
  });
  if (!tiles.has(focused)) focused = cameras.length ? cameras[0].name : "";
  tiles.forEach(show);
}

function poll() {
  fetch("api/printers", { cache: "no-store" })
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(render)
    .catch(function () {})
    .finally(function () { setTimeout(poll, POLL_MS); });
}
poll();
`;

export const WALL_PAGE = htmlPage(
  "pandaproxy cameras",
  STYLE,
  `<header><h1>Cameras</h1><a href="./">status</a></header>
<main id="wall"><p id="empty" class="empty" hidden>No cameras.</p></main>`,
  SCRIPT,
);
