// Interop: Debian's mosquitto plays the printer's broker (TLS 1.2 on 8883, user bblp and the access code, no
// anonymous logins), so nothing of ours stands on the printer's side. A test client publishes the documented
// push_status report (tests/golden/, OpenBambuAPI mqtt.md) on device/<serial>/report there, and pandaproxy's
// clients receive it; the proxy's own pushall and a client's command arrive at mosquitto byte for byte.
// Loopback 127.0.33.10 (mosquitto) and 127.0.33.11 (pandaproxy).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeCa, makeLeaf } from "../lib/tls.ts";
import { ACCESS_CODE, MQTT_PORT, npmClient, startProxy, tempDir, until, type Proxy, type TestClient } from "./mqtt-helpers.ts";

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

  test("a client's command through the proxy arrives at the broker byte for byte", async () => {
    const payload = '{"print":{"sequence_id":"mosq-33","command":"pause" ,"param":""}}';
    await clients[0]!.client.publishAsync(REQUEST, payload, { qos: 1 });
    await until("the command at the broker", () => printer.messages.some((m) => m.topic === REQUEST && m.payload.toString() === payload));
  });
});
