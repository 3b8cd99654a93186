// Interop: Debian's mosquitto plays the printer's broker (TLS 1.2 on 8883, user bblp and the access code, no
// anonymous logins), so nothing of ours stands on the printer's side. A test client publishes the documented
// push_status report (tests/golden/, OpenBambuAPI mqtt.md) on device/<serial>/report there, and pandaproxy's
// clients receive it; the proxy's own pushall and a client's command arrive at mosquitto byte for byte.
// Loopback 127.0.33.10 (mosquitto) and 127.0.33.11 (pandaproxy).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import mqttPacket, { type Packet } from "mqtt-packet";
import { makeCa, makeLeaf } from "../lib/tls.ts";
import { ACCESS_CODE, MQTT_PORT, collect, npmClient, rawTls, startProxy, tempDir, until, type Proxy, type TestClient } from "./mqtt-helpers.ts";

const BROKER_HOST = "127.0.33.10";
const PROXY_HOST = "127.0.33.11";
const SERIAL = "01P00A000000033";
const REPORT = `device/${SERIAL}/report`;
const REQUEST = `device/${SERIAL}/request`;
const BROKER_READY_MS = 10_000;

let dir: string;
let broker: ChildProcess;
let brokerLog = "";
let printer: TestClient;
let proxy: Proxy | undefined;
const clients: TestClient[] = [];
const sockets: TLSSocket[] = [];

/** A raw subscriber to REPORT on `host` (mqtt-packet's CONNECT and SUBSCRIBE): the bytes it receives and their PUBLISH frames. */
async function rawSubscriber(host: string): Promise<{ frames: () => Buffer[] }> {
  const socket = await rawTls(host);
  sockets.push(socket);
  const received = collect(socket);
  socket.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId: `raw-${host}`, keepalive: 60, username: "bblp", password: Buffer.from(ACCESS_CODE) }));
  socket.write(mqttPacket.generate({ cmd: "subscribe", messageId: 3, subscriptions: [{ topic: REPORT, qos: 0 }] }));
  // Each packet's frame: mqtt-packet's parser says where each ends (its length), the bytes are the received ones.
  const frames = () => {
    const bytes = received.bytes();
    const out: Buffer[] = [];
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let at = 0;
    parser.on("packet", (p: Packet) => {
      const length = p.length ?? 0;
      const header = 1 + (length < 128 ? 1 : length < 16_384 ? 2 : length < 2_097_152 ? 3 : 4);
      if (p.cmd === "publish") out.push(bytes.subarray(at, at + header + length));
      at += header + length;
    });
    parser.parse(bytes);
    return out;
  };
  await until(`a SUBACK from ${host}`, () => received.bytes().includes(Buffer.from([0x90, 0x03, 0x00, 0x03])));
  return { frames };
}

/** mosquitto configured as a printer's broker: the printer's certificate (CN = serial), TLS 1.2, bblp/code only. */
function startBroker(): ChildProcess {
  const ca = makeCa("test BBL CA", "test");
  const leaf = makeLeaf(ca, SERIAL, { dns: ["localhost"], ips: [BROKER_HOST] });
  writeFileSync(join(dir, "printer.key"), leaf.key);
  writeFileSync(join(dir, "printer.crt"), leaf.cert + ca.cert);
  const passwd = spawnSync("mosquitto_passwd", ["-b", "-c", join(dir, "passwd"), "bblp", ACCESS_CODE], { encoding: "utf8" });
  if (passwd.status !== 0) throw new Error(`mosquitto_passwd failed: ${passwd.stderr}`);
  writeFileSync(join(dir, "mosquitto.conf"), [
    "per_listener_settings false", "allow_anonymous false", `password_file ${join(dir, "passwd")}`,
    `listener ${MQTT_PORT} ${BROKER_HOST}`, `certfile ${join(dir, "printer.crt")}`, `keyfile ${join(dir, "printer.key")}`,
    "tls_version tlsv1.2", "persistence false", "log_type error", "",
  ].join("\n"));
  // mosquitto started as root drops to its own user and must still read its files.
  for (const name of ["printer.key", "printer.crt", "passwd", "mosquitto.conf"]) chmodSync(join(dir, name), 0o644);
  const child = spawn("mosquitto", ["-c", join(dir, "mosquitto.conf")], { stdio: ["ignore", "ignore", "pipe"] });
  child.stderr!.on("data", (chunk: Buffer) => void (brokerLog = (brokerLog + chunk.toString()).slice(-4000)));
  return child;
}

/** The test's own client on mosquitto, standing where the printer's firmware publishes. */
async function connectAsPrinter(): Promise<TestClient> {
  const started = Date.now();
  for (;;) {
    try {
      return await npmClient(BROKER_HOST);
    } catch (error) {
      if (broker.exitCode !== null) throw new Error(`mosquitto exited:\n${brokerLog}`);
      if (Date.now() - started > BROKER_READY_MS) throw new Error(`mosquitto not ready: ${(error as Error).message}\n${brokerLog}`);
      await Bun.sleep(100);
    }
  }
}

beforeAll(async () => {
  dir = tempDir("pp-mosquitto-printer-");
  chmodSync(dir, 0o755);
  broker = startBroker();
  printer = await connectAsPrinter();
  await printer.client.subscribeAsync(REQUEST, { qos: 1 });
  proxy = await startProxy(BROKER_HOST, SERIAL, PROXY_HOST);
});
afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.end()));
  for (const socket of sockets) socket.destroy();
  await proxy?.stop();
  await printer?.end();
  if (broker && broker.exitCode === null) {
    const exited = new Promise((resolve) => broker.once("exit", resolve));
    broker.kill();
    await Promise.race([exited, Bun.sleep(5_000)]);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("pandaproxy in front of mosquitto playing the printer's broker", () => {
  test("the broker, like the printer, refuses any other login than bblp and the access code", async () => {
    await expect(npmClient(BROKER_HOST, { password: "87654321" })).rejects.toThrow();
    await expect(npmClient(BROKER_HOST, { username: "admin" })).rejects.toThrow();
  });

  test("the proxy logs in with bblp and the code and asks the broker for the full state", async () => {
    const pushall = await printer.next((json) => json.pushing?.command === "pushall", 10_000);
    expect(pushall.pushing.sequence_id).toEqual(expect.any(String));
    expect(proxy!.service.status().upstream).toBe("connected");
  });

  test("a report published on the broker reaches every client of the proxy byte for byte", async () => {
    for (let i = 0; i < 3; i++) {
      const client = await npmClient(PROXY_HOST);
      clients.push(client);
      await client.client.subscribeAsync(REPORT);
    }
    const report = readFileSync(join(import.meta.dir, "golden", "mqtt-push-status-report.json"));
    await printer.client.publishAsync(REPORT, report);
    for (const client of clients) {
      await until("the report at a client of the proxy", () => client.messages.some((m) => m.topic === REPORT && m.payload.equals(report)));
    }
  });

  test("a report reaches a raw subscriber of the proxy as the very PUBLISH frame mosquitto sends its own subscribers", async () => {
    const direct = await rawSubscriber(BROKER_HOST);
    const proxied = await rawSubscriber(PROXY_HOST);
    // What a parse and re-serialisation would not keep: spaces, key order, 1.0, a repeated key.
    const report = Buffer.from('{ "print" : {"sequence_id":"mosq-frame","msg":1, "command":"push_status","nozzle_temper":1.0,"mc_percent":7,"mc_percent":8 } }');
    await printer.client.publishAsync(REPORT, report);
    const find = (frames: Buffer[]) => frames.find((f) => f.includes(Buffer.from("mosq-frame")));
    await until("the report at both raw subscribers", () => find(direct.frames()) !== undefined && find(proxied.frames()) !== undefined);
    expect(find(proxied.frames())!.equals(find(direct.frames())!)).toBe(true);
    expect(find(proxied.frames())!.subarray(-report.length).equals(report)).toBe(true);
  });

  test("a client's command through the proxy arrives at the broker byte for byte", async () => {
    const payload = '{"print":{"sequence_id":"mosq-33","command":"pause" ,"param":""}}';
    await clients[0]!.client.publishAsync(REQUEST, payload, { qos: 1 });
    await until("the command at the broker", () => printer.messages.some((m) => m.topic === REQUEST && m.payload.toString() === payload));
  });
});
