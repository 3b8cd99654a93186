// MQTT fan-out benchmark: one simulated printer, through pandaproxy and through Debian mosquitto bridging the same
// report topic (twice: as Debian ships it, and with set_tcp_nodelay). First the issue #18 scenario side by side:
// 20 subscribers, 150 reports/s of about 1 KB, rounds alternating between the three (the machine is shared and
// noisy), median and p99 latency, the ratios per round, CPU per report per subscriber (user and system), and
// pandaproxy's CPU per report with no subscriber. Then 200 subscribers at 10 reports/s and a burst of 1000
// reports/s. Loopback only (127.0.2.x); pandaproxy and the subscribers run in their own processes so neither
// side shares an event loop with the measurement.
//   node_modules/.bin/bun bench/mqtt.ts          (needs Debian mosquitto; takes about four minutes)
//   node_modules/.bin/bun bench/mqtt.ts issue    (the 20-subscriber rounds only, about two and a half)
import { cpuSeconds, cpuTimes, microsecondsPer, percentile } from "./support.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { createInterface } from "node:readline";

const SIM_HOST = "127.0.2.15";
const PROXY_HOST = "127.0.2.25";
const BROKER_HOST = "127.0.2.26";
const BROKER_NODELAY_HOST = "127.0.2.27";
const PORT = 8883;
const ACCESS_CODE = "12345678";
const SUBSCRIBERS = 200;
const WORKERS = 4;
const STEADY_RATE = 10;
const STEADY_SECONDS = 5;
const BURST_RATE = 1000;
const BURST_SECONDS = 2;
const DRAIN_MS = 10_000;
/** Issue #18: 20 subscribers, 150 reports/s of about 1 KB; alternating rounds of ISSUE_SECONDS each. */
const ISSUE_SUBSCRIBERS = 20;
const ISSUE_RATE = 150;
const ISSUE_SECONDS = 6;
const ISSUE_WARMUP_SECONDS = 1;
const ISSUE_ROUNDS = 5;
const ISSUE_DRAIN_MS = 1_000;
const ISSUE_REPORT_BYTES = 1_000;
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

    // mosquitto bridging the printer's report topic, with a TLS listener like the proxy's: once as Debian ships it
    // (Nagle's algorithm on: set_tcp_nodelay defaults to false) and once with set_tcp_nodelay true, as pandaproxy
    // (Bun sets TCP_NODELAY on its sockets) and any latency-minded setup runs it.
    const ca = makeCa("bench CA", "bench");
    writeFileSync(join(dir, "bbl-ca.pem"), simulatedCa().cert);
    const startBroker = (name: string, host: string, nodelay: boolean) => {
      const leaf = makeLeaf(ca, serial, { dns: ["localhost"], ips: [host] });
      writeFileSync(join(dir, `${name}.key`), leaf.key);
      writeFileSync(join(dir, `${name}.crt`), leaf.cert + ca.cert);
      writeFileSync(join(dir, `${name}.conf`), [
        "per_listener_settings false", "allow_anonymous true", `listener ${PORT} ${host}`, `set_tcp_nodelay ${nodelay}`,
        `certfile ${join(dir, `${name}.crt`)}`, `keyfile ${join(dir, `${name}.key`)}`, "persistence false", "log_type error",
        "connection printer", `address ${SIM_HOST}:${PORT}`, `topic ${topic} in 0`, "remote_username bblp",
        `remote_password ${ACCESS_CODE}`, `bridge_cafile ${join(dir, "bbl-ca.pem")}`, "bridge_insecure true",
        "bridge_protocol_version mqttv311", "try_private false", "notifications false", "cleansession true",
        `remote_clientid bench-${name}`, "start_type automatic", "",
      ].join("\n"));
      const child = spawn("mosquitto", ["-c", join(dir, `${name}.conf`)], { stdio: ["ignore", "ignore", "pipe"] });
      children.push(child);
      let log = "";
      child.stderr!.on("data", (c: Buffer) => void (log = (log + c.toString()).slice(-4000)));
      return { child, log: () => log };
    };
    const broker = startBroker("mosquitto", BROKER_HOST, false);
    const brokerNodelay = startBroker("mosquitto-nodelay", BROKER_NODELAY_HOST, true);
    const bridged = Date.now();
    while (simMqtt.clients < 3) {
      for (const b of [broker, brokerNodelay]) if (b.child.exitCode !== null) throw new Error(`mosquitto exited:\n${b.log()}`);
      if (Date.now() - bridged > READY_TIMEOUT_MS) throw new Error("the mosquitto bridges did not connect to the simulated printer");
      await Bun.sleep(50);
    }
    await Bun.sleep(500); // the bridge subscribes right after connecting

    let seq = 0;
    // A push_status delta as a P1S sends them while printing; `pad` brings a report to about 1 KB for the
    // issue scenario. No address field: it is the common report.
    const fields = `"nozzle_temper":219.5,"nozzle_target_temper":220,"bed_temper":55.01,"bed_target_temper":55,"chamber_temper":31,"mc_print_stage":"2","mc_percent":42,"mc_remaining_time":73,"layer_num":57,"total_layer_num":240,"gcode_state":"RUNNING","spd_mag":100,"spd_lvl":2,"cooling_fan_speed":"15","heatbreak_fan_speed":"15","big_fan1_speed":"0","big_fan2_speed":"0","wifi_signal":"-41dBm","print_error":0,"lights_report":[{"node":"chamber_light","mode":"on"},{"node":"work_light","mode":"flashing"}],"hms":[],"online":{"ahb":false,"rfid":false,"version":1034563}`;
    let pad = "";
    const publish = () => {
      const t = performance.timeOrigin + performance.now();
      simMqtt.report(Buffer.from(`{"print":{"command":"push_status","msg":1,"sequence_id":"${seq}",${fields}${pad},"bench":{"seq":${seq},"t":${t}}}}`));
      seq++;
    };
    const issuePad = () => {
      const bare = `{"print":{"command":"push_status","msg":1,"sequence_id":"00000",${fields},"bench":{"seq":00000,"t":${performance.timeOrigin + performance.now()}}}}`.length;
      return `,"upgrade_state":{"status":"IDLE","message":"${"x".repeat(Math.max(0, ISSUE_REPORT_BYTES - bare - 46))}"}`;
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

    const targets = [
      ["pandaproxy", PROXY_HOST, proxy.child.pid!], ["mosquitto bridge", BROKER_HOST, broker.child.pid!],
      ["mosquitto nodelay", BROKER_NODELAY_HOST, brokerNodelay.child.pid!],
    ] as const;
    const startSubscribers = async (host: string, count: number) => {
      const workers = Array.from({ length: WORKERS }, () => startWorker(["subscribers", JSON.stringify({ host, count: count / WORKERS, topic })]));
      children.push(...workers.map((w) => w.child));
      await Promise.all(workers.map((w) => expectLine(w, "ready")));
      return workers;
    };
    const measure = async (workers: Worker[], pid: number, run: () => Promise<void>, drainMs: number) => {
      const from = seq;
      for (const w of workers) w.child.stdin!.write(`start ${from}\n`);
      await Promise.all(workers.map((w) => expectLine(w, "started")));
      const proxyCpu0 = cpuSeconds(proxy.child.pid!);
      const cpu0 = cpuTimes(pid);
      await run();
      const sent = seq - from;
      await Bun.sleep(drainMs);
      const cpu1 = cpuTimes(pid);
      const user = cpu1.user - cpu0.user;
      const system = cpu1.system - cpu0.system;
      const cpu = user + system;
      const proxyCpu = cpuSeconds(proxy.child.pid!) - proxyCpu0;
      const summaries = await Promise.all(workers.map(async (w) => {
        w.child.stdin!.write("stop\n");
        return JSON.parse(await expectLine(w, "{")) as { received: number[]; latencies: number[] };
      }));
      const latencies = summaries.flatMap((s) => s.latencies).sort((a, b) => a - b);
      const delivered = summaries.flatMap((s) => s.received).reduce((a, b) => a + b, 0);
      return { sent, delivered, latencies, cpu, user, system, proxyCpu };
    };

    // Issue #18 side by side: alternating rounds, the other target's subscribers gone meanwhile.
    pad = issuePad();
    /** pandaproxy's CPU per report while the other targets are measured: its cost with no subscriber. */
    const proxyAlone: number[] = [];
    const issue: { name: string; round: number; delivered: number; expected: number; p50: number; p99: number; cpuUs: number; userUs: number; systemUs: number }[] = [];
    for (let round = 1; round <= ISSUE_ROUNDS; round++) {
      for (const [name, host, pid] of targets) {
        const workers = await startSubscribers(host, ISSUE_SUBSCRIBERS);
        await pace(ISSUE_RATE, ISSUE_WARMUP_SECONDS);
        const r = await measure(workers, pid, () => pace(ISSUE_RATE, ISSUE_SECONDS), ISSUE_DRAIN_MS);
        if (pid !== proxy.child.pid) proxyAlone.push(microsecondsPer(r.proxyCpu, r.sent));
        issue.push({ name, round, delivered: r.delivered, expected: r.sent * ISSUE_SUBSCRIBERS, p50: percentile(r.latencies, 0.5), p99: percentile(r.latencies, 0.99), cpuUs: microsecondsPer(r.cpu, r.delivered), userUs: microsecondsPer(r.user, r.delivered), systemUs: microsecondsPer(r.system, r.delivered) });
      }
    }
    const reportBytes = Buffer.byteLength(`{"print":{"command":"push_status","msg":1,"sequence_id":"${seq}",${fields}${pad},"bench":{"seq":${seq},"t":${performance.timeOrigin + performance.now()}}}}`);
    pad = "";
    console.log(`\nIssue #18: ${ISSUE_SUBSCRIBERS} subscribers (TLS, QoS 0, ${WORKERS} processes), ${ISSUE_RATE} reports/s of ${reportBytes} bytes, ${ISSUE_ROUNDS} alternating rounds of ${ISSUE_SECONDS} s`);
    console.log("round  target              delivered              p50 ms    p99 ms   CPU us/report/subscriber (user + system)");
    for (const r of issue) {
      const pct = ((100 * r.delivered) / r.expected).toFixed(2);
      console.log(`${String(r.round).padEnd(6)} ${r.name.padEnd(19)} ${`${r.delivered}/${r.expected} (${pct}%)`.padEnd(22)} ${r.p50.toFixed(2).padStart(7)} ${r.p99.toFixed(2).padStart(9)} ${r.cpuUs.toFixed(2).padStart(10)} (${r.userUs.toFixed(1)} + ${r.systemUs.toFixed(1)})`);
    }
    const n = targets.length;
    const ratios = (key: "p50" | "p99" | "cpuUs", peer: number) => Array.from({ length: ISSUE_ROUNDS }, (_, i) => issue[n * i]![key] / issue[n * i + peer]![key]);
    const median = (values: number[]) => percentile([...values].sort((a, b) => a - b), 0.5);
    const range = (values: number[], digits = 2) => `${Math.min(...values).toFixed(digits)}-${Math.max(...values).toFixed(digits)} (median ${median(values).toFixed(digits)})`;
    for (const [name] of targets) {
      const rows = issue.filter((r) => r.name === name);
      console.log(`${name.padEnd(19)} p50 ${range(rows.map((r) => r.p50))} ms, p99 ${range(rows.map((r) => r.p99))} ms, CPU ${range(rows.map((r) => r.cpuUs), 1)} us/report/subscriber (user ${median(rows.map((r) => r.userUs)).toFixed(1)}, system ${median(rows.map((r) => r.systemUs)).toFixed(1)})`);
    }
    console.log(`pandaproxy with no subscriber (while the others are measured): CPU ${range(proxyAlone, 1)} us per report`);
    for (let peer = 1; peer < n; peer++) {
      console.log(`pandaproxy / ${targets[peer]![0]} per round: p50 ${range(ratios("p50", peer))}x, p99 ${range(ratios("p99", peer))}x, CPU ${range(ratios("cpuUs", peer))}x`);
    }
    if (process.argv[2] === "issue") return;

    const results: Record<string, { phase: string; delivered: number; expected: number; p50: number; p99: number; max: number; cpuUs: number }[]> = {};
    for (const [name, host, pid] of targets) {
      results[name] = [];
      for (const [phase, rate, seconds] of [["steady 10/s", STEADY_RATE, STEADY_SECONDS], ["burst 1000/s", BURST_RATE, BURST_SECONDS]] as const) {
        // Workers print once and exit: a fresh set for each phase.
        const workers = await startSubscribers(host, SUBSCRIBERS);
        const r = await measure(workers, pid, () => pace(rate, seconds), DRAIN_MS);
        results[name]!.push({ phase, delivered: r.delivered, expected: r.sent * SUBSCRIBERS, p50: percentile(r.latencies, 0.5), p99: percentile(r.latencies, 0.99), max: r.latencies.at(-1) ?? NaN, cpuUs: microsecondsPer(r.cpu, r.delivered) });
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
else {
  await main();
  process.exit(0);
}
