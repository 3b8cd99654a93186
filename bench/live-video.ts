// Live video for browsers, remux against transcode (issue #16): the simulated X1C (1280x720 H.264 at 15 fps, its
// test pattern) behind pandaproxy's RTSP service and web server in their own process; 1 and 5 plain HTTP readers
// (read and discard, as a browser that keeps up) of live.mp4 (FFmpeg `-c copy` into fragmented MP4) and of
// camera.mjpeg (FFmpeg decoding and encoding JPEGs at 4 fps). Prints the proxy's CPU (its own process plus its
// FFmpeg children, in % of one core) and the bytes delivered, per run. Each run is bounded (warm-up, then
// MEASURE_MS); between runs the on-demand FFmpegs' linger runs out, so a run measures only its own path.
// Run: node_modules/.bin/bun bench/live-video.ts [--size 1920x1080 --fps 30]
import { cpuSeconds, descendants, treeCpuTracker } from "./support.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import { simIdentity } from "../lib/sim/bambu.ts";
import { startSimRtsp } from "../lib/sim/rtsp.ts";
import { JPEG_FPS, JPEG_LINGER_MS } from "../lib/bambu/rtsp.ts";
import { REMUX_LINGER_MS } from "../lib/rtsp/fmp4-live.ts";
import { ACCESS_CODE, proxyContext } from "../tests/rtsp-fixtures.ts";
import { ADMIN_AUTH, startTestWeb } from "../tests/web-fixtures.ts";

const SIM = "127.0.50.1";
const PROXY = "127.0.50.2";
const WEB = "127.0.50.3";
/** --size 1920x1080 --fps 30 for a bigger camera; the default is the simulated X1C's. */
const arg = (name: string) => process.argv[process.argv.indexOf(name) + 1];
const [WIDTH, HEIGHT] = (process.argv.includes("--size") ? arg("--size")! : "1280x720").split("x").map(Number) as [number, number];
const FPS = process.argv.includes("--fps") ? Number(arg("--fps")) : 15;
const WARMUP_MS = 3_000;
const MEASURE_MS = 20_000;
const SAMPLE_MS = 250;
const FIRST_BYTES_TIMEOUT_MS = 30_000;
/** The relay FFmpeg (printer -> our server) stays up across the runs, so every run pays for it alike. */
const RELAY_LINGER_MS = 600_000;
const RUNS: { path: "live.mp4" | "camera.mjpeg"; viewers: number }[] = [
  { path: "live.mp4", viewers: 1 }, { path: "live.mp4", viewers: 5 }, { path: "camera.mjpeg", viewers: 1 }, { path: "camera.mjpeg", viewers: 5 },
];

async function proxyProcess() {
  const ctx = proxyContext({ bind: PROXY, printerHost: SIM, printerRtsp: 322 });
  const service = createRtspService(ctx, { lingerMs: RELAY_LINGER_MS, backoffMinMs: 300 });
  await service.start();
  const printer: PrinterRuntime = { config: ctx.printer, hub: ctx.hub, services: [service], start: async () => {}, stop: async () => {} };
  const { url } = await startTestWeb([printer], { host: WEB });
  console.log(`READY ${url}`);
  process.on("SIGTERM", () => void service.stop().finally(() => process.exit(0)));
}

interface Reader {
  bytes: number;
  firstBytes: Promise<void>;
  stop(): void;
}

function openReader(url: string): Reader {
  const abort = new AbortController();
  let gotFirst = () => {};
  const reader: Reader = {
    bytes: 0,
    firstBytes: new Promise<void>((resolve) => (gotFirst = resolve)),
    stop: () => abort.abort(),
  };
  void (async () => {
    const response = await fetch(url, { headers: ADMIN_AUTH, signal: abort.signal });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    for await (const chunk of response.body as ReadableStream<Uint8Array>) {
      reader.bytes += chunk.length;
      gotFirst();
    }
  })().catch((error) => {
    if (!abort.signal.aborted) console.error(`reader: ${(error as Error).message}`);
  });
  return reader;
}

async function main() {
  const sim = await startSimRtsp(simIdentity({ host: SIM, model: "X1C", serial: "00M09A350100123", accessCode: ACCESS_CODE, ports: { rtsp: 322 } }), {
    cameraWidth: WIDTH, cameraHeight: HEIGHT, cameraFps: FPS,
  });
  const proxy = Bun.spawn([process.execPath, import.meta.path, "--proxy"], { stdout: "pipe", stderr: "inherit", stdin: "ignore" });
  let base = "";
  const decoder = new TextDecoder();
  for await (const chunk of proxy.stdout) {
    const ready = /READY (\S+)/.exec(decoder.decode(chunk));
    if (ready) {
      base = ready[1]!;
      break;
    }
  }
  if (!base) throw new Error("the proxy process did not start");
  console.log(`live video bench: simulated X1C ${WIDTH}x${HEIGHT} H.264 at ${FPS} fps; proxy (pid ${proxy.pid}) CPU = its own process + its FFmpeg children`);
  console.log(`  ${"path".padEnd(13)} ${"viewers".padStart(7)} ${"CPU % core".padStart(10)} ${"proxy %".padStart(8)} ${"FFmpeg %".padStart(9)} ${"MB delivered".padStart(13)} ${"KB/s/viewer".padStart(12)}`);
  const results: string[] = [];
  for (const [i, r] of RUNS.entries()) {
    if (i > 0) await Bun.sleep(Math.max(JPEG_LINGER_MS, REMUX_LINGER_MS) + 2_000); // the last run's on-demand FFmpeg is gone
    const readers = Array.from({ length: r.viewers }, () => openReader(`${base}/printers/x1c/${r.path}`));
    await Promise.race([
      Promise.all(readers.map((x) => x.firstBytes)),
      Bun.sleep(FIRST_BYTES_TIMEOUT_MS).then(() => Promise.reject(new Error(`${r.path}: no bytes within ${FIRST_BYTES_TIMEOUT_MS / 1000} s`))),
    ]);
    await Bun.sleep(WARMUP_MS);
    const tree = treeCpuTracker(proxy.pid, true);
    const selfBefore = cpuSeconds(proxy.pid);
    const bytesBefore = readers.reduce((n, x) => n + x.bytes, 0);
    const started = performance.now();
    const sampler = setInterval(() => tree.sample(), SAMPLE_MS);
    await Bun.sleep(MEASURE_MS);
    tree.sample();
    clearInterval(sampler);
    const seconds = (performance.now() - started) / 1000;
    const self = cpuSeconds(proxy.pid) - selfBefore;
    const total = tree.seconds();
    const bytes = readers.reduce((n, x) => n + x.bytes, 0) - bytesBefore;
    for (const x of readers) x.stop();
    const line = `  ${r.path.padEnd(13)} ${String(r.viewers).padStart(7)} ${((total / seconds) * 100).toFixed(1).padStart(10)} ${((self / seconds) * 100).toFixed(1).padStart(8)} ` +
      `${(((total - self) / seconds) * 100).toFixed(1).padStart(9)} ${(bytes / 1e6).toFixed(1).padStart(13)} ${(bytes / seconds / r.viewers / 1024).toFixed(0).padStart(12)}`;
    console.log(line);
    results.push(line);
  }
  console.log(`  (FFmpeg % includes the relay FFmpeg pulling the printer, which both paths need; MJPEG is ${JPEG_FPS} fps, the video ${FPS}; ${descendants(proxy.pid).length} children at the end)`);
  proxy.kill("SIGTERM");
  await Promise.race([proxy.exited, Bun.sleep(5_000)]);
  proxy.kill("SIGKILL");
  await sim.stop();
  process.exit(0);
}

if (process.argv.includes("--proxy")) await proxyProcess();
else await main();
