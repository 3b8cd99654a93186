// The MQTT service's deadlines and pre-login limits, with the CONNECT deadline shortened through the service's
// options: a silent connection, an oversized CONNECT, keepalive (1.5 x, and 0 meaning none: only the proxy's
// long idle deadline applies, tested in mqtt-edge.test.ts).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import { MAX_CONNECT_BYTES } from "../lib/bambu/mqtt.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import { ACCESS_CODE, closedPromise, collect, rawTls, startProxy, startSim, until, type Proxy } from "./mqtt-helpers.ts";

const SIM_HOST = "127.0.2.40";
const PROXY_HOST = "127.0.2.41";
const CONNECT_TIMEOUT_MS = 400;
let sim: SimPrinter;
let proxy: Proxy;

const connectPacket = (extra: Partial<mqttPacket.IConnectPacket> = {}) =>
  mqttPacket.generate({ cmd: "connect", clientId: "raw", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 30, username: "bblp", password: Buffer.from(ACCESS_CODE), ...extra } as mqttPacket.IConnectPacket);

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  ({ sim } = await startSim(SIM_HOST, { mqttMaxClients: 2, mqttReportIntervalMs: 0 }));
  proxy = await startProxy(SIM_HOST, sim.identity.serial, PROXY_HOST, "", { connectTimeoutMs: CONNECT_TIMEOUT_MS });
  await until("the printer session", () => proxy.service.status().details?.stateCurrent === true);
});
afterAll(async () => {
  await proxy?.stop();
  await sim?.stop();
});

describe("MQTT deadlines before login", () => {
  test("a client that sends no CONNECT within the deadline is closed with a log line", async () => {
    const logs = captureLogs();
    try {
      const silent = await rawTls(PROXY_HOST);
      // Half a CONNECT does not count as one.
      silent.write(connectPacket().subarray(0, 5));
      await closedPromise(silent);
    } finally {
      logs.stop();
    }
    expect(logs.lines.some((l) => l.includes("[p1s/mqtt]") && l.includes(`no CONNECT within ${CONNECT_TIMEOUT_MS / 1000} s`))).toBe(true);
  });

  test("a CONNECT over the pre-login limit is refused unread, even with the right access code", async () => {
    const logs = captureLogs();
    const socket = await rawTls(PROXY_HOST);
    const got = collect(socket);
    try {
      const big = connectPacket({ clientId: "x".repeat(MAX_CONNECT_BYTES) });
      expect(big.length).toBeGreaterThan(MAX_CONNECT_BYTES);
      socket.write(big);
      await closedPromise(socket);
    } finally {
      logs.stop();
      socket.destroy();
    }
    expect(got.bytes().length).toBe(0); // no CONNACK: authentication never ran
    expect(logs.lines.some((l) => l.includes("oversized MQTT") && l.includes(`limit of ${MAX_CONNECT_BYTES}`))).toBe(true);
    expect(logs.lines.some((l) => l.includes("connected as") || l.includes("refused login"))).toBe(false);
    expect(logs.lines.some((l) => l.includes("no CONNECT within"))).toBe(false);
  });
});

describe("MQTT keepalive", () => {
  test("a client silent for 1.5 x its keepalive is closed with a log line; one that pings stays", async () => {
    const logs = captureLogs();
    const silent = await rawTls(PROXY_HOST);
    const pinger = await rawTls(PROXY_HOST);
    const pings = collect(pinger);
    let pingerClosed = false;
    pinger.once("close", () => (pingerClosed = true));
    let timer: ReturnType<typeof setInterval> | undefined;
    try {
      const silentGot = collect(silent);
      silent.write(connectPacket({ clientId: "silent", keepalive: 1 }));
      pinger.write(connectPacket({ clientId: "pinger", keepalive: 1 }));
      await until("both CONNACKs", () => silentGot.bytes().length >= 4 && pings.bytes().length >= 4);
      const pingreq = mqttPacket.generate({ cmd: "pingreq" });
      timer = setInterval(() => pinger.write(pingreq), 400);
      await closedPromise(silent);
      // The pinger has outlived the silent client's deadline, and is still answered.
      await Bun.sleep(800);
      expect(pingerClosed).toBe(false);
      const seen = pings.bytes().length;
      await until("a PINGRESP", () => pings.bytes().length > seen);
    } finally {
      clearInterval(timer);
      logs.stop();
      silent.destroy();
      pinger.destroy();
    }
    expect(logs.lines.filter((l) => l.includes("silent for 1.5 s (1.5 x its keepalive)"))).toHaveLength(1);
  });

  test("keepalive 0 means no keepalive deadline (only the proxy's idle deadline of minutes)", async () => {
    const socket = await rawTls(PROXY_HOST);
    const got = collect(socket);
    let closed = false;
    socket.once("close", () => (closed = true));
    try {
      socket.write(connectPacket({ clientId: "forever", keepalive: 0 }));
      await until("CONNACK", () => got.bytes().length >= 4);
      // Longer than 1.5 x the shortest keepalive a client can ask for (1 s), and than the CONNECT deadline.
      await Bun.sleep(2_000);
      expect(closed).toBe(false);
      socket.write(mqttPacket.generate({ cmd: "pingreq" }));
      await until("PINGRESP", () => got.bytes().includes(Buffer.from([0xd0, 0x00])));
      expect(proxy.service.status().clients).toBe(1);
    } finally {
      socket.destroy();
    }
  });
});
