// Household benchmark (issue 18): a simulated P1S, X1C (when FFmpeg is installed) and Adventurer 5M behind one
// pandaproxy process (main.ts run with a generated printers.toml, web page on), read by 8 MQTT clients (the `mqtt`
// package), 2 chamber viewers and 3 browser MJPEG streams (HTTP with the web login) for a bounded time. Prints the
// proxy's CPU-seconds per hour of work, its RSS (steady and peak) and, apart, its FFmpeg children (the X1C's
// camera); the proxy is one process, so services are not split: the client-side counts say what work it did.
// Loopback only (127.0.46.1-20). The simulators and the clients share this process, not the proxy's.
//   node_modules/.bin/bun bench/household.ts [--seconds 600] [--one-core]   (--one-core: the proxy under taskset -c 0)
import { cpuSeconds, memoryMiB, percentile, treeCpuTracker } from "./support.ts";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { parseArgs } from "node:util";
import mqtt from "mqtt";
import { createFrameParser, encodeLogin } from "../lib/bambu/chamber-codec.ts";
import { startSimulated, type RunningSim } from "../lib/sim/start.ts";
import { setupLogging } from "../lib/log.ts";

const ACCESS_CODE = "12345678";
const WEB_LISTEN = { host: "127.0.46.20", port: 18080 };
const WEB_USER = "bench";
const WEB_PASSWORD = "household-bench";
const BAMBU_PORTS = { chamber: 16000, rtsp: 10322, mqtt: 18883, ftp: 10990, bind: 13000, bind_tls: 13002, ssdp: 12021 };
const FLASHFORGE_PORTS = { tcp: 18899, http: 18898, discovery: 48899, camera: 18080 };
const MQTT_CLIENTS = 8;
const CHAMBER_VIEWERS = 2;
const READY_TIMEOUT_MS = 60_000;
const POLL_MS = 250;
const SAMPLE_MS = 1_000;
/** Clients connect, the cameras start and FFmpeg settles before the window opens. */
const WARMUP_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const SECONDS_PER_HOUR = 3_600;

const { values } = parseArgs({ options: { seconds: { type: "string", default: "600" }, "one-core": { type: "boolean", default: false } } });
const seconds = Number(values.seconds);
if (!(seconds > 0 && seconds <= 24 * SECONDS_PER_HOUR)) throw new Error(`--seconds must be between 1 and ${24 * SECONDS_PER_HOUR}`);

interface Household {
  sim: { type: "bambu" | "flashforge"; name: string; model?: string; host: string };
  bind: string;
}

const hasFfmpeg = spawnSync("ffmpeg", ["-version"], { stdio: "ignore" }).status === 0;
const HOUSEHOLD: Household[] = [
  { sim: { type: "bambu", name: "p1s", model: "P1S", host: "127.0.46.1" }, bind: "127.0.46.11" },
  ...(hasFfmpeg ? [{ sim: { type: "bambu" as const, name: "x1c", model: "X1C", host: "127.0.46.2" }, bind: "127.0.46.12" }] : []),
  { sim: { type: "flashforge", name: "ad5m", host: "127.0.46.3" }, bind: "127.0.46.13" },
];

const inline = (ports: Record<string, number>) => `{ ${Object.entries(ports).map(([k, v]) => `${k} = ${v}`).join(", ")} }`;

function configText(stateDir: string, sims: { entry: Household; serial: string }[]): string {
  const lines = [
    `[proxy]`, `state_dir = ${JSON.stringify(stateDir)}`, `log_level = "warn"`, ``,
    `[web]`, `listen = "${WEB_LISTEN.host}:${WEB_LISTEN.port}"`, `username = "${WEB_USER}"`, `password = "${WEB_PASSWORD}"`,
  ];
  for (const { entry, serial } of sims) {
    const ports = entry.sim.type === "flashforge" ? FLASHFORGE_PORTS : BAMBU_PORTS;
    lines.push(``, `[[printer]]`, `name = "${entry.sim.name}"`, `type = "${entry.sim.type}"`, `host = "${entry.sim.host}"`, `serial = "${serial}"`,
      `${entry.sim.type === "flashforge" ? "check_code" : "access_code"} = "${ACCESS_CODE}"`, `bind = "${entry.bind}"`,
      `ports = ${inline(ports)}`, `printer_ports = ${inline(ports)}`);
    if (entry.sim.type === "bambu") lines.push(`model = "${entry.sim.model}"`, `ssdp_targets = ["${entry.sim.host}"]`);
  }
  return lines.join("\n") + "\n";
}

const authorization = `Basic ${Buffer.from(`${WEB_USER}:${WEB_PASSWORD}`).toString("base64")}`;

async function waitForProxy(proxy: ChildProcess, printers: string[]): Promise<void> {
  const started = Date.now();
  let last = "no answer from the web page";
  for (;;) {
    if (proxy.exitCode !== null) throw new Error(`pandaproxy exited with ${proxy.exitCode}`);
    if (Date.now() - started > READY_TIMEOUT_MS) throw new Error(`pandaproxy's services were not all up within ${READY_TIMEOUT_MS} ms: ${last}`);
    try {
      const res = await fetch(`http://${WEB_LISTEN.host}:${WEB_LISTEN.port}/api/printers`, { headers: { authorization } });
      last = `the web page answered ${res.status}`;
      if (res.ok) {
        const list = (await res.json()) as { name: string; services: { name: string; state: string }[] }[];
        last = list.map((p) => `${p.name}: ${p.services.map((s) => `${s.name} ${s.state}`).join(", ")}`).join("; ");
        const up = list.filter((p) => printers.includes(p.name) && p.services.length && p.services.every((s) => s.state === "listening" || s.state === "announcing"));
        if (up.length === printers.length) return;
      }
    } catch {}
    await Bun.sleep(POLL_MS);
  }
}

interface Work {
  mqttReports: number;
  chamberFrames: number;
  chamberBytes: number;
  mjpegBytes: Record<string, number>;
}

function chamberViewer(host: string, work: Work, counting: () => boolean): TLSSocket {
  const socket = tlsConnect({ host, port: BAMBU_PORTS.chamber, rejectUnauthorized: false }, () => socket.write(encodeLogin({ username: "bblp", accessCode: ACCESS_CODE })));
  socket.on("error", () => {});
  const frames = createFrameParser((event) => void (event.kind === "frame" && counting() && work.chamberFrames++));
  socket.on("data", (chunk: Buffer) => {
    if (counting()) work.chamberBytes += chunk.length;
    frames.push(chunk);
  });
  return socket;
}

async function mjpegReader(printer: string, work: Work, counting: () => boolean, abort: AbortSignal): Promise<void> {
  try {
    const res = await fetch(`http://${WEB_LISTEN.host}:${WEB_LISTEN.port}/printers/${printer}/camera.mjpeg`, { headers: { authorization }, signal: abort });
    if (!res.ok || !res.body) throw new Error(`the web stream of ${printer} answered ${res.status}`);
    for await (const chunk of res.body) if (counting()) work.mjpegBytes[printer] = (work.mjpegBytes[printer] ?? 0) + chunk.length;
  } catch (error) {
    if (!abort.aborted) console.error(`the web stream of ${printer} ended: ${(error as Error).message}`);
  }
}

async function main(): Promise<void> {
  setupLogging("warn");
  const dir = mkdtempSync(join(tmpdir(), "pp-bench-household-"));
  const sims: RunningSim[] = [];
  let proxy: ChildProcess | undefined;
  const mqttClients: mqtt.MqttClient[] = [];
  const viewers: TLSSocket[] = [];
  const abort = new AbortController();
  try {
    const served: { entry: Household; serial: string }[] = [];
    for (const entry of HOUSEHOLD) {
      const ports = entry.sim.type === "flashforge" ? FLASHFORGE_PORTS : BAMBU_PORTS;
      const sim = await startSimulated({ ...entry.sim, accessCode: ACCESS_CODE, ports, ...(entry.sim.type === "bambu" ? { ssdpTargets: [entry.bind] } : {}) });
      sims.push(sim);
      served.push({ entry, serial: sim.serial });
    }
    const configFile = join(dir, "printers.toml");
    writeFileSync(configFile, configText(join(dir, "state"), served));
    const log = openSync(join(dir, "proxy.log"), "w");
    const command = [process.execPath, join(import.meta.dir, "..", "main.ts"), "run", "--config", configFile];
    proxy = values["one-core"] ? spawn("taskset", ["-c", "0", ...command], { stdio: ["ignore", log, log] }) : spawn(command[0]!, command.slice(1), { stdio: ["ignore", log, log] });
    const pid = proxy.pid!;
    await waitForProxy(proxy, served.map((s) => s.entry.sim.name));

    const work: Work = { mqttReports: 0, chamberFrames: 0, chamberBytes: 0, mjpegBytes: {} };
    let measuring = false;
    const counting = () => measuring;
    const bambu = served.filter((s) => s.entry.sim.type === "bambu");
    for (let i = 0; i < MQTT_CLIENTS; i++) {
      const { entry, serial } = bambu[i % bambu.length]!;
      const client = mqtt.connect(`mqtts://${entry.bind}:${BAMBU_PORTS.mqtt}`, { username: "bblp", password: ACCESS_CODE, rejectUnauthorized: false, clientId: `household-${i}`, reconnectPeriod: 1_000 });
      client.on("connect", () => client.subscribe(`device/${serial}/report`));
      client.on("message", () => void (measuring && work.mqttReports++));
      client.on("error", () => {});
      mqttClients.push(client);
    }
    const p1s = served.find((s) => s.entry.sim.model === "P1S")!;
    for (let i = 0; i < CHAMBER_VIEWERS; i++) viewers.push(chamberViewer(p1s.entry.bind, work, counting));
    const streams = served.map((s) => mjpegReader(s.entry.sim.name, work, counting, abort.signal));
    await Bun.sleep(WARMUP_MS);

    const ffmpegCpu = treeCpuTracker(pid);
    const rssSamples: number[] = [];
    const cpu0 = cpuSeconds(pid);
    const t0 = performance.now();
    measuring = true;
    const sampler = setInterval(() => {
      rssSamples.push(memoryMiB(pid).rss);
      ffmpegCpu.sample();
    }, SAMPLE_MS);
    await Bun.sleep(seconds * 1000);
    measuring = false;
    clearInterval(sampler);
    ffmpegCpu.sample();
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(pid) - cpu0;
    const memory = memoryMiB(pid);
    const ffmpeg = ffmpegCpu.seconds();
    const steady = percentile([...rssSamples.slice(rssSamples.length >> 1)].sort((a, b) => a - b), 0.5);
    const perHour = (x: number) => (x / elapsed) * SECONDS_PER_HOUR;

    console.log(`household: ${served.map((s) => s.entry.sim.model ?? "Adventurer 5M").join(", ")}${hasFfmpeg ? "" : " (no FFmpeg: no X1C)"} behind one pandaproxy (pid ${pid}${values["one-core"] ? ", taskset -c 0" : ""});`);
    console.log(`  ${MQTT_CLIENTS} MQTT clients, ${CHAMBER_VIEWERS} chamber viewers, ${served.length} web MJPEG streams; ${elapsed.toFixed(0)} s measured after ${WARMUP_MS / 1000} s warm-up`);
    console.log(`proxy process (all services together; one process cannot be split by service):`);
    console.log(`  CPU ${cpu.toFixed(2)} s = ${perHour(cpu).toFixed(1)} CPU-seconds per hour of work (${((100 * cpu) / elapsed).toFixed(2)}% of a core)`);
    console.log(`  RSS steady ${steady.toFixed(1)} MiB (median of the second half), largest sample ${Math.max(...rssSamples).toFixed(1)} MiB, peak (VmHWM) ${memory.peak.toFixed(1)} MiB`);
    console.log(`FFmpeg under the proxy (the X1C's RTSPS -> JPEG): ${ffmpegCpu.processes()} process(es), CPU ${ffmpeg.toFixed(2)} s = ${perHour(ffmpeg).toFixed(1)} CPU-seconds per hour (${((100 * ffmpeg) / elapsed).toFixed(2)}% of a core)`);
    console.log(`work done in the window (what the CPU above paid for):`);
    console.log(`  MQTT reports delivered ${work.mqttReports} (${(work.mqttReports / elapsed).toFixed(1)}/s over ${MQTT_CLIENTS} clients)`);
    console.log(`  chamber frames delivered ${work.chamberFrames} (${(work.chamberBytes / elapsed / 1e6).toFixed(2)} MB/s over ${CHAMBER_VIEWERS} viewers)`);
    for (const s of served) console.log(`  web MJPEG ${s.entry.sim.name}: ${(((work.mjpegBytes[s.entry.sim.name] ?? 0) / elapsed) / 1e6).toFixed(2)} MB/s`);
    abort.abort();
    await Promise.race([Promise.allSettled(streams), Bun.sleep(STOP_TIMEOUT_MS)]);
  } catch (error) {
    console.error(`household benchmark failed: ${(error as Error).message}`);
    try {
      console.error(readFileSync(join(dir, "proxy.log"), "utf8").slice(-4000));
    } catch {}
    process.exitCode = 1;
  } finally {
    abort.abort();
    for (const c of mqttClients) c.end(true);
    for (const v of viewers) v.destroy();
    if (proxy && proxy.exitCode === null) {
      proxy.kill("SIGTERM");
      await Promise.race([new Promise((resolve) => proxy!.once("exit", resolve)), Bun.sleep(STOP_TIMEOUT_MS)]);
      if (proxy.exitCode === null) proxy.kill("SIGKILL");
    }
    await Promise.allSettled(sims.map((s) => s.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(process.exitCode ?? 0);
}

await main();
