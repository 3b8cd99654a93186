// The status page: one card per printer with its live camera, what it is printing (telemetry), camera state and
// services. Plain HTML, CSS and a
// little script that polls /api/printers; relative URLs so it also works behind a reverse proxy's sub-path.
// An RTSP camera plays as video (live.mp4 through Media Source Extensions, live-video-page.ts); every other
// camera, and an RTSP one where the browser cannot play the video, is the MJPEG image.
import { LIVE_VIDEO_SCRIPT } from "./live-video-page.ts";

/** The page polls the API this often (milliseconds). */
export const STATUS_POLL_MS = 2_000;
/** Browsers open about 6 connections per host; past this many cameras the page shows refreshed snapshots. */
export const MAX_LIVE_CAMERAS = 4;
/** Failed attempts at an RTSP camera's live video (after it played, each) before the card shows the MJPEG image. */
export const VIDEO_TRIES = 3;

const STYLE = `
:root { color-scheme: light dark; --fg: #1d232a; --muted: #5d6873; --bg: #f3f5f7; --card: #fff; --line: #dde2e7;
  --ok: #1f8a3b; --warn: #b7791f; --bad: #c0392b; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ec; --muted: #9aa5b1; --bg: #15191d; --card: #1f252b;
  --line: #313941; --ok: #4cc26b; --warn: #e0a93b; --bad: #ef6b5b; } }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .2rem 1rem; padding: .8rem 1rem; }
h1 { font-size: 1.25rem; margin: 0; }
#updated { color: var(--muted); font-size: .85rem; }
#updated.bad { color: var(--bad); font-weight: 600; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 360px), 1fr)); gap: 1rem; padding: 0 1rem 1rem; }
.printer { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
.printer h2 { font-size: 1.1rem; margin: 0; }
.head { padding: .6rem .8rem; display: flex; flex-wrap: wrap; gap: .1rem .6rem; align-items: baseline; }
.where { color: var(--muted); font-size: .85rem; }
.view { position: relative; background: #000; aspect-ratio: 16 / 9; }
.view img, .view video { display: block; width: 100%; height: 100%; object-fit: contain; }
.view .none { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center; color: #bbb; font-size: .9rem; text-align: center; padding: 1rem; }
.camera-line { padding: .5rem .8rem; font-size: .9rem; border-bottom: 1px solid var(--line); }
.camera-problem { color: var(--bad); margin-top: .2rem; }
.st { display: flex; gap: .35rem; align-items: flex-start; }
.dot { flex: none; display: inline-block; width: .6rem; height: .6rem; border-radius: 50%; margin: .4em .35rem 0 0; background: var(--muted); }
.st .dot { margin-right: 0; }
.dot.ok { background: var(--ok); } .dot.warn { background: var(--warn); } .dot.bad { background: var(--bad); }
table { width: 100%; border-collapse: collapse; font-size: .88rem; table-layout: fixed; }
th:nth-child(1) { width: 31%; } th:nth-child(3) { width: 3.6rem; } th:nth-child(3), td.num { padding-left: .2rem; padding-right: .5rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 500; }
td { overflow-wrap: break-word; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
@media (max-width: 480px) { th, td { padding: .3rem .45rem; } main { padding: 0 .5rem .5rem; gap: .6rem; } }
.details { color: var(--muted); font-size: .8rem; }
.empty { color: var(--muted); padding: 1rem; }
header a { color: var(--muted); font-size: .9rem; }
.telemetry { padding: .5rem .8rem; border-bottom: 1px solid var(--line); font-size: .9rem; display: grid; gap: .3rem; }
.printer-state { font-weight: 600; } .job { color: var(--muted); overflow-wrap: anywhere; }
.printer-state.printing { color: var(--ok); } .printer-state.paused, .printer-state.preparing { color: var(--warn); }
.printer-state.failed { color: var(--bad); }
progress { width: 100%; height: .5rem; accent-color: var(--ok); }
.trays { display: flex; flex-wrap: wrap; gap: .3rem .8rem; }
.tray { display: inline-flex; align-items: center; gap: .3rem; } .tray.active { font-weight: 600; }
.swatch { width: .9rem; height: .9rem; border-radius: 3px; border: 1px solid var(--line); display: inline-block; }
.printer-error { color: var(--bad); }
`;

// Written without template literals or `${}` so it survives being embedded in this TypeScript string.
const SCRIPT = `
"use strict";
var POLL_MS = ${STATUS_POLL_MS}, MAX_LIVE = ${MAX_LIVE_CAMERAS}, RETRY_MS = 5000, VIDEO_TRIES = ${VIDEO_TRIES};
${LIVE_VIDEO_SCRIPT}
var cards = new Map();
var lastOk = 0;

function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function health(state) {
  if (!state) return "";
  if (/^(connected|listening|running|streaming|announcing|printer answered|exporting|pushing)/.test(state)) return "ok";
  // An idle link is one nobody needs now (the printer is asked on demand): not an alarm.
  if (/^idle/.test(state)) return "";
  if (/^(connecting|backoff|waiting|detecting)/.test(state)) return "warn";
  // Services describe their state in words ("0 printer sessions, 0 busy"): only failures are red.
  if (/error|fail|refused|stopped|unreachable|cannot/i.test(state)) return "bad";
  return "";
}
function age(ms) {
  if (ms === null || ms === undefined) return "no frame yet";
  if (ms < 1000) return "last frame " + ms + " ms ago";
  if (ms < 120000) return "last frame " + (ms / 1000).toFixed(1) + " s ago";
  return "last frame " + Math.round(ms / 60000) + " min ago";
}

function words(key) { return key.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase(); }
function duration(s) {
  var m = Math.round(s / 60);
  return m < 60 ? m + " min" : Math.floor(m / 60) + " h " + (m % 60) + " min";
}
function temperature(t) {
  return t.name + " " + t.celsius.toFixed(0) + (t.targetCelsius !== undefined ? " / " + t.targetCelsius.toFixed(0) : "") + " \u00b0C";
}
function line(cls, text) { return el("div", cls, text); }
function showTelemetry(box, t) {
  box.textContent = "";
  box.hidden = !t;
  if (!t) return;
  var head = line("");
  head.append(el("span", "printer-state " + t.state, t.state));
  if (t.job) head.append(document.createTextNode(" \u00b7 "), el("span", "job", t.job));
  box.append(head);
  if (t.progress !== undefined && t.state !== "idle") {
    var bar = el("progress");
    bar.max = 1; bar.value = t.progress;
    var parts = [Math.round(t.progress * 100) + "%"];
    if (t.layer !== undefined && t.totalLayers) parts.push("layer " + t.layer + " of " + t.totalLayers);
    if (t.remainingSeconds) parts.push(duration(t.remainingSeconds) + " left");
    if (t.finishesAt) parts.push("done at " + new Date(t.finishesAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    box.append(bar, line("progress-line", parts.join(" \u00b7 ")));
  }
  if (t.temperatures.length) box.append(line("temperatures", t.temperatures.map(temperature).join(" \u00b7 ")));
  var fans = t.fans.map(function (f) { return f.name + " fan " + f.percent + "%"; });
  if (t.speedProfile) fans.push(t.speedProfile + " speed");
  if (fans.length) box.append(line("fans", fans.join(" \u00b7 ")));
  if (t.trays.length) {
    var trays = line("trays");
    t.trays.forEach(function (tr) {
      var item = el("span", "tray" + (tr.active ? " active" : ""));
      item.title = tr.slot;
      var sw = el("span", "swatch");
      if (tr.colour) { sw.style.background = tr.colour; sw.dataset.colour = tr.colour; }
      item.append(sw, document.createTextNode((tr.material || "?") + (tr.remainPercent !== undefined ? " " + tr.remainPercent + "%" : "")));
      trays.append(item);
    });
    box.append(trays);
  }
  t.errors.forEach(function (e) { box.append(line("printer-error", e.text ? e.text + " (" + e.code + ")" : "error " + e.code)); });
}

function stateLine(state) {
  var line = el("div", "st");
  line.append(el("span", "dot " + health(state)), el("span", "", state));
  return line;
}

function card(p) {
  var c = cards.get(p.name);
  if (c) return c;
  var root = el("section", "printer");
  root.dataset.printer = p.name;
  var head = el("div", "head");
  var where = el("span", "where");
  head.append(el("h2", "", p.name), where);
  root.append(head);
  var view = el("div", "view");
  var none = el("div", "none", "no camera");
  view.append(none);
  var telemetry = el("div", "telemetry");
  telemetry.hidden = true;
  var cameraLine = el("div", "camera-line");
  var table = el("table", "services");
  var thead = el("tr");
  ["service", "state", "clients", "upstream"].forEach(function (h, i) { var th = el("th", i === 2 ? "num" : "", h); thead.append(th); });
  var tbody = el("tbody");
  table.append(thead, tbody);
  root.append(view, telemetry, cameraLine, table);
  document.getElementById("printers").append(root);
  c = { root: root, where: where, view: view, none: none, img: null, video: null, stopVideo: null, videoFailures: 0, failed: false, mode: "",
    telemetry: telemetry, cameraLine: cameraLine, tbody: tbody, timer: 0 };
  cards.set(p.name, c);
  return c;
}

function dropPicture(c) {
  if (c.img) { c.img.src = ""; c.img.remove(); c.img = null; }
  if (c.stopVideo) { c.stopVideo(); c.stopVideo = null; }
  if (c.video) { c.video.remove(); c.video = null; }
}

function showCamera(c, p, live) {
  var mode = !p.camera ? "" : (live ? "live " : "snapshot ") + p.camera.id;
  c.view.hidden = !p.camera;
  if (mode === c.mode) return;
  c.mode = mode;
  clearTimeout(c.timer);
  dropPicture(c);
  c.videoFailures = 0;
  c.none.textContent = "waiting for the camera\u2026";
  c.none.hidden = false;
  if (!p.camera) return;
  if (live && p.camera.live && liveVideoPossible()) showVideo(c, p, mode);
  else showImage(c, p, mode);
}

function showVideo(c, p, mode) {
  var video = el("video", "camera");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  video.setAttribute("muted", ""); video.setAttribute("playsinline", "");
  c.video = video;
  video.onplaying = function () { if (c.video === video) { c.none.hidden = true; c.videoFailures = 0; } };
  c.view.prepend(video);
  c.stopVideo = playLive(video, p.camera.live, function (why, played) {
    if (c.video !== video) return;
    c.stopVideo = null; c.video = null; video.remove();
    c.videoFailures++;
    c.none.hidden = false;
    // Unsupported here, or failing again and again: the MJPEG image instead (until the camera changes).
    if (/cannot play/.test(why) || c.videoFailures >= VIDEO_TRIES) return showImage(c, p, mode);
    c.none.textContent = "camera video interrupted (" + why + "), retrying\u2026";
    c.timer = setTimeout(function () { if (c.mode === mode && !c.video && !c.img) showVideo(c, p, mode); }, played ? 500 : RETRY_MS);
  });
}

function showImage(c, p, mode) {
  var img = el("img", "camera");
  img.alt = p.name + " camera";
  c.img = img;
  var streaming = mode.indexOf("live") === 0;
  var base = streaming ? p.camera.mjpeg : p.camera.snapshot;
  var load = function () { if (c.img === img) { c.failed = false; img.src = base + "?t=" + Date.now(); } };
  img.onload = function () {
    c.none.hidden = true;
    if (!streaming) c.timer = setTimeout(load, POLL_MS);
  };
  img.onerror = function () {
    c.failed = true;
    c.none.hidden = false;
    c.none.textContent = "camera not reachable, retrying\u2026";
    c.timer = setTimeout(load, RETRY_MS);
  };
  c.view.prepend(img);
  load();
}

function render(printers) {
  var seen = new Set();
  var cameras = printers.filter(function (p) { return p.camera; }).length;
  document.getElementById("empty").hidden = printers.length > 0;
  printers.forEach(function (p) {
    seen.add(p.name);
    var c = card(p);
    c.where.textContent = [p.model, p.host + " \\u2192 " + p.bind, p.firmware ? "firmware " + p.firmware : ""].filter(Boolean).join(" \\u00b7 ");
    showCamera(c, p, cameras <= MAX_LIVE);
    if (c.img && c.img.naturalWidth > 0 && !c.failed) c.none.hidden = true;
    if (c.video && c.video.readyState >= 2) c.none.hidden = true;
    showTelemetry(c.telemetry, p.telemetry);
    c.cameraLine.textContent = "";
    if (p.camera) {
      var cam = p.camera;
      c.cameraLine.append(el("span", "dot " + health(cam.state)));
      c.cameraLine.append(el("span", "camera-state", cam.kind + " camera: " + cam.state));
      c.cameraLine.append(document.createTextNode(" \\u00b7 "), el("span", "fps", cam.fps.toFixed(1) + " fps"));
      c.cameraLine.append(document.createTextNode(" \\u00b7 "), el("span", "age", age(cam.lastFrameAgeMs)));
      c.cameraLine.append(document.createTextNode(" \\u00b7 "), el("span", "web-viewers", cam.webViewers + " web viewer" + (cam.webViewers === 1 ? "" : "s")));
      if (cam.problem) c.cameraLine.append(el("div", "camera-problem", cam.problem));
    } else {
      c.cameraLine.append(el("span", "camera-state", "no camera for this printer"));
    }
    c.tbody.textContent = "";
    p.services.forEach(function (s) {
      var tr = el("tr");
      tr.dataset.service = s.name;
      var state = el("td", "state");
      state.append(stateLine(s.state));
      var name = el("td", "name", s.name);
      if (s.details) {
        var d = Object.keys(s.details).filter(function (k) { return s.details[k] !== undefined; })
          .map(function (k) { return words(k) + " " + s.details[k]; }).join(" \\u00b7 ");
        if (d) name.append(el("div", "details", d));
      }
      var up = el("td", "upstream");
      if (s.upstream) up.append(stateLine(s.upstream));
      else up.textContent = "\\u2014";
      tr.append(name, state, el("td", "num clients", String(s.clients)), up);
      c.tbody.append(tr);
    });
  });
  cards.forEach(function (c, name) {
    if (!seen.has(name)) { clearTimeout(c.timer); dropPicture(c); c.root.remove(); cards.delete(name); }
  });
}

function poll() {
  var updated = document.getElementById("updated");
  fetch("api/printers", { cache: "no-store" })
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(function (printers) {
      render(printers);
      lastOk = Date.now();
      updated.className = "";
      updated.textContent = "updated " + new Date(lastOk).toLocaleTimeString();
    })
    .catch(function (e) {
      updated.className = "bad";
      updated.textContent = "cannot reach pandaproxy (" + e.message + ")" + (lastOk ? ", last update " + new Date(lastOk).toLocaleTimeString() : "");
    })
    .finally(function () { setTimeout(poll, POLL_MS); });
}
poll();
`;

/** A page of ours: the head every page shares, its style, body and script. */
export const htmlPage = (title: string, style: string, body: string, script: string) => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>${style}</style>
</head>
<body>
${body}
<script>${script}</script>
</body>
</html>
`;

export const STATUS_PAGE = htmlPage(
  "pandaproxy",
  STYLE,
  `<header><h1>pandaproxy</h1><a href="wall">camera wall</a><span id="updated">loading\u2026</span></header>
<main id="printers"><p id="empty" class="empty" hidden>No printers configured.</p></main>`,
  SCRIPT,
);
