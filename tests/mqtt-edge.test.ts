// The MQTT service's edge policy, as hostile or careless clients meet it: a refused login whose client keeps
// its side open is destroyed and frees its slot, a keepalive-0 client that sends nothing is closed, topic
// filters per client are bounded, packet ids skip ids still waiting for a PUBACK after the wrap, and a printer
// that stops reading makes the proxy refuse further requests instead of buffering them. Loopback 127.0.22.10-19.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
import mqttPacket from "mqtt-packet";
import { listen, type Listening } from "../lib/core/server.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import { simulatedPrinterTls } from "../lib/sim/tls.ts";
import { serverTlsOptions } from "../lib/tls.ts";
import { requestTopic } from "../lib/bambu/mqtt-topics.ts";
import { createPacketReader, encode, type Packet } from "../lib/bambu/mqtt-wire.ts";
import { ACCESS_CODE, closedPromise, collect, npmClient, rawTls, startProxy, startSim, until, type Proxy } from "./mqtt-helpers.ts";

const SIM_HOST = "127.0.22.10";
const PROXY_HOST = "127.0.22.11";
const FAKE_PRINTER_HOST = "127.0.22.12";
const FAKE_PROXY_HOST = "127.0.22.13";
const END_DESTROY_MS = 300;
const NO_KEEPALIVE_IDLE_MS = 800;
const MAX_CLIENTS = 3;
const MAX_SUBSCRIPTIONS = 4;
const SERIAL = "01P00A000000001";

const connectPacket = (extra: Partial<mqttPacket.IConnectPacket> = {}) =>
  mqttPacket.generate({ cmd: "connect", clientId: "raw", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 30, username: "bblp", password: Buffer.from(ACCESS_CODE), ...extra } as mqttPacket.IConnectPacket);

/** A client that never closes its side: it ignores our FIN and keeps the connection half open. */
function halfOpenTls(host: string, port = 8883): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    // allowHalfOpen is a net option the tls typings leave out.
    const options: ConnectionOptions = { host, port, rejectUnauthorized: false, ...{ allowHalfOpen: true } };
    const socket = tlsConnect(options, () => resolve(socket));
    socket.on("end", () => {});
    socket.once("error", reject);
  });
}

beforeAll(() => setupLogging("info", { quiet: true }));

describe("MQTT edge policy in front of the simulated printer", () => {
  let sim: SimPrinter;
  let proxy: Proxy;

  beforeAll(async () => {
    ({ sim } = await startSim(SIM_HOST, { mqttReportIntervalMs: 0 }));
    proxy = await startProxy(SIM_HOST, sim.identity.serial, PROXY_HOST, "", {
      endDestroyMs: END_DESTROY_MS, noKeepaliveIdleMs: NO_KEEPALIVE_IDLE_MS, maxClients: MAX_CLIENTS, maxSubscriptions: MAX_SUBSCRIPTIONS,
    });
    await until("the printer session", () => proxy.service.status().details?.stateCurrent === true);
  });
  afterAll(async () => {
    await proxy?.stop();
    await sim?.stop();
  });

  test("refused logins whose clients keep their side open are destroyed and free their slots", async () => {
    const logs = captureLogs();
    const hostile: TLSSocket[] = [];
    try {
      // Fill every slot: two wrong codes and an MQTT 5 client, each keeping the connection half open.
      for (const packet of [
        connectPacket({ password: Buffer.from("00000000") }),
        connectPacket({ username: "root" }),
        connectPacket({ protocolVersion: 5 }),
      ]) {
        const socket = await halfOpenTls(PROXY_HOST);
        const got = collect(socket);
        socket.write(packet);
        await until("the refusal", () => got.bytes().length >= 4);
        expect(got.bytes()[0]).toBe(0x20); // CONNACK
        expect(got.bytes()[3]).not.toBe(0);
        hostile.push(socket);
      }
      await Bun.sleep(END_DESTROY_MS + 200);
      // The slots are free again: a good client logs in.
      const good = await npmClient(PROXY_HOST);
      await good.end();
      // And each hostile client learns it was closed as soon as it writes (a reset from a destroyed socket).
      await Promise.all(hostile.map(async (socket) => {
        socket.write(Buffer.from([0xc0, 0x00]));
        await Promise.race([closedPromise(socket), Bun.sleep(1_000).then(() => { throw new Error("still open"); })]);
      }));
    } finally {
      logs.stop();
      for (const socket of hostile) socket.destroy();
    }
    expect(logs.lines.some((l) => l.includes("[p1s/mqtt]") && l.includes("127.0.0.1:") && l.includes("refused login: wrong access code"))).toBe(true);
    expect(logs.lines.some((l) => l.includes("already has"))).toBe(false);
    expect(logs.lines.some((l) => l.includes("connected as") && l.includes('"raw"'))).toBe(false);
  });

  test("a refused client cannot try another code on the same connection", async () => {
    const logs = captureLogs();
    const socket = await halfOpenTls(PROXY_HOST);
    const got = collect(socket);
    try {
      socket.write(connectPacket({ password: Buffer.from("00000000") }));
      await until("the refusal", () => got.bytes().length >= 4);
      socket.write(connectPacket({ clientId: "second-try" }));
      await Bun.sleep(100);
      expect(got.bytes().length).toBe(4); // one refusal, never a CONNACK for the second try
    } finally {
      logs.stop();
      socket.destroy();
    }
    expect(logs.lines.some((l) => l.includes("second-try") || l.includes("connected as"))).toBe(false);
  });

  test("a keepalive-0 client that sends nothing is closed after the idle deadline; one that pings stays", async () => {
    const logs = captureLogs();
    const silent = await rawTls(PROXY_HOST);
    const pinger = await rawTls(PROXY_HOST);
    const silentGot = collect(silent);
    const pings = collect(pinger);
    let pingerClosed = false;
    pinger.once("close", () => (pingerClosed = true));
    let timer: ReturnType<typeof setInterval> | undefined;
    try {
      silent.write(connectPacket({ clientId: "silent0", keepalive: 0 }));
      pinger.write(connectPacket({ clientId: "pinger0", keepalive: 0 }));
      await until("both CONNACKs", () => silentGot.bytes().length >= 4 && pings.bytes().length >= 4);
      const started = Date.now();
      timer = setInterval(() => pinger.write(mqttPacket.generate({ cmd: "pingreq" })), 250);
      await closedPromise(silent);
      expect(Date.now() - started).toBeGreaterThanOrEqual(NO_KEEPALIVE_IDLE_MS - 50);
      expect(Date.now() - started).toBeLessThan(NO_KEEPALIVE_IDLE_MS + 1_000);
      await Bun.sleep(NO_KEEPALIVE_IDLE_MS);
      expect(pingerClosed).toBe(false);
    } finally {
      clearInterval(timer);
      logs.stop();
      silent.destroy();
      pinger.destroy();
    }
    expect(logs.lines.some((l) => l.includes("[p1s/mqtt]") && l.includes(`no packet for ${NO_KEEPALIVE_IDLE_MS / 1000} s`) && l.includes("keepalive (0)"))).toBe(true);
  });

  test(`a client may hold ${MAX_SUBSCRIPTIONS} topic filters; SUBACK says 0x80 for the ones over, in one log line`, async () => {
    const logs = captureLogs();
    const socket = await rawTls(PROXY_HOST);
    const packets: Packet[] = [];
    const reader = createPacketReader(() => 1 << 20, (p) => packets.push(p));
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    const subscribe = (messageId: number, topics: string[]) =>
      socket.write(mqttPacket.generate({ cmd: "subscribe", messageId, subscriptions: topics.map((topic) => ({ topic, qos: 0 })) } as mqttPacket.ISubscribePacket));
    const suback = async (messageId: number) => {
      await until(`SUBACK ${messageId}`, () => packets.some((p) => p.cmd === "suback" && p.messageId === messageId));
      return (packets.find((p) => p.cmd === "suback" && p.messageId === messageId) as mqttPacket.ISubackPacket).granted;
    };
    try {
      socket.write(connectPacket({ clientId: "filters" }));
      const filters = Array.from({ length: MAX_SUBSCRIPTIONS + 2 }, (_, i) => `device/${sim.identity.serial}/report${i ? `/x${i}` : ""}`);
      subscribe(1, filters);
      expect(await suback(1)).toEqual([...Array(MAX_SUBSCRIPTIONS).fill(0), 0x80, 0x80]);
      // One it already holds is granted again, another new one is not.
      subscribe(2, [filters[0]!, "device/+/report"]);
      expect(await suback(2)).toEqual([0, 0x80]);
      // The report filter it holds still works: the state comes at once for a new report subscriber.
      await until("a report", () => packets.some((p) => p.cmd === "publish" && p.topic === `device/${sim.identity.serial}/report`));
    } finally {
      logs.stop();
      socket.destroy();
    }
    expect(logs.lines.filter((l) => l.includes(`a client may hold ${MAX_SUBSCRIPTIONS} subscriptions`))).toHaveLength(1);
  });
});

/** A printer's broker that we control: it logs the proxy in, then does what the test says with publishes. */
async function startFakePrinter(host: string, onPublish: (socket: Socket, packet: Extract<Packet, { cmd: "publish" }>) => void): Promise<Listening & { sockets: ReadonlySet<Socket>; ready: Promise<Socket> }> {
  let ready: (socket: Socket) => void = () => {};
  const readyPromise = new Promise<Socket>((resolve) => (ready = resolve));
  const listening = await listen({
    log: serviceLogger("fake", "printer-mqtt"), what: "fake printer MQTT", host, port: 8883,
    tls: serverTlsOptions(simulatedPrinterTls(SERIAL)),
    onClient(socket) {
      const reader = createPacketReader(() => 16 << 20, (packet) => {
        if (packet.cmd === "connect") socket.write(encode({ cmd: "connack", returnCode: 0, sessionPresent: false }));
        else if (packet.cmd === "subscribe") {
          socket.write(encode({ cmd: "suback", messageId: packet.messageId ?? 0, granted: [0] }));
          ready(socket);
        } else if (packet.cmd === "publish" && packet.topic === requestTopic(SERIAL)) onPublish(socket, packet);
      });
      socket.on("data", (chunk: Buffer) => reader.push(chunk));
    },
  });
  return Object.assign(listening, { ready: readyPromise });
}

describe("MQTT requests toward a printer that misbehaves", () => {
  test("after 65,535 packet ids the proxy skips the one still waiting for its PUBACK", async () => {
    const TOTAL = 65_536;
    const live = new Set<number>();
    let withheld: number | undefined;
    let reused = 0;
    let seen = 0;
    const printer = await startFakePrinter(FAKE_PRINTER_HOST, (socket, packet) => {
      if (packet.qos !== 1) return;
      const id = packet.messageId!;
      seen++;
      if (live.has(id)) reused++;
      // The first request is never acknowledged (until the end); every other one at once.
      if (withheld === undefined) {
        withheld = id;
        live.add(id);
        return;
      }
      socket.write(encode({ cmd: "puback", messageId: id }));
    });
    const proxy = await startProxy(FAKE_PRINTER_HOST, SERIAL, FAKE_PROXY_HOST);
    const printerSide = await printer.ready;
    const logs = captureLogs();
    const client = await rawTls(FAKE_PROXY_HOST);
    let acked = 0;
    let pending = Buffer.alloc(0);
    client.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 4) {
        if (pending[0] === 0x40) acked++;
        pending = pending.subarray(4); // CONNACK and PUBACK are both 4 bytes
      }
    });
    try {
      client.write(connectPacket({ clientId: "counter" }));
      const payload = Buffer.from(JSON.stringify({ print: { command: "gcode_line", param: "M105", sequence_id: "1" } }));
      const topic = requestTopic(SERIAL);
      const started = Date.now();
      await until("CONNACK", () => acked === 0 && pending.length === 0 && Date.now() - started > 100);
      for (let sent = 0; sent < TOTAL;) {
        const batch: Buffer[] = [];
        // Batches small enough to stay under the bound on what waits for the printer (PRINTER_WRITE_BUFFER_BYTES).
        for (let i = 0; i < 1_024 && sent < TOTAL; i++, sent++) {
          batch.push(mqttPacket.generate({ cmd: "publish", topic, payload, qos: 1, messageId: (sent % 65_535) + 1, retain: false, dup: false }));
        }
        client.write(Buffer.concat(batch));
        await until("the PUBACKs to catch up", () => acked >= sent - 1 - 512, 10_000);
        expect(Date.now() - started).toBeLessThan(20_000);
      }
      await until("every request to reach the printer", () => seen === TOTAL, 10_000);
      expect(reused).toBe(0);
      expect(acked).toBe(TOTAL - 1);
      // The withheld one is answered last, and reaches its client.
      printerSide.write(encode({ cmd: "puback", messageId: withheld! }));
      await until("the last PUBACK", () => acked === TOTAL);
    } finally {
      logs.stop();
      client.destroy();
      await proxy.stop();
      await printer.close();
    }
  }, 30_000);

  test("a printer that stops reading: requests past the write bound are refused with a log line, not buffered", async () => {
    const WRITE_BOUND = 64 * 1024;
    let received = 0;
    const printer = await startFakePrinter(FAKE_PRINTER_HOST, (_, packet) => {
      if (packet.payload.includes("gcode_line")) received++;
    });
    const proxy = await startProxy(FAKE_PRINTER_HOST, SERIAL, FAKE_PROXY_HOST, "", { printerWriteBufferBytes: WRITE_BOUND });
    const printerSide = await printer.ready;
    const logs = captureLogs();
    const client = await rawTls(FAKE_PROXY_HOST);
    const got = collect(client);
    try {
      client.write(connectPacket({ clientId: "flooder" }));
      await until("CONNACK", () => got.bytes().length >= 4);
      // Requests of 20 KB (a print command is a few KB), one every 5 ms: a printer that reads takes them all.
      const payload = Buffer.from(JSON.stringify({ print: { command: "gcode_line", param: "x".repeat(20_000), sequence_id: "1" } }));
      const publish = mqttPacket.generate({ cmd: "publish", topic: requestTopic(SERIAL), payload, qos: 0, retain: false, dup: false });
      for (let i = 0; i < 20; i++) {
        client.write(publish);
        await Bun.sleep(5);
      }
      await until("the paced requests at the printer", () => received === 20);
      // Now it stops reading: once the kernel's buffers are full, what waits in ours is bounded.
      printerSide.pause();
      const started = Date.now();
      for (let i = 0; i < 2_000 && !client.destroyed && Date.now() - started < 10_000; i++) {
        client.write(publish);
        await Bun.sleep(2);
      }
      await closedPromise(client);
    } finally {
      logs.stop();
      client.destroy();
      await proxy.stop();
      await printer.close();
    }
    const line = logs.lines.find((l) => l.includes("[p1s/mqtt]") && l.includes("the printer is not taking requests as fast as they come"));
    expect(line).toBeDefined();
    const waiting = Number(/\((\d+) bytes waiting/.exec(line!)?.[1]);
    expect(waiting).toBeLessThanOrEqual(WRITE_BOUND);
  }, 20_000);
});

describe("MQTT reports the merged state cannot keep", () => {
  test("a report nested past the depth limit is passed on, and the part not kept is logged", async () => {
    const printer = await startFakePrinter(FAKE_PRINTER_HOST, () => {});
    const proxy = await startProxy(FAKE_PRINTER_HOST, SERIAL, FAKE_PROXY_HOST);
    const printerSide = await printer.ready;
    const logs = captureLogs();
    try {
      let deep: Record<string, unknown> = { leaf: 1 };
      for (let i = 0; i < 200; i++) deep = { d: deep };
      const report = { print: { command: "push_status", deep } };
      printerSide.write(encode({ cmd: "publish", topic: `device/${SERIAL}/report`, payload: Buffer.from(JSON.stringify(report)), qos: 0, retain: false, dup: false }));
      await until("the line", () => logs.lines.some((l) => l.includes("not kept in the merged state")), 3_000);
      expect(logs.lines.find((l) => l.includes("not kept in the merged state"))).toContain("nested deeper than");
    } finally {
      logs.stop();
      await proxy.stop();
      await printer.close();
    }
  });
});
