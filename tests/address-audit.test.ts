// No report a client receives names the printer's own address (maziggy/bambuddy#757: a proxy on two networks
// must not send a slicer to the printer's): a public X1C capture (tests/golden/mqtt-push-status-x1c.json) and
// the simulator's own reports go through the proxy to a full client and a viewer (the mqtt npm client); every
// dotted address in a string and every `ip` number is checked.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setupLogging } from "../lib/log.ts";
import { ACCESS_CODE, VIEWER_CODE, npmClient, startProxy, startSim, until, type Proxy, type TestClient } from "./mqtt-helpers.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";

const SIM_HOST = "127.0.41.50";
const PROXY_HOST = "127.0.41.51";
const CAPTURE = readFileSync(join(import.meta.dir, "golden", "mqtt-push-status-x1c.json"));
/** The printer's address in the capture (zevv/bambucli's X1C). */
const CAPTURED_PRINTER = "10.0.0.30";
const littleEndian = (ip: string) => Buffer.from(ip.split(".").map(Number)).readUInt32LE(0);

/** Every dotted IPv4 address in the report's strings and every number under a key named `ip`. */
function addressesIn(value: unknown, key = "", found: { dotted: string[]; ip: number[] } = { dotted: [], ip: [] }) {
  if (typeof value === "string") found.dotted.push(...(value.match(/\b\d{1,3}(\.\d{1,3}){3}\b/g) ?? []));
  else if (typeof value === "number" && key === "ip") found.ip.push(value);
  else if (Array.isArray(value)) for (const v of value) addressesIn(v, key, found);
  else if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) addressesIn(v, k, found);
  return found;
}

describe("address audit: what clients receive", () => {
  let sim: SimPrinter;
  let simMqtt: SimMqtt;
  let proxy: Proxy;
  const clients: TestClient[] = [];
  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    ({ sim, mqtt: simMqtt } = await startSim(SIM_HOST, { model: "X1C", mqttReportIntervalMs: 200 }));
    proxy = await startProxy(SIM_HOST, sim.identity.serial, PROXY_HOST);
    await until("the proxy's printer session", () => simMqtt.clients === 1);
  });
  afterAll(async () => {
    for (const c of clients) await c.end();
    await proxy?.stop();
    await sim?.stop();
  });

  test("the capture's and the simulator's address fields point at the proxy for a full client and a viewer", async () => {
    for (const password of [ACCESS_CODE, VIEWER_CODE]) {
      const c = await npmClient(PROXY_HOST, { password });
      clients.push(c);
      await c.client.subscribeAsync(`device/${sim.identity.serial}/report`);
    }
    await clients[0]!.client.publishAsync(`device/${sim.identity.serial}/request`, JSON.stringify({ pushing: { sequence_id: "1", command: "pushall" } }));
    simMqtt.report(CAPTURE);
    for (const c of clients) {
      const captured = await c.next((j) => j.print?.sequence_id === "11199");
      expect(captured.print.ipcam.rtsp_url).toBe(`rtsps://${PROXY_HOST}/streaming/live/1`);
      const own = await c.next((j) => j.print?.net !== undefined);
      expect(own.print.net.info[0].ip).toBe(littleEndian(PROXY_HOST));
      expect(own.print.ipcam.rtsp_url).toBe(`rtsps://${PROXY_HOST}/streaming/live/1`);
    }
    for (const c of clients) {
      for (const message of c.messages) {
        const { dotted, ip } = addressesIn(message.json);
        expect(dotted.filter((a) => a !== PROXY_HOST)).toEqual([]);
        expect(ip.filter((n) => n !== 0 && n !== littleEndian(PROXY_HOST))).toEqual([]);
        expect(message.payload.toString()).not.toContain(CAPTURED_PRINTER);
        expect(message.payload.toString()).not.toContain(SIM_HOST);
      }
    }
  });
});
