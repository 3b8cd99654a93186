// A farm: one pandaproxy (a child process running `main.ts run` with a generated printers.toml) in front of 20
// simulated P1S/A1 printers (MQTT only) exporting every report to Debian mosquitto ([export.mqtt] reports = true).
// The simulators send reports stamped with their send time; mosquitto_sub (its own process, the broker's side)
// stamps each arrival (-F %U), so the latency is simulator send -> proxy -> exporter -> broker -> subscriber.
// Prints proxy CPU, RSS, messages per second reaching the broker and latency p50/p99 per phase.
// Loopback 127.0.45.x only, high ports.   node_modules/.bin/bun bench/farm.ts   (about 70 s)
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setupLogging } from "../lib/log.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";
import { cpuSeconds, memoryMiB, percentile } from "./support.ts";

const PRINTERS = 20;
const BROKER_HOST = "127.0.45.2";
const BROKER_PORT = 18830;
const SIM_MQTT_PORT = 18883;
const simHost = (i: number) => `127.0.45.${10 + i}`;
const proxyHost = (i: number) => `127.0.45.${50 + i}`;
const ACCESS_CODE = "12345678";
const PREFIX = "farm";
/** Reports per second per printer: a real printer's pace while printing, then ten times that. */
const PHASES = [{ rate: 1, seconds: 30 }, { rate: 10, seconds: 30 }];
const READY_TIMEOUT_MS = 60_000;
const DRAIN_MS = 3_000;
/** pandaproxy gets this long to stop on SIGTERM before it is killed. */
const STOP_WAIT_MS = 10_000;
const BUN = join(import.meta.dir, "../node_modules/.bin/bun");
const MAIN = join(import.meta.dir, "../main.ts");

const now = () => performance.timeOrigin + performance.now();

function printersToml(stateDir: string): string {
  const lines = [`[proxy]`, `state_dir = "${stateDir}"`, `[web]`, `listen = ""`];
  for (let i = 0; i < PRINTERS; i++) {
    lines.push(`[[printer]]`, `name = "p${i}"`, `host = "${simHost(i)}"`, `serial = "01P00A0000${String(i).padStart(5, "0")}"`,
      `model = "${i % 2 ? "A1" : "P1S"}"`, `access_code = "${ACCESS_CODE}"`, `bind = "${proxyHost(i)}"`, `services = ["mqtt"]`,
      `ports = { mqtt = ${SIM_MQTT_PORT} }`, `printer_ports = { mqtt = ${SIM_MQTT_PORT} }`);
  }
  lines.push(`[export.mqtt]`, `url = "mqtt://${BROKER_HOST}:${BROKER_PORT}"`, `prefix = "${PREFIX}"`, `client_id = "bench-farm"`, `reports = true`);
  return lines.join("\n") + "\n";
}

function startBroker(dir: string): ChildProcess {
  const conf = join(dir, "mosquitto.conf");
  writeFileSync(conf, [`listener ${BROKER_PORT} ${BROKER_HOST}`, "allow_anonymous true", "persistence false", "log_type error", ""].join("\n"));
  chmodSync(conf, 0o644);
  return spawn("mosquitto", ["-c", conf], { stdio: ["ignore", "ignore", "inherit"] });
}

interface Arrivals {
  /** Per phase: latencies (ms) of the stamped reports that arrived, and all messages counted. */
  latencies: number[];
  messages: number;
  seen: Set<string>;
}

/** mosquitto_sub on everything under the prefix; each line is "<arrival unix time> <topic> <payload>". */
function startSubscriber(arrivals: () => Arrivals): ChildProcess {
  const sub = spawn("mosquitto_sub", ["-h", BROKER_HOST, "-p", String(BROKER_PORT), "-t", `${PREFIX}/#`, "-F", "%U %t %p"], { stdio: ["ignore", "pipe", "inherit"] });
  createInterface({ input: sub.stdout! }).on("line", (line) => {
    const [at, topic, ...rest] = line.split(" ");
    const a = arrivals();
    a.messages++;
    if (!topic?.endsWith("/report")) return;
    a.seen.add(topic);
    const sentAt = /"bench_sent_at":([\d.]+)/.exec(rest.join(" "))?.[1];
    if (sentAt) a.latencies.push(Number(at) * 1000 - Number(sentAt));
  });
  return sub;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  if (await Promise.race([exited.then(() => true), Bun.sleep(STOP_WAIT_MS).then(() => false)])) return;
  console.log(`pandaproxy did not stop within ${STOP_WAIT_MS / 1000} s of SIGTERM; killed`);
  child.kill("SIGKILL");
}

async function until(what: string, ok: () => boolean): Promise<void> {
  const started = Date.now();
  while (!ok()) {
    if (Date.now() - started > READY_TIMEOUT_MS) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(100);
  }
}

/** Every printer sends `rate` stamped reports a second for `seconds`, spread over the second. */
async function drive(sims: SimMqtt[], rate: number, seconds: number): Promise<number> {
  let sent = 0;
  const stepMs = 1000 / rate;
  const start = Date.now();
  for (let tick = 0; tick < rate * seconds; tick++) {
    for (const sim of sims) {
      sim.report({ print: { command: "push_status", msg: 1, sequence_id: String(tick), bench_sent_at: now() } });
      sent++;
    }
    await Bun.sleep(Math.max(0, start + (tick + 1) * stepMs - Date.now()));
  }
  return sent;
}

async function main(): Promise<void> {
  setupLogging("error");
  const dir = mkdtempSync(join(tmpdir(), "pp-bench-farm-"));
  chmodSync(dir, 0o755);
  const file = join(dir, "printers.toml");
  writeFileSync(file, printersToml(join(dir, "state")));
  const printers: SimPrinter[] = [];
  let arrivals: Arrivals = { latencies: [], messages: 0, seen: new Set() };
  const broker = startBroker(dir);
  let proxy: ChildProcess | undefined;
  let sub: ChildProcess | undefined;
  try {
    for (let i = 0; i < PRINTERS; i++) {
      printers.push(await startSimulatedBambu({ host: simHost(i), model: i % 2 ? "A1" : "P1S", serial: `01P00A0000${String(i).padStart(5, "0")}`,
        accessCode: ACCESS_CODE, services: ["mqtt"], ports: { mqtt: SIM_MQTT_PORT }, mqttReportIntervalMs: 0 }));
    }
    const sims = printers.map((p) => p.service<SimMqtt>("mqtt")!);
    await Bun.sleep(500);
    sub = startSubscriber(() => arrivals);
    proxy = spawn(BUN, [MAIN, "run", "--config", file], { stdio: ["ignore", "ignore", "inherit"] });
    const pid = proxy.pid!;
    await until("every printer's reports at the broker", () => {
      for (const sim of sims) sim.report({ print: { command: "push_status", msg: 1, sequence_id: "warmup" } });
      return arrivals.seen.size === PRINTERS;
    });
    console.log(`farm: ${PRINTERS} simulated printers (P1S/A1, MQTT) -> one pandaproxy -> mosquitto; ${cpus().length}x ${cpus()[0]?.model ?? "CPU"}`);
    for (const phase of PHASES) {
      arrivals = { latencies: [], messages: 0, seen: new Set() };
      const cpu0 = cpuSeconds(pid);
      const started = performance.now();
      const sent = await drive(sims, phase.rate, phase.seconds);
      const elapsed = (performance.now() - started) / 1000;
      const cpu = cpuSeconds(pid) - cpu0;
      await Bun.sleep(DRAIN_MS);
      const sorted = arrivals.latencies.sort((a, b) => a - b);
      const { rss, peak } = memoryMiB(pid);
      console.log(`  ${phase.rate} report/s per printer (${sent} sent in ${elapsed.toFixed(1)} s): ` +
        `${(arrivals.messages / elapsed).toFixed(0)} msg/s at the broker (${sorted.length}/${sent} reports arrived, plus state/availability), ` +
        `latency p50 ${percentile(sorted, 0.5).toFixed(1)} ms p99 ${percentile(sorted, 0.99).toFixed(1)} ms, ` +
        `proxy CPU ${((cpu / elapsed) * 100).toFixed(1)} % of a core, RSS ${rss.toFixed(0)} MiB (peak ${peak.toFixed(0)})`);
    }
  } finally {
    if (proxy) await stopChild(proxy);
    sub?.kill();
    broker.kill();
    await Promise.allSettled(printers.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
