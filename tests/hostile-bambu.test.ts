// A hostile LAN against one proxied P1S (MQTT 8883, bind 3000 and 3002, chamber camera 6000) and one proxied
// P2S (file tunnel 6000): silent clients, clients that send a little and then keep the socket open, slow-loris
// first requests and pipelined floods are each closed within their (injected, short) deadline with a log line
// naming the peer, while a well-behaved MQTT client keeps getting reports and a camera viewer keeps its
// frames. Every loop is bounded in count and time. Loopback 127.0.22.60-63.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import mqttPacket from "mqtt-packet";
import type { Service } from "../lib/core/service.ts";
import { TLS_HANDSHAKE_TIMEOUT_MS } from "../lib/core/server.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { createBindService } from "../lib/bambu/bind.ts";
import { decodeBindFrame, detectRequest, encodeBindFrame } from "../lib/bambu/bind-codec.ts";
import { encodeLogin } from "../lib/bambu/chamber-codec.ts";
import { createChamberService } from "../lib/bambu/chamber.ts";
import { createMqttService, MAX_REFUSED_PUBLISHES, MAX_SUBSCRIPTIONS_PER_CLIENT } from "../lib/bambu/mqtt.ts";
import { requestTopic } from "../lib/bambu/mqtt-topics.ts";
import { createTunnelService } from "../lib/bambu/tunnel.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { encodeTunnelLogin } from "../lib/sim/tunnel.ts";
import { ACCESS_CODE, watch, type TestViewer } from "./chamber-fixtures.ts";
import { npmClient, until, type TestClient } from "./mqtt-helpers.ts";
import { serviceContext } from "./support.ts";

const P1S_SIM = "127.0.22.60";
const P1S_PROXY = "127.0.22.61";
const P2S_SIM = "127.0.22.62";
const P2S_PROXY = "127.0.22.63";
/** Every first-request deadline, shortened. */
const DEADLINE_MS = 500;
const END_DESTROY_MS = 300;
/** How late a close may come after its deadline on a busy machine. */
const SLACK_MS = 700;
const SLOW_LORIS_BYTE_MS = 150;

interface Port {
  what: string;
  host: string;
  port: number;
  tls: boolean;
  /** The printer/service tag its log lines carry. */
  tag: string;
  /** A valid-looking first request. */
  request: Buffer;
  /** What the log line says when the first request does not come in time. */
  timeoutLine: string;
}

const mqttConnect = (password = ACCESS_CODE, clientId = "hostile") =>
  mqttPacket.generate({ cmd: "connect", clientId, protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 30, username: "bblp", password: Buffer.from(password) } as mqttPacket.IConnectPacket);

const PORTS: Port[] = [
  { what: "MQTT", host: P1S_PROXY, port: 8883, tls: true, tag: "[p1s/mqtt]", request: mqttConnect(), timeoutLine: `no CONNECT within ${DEADLINE_MS / 1000} s` },
  { what: "bind 3000", host: P1S_PROXY, port: 3000, tls: false, tag: "[p1s/bind]", request: encodeBindFrame(detectRequest()), timeoutLine: `no complete detect request within ${DEADLINE_MS / 1000} s` },
  { what: "bind 3002", host: P1S_PROXY, port: 3002, tls: true, tag: "[p1s/bind]", request: encodeBindFrame(detectRequest()), timeoutLine: `no complete detect request within ${DEADLINE_MS / 1000} s` },
  { what: "chamber", host: P1S_PROXY, port: 6000, tls: true, tag: "[p1s/chamber]", request: encodeLogin({ username: "bblp", accessCode: ACCESS_CODE }), timeoutLine: "closing: no login" },
  { what: "tunnel", host: P2S_PROXY, port: 6000, tls: true, tag: "[p2s/tunnel]", request: Buffer.concat(encodeTunnelLogin(ACCESS_CODE)), timeoutLine: "closing: no login" },
];

interface Hostile {
  socket: Socket;
  /** "127.0.0.1:40312", as the proxy logs it. */
  peer: string;
  openedAt: number;
  /** Resolves with the ms from connect to our FIN, reset or close, whichever comes first. */
  closed: Promise<number>;
  received: () => number;
}

/** A client that never closes its side on its own (allowHalfOpen: our FIN does not make it close). */
function open(host: string, port: number, tls: boolean): Promise<Hostile> {
  return new Promise((resolve, reject) => {
    let received = 0;
    const onReady = () => {
      const openedAt = performance.now();
      const closed = new Promise<number>((done) => {
        const end = () => done(performance.now() - openedAt);
        socket.once("end", end);
        socket.once("close", end);
        socket.once("error", end);
      });
      socket.off("error", reject);
      socket.on("error", () => {});
      resolve({ socket, peer: `${socket.localAddress}:${socket.localPort}`, openedAt, closed, received: () => received });
    };
    const options: ConnectionOptions = { host, port, rejectUnauthorized: false, ...{ allowHalfOpen: true } };
    const socket: Socket = tls ? tlsConnect(options, onReady) : tcpConnect({ host, port, allowHalfOpen: true }, onReady);
    socket.on("data", (chunk: Buffer) => void (received += chunk.length));
    socket.once("error", reject);
  });
}

function expectClosedInTime(elapsed: number, deadlineMs: number): void {
  expect(elapsed).toBeGreaterThanOrEqual(deadlineMs - 50);
  expect(elapsed).toBeLessThan(deadlineMs + SLACK_MS);
}

function lineFor(lines: string[], tag: string, peer: string, text: string): string | undefined {
  return lines.find((l) => l.includes(tag) && l.includes(`${peer} `) && l.includes(text));
}

let p1s: SimPrinter;
let p2s: SimPrinter;
const services: Service[] = [];
let reports: TestClient;
let viewer: TestViewer;
/** TCP connections to every TLS port that never start TLS, opened first and checked last (their deadline is
 * the listener's 10 s TLS handshake deadline, not injectable per service). */
const neverTls: { port: Port; hostile: Hostile }[] = [];
const logs = captureLogs();

/** The well-behaved clients are still served: more reports and more frames than before `during`. */
async function wellBehavedKeepTheirStreams(during: () => Promise<void>): Promise<void> {
  const reportsBefore = reports.messages.length;
  const framesBefore = viewer.frames.length;
  await during();
  await until("another report", () => reports.messages.length > reportsBefore + 1, 3_000);
  await viewer.moreFrames(Math.max(1, framesBefore + 2 - viewer.frames.length), 3_000);
  expect(viewer.isClosed).toBe(false);
  expect(reports.client.connected).toBe(true);
}

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  p1s = await startSimulatedBambu({ host: P1S_SIM, model: "P1S", accessCode: ACCESS_CODE, services: ["mqtt", "chamber"], mqttReportIntervalMs: 200, cameraFps: 10 });
  p2s = await startSimulatedBambu({ host: P2S_SIM, model: "P2S", accessCode: ACCESS_CODE, services: ["tunnel"] });
  const p1sCtx = serviceContext(`name = "p1s"\nhost = "${P1S_SIM}"\nserial = "${p1s.identity.serial}"\naccess_code = "${ACCESS_CODE}"\nbind = "${P1S_PROXY}"\nmodel = "P1S"\nports = { bind = 3000, bind_tls = 3002 }`);
  const p2sCtx = serviceContext(`name = "p2s"\nhost = "${P2S_SIM}"\nserial = "${p2s.identity.serial}"\naccess_code = "${ACCESS_CODE}"\nbind = "${P2S_PROXY}"\nmodel = "P2S"`);
  services.push(
    createMqttService(p1sCtx, { connectTimeoutMs: DEADLINE_MS, endDestroyMs: END_DESTROY_MS }),
    createBindService(p1sCtx, { silenceMs: DEADLINE_MS, endDestroyMs: END_DESTROY_MS }),
    createChamberService(p1sCtx, { viewerLoginTimeoutMs: DEADLINE_MS, endDestroyMs: END_DESTROY_MS, lingerMs: 60_000 }),
    createTunnelService(p2sCtx, { loginTimeoutMs: DEADLINE_MS, endDestroyMs: END_DESTROY_MS }),
  );
  for (const service of services) await service.start();
  for (const port of PORTS.filter((p) => p.tls)) neverTls.push({ port, hostile: await open(port.host, port.port, false) });

  reports = await npmClient(P1S_PROXY, { clientId: "well-behaved" });
  await reports.client.subscribeAsync(`device/${p1s.identity.serial}/report`);
  await until("the first reports", () => reports.messages.length >= 2);
  viewer = watch(P1S_PROXY, 6000, { accessCode: ACCESS_CODE });
  await viewer.moreFrames(2);
});

afterAll(async () => {
  logs.stop();
  await reports?.end();
  viewer?.close();
  for (const { hostile } of neverTls) hostile.socket.destroy();
  for (const service of services) await service.stop();
  await p1s?.stop();
  await p2s?.stop();
});

describe("hostile clients on every Bambu port of the proxy", () => {
  test("silent clients (connected, TLS done, nothing sent) are closed at the first-request deadline", async () => {
    await wellBehavedKeepTheirStreams(async () => {
      const silent = await Promise.all(PORTS.map(async (port) => ({ port, hostile: await open(port.host, port.port, port.tls) })));
      for (const { port, hostile } of silent) {
        expectClosedInTime(await hostile.closed, DEADLINE_MS);
        expect(hostile.received()).toBe(0);
        expect(lineFor(logs.lines, port.tag, hostile.peer, port.timeoutLine)).toBeDefined();
        hostile.socket.destroy();
      }
    });
  });

  test("half-open clients (a little of the first request, then nothing, socket kept open) are closed at the deadline", async () => {
    await wellBehavedKeepTheirStreams(async () => {
      const halfOpen = await Promise.all(PORTS.map(async (port) => {
        const hostile = await open(port.host, port.port, port.tls);
        hostile.socket.write(port.request.subarray(0, Math.min(10, port.request.length - 1)));
        return { port, hostile };
      }));
      for (const { port, hostile } of halfOpen) {
        expectClosedInTime(await hostile.closed, DEADLINE_MS);
        expect(hostile.received()).toBe(0);
        expect(lineFor(logs.lines, port.tag, hostile.peer, port.timeoutLine)).toBeDefined();
        hostile.socket.destroy();
      }
    });
  });

  test(`slow-loris (a valid first request, one byte every ${SLOW_LORIS_BYTE_MS} ms) is closed at the deadline, not at the last byte`, async () => {
    await wellBehavedKeepTheirStreams(async () => {
      const slow = await Promise.all(PORTS.map(async (port) => {
        const hostile = await open(port.host, port.port, port.tls);
        let gone = false;
        void hostile.closed.then(() => (gone = true));
        // Bounded: at most the whole request, and never past 3 s.
        void (async () => {
          for (let i = 0; i < port.request.length && !gone && performance.now() - hostile.openedAt < 3_000; i++) {
            hostile.socket.write(port.request.subarray(i, i + 1));
            await Bun.sleep(SLOW_LORIS_BYTE_MS);
          }
        })();
        return { port, hostile };
      }));
      for (const { port, hostile } of slow) {
        // Each request is longer than DEADLINE_MS / SLOW_LORIS_BYTE_MS bytes.
        expect(port.request.length * SLOW_LORIS_BYTE_MS).toBeGreaterThan(2 * DEADLINE_MS);
        expectClosedInTime(await hostile.closed, DEADLINE_MS);
        expect(lineFor(logs.lines, port.tag, hostile.peer, port.timeoutLine)).toBeDefined();
        hostile.socket.destroy();
      }
    });
  });

  test(`an MQTT PUBLISH flood (5,000 pipelined, to a topic the printer does not take) is closed after ${MAX_REFUSED_PUBLISHES} refusals`, async () => {
    await wellBehavedKeepTheirStreams(async () => {
      const flooder = await open(P1S_PROXY, 8883, true);
      const publish = mqttPacket.generate({ cmd: "publish", topic: `device/${p1s.identity.serial}/report`, payload: Buffer.from("{}"), qos: 0, retain: false, dup: false });
      flooder.socket.write(Buffer.concat([mqttConnect(ACCESS_CODE, "publish-flood"), ...Array(5_000).fill(publish)]));
      expect(await flooder.closed).toBeLessThan(2_000);
      await until("the log line", () => lineFor(logs.lines, "[p1s/mqtt]", flooder.peer, `${MAX_REFUSED_PUBLISHES} refused publishes`) !== undefined, 1_000);
      // One line per refusal up to the limit, then the close: never a line per packet of the flood.
      expect(logs.lines.filter((l) => l.includes(`${flooder.peer} `) && l.includes("refused a publish")).length).toBeLessThanOrEqual(MAX_REFUSED_PUBLISHES);
      flooder.socket.destroy();
    });
  });

  test("an MQTT SUBSCRIBE flood (2,000 pipelined filters) is answered, holds at most the limit, and logs once", async () => {
    await wellBehavedKeepTheirStreams(async () => {
      const flooder = await open(P1S_PROXY, 8883, true);
      const chunks: Buffer[] = [];
      flooder.socket.on("data", (c: Buffer) => chunks.push(c));
      const subscribes = Array.from({ length: 2_000 }, (_, i) =>
        mqttPacket.generate({ cmd: "subscribe", messageId: i + 1, subscriptions: [{ topic: `flood/${i}`, qos: 0 }] } as mqttPacket.ISubscribePacket));
      flooder.socket.write(Buffer.concat([mqttConnect(ACCESS_CODE, "subscribe-flood"), ...subscribes]));
      // CONNACK (4 bytes) and 2,000 SUBACKs (5 bytes each).
      await until("every SUBACK", () => flooder.received() >= 4 + 2_000 * 5, 3_000);
      const subacks = Buffer.concat(chunks).subarray(4);
      const codes = Array.from({ length: 2_000 }, (_, i) => subacks[i * 5 + 4]);
      expect(codes.filter((c) => c === 0).length).toBe(MAX_SUBSCRIPTIONS_PER_CLIENT);
      expect(codes.filter((c) => c === 0x80).length).toBe(2_000 - MAX_SUBSCRIPTIONS_PER_CLIENT);
      expect(logs.lines.filter((l) => l.includes(`${flooder.peer} `) && l.includes("a client may hold")).length).toBe(1);
      flooder.socket.destroy();
    });
  });

  test("a bind client pipelining 1,000 detect requests gets one answer and is closed", async () => {
    await wellBehavedKeepTheirStreams(async () => {
      for (const [port, tls] of [[3000, false], [3002, true]] as const) {
        const flooder = await open(P1S_PROXY, port, tls);
        const chunks: Buffer[] = [];
        flooder.socket.on("data", (c: Buffer) => chunks.push(c));
        flooder.socket.write(Buffer.concat(Array(1_000).fill(encodeBindFrame(detectRequest()))));
        expect(await flooder.closed).toBeLessThan(END_DESTROY_MS + SLACK_MS);
        const reply = Buffer.concat(chunks);
        const frame = decodeBindFrame(reply);
        expect(frame.kind === "frame" && frame.bytes).toBe(reply.length);
        expect(lineFor(logs.lines, "[p1s/bind]", flooder.peer, "answered detect")).toBeDefined();
        flooder.socket.destroy();
      }
    });
  });

  test("TCP connections that never start TLS are closed at the handshake deadline on every TLS port", async () => {
    await wellBehavedKeepTheirStreams(async () => {
      for (const { port, hostile } of neverTls) {
        const elapsed = await Promise.race([hostile.closed, Bun.sleep(TLS_HANDSHAKE_TIMEOUT_MS + SLACK_MS * 2).then(() => Infinity)]);
        // Opened in beforeAll: the deadline may already have passed while the other tests ran.
        expect(elapsed).toBeGreaterThanOrEqual(TLS_HANDSHAKE_TIMEOUT_MS - 50);
        expect(elapsed).toBeLessThan(TLS_HANDSHAKE_TIMEOUT_MS + SLACK_MS * 2);
        expect(lineFor(logs.lines, port.tag, hostile.peer, "no TLS handshake within")).toBeDefined();
      }
    });
  }, TLS_HANDSHAKE_TIMEOUT_MS + 10_000);
});
