// RTSPS camera benchmark: the simulated X1C (720p15 H.264) behind pandaproxy in its own process, read by 1, 10
// and 50 raw RTSPS readers. Prints packets delivered, lost packets for readers that keep up, added latency
// (our server receiving a packet from FFmpeg -> a reader parsing it, across two processes) p50/p99, and the
// proxy process's CPU and RSS. Run: node_modules/.bin/bun bench/rtsp.ts
import { cpuSeconds, memoryMiB, microsecondsPer, percentile } from "./support.ts";
import { readFileSync } from "node:fs";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { simIdentity } from "../lib/sim/bambu.ts";
import { startSimRtsp } from "../lib/sim/rtsp.ts";
import { ACCESS_CODE, proxyContext, rawClient, type RawClient } from "../tests/rtsp-fixtures.ts";

const SIM = "127.0.5.41";
const PROXY = "127.0.5.42";
const PATH = "/streaming/live/1";
const ROUNDS = [1, 10, 50];
const WARMUP_MS = 3_000;
const MEASURE_MS = 10_000;

// Bun's hrtime starts at process start; timeOrigin + now() is wall-clock time with sub-millisecond precision,
// comparable across the two processes.
const now = () => performance.timeOrigin + performance.now();

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

interface Reader {
  client: RawClient;
  arrivals: Map<number, number>;
  firstSeq?: number;
  lastSeq?: number;
  /** seq and payload fingerprint of the first packets: each reader's numbering is shifted (RTP-Info), the
   * fingerprint finds the stream's seq of the same packet. */
  early: [number, string][];
  received: number;
  bytes: number;
}

const EARLY_PACKETS = 20;
const fingerprint = (packet: Buffer) => Bun.hash(packet.subarray(12)).toString(16);

async function openReader(): Promise<Reader> {
  const client = await rawClient(PROXY, 322, { user: "bblp", password: ACCESS_CODE });
  const reader: Reader = { client, arrivals: new Map(), early: [], received: 0, bytes: 0 };
  client.onFrame = (frame) => {
    if (frame.channel !== 0) return;
    const seq = frame.payload.readUInt16BE(2);
    reader.arrivals.set(seq, now());
    if (reader.early.length < EARLY_PACKETS) reader.early.push([seq, fingerprint(frame.payload)]);
    reader.firstSeq ??= seq;
    reader.lastSeq = seq;
    reader.received++;
    reader.bytes += frame.payload.length + 4;
  };
  if ((await client.request("DESCRIBE", `rtsps://${PROXY}:322${PATH}`)).status !== 200) throw new Error("DESCRIBE failed");
  const setup = await client.request("SETUP", `rtsps://${PROXY}:322${PATH}/track1`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"]]);
  const session = setup.headers.find(([n]) => n === "Session")?.[1]?.split(";")[0] ?? "";
  if ((await client.request("PLAY", `rtsps://${PROXY}:322${PATH}`, [["Session", session]])).status !== 200) throw new Error("PLAY failed");
  return reader;
}

async function main() {
  const sim = await startSimRtsp(simIdentity({ host: SIM, model: "X1C", serial: "00M09A350100123", accessCode: ACCESS_CODE, ports: { rtsp: 322 } }), { cameraWidth: 1280, cameraHeight: 720, cameraFps: 15 });
  const proxy = Bun.spawn([process.execPath, import.meta.path, "--proxy"], { stdout: "pipe", stderr: "inherit", stdin: "ignore" });
  const serverTimes = new Map<number, number>();
  const serverSeqOf = new Map<string, number>();
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  void (async () => {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of proxy.stdout) {
      const lines = (partial + decoder.decode(chunk)).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        if (line === "READY") ready();
        else if (line.startsWith("P ")) {
          const [, seq, ns, fp] = line.split(" ");
          serverTimes.set(Number(seq), Number(ns));
          // A payload seen twice cannot tell the shift: mark it unusable.
          if (fp) serverSeqOf.set(fp, serverSeqOf.has(fp) ? -1 : Number(seq));
        }
      }
    }
  })();
  await isReady;
  console.log(`RTSPS camera benchmark: simulated X1C 1280x720@15 H.264 -> pandaproxy (pid ${proxy.pid}) -> N raw RTSPS readers, ${MEASURE_MS / 1000} s per round`);
  console.log("readers | packets in | delivered/reader (min) | lost (readers that kept up) | Mbit/s per reader | added latency p50 / p99 ms | proxy CPU % | FFmpeg CPU % | proxy RSS MiB | proxy CPU us/packet/reader");
  try {
    for (const count of ROUNDS) {
      const readers: Reader[] = [];
      for (let i = 0; i < count; i++) readers.push(await openReader());
      await Bun.sleep(WARMUP_MS);
      for (const r of readers) {
        r.arrivals.clear();
        r.firstSeq = undefined;
        r.early = [];
        r.received = 0;
        r.bytes = 0;
      }
      serverTimes.clear();
      serverSeqOf.clear();
      const ffmpegPids = childrenOf(proxy.pid);
      const cpu0 = cpuSeconds(proxy.pid);
      const ff0 = ffmpegPids.reduce((s, p) => s + cpuSeconds(p), 0);
      const t0 = performance.now();
      await Bun.sleep(MEASURE_MS);
      const elapsed = (performance.now() - t0) / 1000;
      const cpuUsed = cpuSeconds(proxy.pid) - cpu0;
      const cpu = (cpuUsed / elapsed) * 100;
      const cpuUsPerPacket = microsecondsPer(cpuUsed, readers.reduce((sum, r) => sum + r.received, 0));
      const ff = ((ffmpegPids.reduce((s, p) => { try { return s + cpuSeconds(p); } catch { return s; } }, 0) - ff0) / elapsed) * 100;
      const rss = memoryMiB(proxy.pid).rss;
      await Bun.sleep(200); // let the last tap lines arrive
      const latencies: number[] = [];
      let lost = 0;
      for (const r of readers) {
        if (r.firstSeq === undefined || r.lastSeq === undefined) continue;
        const expected = ((r.lastSeq - r.firstSeq) & 0xffff) + 1;
        lost += Math.max(0, expected - r.received);
        const known = r.early.find(([, fp]) => (serverSeqOf.get(fp) ?? -1) >= 0);
        if (!known) continue;
        const shift = (known[0] - serverSeqOf.get(known[1])!) & 0xffff;
        for (const [seq, at] of r.arrivals) {
          const sent = serverTimes.get((seq - shift) & 0xffff);
          if (sent !== undefined) latencies.push(at - sent);
        }
      }
      latencies.sort((a, b) => a - b);
      const minDelivered = Math.min(...readers.map((r) => r.received));
      console.log(
        `${String(count).padStart(7)} | ${String(serverTimes.size).padStart(10)} | ${String(minDelivered).padStart(22)} | ${String(lost).padStart(28)} | ${((readers[0]!.bytes * 8) / elapsed / 1e6).toFixed(2).padStart(17)} | ` +
          `${percentile(latencies, 0.5).toFixed(2).padStart(11)} / ${percentile(latencies, 0.99).toFixed(2).padEnd(12)} | ${cpu.toFixed(1).padStart(11)} | ${ff.toFixed(1).padStart(12)} | ${rss.toFixed(1).padStart(13)} | ${cpuUsPerPacket.toFixed(2).padStart(26)}`,
      );
      for (const r of readers) r.client.close();
      await Bun.sleep(500);
    }
  } finally {
    proxy.kill("SIGTERM");
    await Promise.race([proxy.exited, Bun.sleep(3_000)]);
    proxy.kill("SIGKILL");
    await sim.stop();
  }
}

async function proxyProcess() {
  // The proxy process: the RTSPS camera service, reporting when each RTP packet reached our server.
  const ctx = proxyContext({ bind: PROXY, printerHost: SIM, printerRtsp: 322 });
  let lines: string[] = [];
  const service = createRtspService(ctx, { lingerMs: 60_000, onPacket: (packet) => lines.push(`P ${packet.readUInt16BE(2)} ${now().toFixed(3)} ${fingerprint(packet)}\n`) });
  await service.start();
  setInterval(() => {
    if (lines.length) process.stdout.write(lines.join(""));
    lines = [];
  }, 50);
  process.stdout.write("READY\n");
  process.on("SIGTERM", () => void service.stop().then(() => process.exit(0)));
}


if (process.argv.includes("--proxy")) await proxyProcess();
else await main();
