// Third-party MQTT clients through pandaproxy (real port 8883) in front of a simulated printer that takes only
// 2 connections: mosquitto_sub/mosquitto_pub, python3-paho-mqtt and npm `mqtt` side by side.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";
import {
  ACCESS_CODE, MQTT_PORT, PYTHON, VIEWER_CODE, npmClient, run, startProxy, startSim, until, type Child, type Proxy, type TestClient,
} from "./mqtt-helpers.ts";

const SIM_HOST = "127.0.2.14";
const PROXY_HOST = "127.0.2.21";
let sim: SimPrinter;
let simMqtt: SimMqtt;
let proxy: Proxy;
let serial: string;
let report: string;
let request: string;
const children: Child[] = [];
const spawned = (command: string, args: string[]) => {
  const child = run(command, args);
  children.push(child);
  return child;
};
const mosquittoArgs = (code = ACCESS_CODE) => ["-h", PROXY_HOST, "-p", String(MQTT_PORT), "--cafile", proxy.caFile, "--insecure", "-u", "bblp", "-P", code];
const lines = (child: Child) => child.stdout().trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));

beforeAll(async () => {
  ({ sim, mqtt: simMqtt } = await startSim(SIM_HOST, { mqttMaxClients: 2, mqttReportIntervalMs: 150 }));
  serial = sim.identity.serial;
  report = `device/${serial}/report`;
  request = `device/${serial}/request`;
  proxy = await startProxy(SIM_HOST, serial, PROXY_HOST);
  await until("the printer session", () => proxy.service.status().details?.stateCurrent === true);
});
afterAll(async () => {
  for (const child of children) child.kill();
  await proxy?.stop();
  await sim?.stop();
});

describe("MQTT interop through pandaproxy (printer limit: 2 connections)", () => {
  test("20 clients of three kinds all receive reports, over one printer connection", async () => {
    const npm: TestClient[] = [];
    try {
      const subs = Array.from({ length: 6 }, () => spawned("mosquitto_sub", [...mosquittoArgs(), "-t", report, "-C", "4", "-W", "20"]));
      const paho = spawned(PYTHON, [join(import.meta.dir, "mqtt-paho-client.py"), PROXY_HOST, String(MQTT_PORT), serial, ACCESS_CODE, "6", "4"]);
      for (let i = 0; i < 8; i++) {
        const c = await npmClient(PROXY_HOST);
        await c.client.subscribeAsync(report);
        npm.push(c);
      }
      await until("8 npm clients with reports", () => npm.every((c) => c.messages.filter((m) => m.json?.print?.msg === 1).length >= 4), 20_000);
      for (const sub of subs) {
        expect(await sub.exited).toBe(0);
        const got = lines(sub);
        expect(got).toHaveLength(4);
        for (const r of got) expect(r.print.command).toBe("push_status");
      }
      expect(await paho.exited).toBe(0);
      const pahoState = JSON.parse(paho.stdout());
      expect(pahoState).toHaveLength(6);
      for (const s of pahoState) expect(s.reports).toBeGreaterThanOrEqual(4);
      expect(pahoState[0]).toMatchObject({ full: true, reply: true, puback: true }); // pushall (QoS 1) answered
      expect(simMqtt.accepted).toBe(1);
      expect(simMqtt.clients).toBe(1);
    } finally {
      await Promise.allSettled(npm.map((c) => c.end()));
    }
  }, 40_000);

  test("mosquitto_pub sends a command byte for byte; mosquitto_sub sees the printer's reply", async () => {
    const sub = spawned("mosquitto_sub", [...mosquittoArgs(), "-t", "device/+/report", "-W", "15"]);
    await until("mosquitto_sub receiving", () => sub.stdout().includes("push_status"));
    const payload = '{"print":{"sequence_id":"moq-1","command":"resume" ,"param":""}}';
    const pub = spawned("mosquitto_pub", [...mosquittoArgs(), "-t", request, "-q", "1", "-m", payload]);
    expect(await pub.exited).toBe(0);
    expect(simMqtt.requests.some((r) => r.toString() === payload)).toBe(true);
    await until("the reply", () => sub.stdout().includes('"moq-1"'));
    const reply = lines(sub).find((r) => r.print?.sequence_id === "moq-1");
    expect(reply.print.result).toBe("success");
    sub.kill();
  });

  test("mosquitto_sub with # gets reports (the proxy never passes # to the printer)", async () => {
    const sub = spawned("mosquitto_sub", [...mosquittoArgs(), "-t", "#", "-C", "3", "-W", "10", "-v"]);
    expect(await sub.exited).toBe(0);
    for (const line of sub.stdout().trim().split("\n")) expect(line.startsWith(`${report} `)).toBe(true);
    expect(proxy.service.status().details?.printerConnects).toBe(1);
  });

  test("mosquitto clients: wrong code refused, MQTT 5 refused, MQTT 3.1 accepted", async () => {
    const wrong = spawned("mosquitto_sub", [...mosquittoArgs("87654321"), "-t", report, "-C", "1", "-W", "5"]);
    expect(await wrong.exited).not.toBe(0);
    expect(wrong.stderr()).toMatch(/not authori[sz]ed/i);
    const v5 = spawned("mosquitto_sub", [...mosquittoArgs(), "-V", "5", "-t", report, "-C", "1", "-W", "5"]);
    expect(await v5.exited).not.toBe(0);
    expect(v5.stderr()).toMatch(/protocol version/i);
    const v31 = spawned("mosquitto_sub", [...mosquittoArgs(), "-V", "31", "-t", report, "-C", "1", "-W", "10"]);
    expect(await v31.exited).toBe(0);
    expect(lines(v31)[0].print).toBeDefined();
  });

  test("a viewer's mosquitto_pub command and pushall never reach the printer", async () => {
    const before = simMqtt.requests.length;
    const sub = spawned("mosquitto_sub", [...mosquittoArgs(VIEWER_CODE), "-t", report, "-W", "10"]);
    await until("viewer subscribed", () => sub.stdout().includes("push_status"));
    const stop = spawned("mosquitto_pub", [...mosquittoArgs(VIEWER_CODE), "-t", request, "-m", '{"print":{"sequence_id":"v-stop","command":"stop"}}']);
    await stop.exited;
    const pushall = spawned("mosquitto_pub", [...mosquittoArgs(VIEWER_CODE), "-t", request, "-m", '{"pushing":{"sequence_id":"v-all","command":"pushall"}}']);
    expect(await pushall.exited).toBe(0);
    // The pushall is answered from the cache (to no one: the publisher has no subscription), never by the printer.
    await Bun.sleep(300);
    expect(simMqtt.requests.length).toBe(before);
    sub.kill();
  });
});
