// MQTT fan-out benchmark: one simulated printer, 200 subscribers at 10 reports/s and then a burst of 1000 reports/s,
// through pandaproxy and through Debian mosquitto bridging the same report topic. Prints delivery and latency
// p50/p99 for both. Loopback only (127.0.2.x); pandaproxy and the subscribers run in their own processes so
// neither side shares an event loop with the measurement.
//   node_modules/.bin/bun bench/mqtt.ts   (needs Debian mosquitto; takes about a minute)
import { cpuSeconds, microsecondsPer, percentile } from "./support.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { createInterface } from "node:readline";

const SIM_HOST = "127.0.2.15";
const PROXY_HOST = "127.0.2.25";
const BROKER_HOST = "127.0.2.26";
const PORT = 8883;
const ACCESS_CODE = "12345678";
const SUBSCRIBERS = 200;
const WORKERS = 4;
const STEADY_RATE = 10;
const STEADY_SECONDS = 5;
const BURST_RATE = 1000;
const BURST_SECONDS = 2;
const DRAIN_MS = 10_000;
const READY_TIMEOUT_MS = 30_000;


// ---------- pandaproxy, in its own process ----------
async function runProxy(args: { serial: string; stateDir: string }): Promise<void> {
  const { parseConfig } = await import("../lib/config.ts");
  const { createMetrics } = await import("../lib/core/metrics.ts");
  const { createPrinterHub } = await import("../lib/core/service.ts");
  const { serviceLogger, setupLogging } = await import("../lib/log.ts");
  const { printerTlsMaterial } = await import("../lib/tls.ts");
  const { createMqttService } = await import("../lib/bambu/mqtt.ts");
  setupLogging("warn");
  const config = parseConfig(`[proxy]\nstate_dir = "${args.stateDir}"\n[[printer]]\nname = "bench"\nhost = "${SIM_HOST}"\nserial = "${args.serial}"\naccess_code = "${ACCESS_CODE}"\nbind = "${PROXY_HOST}"\nservices = ["mqtt"]\n`);
  const printer = config.printers[0]!;
  const service = createMqttService({
    printer, proxy: config.proxy, tls: printerTlsMaterial(args.stateDir, printer), log: serviceLogger("bench", "mqtt"),
    metrics: createMetrics(), hub: createPrinterHub(),
  });
  await service.start();
  while (service.status().upstream !== "connected") await Bun.sleep(20);
  console.log("ready");
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

// ---------- subscribers, in worker processes ----------
async function runSubscribers(args: { host: string; count: number; topic: string }): Promise<void> {
  const { createPacketReader, encode } = await import("../lib/bambu/mqtt-wire.ts");
  const received: number[] = new Array(args.count).fill(0);
  const latencies: number[] = [];
  let measuring = false;
  let from = 0;
  let subscribed = 0;
  const connectOne = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const socket = tlsConnect({ host: args.host, port: PORT, rejectUnauthorized: false }, () => {
        socket.write(encode({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId: `bench-${process.pid}-${i}`, keepalive: 60, username: "bblp", password: Buffer.from(ACCESS_CODE) }));
        socket.write(encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: args.topic, qos: 0 }] }));
      });
      socket.setNoDelay(true);
      const reader = createPacketReader(() => 1 << 22, (packet) => {
        if (packet.cmd === "suback") {
          subscribed++;
          resolve();
        } else if (packet.cmd === "publish" && measuring) {
          const now = performance.timeOrigin + performance.now();
          const text = (packet.payload as Buffer).toString();
          const m = /"bench":\{"seq":(\d+),"t":([\d.]+)\}/.exec(text);
          if (m && Number(m[1]) >= from) {
            received[i]!++;
            latencies.push(Math.round((now - Number(m[2])) * 100) / 100);
          }
        }
      });
      socket.on("data", (chunk: Buffer) => reader.push(chunk));
      socket.on("error", reject);
    });
  for (let i = 0; i < args.count; i += 10) await Promise.all(Array.from({ length: Math.min(10, args.count - i) }, (_, k) => connectOne(i + k)));
  console.log(`ready ${subscribed}`);
  for await (const line of createInterface({ input: process.stdin })) {
    const [command, value] = line.split(" ");
    if (command === "start") {
      from = Number(value);
      measuring = true;
      console.log("started");
    } else if (command === "stop") {
      console.log(JSON.stringify({ received, latencies }));
      process.exit(0);
    }
  }
}

// ---------- the run ----------
interface Worker {
  child: ChildProcess;
  lines: AsyncIterator<string>;
}

function startWorker(args: string[]): Worker {
  const child = spawn(process.execPath, [import.meta.path, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return { child, lines };
}

async function expectLine(worker: Worker, prefix: string, timeoutMs = READY_TIMEOUT_MS): Promise<string> {
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no "${prefix}" within ${timeoutMs} ms`)), timeoutMs));
  for (;;) {
    const next = await Promise.race([worker.lines.next(), timeout]);
    if (next.done) throw new Error(`worker ended before "${prefix}"`);
    if (next.value.startsWith(prefix)) return next.value;
  }
}


async function main(): Promise<void> {
  const { setupLogging } = await import("../lib/log.ts");
  const { startSimulatedBambu } = await import("../lib/sim/bambu.ts");
  const { simulatedCa } = await import("../lib/sim/tls.ts");
  const { makeCa, makeLeaf } = await import("../lib/tls.ts");
  setupLogging("warn");
  const dir = mkdtempSync(join(tmpdir(), "pp-bench-mqtt-"));
  chmodSync(dir, 0o755); // mosquitto started as root drops to its own user and must still read its files
  const children: ChildProcess[] = [];
  const sim = await startSimulatedBambu({ host: SIM_HOST, services: ["mqtt"], accessCode: ACCESS_CODE, mqttMaxClients: 4, mqttReportIntervalMs: 0 });
  const simMqtt = sim.service<import("../lib/sim/mqtt.ts").SimMqtt>("mqtt")!;
  const serial = sim.identity.serial;
  const topic = `device/${serial}/report`;
  try {
    // pandaproxy
    const proxy = startWorker(["proxy", JSON.stringify({ serial, stateDir: join(dir, "state") })]);
    children.push(proxy.child);
    await expectLine(proxy, "ready");

    // mosquitto bridging the printer's report topic, with a TLS listener like the proxy's
    const ca = makeCa("bench CA", "bench");
    const leaf = makeLeaf(ca, serial, { dns: ["localhost"], ips: [BROKER_HOST] });
    writeFileSync(join(dir, "broker.key"), leaf.key);
    writeFileSync(join(dir, "broker.crt"), leaf.cert + ca.cert);
    writeFileSync(join(dir, "bbl-ca.pem"), simulatedCa().cert);
    writeFileSync(join(dir, "mosquitto.conf"), [
      "per_listener_settings false", "allow_anonymous true", `listener ${PORT} ${BROKER_HOST}`,
      `certfile ${join(dir, "broker.crt")}`, `keyfile ${join(dir, "broker.key")}`, "persistence false", "log_type error",
      "connection printer", `address ${SIM_HOST}:${PORT}`, `topic ${topic} in 0`, "remote_username bblp",
      `remote_password ${ACCESS_CODE}`, `bridge_cafile ${join(dir, "bbl-ca.pem")}`, "bridge_insecure true",
      "bridge_protocol_version mqttv311", "try_private false", "notifications false", "cleansession true",
      "remote_clientid bench-mosquitto-bridge", "start_type automatic", "",
    ].join("\n"));
    const broker = spawn("mosquitto", ["-c", join(dir, "mosquitto.conf")], { stdio: ["ignore", "ignore", "pipe"] });
    children.push(broker);
    let brokerLog = "";
    broker.stderr!.on("data", (c: Buffer) => void (brokerLog = (brokerLog + c.toString()).slice(-4000)));
    const bridged = Date.now();
    while (simMqtt.clients < 2) {
      if (broker.exitCode !== null) throw new Error(`mosquitto exited:\n${brokerLog}`);
      if (Date.now() - bridged > READY_TIMEOUT_MS) throw new Error("the mosquitto bridge did not connect to the simulated printer");
      await Bun.sleep(50);
    }
    await Bun.sleep(500); // the bridge subscribes right after connecting

    let seq = 0;
    const publish = () => {
      const t = performance.timeOrigin + performance.now();
      simMqtt.report(Buffer.from(`{"print":{"command":"push_status","msg":1,"sequence_id":"${seq}","nozzle_temper":219.5,"bed_temper":55.01,"mc_percent":42,"layer_num":57,"bench":{"seq":${seq},"t":${t}}}}`));
      seq++;
    };
    const pace = async (rate: number, seconds: number) => {
      const total = rate * seconds;
      const started = performance.now();
      for (let i = 0; i < total; i++) {
        const due = started + (i * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 1) await Bun.sleep(wait);
        publish();
      }
    };

    const results: Record<string, { phase: string; delivered: number; expected: number; p50: number; p99: number; max: number; cpuUs: number }[]> = {};
    for (const [name, host] of [["pandaproxy", PROXY_HOST], ["mosquitto bridge", BROKER_HOST]] as const) {
      results[name] = [];
      const pid = name === "pandaproxy" ? proxy.child.pid! : broker.pid!;
      const workers = Array.from({ length: WORKERS }, () => startWorker(["subscribers", JSON.stringify({ host, count: SUBSCRIBERS / WORKERS, topic })]));
      children.push(...workers.map((w) => w.child));
      await Promise.all(workers.map((w) => expectLine(w, "ready")));
      for (const [phase, rate, seconds] of [["steady 10/s", STEADY_RATE, STEADY_SECONDS], ["burst 1000/s", BURST_RATE, BURST_SECONDS]] as const) {
        const from = seq;
        for (const w of workers) w.child.stdin!.write(`start ${from}\n`);
        await Promise.all(workers.map((w) => expectLine(w, "started")));
        const cpu0 = cpuSeconds(pid);
        await pace(rate, seconds);
        const sent = seq - from;
        await Bun.sleep(DRAIN_MS);
        const cpu = cpuSeconds(pid) - cpu0;
        const summaries = await Promise.all(workers.map(async (w) => {
          w.child.stdin!.write("stop\n");
          return JSON.parse(await expectLine(w, "{")) as { received: number[]; latencies: number[] };
        }));
        const latencies = summaries.flatMap((s) => s.latencies).sort((a, b) => a - b);
        const delivered = summaries.flatMap((s) => s.received).reduce((a, b) => a + b, 0);
        results[name]!.push({ phase, delivered, expected: sent * SUBSCRIBERS, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), max: latencies.at(-1) ?? NaN, cpuUs: microsecondsPer(cpu, delivered) });
        if (phase.startsWith("steady")) {
          // Workers print once and exit: start a fresh set for the burst.
          workers.splice(0, workers.length, ...Array.from({ length: WORKERS }, () => startWorker(["subscribers", JSON.stringify({ host, count: SUBSCRIBERS / WORKERS, topic })])));
          children.push(...workers.map((w) => w.child));
          await Promise.all(workers.map((w) => expectLine(w, "ready")));
        }
      }
    }

    console.log(`\nMQTT fan-out: ${SUBSCRIBERS} subscribers (TLS, QoS 0), ${WORKERS} subscriber processes, ${STEADY_RATE}/s for ${STEADY_SECONDS} s, then ${BURST_RATE}/s for ${BURST_SECONDS} s`);
    console.log("target             phase          delivered            p50 ms    p99 ms    max ms   CPU us/report/subscriber (publishing + drain)");
    for (const [name, rows] of Object.entries(results)) {
      for (const r of rows) {
        const pct = ((100 * r.delivered) / r.expected).toFixed(2);
        console.log(`${name.padEnd(18)} ${r.phase.padEnd(14)} ${`${r.delivered}/${r.expected} (${pct}%)`.padEnd(20)} ${r.p50.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(9)} ${r.max.toFixed(2).padStart(9)} ${r.cpuUs.toFixed(2).padStart(10)}`);
      }
    }
  } finally {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0);
}

const role = process.argv[2];
if (role === "proxy") await runProxy(JSON.parse(process.argv[3]!));
else if (role === "subscribers") await runSubscribers(JSON.parse(process.argv[3]!));
else await main();
