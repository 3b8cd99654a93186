// Shared pieces of the MQTT tests: a simulated printer, pandaproxy's MQTT service in front of it, clients
// (npm mqtt, raw TLS sockets, Debian peers), and waiting without fixed sleeps. Loopback range 127.0.2.0/24.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import mqtt, { type MqttClient } from "mqtt";
import { parseConfig } from "../lib/config.ts";
import { createMetrics, type Metrics } from "../lib/core/metrics.ts";
import { createPrinterHub, type PrinterHub, type Service } from "../lib/core/service.ts";
import { serviceLogger } from "../lib/log.ts";
import { printerTlsMaterial } from "../lib/tls.ts";
import { createMqttService, type MqttServiceOptions } from "../lib/bambu/mqtt.ts";
import { startSimulatedBambu, type SimPrinter, type SimPrinterOptions } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";
import { simulatedCa } from "../lib/sim/tls.ts";

export const ACCESS_CODE = "12345678";
export const VIEWER_CODE = "viewer99";
export const MQTT_PORT = 8883;

export function tempDir(prefix = "pp-mqtt-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startSim(host: string, options: Partial<SimPrinterOptions> = {}): Promise<{ sim: SimPrinter; mqtt: SimMqtt; caFile: string }> {
  const sim = await startSimulatedBambu({ host, services: ["mqtt"], accessCode: ACCESS_CODE, mqttMaxClients: 2, mqttReportIntervalMs: 200, ...options });
  const dir = tempDir("pp-simca-");
  const caFile = join(dir, "bbl-ca.pem");
  writeFileSync(caFile, simulatedCa().cert);
  return { sim, mqtt: sim.service<SimMqtt>("mqtt")!, caFile };
}

export interface Proxy {
  service: Service;
  hub: PrinterHub;
  metrics: Metrics;
  caFile: string;
  stop(): Promise<void>;
}

/** pandaproxy's MQTT service for the simulated printer at `printerHost`, listening on `bind`. */
export async function startProxy(printerHost: string, serial: string, bind: string, extra = "", options: MqttServiceOptions = {}): Promise<Proxy> {
  const stateDir = tempDir("pp-state-");
  const config = parseConfig(`
[proxy]
state_dir = "${stateDir}"
[[printer]]
name = "p1s"
host = "${printerHost}"
serial = "${serial}"
access_code = "${ACCESS_CODE}"
viewer_access_code = "${VIEWER_CODE}"
bind = "${bind}"
services = ["mqtt"]
${extra}
`);
  const printer = config.printers[0]!;
  const tls = printerTlsMaterial(stateDir, printer);
  const hub = createPrinterHub();
  const metrics = createMetrics();
  const service = createMqttService({ printer, proxy: config.proxy, tls, log: serviceLogger(printer.name, "mqtt"), metrics, hub }, options);
  await service.start();
  const caFile = join(stateDir, "ca.crt");
  return {
    service, hub, metrics, caFile,
    stop: async () => {
      await service.stop();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

export async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

export interface TestClient {
  client: MqttClient;
  messages: { topic: string; payload: Buffer; json: any }[];
  /** The first message whose JSON satisfies `match`, waiting for it. */
  next(match: (json: any) => boolean, timeoutMs?: number): Promise<any>;
  end(): Promise<void>;
}

export async function npmClient(host: string, options: { password?: string; username?: string; protocolVersion?: 3 | 4 | 5; clientId?: string; port?: number } = {}): Promise<TestClient> {
  const client = await mqtt.connectAsync(`mqtts://${host}:${options.port ?? MQTT_PORT}`, {
    username: options.username ?? "bblp",
    password: options.password ?? ACCESS_CODE,
    rejectUnauthorized: false,
    protocolVersion: options.protocolVersion ?? 4,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    clientId: options.clientId,
  });
  const messages: TestClient["messages"] = [];
  client.on("message", (topic, payload) => {
    let json: unknown;
    try {
      json = JSON.parse(payload.toString());
    } catch {
      json = undefined;
    }
    messages.push({ topic, payload, json });
  });
  return {
    client,
    messages,
    async next(match, timeoutMs = 10_000) {
      let found: any;
      await until("a matching message", () => (found = messages.find((m) => m.json && match(m.json))) !== undefined, timeoutMs);
      return found.json;
    },
    end: () => client.endAsync(true),
  };
}

/** A raw TLS socket, for clients that misbehave on purpose. */
export function rawTls(host: string, port = MQTT_PORT): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host, port, rejectUnauthorized: false }, () => resolve(socket));
    socket.once("error", reject);
  });
}

export function closedPromise(socket: TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.once("close", () => resolve());
  });
}

/** Reads everything a socket sends into one growing buffer. */
export function collect(socket: TLSSocket): { bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return { bytes: () => Buffer.concat(chunks) };
}

export interface Child {
  process: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
  kill(): void;
}

export function run(command: string, args: string[], input?: string): Child {
  const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (err += c.toString()));
  if (input !== undefined) child.stdin!.end(input);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    process: child,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
}

/** Python with the Debian paho (the pyenv python on PATH lacks it). */
export const PYTHON = "/usr/bin/python3";
