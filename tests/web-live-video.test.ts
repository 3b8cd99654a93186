// Live video for RTSP cameras (issue #16): the simulated X1C behind pandaproxy's RTSP service and web server.
// live.mp4 is the printer's H.264 rewrapped as fragmented MP4 without decoding: FFmpeg/ffprobe (independent of our
// box splitter) read what a browser gets, also a second viewer that joins mid-stream; the login rules are the
// camera's; a snapshot is one decoded key frame, with no JPEG FFmpeg left running. The Chromium half runs on
// `pandaproxy demo` itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import type { Service } from "../lib/core/service.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import { simIdentity } from "../lib/sim/bambu.ts";
import { startSimRtsp, type SimRtsp } from "../lib/sim/rtsp.ts";
import { CODEC_HEADER } from "../lib/web/live-video.ts";
import type { WebServer } from "../lib/web/server.ts";
import { descendants } from "../bench/support.ts";
import { ACCESS_CODE, proxyContext, run } from "./rtsp-fixtures.ts";
import { until } from "./mqtt-helpers.ts";
import { ADMIN_AUTH, basicAuth, startTestWeb, TEST_ADMIN } from "./web-fixtures.ts";
import { connect } from "node:net";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import { startWeb } from "../lib/web/server.ts";

const SIM = "127.0.49.1";
const PROXY = "127.0.49.2";
const WEB = "127.0.49.3";
/** A second web server with a small per-browser budget, for the browser that reads nothing. */
const SMALL_WEB = "127.0.49.4";
/** A simulated camera that sends H.265, its proxy and web server. */
const HEVC_SIM = "127.0.49.6";
const HEVC_PROXY = "127.0.49.7";
const HEVC_WEB = "127.0.49.8";
/** A simulated camera whose proxy's first JPEG and remuxing FFmpegs wedge, and its web server. */
const WEDGE_SIM = "127.0.49.11";
const WEDGE_PROXY = "127.0.49.12";
const WEDGE_WEB = "127.0.49.13";
/** A simulated camera that changes its picture size mid-stream, its proxy and web server. */
const RESIZE_SIM = "127.0.49.14";
const RESIZE_PROXY = "127.0.49.15";
const RESIZE_WEB = "127.0.49.16";
const FPS = 15;

let sim: SimRtsp;
let service: Service;
let web: WebServer;
let url: string;
let tokensDir: string;
let printer: PrinterRuntime;
const work = mkdtempSync(join(tmpdir(), "pp-live-video-"));
const ctx = proxyContext({ bind: PROXY, printerHost: SIM, printerRtsp: 322 });

/** Reads `url` for `ms` (or until `maxBytes`), then aborts: what a browser got in that time. */
async function readFor(target: string, ms: number, headers: Record<string, string> = ADMIN_AUTH, maxBytes = 64 * 1024 * 1024, answered = () => {}) {
  const abort = new AbortController();
  const response = await fetch(target, { headers, signal: abort.signal });
  answered();
  const chunks: Buffer[] = [];
  let bytes = 0;
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    for await (const chunk of response.body as ReadableStream<Uint8Array>) {
      chunks.push(Buffer.from(chunk));
      bytes += chunk.length;
      if (bytes >= maxBytes) break;
    }
  } catch {
    // aborted: the time is up
  } finally {
    clearTimeout(timer);
  }
  return { response, body: Buffer.concat(chunks) };
}

/** The processes below us whose command line contains `text` (our FFmpeg children). */
function children(text: string): string[] {
  return descendants(process.pid)
    .map((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      } catch {
        return "";
      }
    })
    .filter((cmd) => cmd.includes(text));
}

/** A simulated X1C of its own behind its own RTSP service and web server, for a test that changes something. */
async function ownCamera(hosts: { sim: string; proxy: string; web: string }, serial: string, simOptions: Parameters<typeof startSimRtsp>[1], serviceOptions: Parameters<typeof createRtspService>[1], ffmpeg?: string) {
  const ownSim = await startSimRtsp(simIdentity({ host: hosts.sim, model: "X1C", serial, accessCode: ACCESS_CODE, ports: { rtsp: 322 } }), {
    cameraWidth: 640, cameraHeight: 360, cameraFps: FPS, ...simOptions,
  });
  const base = proxyContext({ bind: hosts.proxy, printerHost: hosts.sim, printerRtsp: 322, serial });
  const ownCtx = ffmpeg ? { ...base, proxy: { ...base.proxy, ffmpeg } } : base;
  const ownService = createRtspService(ownCtx, { lingerMs: 3_000, backoffMinMs: 300, ...serviceOptions });
  await ownService.start();
  const { web: ownWeb, url: ownUrl } = await startTestWeb([{ config: ownCtx.printer, hub: ownCtx.hub, services: [ownService], start: async () => {}, stop: async () => {} }], { host: hosts.web });
  return {
    sim: ownSim, ctx: ownCtx, service: ownService, url: ownUrl,
    async stop() {
      await ownWeb.stop();
      await ownService.stop();
      await ownSim.stop();
    },
  };
}

beforeAll(async () => {
  sim = await startSimRtsp(simIdentity({ host: SIM, model: "X1C", serial: "00M09A350100123", accessCode: ACCESS_CODE, ports: { rtsp: 322 } }), {
    cameraWidth: 640, cameraHeight: 360, cameraFps: FPS,
  });
  service = createRtspService(ctx, { lingerMs: 3_000, backoffMinMs: 300 });
  await service.start();
  printer = { config: ctx.printer, hub: ctx.hub, services: [service], start: async () => {}, stop: async () => {} };
  ({ web, url, tokensDir } = await startTestWeb([printer], { host: WEB }));
}, 30_000);

afterAll(async () => {
  await web?.stop();
  await service?.stop();
  await sim?.stop();
  if (!process.env.KEEP) rmSync(work, { recursive: true, force: true }); else console.log(work);
});

describe("live.mp4 (simulated X1C through pandaproxy)", () => {
  test("serves H.264 in fragmented MP4 that ffprobe reads; a viewer joining mid-stream starts at a key frame", async () => {
    let firstAnswered = () => {};
    const answered = new Promise<void>((resolve) => (firstAnswered = resolve));
    const first = readFor(`${url}/printers/x1c/live.mp4`, 8_000, ADMIN_AUTH, undefined, firstAnswered);
    // The second viewer joins while the first one's FFmpeg runs, a few key frames (every 2 s) later.
    await answered;
    await Bun.sleep(4_500);
    const second = await readFor(`${url}/printers/x1c/live.mp4`, 3_000);
    const one = await first;
    for (const [name, got] of [["first", one], ["second", second]] as const) {
      expect(`${name}: ${got.response.status} ${got.response.headers.get("content-type")}`).toBe(`${name}: 200 video/mp4`);
      expect(got.response.headers.get(CODEC_HEADER)).toMatch(/^avc1\.[0-9a-f]{6}$/);
      const file = join(work, `${name}.mp4`);
      writeFileSync(file, got.body);
      const probe = await run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height:format=format_name", "-of", "json", file]);
      expect(probe.code).toBe(0);
      const info = JSON.parse(probe.stdout);
      expect(info.format.format_name).toContain("mp4");
      expect(info.streams).toEqual([{ codec_name: "h264", width: 640, height: 360 }]);
      // Fragmented: an empty moov, then moof/mdat pairs (ffprobe's trace names the boxes it reads).
      const boxes = await run(["ffprobe", "-v", "trace", file]);
      expect(boxes.stderr).toMatch(/type:'moof'/);
      expect(boxes.stderr).toMatch(/type:'mvex'/);
      // Decodes without a single error, and its first frame is a key frame (an I picture).
      const decoded = await run(["ffmpeg", "-v", "error", "-i", file, "-f", "null", "-"]);
      expect(`${name}: ${decoded.code} ${decoded.stderr.trim()}`).toBe(`${name}: 0 `);
      // Its first packet is a key frame (FFmpeg's decoder would skip to one silently: the packet flags tell).
      const packets = await run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=flags", "-of", "csv=p=0", file]);
      const flags = packets.stdout.trim().split("\n");
      expect(`${name}: ${flags[0]}`).toMatch(new RegExp(`^${name}: K`));
      const frames = await run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=key_frame,pict_type", "-of", "csv=p=0", file]);
      const list = frames.stdout.trim().split("\n");
      expect(list[0]).toBe("1,I");
      expect(list.length).toBe(flags.length); // every packet decoded to a picture
      expect(list.length).toBeGreaterThan(FPS); // more than a second of video
    }
    // The second viewer did join mid-stream: the same init segment, then fragments the first viewer got seconds later.
    const firstMoof = (body: Buffer) => body.indexOf("moof", 0, "latin1") - 4;
    expect(second.body.subarray(0, firstMoof(second.body))).toEqual(one.body.subarray(0, firstMoof(one.body)));
    const joinedAt = one.body.indexOf(second.body.subarray(firstMoof(second.body), firstMoof(second.body) + 4096));
    expect(joinedAt).toBeGreaterThan(firstMoof(one.body));
  }, 60_000);

  test("the printer's /api entry names the live URL, and counts a video viewer as a web viewer", async () => {
    type Entry = { camera: { live: string | null; kind: string; webViewers: number; fps: number; lastFrameAgeMs: number | null } };
    const api = async () => ((await (await fetch(`${url}/api/printers`, { headers: ADMIN_AUTH })).json()) as Entry[])[0]!.camera;
    let answered = () => {};
    const watching = new Promise<void>((resolve) => (answered = resolve));
    const viewer = readFor(`${url}/printers/x1c/live.mp4`, 3_000, ADMIN_AUTH, undefined, answered);
    await watching;
    await Bun.sleep(1_000);
    const camera = await api();
    expect(camera.kind).toBe("rtsp");
    expect(camera.live).toBe("printers/x1c/live.mp4");
    expect(camera.webViewers).toBe(1);
    // The video's own frame rate and age, though no JPEG is made.
    expect(camera.fps).toBeGreaterThan(FPS / 2);
    expect(camera.lastFrameAgeMs).toBeLessThan(1_000);
    await viewer;
  }, 30_000);

  test("asks for the camera's credentials: no login 401, a camera token or the access code opens it, a wrong token does not", async () => {
    expect((await fetch(`${url}/printers/x1c/live.mp4`)).status).toBe(401);
    const token = readFileSync(join(tokensDir, "cameras", "x1c.token"), "utf8").trim();
    expect((await fetch(`${url}/printers/x1c/live.mp4?token=${token.slice(0, -1)}x`)).status).toBe(401);
    const byToken = await readFor(`${url}/printers/x1c/live.mp4?token=${encodeURIComponent(token)}`, 2_000, {}, 64 * 1024);
    expect(byToken.response.status).toBe(200);
    expect(byToken.body.subarray(4, 8).toString("latin1")).toBe("ftyp");
    const byCode = await readFor(`${url}/printers/x1c/live.mp4`, 2_000, basicAuth("bblp", ACCESS_CODE), 64 * 1024);
    expect(byCode.response.status).toBe(200);
    // The token opens the camera's URLs only, not the page.
    expect((await fetch(`${url}/api/printers?token=${encodeURIComponent(token)}`)).status).toBe(401);
  }, 30_000);

  test("a snapshot is the latest key frame decoded once: a JPEG ffprobe reads, and no continuous JPEG FFmpeg runs", async () => {
    const response = await fetch(`${url}/printers/x1c/snapshot.jpg`, { headers: ADMIN_AUTH });
    expect(response.status).toBe(200);
    const file = join(work, "snapshot.jpg");
    writeFileSync(file, Buffer.from(await response.arrayBuffer()));
    const probe = await run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", file]);
    expect(probe.stdout.trim()).toBe("mjpeg,640,360");
    // The continuous JPEG FFmpeg (`-vf fps=…`) was never asked for; a second snapshot of the same key frame decodes nothing new.
    expect(children("fps=")).toEqual([]);
    const details = service.status().details!;
    expect(details.jpegViewers).toBe(0);
    expect(details.jpegFfmpeg).toBe("idle");
    expect(details.snapshotDecodes as number).toBeGreaterThanOrEqual(1);
    // Two snapshots with no key frame between them (x264 may add one at a scene cut: try again then): the second
    // one comes from the cache, not from another decode.
    let cached = false;
    for (let i = 0; i < 5 && !cached; i++) {
      const keyFrames = service.status().details!.keyFrames;
      expect((await fetch(`${url}/printers/x1c/snapshot.jpg`, { headers: ADMIN_AUTH })).status).toBe(200);
      const decodes = service.status().details!.snapshotDecodes;
      expect((await fetch(`${url}/printers/x1c/snapshot.jpg`, { headers: ADMIN_AUTH })).status).toBe(200);
      if (service.status().details!.keyFrames !== keyFrames) continue;
      expect(service.status().details!.snapshotDecodes).toBe(decodes);
      cached = true;
    }
    expect(cached).toBe(true);
  }, 30_000);
});

describe("a browser that takes nothing", () => {
  test("is ended by its budget (it holds the camera no longer), with a log line naming it; nothing else is affected", async () => {
    const small = await startWeb({
      web: { listen: { host: SMALL_WEB, port: 0 }, username: TEST_ADMIN.username, password: TEST_ADMIN.password, open: false, tokensDir: join(work, "small-tokens") },
      printers: () => [printer],
      metrics: createMetrics(),
      liveViewerBudget: { bytes: 16 * 1024, fragments: 3 },
    });
    setupLogging("info", { quiet: true });
    const logs = captureLogs();
    const socket = connect({ host: SMALL_WEB, port: small.port });
    try {
      await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
      socket.pause(); // reads nothing: the kernel's buffers fill, then what waits for it in the proxy
      socket.write(`GET /printers/x1c/live.mp4 HTTP/1.1\r\nHost: ${SMALL_WEB}\r\nAuthorization: ${ADMIN_AUTH.Authorization}\r\n\r\n`);
      const deadline = Date.now() + 90_000;
      const viewers = () => service.status().details!.videoViewers as number;
      while (viewers() === 0 && Date.now() < deadline) await Bun.sleep(100);
      expect(viewers()).toBe(1);
      // Meanwhile a browser that keeps up watches on the other web server, undisturbed.
      const other = readFor(`${url}/printers/x1c/live.mp4`, 4_000);
      while (viewers() > 1 || (viewers() === 1 && !logs.lines.some((l) => l.includes("cannot keep up")))) {
        if (Date.now() > deadline) throw new Error(`the stalled browser was not ended; logs:\n${logs.lines.join("\n")}`);
        await Bun.sleep(200);
      }
      const line = logs.lines.find((l) => l.includes("cannot keep up"))!;
      expect(line).toContain("x1c");
      expect(line).toMatch(/video viewer 127\.0\.0\.1:\d+: cannot keep up \(3 video fragments waiting\); closing it/);
      const kept = await other;
      expect(kept.response.status).toBe(200);
      expect(kept.body.length).toBeGreaterThan(100_000);
      while (viewers() > 0 && Date.now() < deadline) await Bun.sleep(100);
      expect(viewers()).toBe(0); // the stalled one's claim is given back once it is ended
    } finally {
      logs.stop();
      setupLogging("warn", { quiet: true });
      socket.destroy();
      await small.stop();
    }
  }, 120_000);
});

describe("a camera that sends no H.264", () => {
  test("its snapshot comes from one JPEG FFmpeg run; live.mp4 names no codec, so the page shows MJPEG", async () => {
    // The simulator's encoder with libx265 in place of libx264.
    const wrapper = join(work, "ffmpeg-hevc.sh");
    writeFileSync(wrapper, '#!/bin/sh\nfor a in "$@"; do shift; [ "$a" = libx264 ] && a=libx265; set -- "$@" "$a"; done\nexec ffmpeg "$@"\n');
    chmodSync(wrapper, 0o755);
    const hevc = await ownCamera({ sim: HEVC_SIM, proxy: HEVC_PROXY, web: HEVC_WEB }, "00M09A350100124", { ffmpeg: wrapper }, {});
    try {
      const response = await fetch(`${hevc.url}/printers/x1c/snapshot.jpg`, { headers: ADMIN_AUTH });
      expect(response.status).toBe(200);
      const file = join(work, "hevc-snapshot.jpg");
      writeFileSync(file, Buffer.from(await response.arrayBuffer()));
      expect((await run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", file])).stdout.trim()).toBe("mjpeg,640,360");
      expect(hevc.service.status().details!.keyFrames).toBe(0);
      expect(hevc.service.status().details!.snapshotDecodes).toBe(0);
      const live = await readFor(`${hevc.url}/printers/x1c/live.mp4`, 3_000, ADMIN_AUTH, 256 * 1024);
      expect(live.response.status).toBe(200);
      expect(live.response.headers.get(CODEC_HEADER)).toBeNull();
    } finally {
      await hevc.stop();
    }
  }, 60_000);
});

describe("an FFmpeg of ours that stops writing while the camera sends", () => {
  test("the JPEG and the remuxing FFmpeg are restarted, each with a log line, and their viewers get pictures", async () => {
    // The proxy's FFmpeg: the first JPEG run and the first remuxing run read our stream but write nothing to us
    // (their output goes to /dev/null: a wedged process, as far as we can tell); later runs, and the publisher,
    // are the real FFmpeg.
    const wrapper = join(work, "ffmpeg-wedged-once.sh");
    const marks = join(work, "wedged");
    writeFileSync(wrapper, `#!/bin/sh
case "$*" in
  *"-f mjpeg pipe:1"*) mark="${marks}.jpeg" ;;
  *"-f mp4"*) mark="${marks}.mp4" ;;
  *) exec ffmpeg "$@" ;;
esac
if [ ! -e "$mark" ]; then : > "$mark"; exec ffmpeg "$@" > /dev/null; fi
exec ffmpeg "$@"
`);
    chmodSync(wrapper, 0o755);
    const logs = captureLogs();
    const wedged = await ownCamera({ sim: WEDGE_SIM, proxy: WEDGE_PROXY, web: WEDGE_WEB }, "00M09A350100125", {}, { outputStallTimeoutMs: 5_000 }, wrapper);
    try {
      const [mjpeg, mp4] = await Promise.all([
        readFor(`${wedged.url}/printers/x1c/camera.mjpeg`, 20_000, ADMIN_AUTH, 256 * 1024),
        readFor(`${wedged.url}/printers/x1c/live.mp4`, 20_000, ADMIN_AUTH, 256 * 1024),
      ]);
      const text = logs.lines.join("\n");
      expect(text).toMatch(/the JPEG FFmpeg wrote nothing for \d+ s while the camera sent video; restarting it/);
      expect(text).toMatch(/the remuxing FFmpeg wrote nothing for \d+ s while the camera sent video; restarting it/);
      expect(wedged.service.status().details!.outputStalls).toBe(2);
      // After the restart the viewers got what they asked for: JPEG pictures, and fragmented MP4.
      expect(mjpeg.response.status).toBe(200);
      expect(mjpeg.body.indexOf(Buffer.from([0xff, 0xd8, 0xff]))).toBeGreaterThan(-1);
      expect(mp4.response.status).toBe(200);
      expect(mp4.body.indexOf("moof", 0, "latin1")).toBeGreaterThan(-1);
    } finally {
      logs.stop();
      await wedged.stop();
    }
  }, 60_000);
});

describe("a camera that changes its picture size mid-stream", () => {
  test("the remuxing FFmpeg starts a new run, so a browser joining after the change gets an init segment for the new size", async () => {
    const resize = await ownCamera({ sim: RESIZE_SIM, proxy: RESIZE_PROXY, web: RESIZE_WEB }, "00M09A350100126", {}, { lingerMs: 30_000 });
    const live = `${resize.url}/printers/x1c/live.mp4`;
    const probe = async (name: string, body: Buffer) => {
      const file = join(work, `${name}.mp4`);
      writeFileSync(file, body);
      return { file, size: (await run(["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", file])).stdout.trim() };
    };
    const initOf = (body: Buffer) => body.subarray(0, body.indexOf("moof", 0, "latin1") - 4);
    try {
      const before = await readFor(live, 4_000);
      expect(before.response.status).toBe(200);
      expect((await probe("before-resize", before.body)).size).toBe("640,360");
      const runs = resize.ctx.hub.camera!.liveVideo!.runs;
      // The remuxing FFmpeg lingers after that viewer (10 s): the change comes while it runs. A browser keeps
      // watching across it, as one would.
      const watching = readFor(live, 12_000);
      await Bun.sleep(1_000);
      resize.sim.setCameraSize(320, 180);
      await until("a new remuxing run after the size change", () => resize.ctx.hub.camera!.liveVideo!.runs > runs, 20_000);
      await watching;
      const after = await readFor(live, 4_000);
      expect(after.response.status).toBe(200);
      expect(initOf(after.body).equals(initOf(before.body))).toBe(false);
      const { file, size } = await probe("after-resize", after.body);
      expect(size).toBe("320,180");
      const decoded = await run(["ffmpeg", "-v", "error", "-i", file, "-f", "null", "-"]);
      expect(`${decoded.code} ${decoded.stderr.trim()}`).toBe("0 ");
    } finally {
      await resize.stop();
    }
  }, 90_000);
});
