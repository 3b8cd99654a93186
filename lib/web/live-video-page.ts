// The browser side of live.mp4, shared by the status page and the camera wall: fetch the stream, check the codec
// its X-Video-Codec header names with MediaSource.isTypeSupported, append what arrives to a SourceBuffer, keep
// the buffer short (what is older than LIVE_KEEP_S goes) and jump to the live edge when playback is more than
// LIVE_BEHIND_S behind it. Whatever goes wrong (no MediaSource, an unsupported codec, an HTTP error, the stream
// ending) is handed to the caller's `fail`, which falls back to the MJPEG image.
import { CODEC_HEADER } from "./live-video.ts";

/** Seconds of video the page keeps behind the playback position. */
export const LIVE_KEEP_S = 4;
/** Playback this many seconds behind the newest video jumps to the live edge. */
export const LIVE_BEHIND_S = 3;
/** Bytes the page may hold unappended before it gives up on the stream (the tab was in the background). */
const LIVE_QUEUE_MAX_BYTES = 16 * 1024 * 1024;

// Written without template literals or `${}` beyond the constants, as page.ts's script is.
export const LIVE_VIDEO_SCRIPT = `
var LIVE_KEEP_S = ${LIVE_KEEP_S}, LIVE_BEHIND_S = ${LIVE_BEHIND_S}, LIVE_QUEUE_MAX = ${LIVE_QUEUE_MAX_BYTES};
function liveVideoPossible() { return typeof window.MediaSource === "function" && typeof MediaSource.isTypeSupported === "function"; }
/** Plays url (live.mp4) in video; fail(why, played) once when it cannot or stops; returns the function that stops it. */
function playLive(video, url, fail) {
  var ctrl = new AbortController(), stopped = false, played = false, objectUrl = "";
  var stop = function () {
    if (stopped) return;
    stopped = true;
    ctrl.abort();
    if (objectUrl) { video.removeAttribute("src"); video.load(); URL.revokeObjectURL(objectUrl); }
  };
  var failOnce = function (why) { if (stopped) return; stop(); fail(why, played); };
  video.onerror = function () { failOnce("the video element failed"); };
  fetch(url, { cache: "no-store", signal: ctrl.signal }).then(function (r) {
    if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
    var codec = r.headers.get(${JSON.stringify(CODEC_HEADER)});
    // No codec named: the camera's video is not H.264, which the page cannot play (its snapshots still work).
    if (!codec) throw new Error("the page cannot play this camera's video (not H.264)");
    var type = 'video/mp4; codecs="' + codec + '"';
    if (!liveVideoPossible() || !MediaSource.isTypeSupported(type)) throw new Error("this browser cannot play " + type);
    var ms = new MediaSource();
    objectUrl = URL.createObjectURL(ms);
    video.src = objectUrl;
    ms.addEventListener("sourceopen", function () {
      if (stopped) return;
      var sb = ms.addSourceBuffer(type), reader = r.body.getReader(), queue = [], queued = 0;
      var append = function () {
        if (stopped || sb.updating || !queue.length) return;
        var b = video.buffered;
        if (b.length && video.currentTime - b.start(0) > LIVE_KEEP_S) { sb.remove(b.start(0), video.currentTime - 1); return; }
        var size = queued, bytes = new Uint8Array(size), at = 0;
        queue.forEach(function (q) { bytes.set(q, at); at += q.byteLength; });
        queue = []; queued = 0;
        try { sb.appendBuffer(bytes); } catch (e) { failOnce(e.message); }
      };
      sb.addEventListener("updateend", function () {
        var b = video.buffered;
        if (b.length) {
          var edge = b.end(b.length - 1);
          if (video.currentTime < b.start(0) || edge - video.currentTime > LIVE_BEHIND_S) video.currentTime = Math.max(b.start(0), edge - 0.3);
          if (video.paused) video.play().catch(function () {});
        }
        append();
      });
      sb.addEventListener("error", function () { failOnce("the video could not be decoded"); });
      var read = function () {
        reader.read().then(function (x) {
          if (stopped) return;
          if (x.done) { failOnce("the video stream ended"); return; }
          played = true;
          queue.push(x.value); queued += x.value.byteLength;
          if (queued > LIVE_QUEUE_MAX) { failOnce("too far behind the live video"); return; }
          append();
          read();
        }).catch(function (e) { failOnce(e.message); });
      };
      read();
    }, { once: true });
  }).catch(function (e) { failOnce(e.message); });
  return stop;
}
`;
