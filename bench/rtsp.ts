// RTSPS camera benchmark: the simulated X1C (720p15 H.264) behind pandaproxy in its own process, read by 1, 10
// and 50 raw RTSPS readers. Prints packets delivered, lost packets for readers that keep up, added latency
// (our server receiving a packet from FFmpeg -> a reader parsing it, across two processes) p50/p99, and the
// proxy process's CPU and RSS, and its CPU per RTP packet per reader. Then the peer: GStreamer's RTSP server
// (tests/rtsp-gst-server.py given the same video pre-encoded, so no encoder in its CPU) with the same readers and
// rounds, and both CPU figures side by side, with the marginal cost of each reader beyond the first.
// Measured (2 cores shared with other work; us per packet per reader at 1 / 10 / 50 readers): one frame copied per
// reader (PLAY's RTP-Info shifts nearly every reader's numbering) 56-71 / 10.9-12.6 / 4.5-5.8; readers sharing each
// packet's bytes (16 of a reader's own, StreamReader.writeFrame) with a TCP/TLS reader's frames of one event-loop
// turn in one write (lib/rtsp/frame-writer.ts; needs lib/rtsp/server.ts to hand readers writeFrame) 60-68 /
// 9.6-10.3 / 3.7-4.0, marginal 2.4-2.7; GStreamer 24-31 / 10.6-11.8 / 9.4-10.5, marginal 9.1-10.1. Bun sends the
// first write of a turn to a TLS socket at once and joins the others in a copy a tick later (two sends per turn);
// two writes per frame or cork()/uncork() measured no better than a copy per frame. Run: node_modules/.bin/bun bench/rtsp.ts
import { cpuSeconds, memoryMiB, microsecondsPer, percentile } from "./support.ts";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeCa, makeLeaf } from "../lib/tls.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { simIdentity } from "../lib/sim/bambu.ts";
import { startSimRtsp } from "../lib/sim/rtsp.ts";
import { ACCESS_CODE, proxyContext, rawClient, type RawClient } from "../tests/rtsp-fixtures.ts";

const SIM = "127.0.5.41";
const PROXY = "127.0.5.42";
const PATH = "/streaming/live/1";
const ROUNDS = [1, 10, 50];
const WARMUP_MS = 3_000;
/** GStreamer's RTSP server, the peer, on the simulator's address. */
const PEER_PORT = 3221;
const PEER_VIDEO = "/tmp/pandaproxy-bench-rtsp-720p15.mp4";
const PEER_VIDEO_SECONDS = 90;
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

async function openReader(host = PROXY, port = 322): Promise<Reader> {
  const client = await rawClient(host, port, { user: "bblp", password: ACCESS_CODE });
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
  const url = `rtsps://${host}:${port}${PATH}`;
  const described = await client.request("DESCRIBE", url);
  if (described.status !== 200) throw new Error(`DESCRIBE ${url}: ${described.status}`);
  // The track's control as the server names it (ours: track1, GStreamer's: stream=0), below its Content-Base.
  const base = described.headers.find(([n]) => n.toLowerCase() === "content-base")?.[1] ?? `${url}/`;
  const control = [...described.body.toString().matchAll(/^a=control:(\S+)/gm)].map((m) => m[1]!).filter((c) => c !== "*").pop() ?? "track1";
  const track = /^rtsps?:/.test(control) ? control : base.replace(/\/?$/, "/") + control;
  const setup = await client.request("SETUP", track, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"]]);
  const session = setup.headers.find(([n]) => n === "Session")?.[1]?.split(";")[0] ?? "";
  if ((await client.request("PLAY", base.replace(/\/$/, ""), [["Session", session]])).status !== 200) throw new Error("PLAY failed");
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
  const ours: RoundCost[] = [];
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
      ours.push({ readers: count, cpuSeconds: cpuUsed, delivered: readers.reduce((sum, r) => sum + r.received, 0), elapsed });
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
  // The peer runs alone: the simulator's encoder and our proxy are stopped by now.
  const peer = await peerRounds();
  console.log("");
  console.log("CPU per RTP packet per reader, side by side (us; marginal: the extra cost of each reader over the 1-reader round)");
  console.log("readers | pandaproxy | GStreamer RTSP server | pandaproxy marginal | GStreamer marginal");
  for (const [i, o] of ours.entries()) {
    const g = peer[i];
    const margin = (rounds: RoundCost[], r: RoundCost | undefined) => r && rounds[0] && r !== rounds[0] ? microsecondsPer(r.cpuSeconds - rounds[0].cpuSeconds, r.delivered - rounds[0].delivered).toFixed(2) : "-";
    console.log(`${String(o.readers).padStart(7)} | ${microsecondsPer(o.cpuSeconds, o.delivered).toFixed(2).padStart(10)} | ${(g ? microsecondsPer(g.cpuSeconds, g.delivered).toFixed(2) : "not run").padStart(21)} | ${margin(ours, o).padStart(19)} | ${margin(peer, g).padStart(18)}`);
  }
}

interface RoundCost {
  readers: number;
  cpuSeconds: number;
  /** RTP packets delivered, summed over the readers. */
  delivered: number;
  elapsed: number;
}

/** The same 720p15 H.264 as the simulator's, encoded once, for the peer to serve without encoding. */
async function peerVideo(): Promise<string> {
  if (existsSync(PEER_VIDEO)) return PEER_VIDEO;
  const ffmpeg = Bun.spawn([
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=15", "-t", String(PEER_VIDEO_SECONDS),
    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p", PEER_VIDEO + ".part.mp4",
  ], { stdout: "ignore", stderr: "inherit" });
  if ((await ffmpeg.exited) !== 0) throw new Error("ffmpeg could not encode the peer's video");
  await Bun.write(PEER_VIDEO, Bun.file(PEER_VIDEO + ".part.mp4"));
  return PEER_VIDEO;
}

/** GStreamer's RTSP server with the same readers and rounds; empty when it cannot run here. */
async function peerRounds(): Promise<RoundCost[]> {
  const out: RoundCost[] = [];
  const python = "/usr/bin/python3";
  if (!existsSync(python)) return out;
  const video = await peerVideo();
  const ca = makeCa("bench peer CA", "pandaproxy bench");
  const leaf = makeLeaf(ca, "peer", { dns: [], ips: [SIM] });
  const pem = join("/tmp", `pandaproxy-bench-rtsp-peer-${process.pid}.pem`);
  writeFileSync(pem, leaf.cert + leaf.key, { mode: 0o600 });
  const gst = Bun.spawn([python, join(import.meta.dir, "../tests/rtsp-gst-server.py"), SIM, String(PEER_PORT), "bblp", ACCESS_CODE, pem, video], { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
  try {
    const reader = gst.stdout.getReader();
    const first = await Promise.race([reader.read(), Bun.sleep(15_000).then(() => undefined)]);
    if (!first?.value || !new TextDecoder().decode(first.value).includes("READY")) {
      console.log("GStreamer RTSP server (peer) did not start: no side-by-side figures");
      return out;
    }
    console.log("");
    console.log(`peer: GStreamer's RTSP server (pid ${gst.pid}) serving the same 720p15 H.264 (pre-encoded), the same raw RTSPS readers`);
    console.log("readers | delivered/reader (min) | Mbit/s per reader | peer CPU % | peer CPU us/packet/reader");
    for (const count of ROUNDS) {
      const readers: Reader[] = [];
      for (let i = 0; i < count; i++) readers.push(await openReader(SIM, PEER_PORT));
      await Bun.sleep(WARMUP_MS);
      for (const r of readers) {
        r.received = 0;
        r.bytes = 0;
      }
      const cpu0 = cpuSeconds(gst.pid);
      const t0 = performance.now();
      await Bun.sleep(MEASURE_MS);
      const elapsed = (performance.now() - t0) / 1000;
      const cpuUsed = cpuSeconds(gst.pid) - cpu0;
      const delivered = readers.reduce((sum, r) => sum + r.received, 0);
      out.push({ readers: count, cpuSeconds: cpuUsed, delivered, elapsed });
      console.log(
        `${String(count).padStart(7)} | ${String(Math.min(...readers.map((r) => r.received))).padStart(22)} | ${((readers[0]!.bytes * 8) / elapsed / 1e6).toFixed(2).padStart(17)} | ` +
          `${((cpuUsed / elapsed) * 100).toFixed(1).padStart(10)} | ${microsecondsPer(cpuUsed, delivered).toFixed(2).padStart(24)}`,
      );
      for (const r of readers) r.client.close();
      await Bun.sleep(1_000);
    }
    return out;
  } finally {
    gst.kill("SIGTERM");
    await Promise.race([gst.exited, Bun.sleep(3_000)]);
    gst.kill("SIGKILL");
    await Bun.file(pem).delete().catch(() => {});
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
