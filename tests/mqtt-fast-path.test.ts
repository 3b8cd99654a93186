// The delivery path of a report (issue #18): one that carries no address field goes to every subscriber as the
// printer's PUBLISH bytes, before it is parsed and merged; one that may carry one is still rewritten for every
// subscriber. Checked on raw TLS sockets with mqtt-packet's own parser and encoder (not the proxy's framing) and
// with the mqtt npm client, full and viewer. Loopback 127.0.53.x.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import mqttPacket, { type Packet } from "mqtt-packet";
import type { TLSSocket } from "node:tls";
import { setupLogging } from "../lib/log.ts";
import { ipv4ToLittleEndian } from "../lib/bambu/mqtt-state.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";
import { ACCESS_CODE, VIEWER_CODE, collect, npmClient, rawTls, startProxy, startSim, until, type Proxy, type TestClient } from "./mqtt-helpers.ts";

const SIM_HOST = "127.0.53.1";
const PROXY_HOST = "127.0.53.2";

/** A raw subscriber: CONNECT and SUBSCRIBE from mqtt-packet's encoder; everything it receives, as bytes. */
async function rawSubscriber(topic: string): Promise<{ socket: TLSSocket; bytes: () => Buffer; packets: () => Packet[] }> {
  const socket = await rawTls(PROXY_HOST);
  const received = collect(socket);
  socket.write(mqttPacket.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId: `raw-${Math.random()}`, keepalive: 60, username: "bblp", password: Buffer.from(ACCESS_CODE) }));
  socket.write(mqttPacket.generate({ cmd: "subscribe", messageId: 7, subscriptions: [{ topic, qos: 0 }] }));
  const packets = () => {
    const out: Packet[] = [];
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on("packet", (p: Packet) => out.push(p));
    parser.parse(received.bytes());
    return out;
  };
  await until("the raw subscriber's SUBACK", () => packets().some((p) => p.cmd === "suback"));
  return { socket, bytes: received.bytes, packets };
}

const publishes = (packets: Packet[]) => packets.flatMap((p) => (p.cmd === "publish" ? [p] : []));

describe("report delivery: the printer's bytes first, addresses still rewritten", () => {
  let sim: SimPrinter;
  let simMqtt: SimMqtt;
  let proxy: Proxy;
  let topic: string;
  const clients: TestClient[] = [];
  const sockets: TLSSocket[] = [];
  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    ({ sim, mqtt: simMqtt } = await startSim(SIM_HOST, { mqttReportIntervalMs: 0 }));
    proxy = await startProxy(SIM_HOST, sim.identity.serial, PROXY_HOST);
    topic = `device/${sim.identity.serial}/report`;
    await until("the proxy's printer session", () => simMqtt.clients === 1 && proxy.service.status().upstream === "connected");
  });
  afterAll(async () => {
    for (const c of clients) await c.end();
    for (const s of sockets) s.destroy();
    await proxy?.stop();
    await sim?.stop();
  });

  test("a report with no address field arrives as the exact PUBLISH the printer sent, payload bytes and all", async () => {
    const raw = await rawSubscriber(topic);
    sockets.push(raw.socket);
    // Formatting a parse and re-serialisation would not keep: spaces, key order, 1.0, a repeated key.
    const payload = Buffer.from('{ "print" : {"sequence_id":"901","msg":1, "command":"push_status","nozzle_temper":1.0,"mc_percent":7,"mc_percent":8 } }');
    const printerFrame = mqttPacket.generate({ cmd: "publish", topic, payload, qos: 0, retain: false, dup: false });
    simMqtt.report(payload);
    await until("the report on the raw socket", () => publishes(raw.packets()).some((p) => p.payload.toString().includes('"901"')));
    const got = publishes(raw.packets()).find((p) => p.payload.toString().includes('"901"'))!;
    expect(got.topic).toBe(topic);
    expect(got.qos).toBe(0);
    expect(got.retain).toBe(false);
    expect(Buffer.from(got.payload as Buffer).equals(payload)).toBe(true);
    expect(raw.bytes().includes(printerFrame)).toBe(true);
  });

  test("the merged state follows fast-path reports: pushall answers with their fields, nested objects merged", async () => {
    const viewer = await npmClient(PROXY_HOST, { password: VIEWER_CODE });
    clients.push(viewer);
    await viewer.client.subscribeAsync(topic);
    simMqtt.report(Buffer.from('{"print":{"command":"push_status","msg":1,"sequence_id":"902","nozzle_temper":231.5,"fast_path":{"a":1}}}'));
    simMqtt.report(Buffer.from('{"print":{"command":"push_status","msg":1,"sequence_id":"903","fast_path":{"b":2}}}'));
    await viewer.next((j) => j.print?.sequence_id === "903");
    await viewer.client.publishAsync(`device/${sim.identity.serial}/request`, JSON.stringify({ pushing: { sequence_id: "77", command: "pushall" } }));
    const state = await viewer.next((j) => j.print?.sequence_id === "77");
    expect(state.print.nozzle_temper).toBe(231.5);
    expect(state.print.fast_path).toEqual({ a: 1, b: 2 });
  });

  test("a report naming the printer's address is rewritten for every subscriber: raw, full and viewer", async () => {
    const raw = await rawSubscriber(topic);
    sockets.push(raw.socket);
    const full = await npmClient(PROXY_HOST);
    const viewer = await npmClient(PROXY_HOST, { password: VIEWER_CODE });
    clients.push(full, viewer);
    for (const c of [full, viewer]) await c.client.subscribeAsync(topic);
    const printerIp = ipv4ToLittleEndian(SIM_HOST);
    simMqtt.report(Buffer.from(`{"print":{"command":"push_status","msg":1,"sequence_id":"904","net":{"conf":0,"info":[{"ip":${printerIp},"mask":16777215}]},"ipcam":{"rtsp_url":"rtsps://${SIM_HOST}/streaming/live/1"}}}`));
    for (const c of [full, viewer]) {
      const r = await c.next((j) => j.print?.sequence_id === "904");
      expect(r.print.net.info[0].ip).toBe(ipv4ToLittleEndian(PROXY_HOST));
      expect(r.print.ipcam.rtsp_url).toBe(`rtsps://${PROXY_HOST}/streaming/live/1`);
    }
    await until("the address report on the raw socket", () => publishes(raw.packets()).some((p) => p.payload.toString().includes('"904"')));
    const got = JSON.parse(publishes(raw.packets()).find((p) => p.payload.toString().includes('"904"'))!.payload.toString());
    expect(got.print.net.info[0].ip).toBe(ipv4ToLittleEndian(PROXY_HOST));
    expect(raw.bytes().includes(Buffer.from(SIM_HOST))).toBe(false);
    expect(raw.bytes().includes(Buffer.from(String(printerIp)))).toBe(false);
  });

  test("an address field whose key is spelled with \\u escapes is still found and rewritten", async () => {
    const full = await npmClient(PROXY_HOST);
    clients.push(full);
    await full.client.subscribeAsync(topic);
    const printerIp = ipv4ToLittleEndian(SIM_HOST);
    // JSON.parse reads "\u006eet" as "net": a byte search for the key alone would miss it.
    simMqtt.report(Buffer.from(`{"print":{"command":"push_status","msg":1,"sequence_id":"905","\\u006eet":{"info":[{"ip":${printerIp}}]},"ipcam":{"\\u0072tsp_url":"rtsps://${SIM_HOST}/streaming/live/1"}}}`));
    const r = await full.next((j) => j.print?.sequence_id === "905");
    expect(r.print.net.info[0].ip).toBe(ipv4ToLittleEndian(PROXY_HOST));
    expect(r.print.ipcam.rtsp_url).toBe(`rtsps://${PROXY_HOST}/streaming/live/1`);
    const message = full.messages.find((m) => m.json?.print?.sequence_id === "905")!;
    expect(message.payload.includes(Buffer.from(SIM_HOST))).toBe(false);
  });
});
