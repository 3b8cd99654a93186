// pandaproxy's MQTT service in front of a simulated P1S (connection limit 2), driven by npm `mqtt` clients and
// raw TLS sockets: merged state, command replies, subscriptions, QoS 1, the publish ACL, viewers, refusals,
// slow clients and a printer restart.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import { ipv4ToLittleEndian } from "../lib/bambu/mqtt-state.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";
import {
  ACCESS_CODE, VIEWER_CODE, closedPromise, collect, npmClient, rawTls, startProxy, startSim, until, type Proxy, type TestClient,
} from "./mqtt-helpers.ts";

const SIM_HOST = "127.0.2.12";
const PROXY_HOST = "127.0.2.22";
let sim: SimPrinter;
let simMqtt: SimMqtt;
let proxy: Proxy;
let serial: string;
let report: string;
let request: string;
const open: TestClient[] = [];

const client = async (options: Parameters<typeof npmClient>[1] = {}) => {
  const c = await npmClient(PROXY_HOST, options);
  open.push(c);
  return c;
};
const requestsMatching = (text: string) => simMqtt.requests.filter((r) => r.toString().includes(text)).length;
const connectPacket = (extra: Partial<mqttPacket.IConnectPacket> = {}) =>
  mqttPacket.generate({ cmd: "connect", clientId: "raw", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 30, username: "bblp", password: Buffer.from(ACCESS_CODE), ...extra } as mqttPacket.IConnectPacket);

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  ({ sim, mqtt: simMqtt } = await startSim(SIM_HOST, { mqttMaxClients: 2, mqttReportIntervalMs: 200 }));
  serial = sim.identity.serial;
  report = `device/${serial}/report`;
  request = `device/${serial}/request`;
  proxy = await startProxy(SIM_HOST, serial, PROXY_HOST);
  await until("the printer session", () => proxy.service.status().details?.stateCurrent === true);
});
afterAll(async () => {
  await Promise.allSettled(open.map((c) => c.end()));
  await proxy?.stop();
  await sim?.stop();
});

describe("MQTT multiplexer: state and commands", () => {
  test("one printer session; firmware and model learnt from get_version reach the hub", async () => {
    expect(simMqtt.clients).toBe(1);
    await until("version", () => proxy.hub.info.firmware !== undefined);
    expect(proxy.hub.info).toMatchObject({ firmware: sim.identity.firmware, productName: "Bambu Lab P1S", modelCode: "C12" });
  });

  test("a new subscriber gets the full state at once, its address rewritten to the proxy's", async () => {
    const c = await client();
    await c.client.subscribeAsync(report);
    const full = await c.next((j) => j.print?.msg === 0);
    expect(full.print.net.info[0].ip).toBe(ipv4ToLittleEndian(PROXY_HOST));
    expect(full.print.net.info[1].ip).toBe(0);
    expect(full.print.gcode_state).toBeString();
  });

  test("pushall is answered from the merged state, with the client's sequence_id, without asking the printer", async () => {
    const c = await client();
    await c.client.subscribeAsync(report);
    const asked = requestsMatching("pushall");
    await c.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "pp-77", command: "pushall" } }), { qos: 1 });
    const full = await c.next((j) => j.print?.sequence_id === "pp-77");
    expect(full.print.msg).toBe(0);
    expect(full.print.command).toBe("push_status");
    expect(requestsMatching("pushall")).toBe(asked);
    // The merged state follows the deltas: turn the light off, then ask again.
    await c.client.publishAsync(request, JSON.stringify({ system: { sequence_id: "led-1", command: "ledctrl", led_node: "chamber_light", led_mode: "off" } }), { qos: 1 });
    await c.next((j) => j.print?.lights_report?.[0]?.mode === "off");
    await c.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "pp-78", command: "pushall" } }));
    const again = await c.next((j) => j.print?.sequence_id === "pp-78");
    expect(again.print.lights_report).toEqual([{ node: "chamber_light", mode: "off" }]);
    expect(again.print.layer_num).toBeNumber();
  });

  test("a command reaches the printer byte for byte; its reply reaches every subscriber", async () => {
    const a = await client();
    const b = await client();
    await a.client.subscribeAsync(report);
    await b.client.subscribeAsync(`device/${serial}/#`);
    // Odd spacing and key order: a signed command must not be re-serialised.
    const payload = Buffer.from('{ "print" :{"sequence_id":"cmd-9",  "command":"pause","param":""}}\n');
    await a.client.publishAsync(request, payload, { qos: 1 });
    // PUBACK came back only after the printer had it:
    expect(simMqtt.requests.some((r) => r.equals(payload))).toBe(true);
    for (const c of [a, b]) expect((await c.next((j) => j.print?.sequence_id === "cmd-9")).print.result).toBe("success");
  });

  test("get_version is answered from the cache with the client's sequence_id", async () => {
    const c = await client();
    await c.client.subscribeAsync(report);
    const asked = requestsMatching("get_version");
    await c.client.publishAsync(request, JSON.stringify({ info: { sequence_id: "v-1", command: "get_version" } }));
    const reply = await c.next((j) => j.info?.sequence_id === "v-1");
    expect(reply.info.module.find((m: any) => m.name === "ota").sw_ver).toBe(sim.identity.firmware);
    expect(requestsMatching("get_version")).toBe(asked);
  });
});

describe("MQTT multiplexer: subscriptions", () => {
  test("clients receive exactly what their filters match; # is never passed to the printer", async () => {
    const plus = await client();
    const all = await client();
    const other = await client();
    const req = await client();
    await plus.client.subscribeAsync("device/+/report");
    await all.client.subscribeAsync("#");
    await other.client.subscribeAsync("device/+/status");
    await req.client.subscribeAsync(request);
    const seen = all.messages.length;
    await until("deltas for the matching filters", () => plus.messages.length >= 3 && all.messages.length >= seen + 3);
    expect(other.messages).toHaveLength(0);
    expect(req.messages).toHaveLength(0);
    for (const m of [...plus.messages, ...all.messages]) expect(m.topic).toBe(report);
    // The printer would have dropped a # subscriber: our one session is still the first.
    expect(proxy.service.status().details?.printerConnects).toBe(1);
    expect(simMqtt.clients).toBe(1);
  });

  test("SUBACK grants at most QoS 1 and refuses invalid filters; UNSUBSCRIBE stops the flow", async () => {
    const c = await client();
    const granted = await c.client.subscribeAsync({ [report]: { qos: 2 } });
    expect(granted.map((g) => g.qos)).toEqual([1]);
    // npm mqtt refuses to send an invalid filter, so a raw client asks.
    const raw = await rawTls(PROXY_HOST);
    const got = collect(raw);
    raw.write(connectPacket());
    raw.write(mqttPacket.generate({ cmd: "subscribe", messageId: 3, subscriptions: [{ topic: "a/#/b", qos: 0 }, { topic: "device/+/report", qos: 1 }] }));
    await until("SUBACK", () => got.bytes().includes(Buffer.from([0x90, 0x04, 0x00, 0x03, 0x80, 0x01])));
    raw.destroy();
    await until("a report", () => c.messages.length > 0);
    await c.client.unsubscribeAsync(report);
    const count = c.messages.length;
    simMqtt.tick();
    simMqtt.tick();
    await Bun.sleep(300);
    expect(c.messages.length).toBe(count);
  });
});

describe("MQTT multiplexer: the publish ACL and viewers", () => {
  test("only the request topic reaches the printer; a refused QoS 1 publish closes the client unacknowledged", async () => {
    const c = await client();
    const before = simMqtt.requests.length;
    await c.client.publishAsync(report, JSON.stringify({ print: { command: "pause", sequence_id: "acl-1" } }));
    await c.client.publishAsync("anything/else", "hello");
    await c.client.publishAsync(request, "not json");
    await c.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "acl-ok", command: "get_version_x" } }));
    await until("the allowed request", () => requestsMatching("acl-ok") === 1);
    expect(simMqtt.requests.length).toBe(before + 1);
    expect(c.client.connected).toBe(true);
    const closed = new Promise<void>((resolve) => c.client.once("close", () => resolve()));
    let acked = false;
    c.client.publish("anything/else", "x", { qos: 1 }, (error) => void (acked = !error));
    await closed;
    expect(acked).toBe(false);
  });

  test("a viewer gets status and cached answers, but its commands never reach the printer", async () => {
    const v = await client({ password: VIEWER_CODE });
    await v.client.subscribeAsync(report);
    await v.next((j) => j.print?.msg === 0);
    await v.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "view-1", command: "pushall" } }), { qos: 1 });
    expect((await v.next((j) => j.print?.sequence_id === "view-1")).print.msg).toBe(0);
    await v.client.publishAsync(request, JSON.stringify({ info: { sequence_id: "view-2", command: "get_version" } }));
    await v.next((j) => j.info?.sequence_id === "view-2");
    await v.client.publishAsync(request, JSON.stringify({ print: { sequence_id: "view-3", command: "stop" } }));
    await Bun.sleep(200);
    expect(requestsMatching("view-")).toBe(0);
    const closed = new Promise<void>((resolve) => v.client.once("close", () => resolve()));
    v.client.publish(request, JSON.stringify({ print: { sequence_id: "view-4", command: "stop" } }), { qos: 1 });
    await closed;
    expect(requestsMatching("view-")).toBe(0);
  });
});

describe("MQTT multiplexer: refusals", () => {
  test("wrong codes and users get CONNACK not authorized", async () => {
    const logs = captureLogs();
    try {
      for (const options of [{ password: "87654321" }, { username: "admin" }, { password: "" }]) {
        const err = await npmClient(PROXY_HOST, options).catch((e) => e);
        expect((err as { code?: number }).code).toBe(5);
      }
    } finally {
      logs.stop();
    }
    expect(logs.lines.filter((l) => l.includes("refused login"))).toHaveLength(3);
    for (const line of logs.lines) {
      expect(line).not.toContain("87654321");
      expect(line).not.toContain(ACCESS_CODE);
    }
  });

  test("MQTT 5 gets CONNACK 'unacceptable protocol version' and is closed; MQTT 3.1 works", async () => {
    const socket = await rawTls(PROXY_HOST);
    const got = collect(socket);
    socket.write(connectPacket({ protocolVersion: 5 }));
    await closedPromise(socket);
    expect([...got.bytes()]).toEqual([0x20, 2, 0, 1]);
    const v31 = await client({ protocolVersion: 3 });
    await v31.client.subscribeAsync(report);
    await v31.next((j) => j.print?.command === "push_status");
  });

  test("an oversized CONNECT, or anything before CONNECT, is closed before authentication", async () => {
    const big = await rawTls(PROXY_HOST);
    big.write(Buffer.from([0x10, 0x80, 0x80, 0x08])); // CONNECT announcing 128 KiB
    await closedPromise(big);
    const early = await rawTls(PROXY_HOST);
    early.write(mqttPacket.generate({ cmd: "pingreq" }));
    await closedPromise(early);
  });

  test("keepalive: PINGREQ is answered; a client silent for 1.5 x its keepalive is dropped", async () => {
    const socket = await rawTls(PROXY_HOST);
    const got = collect(socket);
    socket.write(connectPacket({ keepalive: 1 }));
    await until("CONNACK", () => got.bytes().length >= 4);
    socket.write(mqttPacket.generate({ cmd: "pingreq" }));
    await until("PINGRESP", () => got.bytes().includes(Buffer.from([0xd0, 0x00])));
    const started = Date.now();
    await closedPromise(socket);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
  });
});

describe("MQTT multiplexer: slow clients and printer restarts", () => {
  test("a client that stops reading is disconnected; the others get every message", async () => {
    const good = await client();
    await good.client.subscribeAsync(report);
    const slow = await rawTls(PROXY_HOST);
    slow.write(connectPacket({ clientId: "slow" }));
    slow.write(mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: report, qos: 0 }] }));
    await Bun.sleep(200);
    slow.pause(); // and never read again
    const slowDropped = () => (proxy.metrics.value("pandaproxy_mqtt_slow_clients_total", { printer: "p1s" }) ?? 0) > 0;
    const pad = "x".repeat(16 * 1024);
    let sent = 0;
    try {
      for (let batch = 0; batch < 200 && !slowDropped(); batch++) {
        for (let i = 0; i < 25; i++) simMqtt.report({ print: { command: "push_status", msg: 1, sequence_id: `slow-${sent++}`, pad } });
        await Bun.sleep(10);
      }
      expect(slowDropped()).toBe(true);
      // Seen from the client: once it reads again it gets what was already on the wire, then the end.
      let slowClosed = false;
      slow.once("close", () => (slowClosed = true));
      slow.on("data", () => {});
      slow.resume();
      await until("the slow client to see its connection end", () => slowClosed, 10_000);
    } finally {
      slow.destroy();
    }
    await until("the good client got everything", () => good.messages.filter((m) => m.json?.print?.sequence_id?.startsWith("slow-")).length === sent, 20_000);
    expect(good.client.connected).toBe(true);
  }, 40_000);

  test("the printer restarts: clients stay connected and get the full state again", async () => {
    const c = await client();
    await c.client.subscribeAsync(report);
    let clientClosed = false;
    c.client.on("close", () => (clientClosed = true));
    const identity = sim.identity;
    await sim.stop();
    await until("the session noticed", () => proxy.service.status().upstream !== "connected");
    // While the printer is away a QoS 1 command cannot be delivered: not acknowledged, the client is closed.
    const orphan = await client();
    const orphanClosed = new Promise<void>((resolve) => orphan.client.once("close", () => resolve()));
    let acked = false;
    orphan.client.publish(request, JSON.stringify({ print: { sequence_id: "away-1", command: "pause" } }), { qos: 1 }, (e) => void (acked = !e));
    await orphanClosed;
    expect(acked).toBe(false);
    // A viewer's pushall waits for the state instead of going anywhere.
    const viewer = await client({ password: VIEWER_CODE });
    await viewer.client.subscribeAsync(report);
    await viewer.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "wait-1", command: "pushall" } }), { qos: 1 });
    await Bun.sleep(100);
    expect(viewer.messages.some((m) => m.json?.print?.sequence_id === "wait-1")).toBe(false);
    const mark = c.messages.length;
    ({ sim, mqtt: simMqtt } = await startSim(SIM_HOST, { serial: identity.serial, mqttMaxClients: 2, mqttReportIntervalMs: 200 }));
    await until("reconnected", () => proxy.service.status().upstream === "connected", 15_000);
    const fresh = await c.next((j) => j.print?.msg === 0 && c.messages.indexOf(c.messages.find((m) => m.json === j)!) >= mark, 10_000);
    expect(fresh.print.net.info[0].ip).toBe(ipv4ToLittleEndian(PROXY_HOST));
    expect((await viewer.next((j) => j.print?.sequence_id === "wait-1")).print.msg).toBe(0);
    await until("deltas again", () => c.messages.slice(mark).some((m) => m.json?.print?.msg === 1));
    expect(clientClosed).toBe(false);
    expect(proxy.service.status().details?.printerConnects).toBe(2);
  }, 40_000);
});

describe("MQTT multiplexer: addresses", () => {
  test("bind 0.0.0.0: reports name the address the client connected to; rtsp_url host rewritten (X1C)", async () => {
    const x1 = await startSim("127.0.2.13", { model: "X1C", mqttMaxClients: 2, mqttReportIntervalMs: 0 });
    const wide = await startProxy("127.0.2.13", x1.sim.identity.serial, "0.0.0.0", "ports = { mqtt = 18883 }");
    try {
      await until("state", () => wide.service.status().details?.stateCurrent === true);
      const c = await npmClient("127.0.2.24", { port: 18883 });
      try {
        await c.client.subscribeAsync(`device/${x1.sim.identity.serial}/report`);
        const full = await c.next((j) => j.print?.msg === 0);
        expect(full.print.net.info[0].ip).toBe(ipv4ToLittleEndian("127.0.2.24"));
        expect(full.print.ipcam.rtsp_url).toBe("rtsps://127.0.2.24/streaming/live/1");
      } finally {
        await c.end();
      }
    } finally {
      await wide.stop();
      await x1.sim.stop();
    }
  });
});
