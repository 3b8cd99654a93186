// Chamber camera benchmark: a simulated P1S sending 30 frames/s of ~100 KB, pandaproxy's chamber proxy in a
// child process, and 1, 10, 50 and 100 TLS viewers. Prints frames delivered per viewer, added latency p50/p99
// (the simulator stamps each JPEG with its sequence number and the time it wrote it) and the proxy's CPU and RSS.
// Run: node_modules/.bin/bun bench/chamber.ts [--seconds 10] [--viewers 1,10,50,100] [--fps 30]
import { cpuSeconds, memoryMiB, microsecondsPer, percentile } from "./support.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { parseArgs } from "node:util";
import { encodeLogin, FRAME_HEADER_SIZE } from "../lib/bambu/chamber-codec.ts";
import { readJpegStamp } from "../lib/sim/jpeg-picture.ts";

const SIM_HOST = "127.0.4.100";
const PROXY_HOST = "127.0.4.101";
const PORT = 6000;
const ACCESS_CODE = "12345678";
const WARMUP_MS = 2_000;
const STAMP_BYTES = 96;

const { values } = parseArgs({
  options: {
    role: { type: "string", default: "main" },
    seconds: { type: "string", default: "10" },
    viewers: { type: "string", default: "1,10,50,100" },
    fps: { type: "string", default: "30" },
  },
});

async function runSimulator(): Promise<void> {
  const { startSimulatedBambu } = await import("../lib/sim/bambu.ts");
  await startSimulatedBambu({
    host: SIM_HOST, model: "P1S", name: "bench-p1s", serial: "01P00A000000001", accessCode: ACCESS_CODE, services: ["chamber"],
    cameraFps: Number(values.fps), cameraMaxViewers: 2,
  });
  console.log("ready");
}

async function runProxy(): Promise<void> {
  const { setupLogging } = await import("../lib/log.ts");
  const { serviceContext } = await import("../tests/support.ts");
  const { createChamberService } = await import("../lib/bambu/chamber.ts");
  setupLogging("warn");
  const service = createChamberService(serviceContext(
    `name = "bench"\nhost = "${SIM_HOST}"\nserial = "01P00A000000001"\naccess_code = "${ACCESS_CODE}"\nbind = "${PROXY_HOST}"\nmodel = "P1S"\n`,
  ));
  await service.start();
  console.log("ready");
}

function child(role: string): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [import.meta.path, "--role", role, "--fps", values.fps!], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      if (d.toString().includes("ready")) resolve(proc);
    });
    proc.once("exit", (code) => reject(new Error(`${role} exited with ${code}`)));
  });
}

interface Received {
  sequence: number;
  latencyMs: number;
}

/** A viewer that counts frames without copying them: reads the header, then skips the JPEG, keeping its stamp. */
function viewer(host: string, onFrame: (frame: Received) => void, onBytes: (n: number) => void): { socket: TLSSocket } {
  const socket = tlsConnect({ host, port: PORT, rejectUnauthorized: false }, () => {
    socket.write(encodeLogin({ username: "bblp", accessCode: ACCESS_CODE }));
  });
  socket.on("error", () => {});
  let header = Buffer.alloc(0);
  let remaining = 0;
  let stamp = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    onBytes(chunk.length);
    let offset = 0;
    while (offset < chunk.length) {
      if (remaining === 0) {
        const take = Math.min(FRAME_HEADER_SIZE - header.length, chunk.length - offset);
        header = Buffer.concat([header, chunk.subarray(offset, offset + take)]);
        offset += take;
        if (header.length === FRAME_HEADER_SIZE) {
          remaining = header.readUInt32LE(0);
          header = Buffer.alloc(0);
          stamp = Buffer.alloc(0);
        }
        continue;
      }
      const take = Math.min(remaining, chunk.length - offset);
      if (stamp.length < STAMP_BYTES) stamp = Buffer.concat([stamp, chunk.subarray(offset, offset + Math.min(take, STAMP_BYTES - stamp.length))]);
      offset += take;
      remaining -= take;
      if (remaining === 0) {
        const now = performance.timeOrigin + performance.now();
        const text = readJpegStamp(stamp) ?? "";
        const [, sequence, writtenAt] = text.split(" ");
        onFrame({ sequence: Number(sequence), latencyMs: now - Number(writtenAt) });
      }
    }
  });
  return { socket };
}


async function measure(host: string, count: number, seconds: number, proxyPid?: number) {
  const perViewer: Received[][] = Array.from({ length: count }, () => []);
  let measuring = false;
  let bytes = 0;
  const viewers = perViewer.map((frames) => viewer(host, (f) => measuring && frames.push(f), (n) => void (measuring && (bytes += n))));
  await Bun.sleep(WARMUP_MS);
  const cpuBefore = proxyPid ? cpuSeconds(proxyPid) : 0;
  let rssMax = 0;
  const sampler = setInterval(() => {
    if (proxyPid) rssMax = Math.max(rssMax, memoryMiB(proxyPid).rss);
  }, 500);
  measuring = true;
  const started = performance.now();
  await Bun.sleep(seconds * 1000);
  measuring = false;
  const elapsed = (performance.now() - started) / 1000;
  clearInterval(sampler);
  const cpuUsed = proxyPid ? cpuSeconds(proxyPid) - cpuBefore : NaN;
  const cpu = (cpuUsed / elapsed) * 100;
  const memory = proxyPid ? memoryMiB(proxyPid) : { rss: NaN, peak: NaN };
  for (const v of viewers) v.socket.destroy();

  // Frames the printer made during the window: from the first to the last sequence any viewer saw.
  const all = perViewer.flat();
  const first = Math.min(...all.map((f) => f.sequence));
  const last = Math.max(...all.map((f) => f.sequence));
  const made = last - first + 1;
  const delivered = perViewer.map((frames) => new Set(frames.map((f) => f.sequence)).size / made);
  const latencies = all.map((f) => f.latencyMs).sort((a, b) => a - b);
  return {
    count, made, elapsed, megabytesPerSecond: bytes / elapsed / 1e6,
    minDelivered: Math.min(...delivered), meanDelivered: delivered.reduce((a, b) => a + b, 0) / delivered.length,
    p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99),
    cpu, rss: Math.max(rssMax, memory.rss), peak: memory.peak,
    cpuUsPerFrame: microsecondsPer(cpuUsed, perViewer.reduce((sum, frames) => sum + frames.length, 0)),
  };
}

async function runBenchmark(): Promise<void> {
  const seconds = Number(values.seconds);
  const counts = values.viewers!.split(",").map(Number);
  const sim = await child("sim");
  const proxy = await child("proxy");
  const cleanup = () => {
    sim.kill();
    proxy.kill();
  };
  process.once("SIGINT", () => {
    cleanup();
    process.exit(130);
  });
  try {
    console.log(`chamber camera: simulated P1S at ${values.fps} frames/s, 1280x720 JPEGs of ~100 KB, ${seconds} s per round (after ${WARMUP_MS / 1000} s warm-up)`);
    const direct = await measure(SIM_HOST, 1, seconds);
    console.log(`baseline, 1 viewer straight to the simulator: latency p50 ${direct.p50.toFixed(1)} ms, p99 ${direct.p99.toFixed(1)} ms, ${direct.made} frames made`);
    console.log("");
    console.log("viewers | frames made | delivered per viewer min / mean | latency p50 / p99 ms | added p50 / p99 ms | to viewers MB/s | proxy CPU | proxy RSS MB (peak) | CPU us/frame/viewer");
    for (const count of counts) {
      const r = await measure(PROXY_HOST, count, seconds, proxy.pid);
      const cells = [
        String(count).padStart(7), String(r.made).padStart(11),
        `${(r.minDelivered * 100).toFixed(1)}% / ${(r.meanDelivered * 100).toFixed(1)}%`.padStart(31),
        `${r.p50.toFixed(1)} / ${r.p99.toFixed(1)}`.padStart(19), `${(r.p50 - direct.p50).toFixed(1)} / ${(r.p99 - direct.p99).toFixed(1)}`.padStart(17),
        r.megabytesPerSecond.toFixed(0).padStart(15), `${r.cpu.toFixed(0)}%`.padStart(9), `${r.rss.toFixed(0)} (${r.peak.toFixed(0)})`.padStart(18),
        r.cpuUsPerFrame.toFixed(1).padStart(19),
      ];
      console.log(cells.join(" | "));
      await Bun.sleep(1_000);
    }
  } finally {
    cleanup();
  }
  process.exit(0);
}

if (values.role === "sim") await runSimulator();
else if (values.role === "proxy") await runProxy();
else await runBenchmark();
