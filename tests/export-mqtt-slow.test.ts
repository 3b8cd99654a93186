// [export.mqtt] against a broker that stops reading, and an exporter that goes away for good.
// Debian's mosquitto is the external broker; between it and pandaproxy's exporter sits a TCP relay written here
// that can stop reading what the exporter sends (a broker that is stuck or far too slow). A simulated P1S sends
// a burst of big reports: pandaproxy's local MQTT client must get every one while the broker gets fewer, the
// exporter's queue must stay at its bound (pandaproxy_export_mqtt_pending) and the rest be counted as dropped.
// Then: an exporter stopped with `forget` (a reload without [export.mqtt]) clears every retained topic it published.
// Loopback 127.0.52.1 (mosquitto), .2 (the simulated printer), .3 (pandaproxy), .4 (the stalling relay).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { parseConfig } from "../lib/config.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import { MAX_PENDING } from "../lib/export/broker.ts";
import { startMqttExport } from "../lib/export/mqtt.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";
import { ACCESS_CODE, MQTT_PORT, startSim, tempDir, until } from "./mqtt-helpers.ts";

const BROKER = "127.0.52.1";
const PRINTER = "127.0.52.2";
const PROXY = "127.0.52.3";
const STALLING = "127.0.52.4";
const BROKER_PORT = 1883;
const SERIAL = "01P00A000000052";
/** The burst: more bytes than the kernel's socket buffers between the exporter and a broker that reads nothing. */
const BURST = 700;
const PAD_BYTES = 48 * 1024;
const WAIT_MS = 60_000;

let dir: string;
let broker: ChildProcess | undefined;
let sim: SimPrinter;
let simMqtt: SimMqtt;
let supervisor: Supervisor | undefined;
let stalling: StallingRelay;

interface StallingRelay {
  server: Server;
  /** Stop (true) or resume (false) reading what the exporter sends. */
  stall(on: boolean): void;
}

/** TCP from STALLING to mosquitto, byte for byte, able to stop reading the client side. */
async function startStallingRelay(): Promise<StallingRelay> {
  const clients = new Set<Socket>();
  let stalled = false;
  const server = createServer((client) => {
    const upstream = connect({ host: BROKER, port: BROKER_PORT });
    clients.add(client);
    if (stalled) client.pause();
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      clients.delete(client);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(BROKER_PORT, STALLING, resolve));
  return {
    server,
    stall(on) {
      stalled = on;
      for (const c of clients) on ? c.pause() : c.resume();
    },
  };
}

async function startBroker(): Promise<void> {
  const conf = join(dir, "mosquitto.conf");
  writeFileSync(conf, ["allow_anonymous true", `listener ${BROKER_PORT} ${BROKER}`, "persistence false", "log_type error", ""].join("\n"));
  chmodSync(conf, 0o644);
  broker = spawn("mosquitto", ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  const started = Date.now();
  for (;;) {
    try {
      const probe = await mqtt.connectAsync(`mqtt://${BROKER}:${BROKER_PORT}`, { reconnectPeriod: 0, connectTimeout: 2_000 });
      await probe.endAsync(true);
      return;
    } catch (error) {
      if (Date.now() - started > WAIT_MS) throw new Error(`mosquitto not ready: ${(error as Error).message}`);
      await Bun.sleep(100);
    }
  }
}

/** A client counting the burst's reports it got, by their `burst` number (payloads are not kept: they are big). */
async function counter(url: string, topic: string, options: mqtt.IClientOptions = {}): Promise<{ client: MqttClient; burst: Set<number>; after: () => boolean }> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...options });
  const burst = new Set<number>();
  let afterSeen = false;
  client.on("message", (_topic, payload) => {
    const text = payload.toString();
    const n = text.match(/"burst":(\d+)/);
    if (n) burst.add(Number(n[1]));
    if (text.includes(`"after_burst"`)) afterSeen = true;
  });
  await client.subscribeAsync(topic, { qos: 0 });
  return { client, burst, after: () => afterSeen };
}

/** Retained messages with a payload under `filters` that a fresh subscriber gets. */
async function retainedUnder(filters: string[]): Promise<Map<string, string>> {
  const late = await mqtt.connectAsync(`mqtt://${BROKER}:${BROKER_PORT}`, { reconnectPeriod: 0 });
  const retained = new Map<string, string>();
  let marked = false;
  late.on("message", (topic, payload, packet) => {
    if (topic === "marker/end") marked = true;
    else if (packet.retain && payload.length) retained.set(topic, payload.toString());
  });
  await late.subscribeAsync([...filters, "marker/end"], { qos: 0 });
  // mosquitto sends a subscription's retained messages before it handles the same client's next publish.
  await late.publishAsync("marker/end", "end", { qos: 1 });
  await until("the retained messages, then the marker", () => marked, WAIT_MS);
  await late.endAsync(true);
  return retained;
}

const configText = (exportKeys: string) => `
[proxy]
state_dir = "${join(dir, "state")}"
[web]
listen = ""
[[printer]]
name = "p1s"
host = "${PRINTER}"
serial = "${SERIAL}"
model = "P1S"
access_code = "${ACCESS_CODE}"
bind = "${PROXY}"
services = ["mqtt"]
${exportKeys}
`;

beforeAll(async () => {
  setupLogging("info");
  dir = tempDir("pp-export-slow-");
  chmodSync(dir, 0o755);
  await startBroker();
  stalling = await startStallingRelay();
  ({ sim, mqtt: simMqtt } = await startSim(PRINTER, { serial: SERIAL, mqttMaxClients: 3, mqttReportIntervalMs: 1_000 }));
  const file = join(dir, "printers.toml");
  const text = configText(`[export.mqtt]\nurl = "mqtt://${STALLING}:${BROKER_PORT}"\nreports = true\nclient_id = "pandaproxy-slow"`);
  writeFileSync(file, text);
  supervisor = await startSupervisor(parseConfig(text, file), { configFile: file });
});
afterAll(async () => {
  await supervisor?.stop();
  await sim?.stop();
  stalling?.server.close();
  if (broker && broker.exitCode === null) broker.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("[export.mqtt] with a broker that stops reading", () => {
  test("local clients get every report, the broker fewer; the exporter's queue stays at its bound and drops are counted", async () => {
    const metric = (name: string) => supervisor!.metrics.value(name) ?? 0;
    const atBroker = await counter(`mqtt://${BROKER}:${BROKER_PORT}`, "pandaproxy/p1s/report");
    const local = await counter(`mqtts://${PROXY}:${MQTT_PORT}`, `device/${SERIAL}/report`, { username: "bblp", password: ACCESS_CODE, rejectUnauthorized: false });
    try {
      await until("the exporter connected", () => metric("pandaproxy_export_mqtt_connected") === 1, WAIT_MS);
      stalling.stall(true);
      const droppedBefore = metric("pandaproxy_export_mqtt_dropped_total");
      const pad = "x".repeat(PAD_BYTES);
      for (let i = 0; i < BURST; i++) simMqtt.report({ print: { command: "push_status", msg: 1, burst: i, pad } });
      let mostPending = 0;
      await until("every report of the burst at the local client", () => {
        mostPending = Math.max(mostPending, metric("pandaproxy_export_mqtt_pending"));
        return local.burst.size === BURST;
      }, WAIT_MS);
      // The broker still reads nothing: what the exporter could not write waits, at most MAX_PENDING messages.
      await until("the exporter's queue full", () => (mostPending = Math.max(mostPending, metric("pandaproxy_export_mqtt_pending"))) === MAX_PENDING, WAIT_MS);
      expect(mostPending).toBe(MAX_PENDING);
      const dropped = metric("pandaproxy_export_mqtt_dropped_total") - droppedBefore;
      expect(dropped).toBeGreaterThan(0);
      expect(atBroker.burst.size).toBeLessThan(BURST);

      // The broker reads again: what waited arrives, the dropped never, and publishing goes on.
      stalling.stall(false);
      await until("the exporter's queue written", () => metric("pandaproxy_export_mqtt_pending") < MAX_PENDING, WAIT_MS);
      simMqtt.report({ print: { command: "push_status", msg: 1, after_burst: true } });
      await until("a report after the burst at the broker", atBroker.after, WAIT_MS);
      // The dropped reports never arrive (not queued somewhere to come later).
      expect(atBroker.burst.size).toBeLessThan(BURST);
      expect(local.client.connected).toBe(true);
    } finally {
      stalling.stall(false);
      await atBroker.client.endAsync(true);
      await local.client.endAsync(true);
    }
  }, 120_000);
});

describe("an exporter that goes away for good", () => {
  const exportConfig = (prefix: string) => ({
    url: `mqtt://${BROKER}:${BROKER_PORT}`, insecure: false, prefix, clientId: `pandaproxy-${prefix}`, reports: false, commands: false,
    discovery: true, discoveryPrefix: `ha-${prefix}`, skip: [], cameraIntervalSeconds: 0,
  });
  const startExport = (prefix: string) => startMqttExport({
    config: exportConfig(prefix), printers: supervisor!.printers, proxy: supervisor!.config.proxy, web: supervisor!.config.web, metrics: createMetrics(),
  });
  const exported = (prefix: string) => [`${prefix}/#`, `ha-${prefix}/#`];

  test("a new prefix: the exporter that follows clears the printer's retained topics under the old one", async () => {
    const before = startExport("before");
    try {
      for (const started = Date.now(); !(await retainedUnder(["before/#"])).has("before/p1s/state"); await Bun.sleep(500)) {
        if (Date.now() - started > WAIT_MS) throw new Error("before/p1s/state not retained in time");
      }
    } finally {
      await before.stop();
    }
    const after = startMqttExport({
      config: exportConfig("after"), printers: supervisor!.printers, proxy: supervisor!.config.proxy, web: supervisor!.config.web, metrics: createMetrics(), previous: before.retained(),
    });
    try {
      for (const started = Date.now(); ; await Bun.sleep(500)) {
        const left = [...(await retainedUnder(["before/#"])).keys()].filter((t) => t.startsWith("before/p1s/"));
        if (!left.length) break;
        if (Date.now() - started > WAIT_MS) expect(left).toEqual([]);
      }
      expect((await retainedUnder(["after/#"])).has("after/p1s/availability")).toBe(true);
    } finally {
      await after.stop({ forget: true });
    }
  }, 90_000);

  test("stopped with forget, every retained topic it published is cleared; a plain stop leaves them, offline", async () => {
    const kept = startExport("kept");
    const forgotten = startExport("forgotten");
    const ready = async (prefix: string) => {
      for (const started = Date.now(); Date.now() - started < WAIT_MS;) {
        const r = await retainedUnder(exported(prefix));
        if (r.has(`${prefix}/p1s/state`) && r.has(`ha-${prefix}/sensor/pandaproxy_${SERIAL}/progress/config`)) return r;
        await Bun.sleep(500);
      }
      throw new Error(`${prefix}: state and discovery not retained in time`);
    };
    await ready("kept");
    await ready("forgotten");
    const logs = captureLogs();
    await kept.stop();
    await forgotten.stop({ forget: true });
    logs.stop();
    expect(logs.lines.some((l) => /cleared \d+ retained topics/.test(l))).toBe(true);
    expect([...(await retainedUnder(exported("forgotten"))).keys()]).toEqual([]);
    const stayed = await retainedUnder(exported("kept"));
    expect(stayed.get("kept/availability")).toBe("offline");
    expect(stayed.get("kept/p1s/availability")).toBe("offline");
    expect(stayed.has(`ha-kept/sensor/pandaproxy_${SERIAL}/progress/config`)).toBe(true);
  }, 90_000);
});
