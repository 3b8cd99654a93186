// The socket-level fuzzer: simulated printers (a P1S, a P2S, an X1C when FFmpeg is here, a FlashForge
// Adventurer 5M) with pandaproxy in front of them, started once per run; each case sends random or truncated
// bytes to one listener, then hangs up its sending side, stays silent, or resets. Property: the connection is
// answered or closed within its deadline (short ones injected), the service's client count comes back down (no
// held slot), nothing is thrown out of a handler (no uncaught exception or unhandled rejection in the process),
// and an MQTT subscriber on the same printer keeps getting its reports.
import fc from "fast-check";
import { spawnSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import mqtt from "mqtt";
import { parseConfig } from "../../lib/config.ts";
import { captureLogs } from "../../lib/log.ts";
import { END_DESTROY_MS } from "../../lib/core/edge.ts";
import type { ServiceContext } from "../../lib/core/service.ts";
import { buildServices, type ServiceFactories } from "../../lib/printer-services.ts";
import { createBindService } from "../../lib/bambu/bind.ts";
import { detectRequest, encodeBindFrame } from "../../lib/bambu/bind-codec.ts";
import { encodeLogin } from "../../lib/bambu/chamber-codec.ts";
import { createChamberService } from "../../lib/bambu/chamber.ts";
import { createFtpService } from "../../lib/bambu/ftp.ts";
import { createMqttService } from "../../lib/bambu/mqtt.ts";
import { encode, encodePublish } from "../../lib/bambu/mqtt-wire.ts";
import { createRtspService } from "../../lib/bambu/rtsp.ts";
import { encodeSearch } from "../../lib/bambu/ssdp-message.ts";
import { createSsdpService } from "../../lib/bambu/ssdp.ts";
import { createTunnelService } from "../../lib/bambu/tunnel.ts";
import { createFlashforgeCamera } from "../../lib/flashforge/camera.ts";
import { createFlashforgeDiscovery } from "../../lib/flashforge/discovery.ts";
import { createFlashforgeHttp } from "../../lib/flashforge/http.ts";
import { createFlashforgeTcp } from "../../lib/flashforge/tcp.ts";
import { startSimulatedBambu, type SimPrinter } from "../../lib/sim/bambu.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../../lib/sim/flashforge/index.ts";
import { startSupervisor, type Supervisor } from "../../lib/supervisor.ts";
import { testStateDir } from "../support.ts";
import { bytes } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const ACCESS_CODE = "12345678";
const CHECK_CODE = "1a2b3c4d";
/** Printers on .31-.34, the proxy in front of each on .41-.44 (this fuzzer's own 127.0.21.0/24). */
const HOSTS = {
  p1s: { sim: "127.0.21.31", proxy: "127.0.21.41" },
  p2s: { sim: "127.0.21.32", proxy: "127.0.21.42" },
  x1c: { sim: "127.0.21.33", proxy: "127.0.21.43" },
  ad5m: { sim: "127.0.21.34", proxy: "127.0.21.44" },
};
const SSDP_TARGET = "127.0.21.99";
/** Where the fuzzing clients (and the well-behaved subscriber) connect from. */
const CLIENT_ADDRESS = "127.0.21.98";
/** Ports no other test uses, the same on the simulators' and the proxy's addresses. */
const BAMBU = { chamber: 21600, rtsp: 21322, rtsp_plain: 21554, mqtt: 21883, ftp: 21990, bind: 21300, bind_tls: 21302, ssdp: 21021 };
const FLASHFORGE = { tcp: 21899, http: 21898, discovery: 21889, camera: 21080 };

/** The deadline injected for silent clients wherever a service takes one. */
const SILENT_CLIENT_MS = 600;
/** After our FIN: the proxy's own END_DESTROY_MS (the services here get a shorter one) and a margin for a busy machine. */
const HALF_CLOSED_DEADLINE_MS = END_DESTROY_MS + 1_000;
const SLACK_MS = 1_000;
/** The simulated P1S reports this often; the subscriber must have heard one this recently at the end of a case. */
const REPORT_INTERVAL_MS = 250;
const REPORT_STALE_MS = 3_000;
/** How long a service has, after we hang up, to count the client gone. */
const SLOT_RELEASE_MS = 2_000;

const fail = (why: string): never => {
  throw new Error(why);
};

const hasFfmpeg = () => spawnSync("ffmpeg", ["-version"], { stdio: "ignore" }).status === 0;

/** The services with short deadlines injected where their factories take one. */
const FACTORIES: ServiceFactories = {
  mqtt: (ctx) => [createMqttService(ctx, { connectTimeoutMs: SILENT_CLIENT_MS, endDestroyMs: 300, noKeepaliveIdleMs: 5_000 })],
  bind: (ctx) => [createBindService(ctx, { silenceMs: SILENT_CLIENT_MS, endDestroyMs: 300 })],
  ssdp: (ctx) => [createSsdpService(ctx)],
  ftp: (ctx) => [createFtpService(ctx, { clientIdleMs: SILENT_CLIENT_MS, handshakeTimeoutMs: 2_000 })],
  camera: (ctx: ServiceContext) =>
    ctx.printer.model === "P2S" ? [createTunnelService(ctx, { loginTimeoutMs: SILENT_CLIENT_MS, idleTimeoutMs: SILENT_CLIENT_MS, endDestroyMs: 300 })]
    : ctx.printer.model === "X1C" ? [createRtspService(ctx, { firstRequestTimeoutMs: SILENT_CLIENT_MS, idleTimeoutMs: 5_000 })]
    : [createChamberService(ctx, { viewerLoginTimeoutMs: SILENT_CLIENT_MS })],
  tcp: (ctx) => [createFlashforgeTcp(ctx, { clientIdleTimeoutMs: 5_000 })],
  http: (ctx) => [createFlashforgeHttp(ctx)],
  discovery: (ctx) => [createFlashforgeDiscovery(ctx)],
  flashforge_camera: (ctx) => [createFlashforgeCamera(ctx, { requestHeadTimeoutMs: SILENT_CLIENT_MS })],
};

interface Listener {
  name: string;
  printer: keyof typeof HOSTS;
  /** The service whose client count must come back down. */
  service: string;
  port: number;
  transport: "tcp" | "tls" | "udp";
  /** Bytes a real client would send first (the fuzzer truncates, extends and flips them). */
  seeds: Buffer[];
  /** How long a silent client may be held without an answer; undefined: not injectable, never left silent. */
  silentMs?: number;
  /** Keeps sending after a FIN (a camera stream, a relayed session): answered is enough, closed not required. */
  streams?: boolean;
}

const rtspRequest = (method: string, extra = "") => Buffer.from(`${method} rtsp://127.0.21.43/streaming/live/1 RTSP/1.0\r\nCSeq: 1\r\n${extra}\r\n`);
const framedTunnelLogin = (code: string) => {
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16, 0);
  header.writeUInt16LE(0x013f, 4);
  header[6] = 1;
  const payload = Buffer.alloc(16);
  payload.write("bblp", 0, "latin1");
  payload.write(code, 8, "latin1");
  return Buffer.concat([header, payload]);
};
const httpPost = (path: string, body: string) =>
  Buffer.from(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
const mqttConnect = (password: string) =>
  encode({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId: "fuzz", keepalive: 30, username: "bblp", password: Buffer.from(password) });

function listeners(withRtsp: boolean): Listener[] {
  const all: Listener[] = [
    { name: "MQTT", printer: "p1s", service: "mqtt", port: BAMBU.mqtt, transport: "tls", silentMs: SILENT_CLIENT_MS, seeds: [
      mqttConnect(ACCESS_CODE), mqttConnect("wrong"),
      Buffer.concat([mqttConnect(ACCESS_CODE), encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "device/+/report", qos: 0 }] })]),
      Buffer.concat([mqttConnect(ACCESS_CODE), encodePublish("device/01PA0000001/request", Buffer.from('{"pushing":{"command":"pushall"}}'))]),
    ] },
    { name: "FTPS control", printer: "p1s", service: "ftp", port: BAMBU.ftp, transport: "tls", silentMs: SILENT_CLIENT_MS, seeds: [
      Buffer.from(`USER bblp\r\nPASS ${ACCESS_CODE}\r\nPWD\r\nPASV\r\nQUIT\r\n`), Buffer.from("USER bblp\r\nPASS 0\r\n"), Buffer.from("EPRT |1|127.0.21.9|1|\r\nLIST\r\n"),
    ] },
    { name: "chamber camera", printer: "p1s", service: "chamber", port: BAMBU.chamber, transport: "tls", silentMs: SILENT_CLIENT_MS, streams: true, seeds: [
      encodeLogin({ username: "bblp", accessCode: ACCESS_CODE }), encodeLogin({ username: "bblp", accessCode: "wrong" }),
    ] },
    { name: "bind (plain)", printer: "p1s", service: "bind", port: BAMBU.bind, transport: "tcp", silentMs: SILENT_CLIENT_MS, seeds: [encodeBindFrame(detectRequest())] },
    { name: "bind (TLS)", printer: "p1s", service: "bind", port: BAMBU.bind_tls, transport: "tls", silentMs: SILENT_CLIENT_MS, seeds: [encodeBindFrame(detectRequest())] },
    { name: "SSDP", printer: "p1s", service: "ssdp", port: BAMBU.ssdp, transport: "udp", seeds: [encodeSearch(), encodeSearch("ssdp:all")] },
    { name: "file tunnel", printer: "p2s", service: "tunnel", port: BAMBU.chamber, transport: "tls", silentMs: SILENT_CLIENT_MS, streams: true, seeds: [
      framedTunnelLogin(ACCESS_CODE), framedTunnelLogin("00000000"),
    ] },
    { name: "FlashForge TCP", printer: "ad5m", service: "tcp", port: FLASHFORGE.tcp, transport: "tcp", seeds: [
      Buffer.from("~M601 S1\r\n~M115\r\n~M27\r\n"), Buffer.from("~M28 10 0:/user/fuzz.gx\r\n0123456789~M29\r\n"), Buffer.from("~M146 r255 g0 b0 F0\r\n"),
    ] },
    { name: "FlashForge HTTP", printer: "ad5m", service: "http", port: FLASHFORGE.http, transport: "tcp", seeds: [
      httpPost("/detail", `{"serialNumber":"SNMOMC9900001","checkCode":"${CHECK_CODE}"}`),
      Buffer.from("GET /product HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] },
    { name: "FlashForge camera", printer: "ad5m", service: "camera", port: FLASHFORGE.camera, transport: "tcp", silentMs: SILENT_CLIENT_MS, streams: true, seeds: [
      Buffer.from("GET /?action=stream HTTP/1.1\r\nHost: x\r\n\r\n"), Buffer.from("GET /?action=snapshot HTTP/1.1\r\n\r\n"), Buffer.from("GET //[ HTTP/1.1\r\n\r\n"),
    ] },
    { name: "FlashForge discovery", printer: "ad5m", service: "discovery", port: FLASHFORGE.discovery, transport: "udp", seeds: [Buffer.from("www.usr"), Buffer.alloc(20)] },
  ];
  if (withRtsp) {
    const seeds = [rtspRequest("OPTIONS"), rtspRequest("DESCRIBE", 'Authorization: Digest username="bblp", response="00"\r\n'), rtspRequest("SETUP", "Transport: RTP/AVP;unicast;client_port=70000-70001\r\n")];
    all.push(
      { name: "RTSPS", printer: "x1c", service: "rtsp", port: BAMBU.rtsp, transport: "tls", silentMs: SILENT_CLIENT_MS, seeds },
      { name: "RTSP (plain)", printer: "x1c", service: "rtsp", port: BAMBU.rtsp_plain, transport: "tcp", silentMs: SILENT_CLIENT_MS, seeds },
    );
  }
  return all;
}

interface Fixture {
  supervisor: Supervisor;
  sims: (SimPrinter | SimFlashforge)[];
  subscriber: mqtt.MqttClient;
  lastReportAt: () => number;
  listeners: Listener[];
  /** Thrown out of a handler (or a rejection nobody handled) since the last case began. */
  escaped: unknown[];
  /** Log lines since the last case began. */
  logLines: string[];
  stopWatching(): void;
}

const printerLines = (name: string, model: string, serial: string, services: string[], extra: string[] = []) => [
  "[[printer]]", `name = "${name}"`, `host = "${HOSTS[name as keyof typeof HOSTS].sim}"`, `serial = "${serial}"`, `bind = "${HOSTS[name as keyof typeof HOSTS].proxy}"`,
  `model = "${model}"`, `access_code = "${ACCESS_CODE}"`, `services = ${JSON.stringify(services)}`,
  `ports = { ${Object.entries(BAMBU).map(([k, v]) => `${k} = ${v}`).join(", ")} }`,
  `printer_ports = { ${Object.entries(BAMBU).map(([k, v]) => `${k} = ${v}`).join(", ")} }`,
  `ssdp_targets = ["${SSDP_TARGET}"]`, "ssdp_listen = false", ...extra, "",
];

let fixture: Promise<Fixture> | undefined;
const start = () => (fixture ??= startFixture());

async function startFixture(): Promise<Fixture> {
  const withRtsp = hasFfmpeg();
  const simPorts = { ...BAMBU };
  const sims: (SimPrinter | SimFlashforge)[] = [];
  const p1s = await startSimulatedBambu({ host: HOSTS.p1s.sim, model: "P1S", accessCode: ACCESS_CODE, services: ["mqtt", "ftp", "chamber", "bind"], ports: simPorts, mqttReportIntervalMs: REPORT_INTERVAL_MS, cameraFps: 2 });
  sims.push(p1s);
  const p2s = await startSimulatedBambu({ host: HOSTS.p2s.sim, model: "P2S", accessCode: ACCESS_CODE, services: ["tunnel"], ports: simPorts });
  sims.push(p2s);
  const x1c = withRtsp ? await startSimulatedBambu({ host: HOSTS.x1c.sim, model: "X1C", accessCode: ACCESS_CODE, services: ["rtsp"], ports: simPorts }) : undefined;
  if (x1c) sims.push(x1c);
  const ad5m = await startSimulatedFlashforge({ host: HOSTS.ad5m.sim, checkCode: CHECK_CODE, ports: FLASHFORGE });
  sims.push(ad5m);
  const lines = [
    "[proxy]", `state_dir = "${testStateDir()}"`, "[web]", 'listen = ""', "",
    ...printerLines("p1s", "P1S", p1s.identity.serial, ["mqtt", "ftp", "camera", "bind", "ssdp"]),
    ...printerLines("p2s", "P2S", p2s.identity.serial, ["camera"]),
    ...(x1c ? printerLines("x1c", "X1C", x1c.identity.serial, ["camera"]) : []),
    "[[printer]]", 'name = "ad5m"', 'type = "flashforge"', `host = "${HOSTS.ad5m.sim}"`, `serial = "${ad5m.identity.serial}"`, `check_code = "${CHECK_CODE}"`,
    `bind = "${HOSTS.ad5m.proxy}"`, `ports = { ${Object.entries(FLASHFORGE).map(([k, v]) => `${k} = ${v}`).join(", ")} }`,
    `printer_ports = { ${Object.entries(FLASHFORGE).map(([k, v]) => `${k} = ${v}`).join(", ")} }`,
  ];
  const config = parseConfig(lines.join("\n") + "\n", "sockets fuzz printers.toml");
  const supervisor = await startSupervisor(config, {
    servicesOf: (ctx) => buildServices(ctx, ctx.printer.type === "flashforge"
      ? { ...FACTORIES, camera: FACTORIES.flashforge_camera! }
      : FACTORIES),
  });

  const logs = captureLogs();
  const escaped: unknown[] = [];
  const onEscape = (error: unknown) => void escaped.push(error);
  process.on("uncaughtException", onEscape);
  process.on("unhandledRejection", onEscape);

  let lastReport = 0;
  const subscriber = mqtt.connect({
    host: HOSTS.p1s.proxy, port: BAMBU.mqtt, protocol: "mqtts", username: "bblp", password: ACCESS_CODE, rejectUnauthorized: false, reconnectPeriod: 500,
    // mqtt.js hands its options to tls.connect, which takes the source address too.
    ...({ localAddress: CLIENT_ADDRESS } as object),
  });
  subscriber.on("message", () => void (lastReport = Date.now()));
  subscriber.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the well-behaved MQTT subscriber got no report in 10 s")), 10_000);
    subscriber.on("connect", () => subscriber.subscribe(`device/${p1s.identity.serial}/report`));
    subscriber.once("message", () => (clearTimeout(timer), resolve()));
  });
  return {
    supervisor, sims, subscriber, lastReportAt: () => lastReport, listeners: listeners(withRtsp), escaped, logLines: logs.lines,
    stopWatching() {
      logs.stop();
      process.off("uncaughtException", onEscape);
      process.off("unhandledRejection", onEscape);
    },
  };
}

export async function teardown(): Promise<void> {
  if (!fixture) return;
  const f = await fixture.catch(() => undefined);
  fixture = undefined;
  if (!f) return;
  f.subscriber.end(true);
  await f.supervisor.stop();
  await Promise.allSettled(f.sims.map((s) => s.stop()));
  f.stopWatching();
}

const clientsOf = (f: Fixture, l: Listener) => {
  const printer = f.supervisor.printers.find((p) => p.config.name === l.printer);
  return printer?.services.find((s) => s.name === l.service)?.status().clients ?? 0;
};

type Ending = "half-close" | "silent" | "reset";
interface Outcome {
  answered: boolean;
  closed: boolean;
  /** The TCP connection (or the TLS handshake) was made; a refused or failed handshake is a failure. */
  connected: boolean;
  connectError?: string;
  ms: number;
}

/** One connection: connect (TLS when `tls`), send `payload`, end as asked; resolves when answered-or-closed or at `waitMs`. */
function probe(l: Listener, payload: Buffer, tls: boolean, ending: Ending, waitMs: number, needClose: boolean): Promise<Outcome & { socket: Socket }> {
  return new Promise((resolve) => {
    const host = HOSTS[l.printer].proxy;
    const started = Date.now();
    const socket: Socket = tls
      ? tlsConnect({ socket: tcpConnect({ host, port: l.port, localAddress: CLIENT_ADDRESS }), rejectUnauthorized: false, ciphers: "AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384", maxVersion: "TLSv1.2" })
      : tcpConnect({ host, port: l.port, localAddress: CLIENT_ADDRESS });
    let answered = false;
    let closed = false;
    let connected = false;
    let connectError: string | undefined;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ answered, closed, connected, connectError, ms: Date.now() - started, socket });
    };
    const timer = setTimeout(finish, waitMs);
    socket.on(tls ? "secureConnect" : "connect", () => {
      connected = true;
      if (ending === "reset") {
        socket.write(payload);
        socket.destroy();
        closed = true;
        return finish();
      }
      if (ending === "half-close") socket.end(payload);
      else socket.write(payload);
    });
    socket.on("data", () => {
      answered = true;
      if (!needClose) finish();
    });
    socket.on("error", (error) => void (connected || (connectError ??= error.message)));
    socket.on("close", () => {
      closed = true;
      finish();
    });
  });
}

function sendDatagram(l: Listener, payload: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    socket.on("error", () => {});
    socket.bind(0, CLIENT_ADDRESS, () => socket.send(payload, l.port, HOSTS[l.printer].proxy, () => setTimeout(() => (socket.close(), resolve()), 20)));
  });
}

const fuzzCase = fc.record({
  listener: fc.nat(),
  payload: fc.oneof(
    { weight: 2, arbitrary: bytes(300).map((b) => ({ kind: "random" as const, b, seed: 0, cut: 1 })) },
    { weight: 3, arbitrary: fc.record({ seed: fc.nat(), cut: fc.double({ min: 0, max: 1, noNaN: true }) }).map((r) => ({ kind: "truncated" as const, b: Buffer.alloc(0), ...r })) },
    { weight: 2, arbitrary: fc.record({ seed: fc.nat(), b: bytes(100) }).map((r) => ({ kind: "extended" as const, cut: 1, ...r })) },
    { weight: 2, arbitrary: fc.record({ seed: fc.nat(), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }).map((r) => ({ kind: "flipped" as const, b: Buffer.from([r.bit]), seed: r.seed, cut: r.at })) },
  ),
  /** Raw bytes on a TLS port (no handshake): what a scanner or a confused client sends. */
  rawOnTls: fc.boolean(),
  ending: fc.constantFrom<Ending>("half-close", "half-close", "silent", "reset"),
});

function payloadOf(l: Listener, p: { kind: "random" | "truncated" | "extended" | "flipped"; b: Buffer; seed: number; cut: number }): Buffer {
  const seed = l.seeds[p.seed % l.seeds.length]!;
  if (p.kind === "random") return p.b;
  if (p.kind === "truncated") return seed.subarray(0, Math.floor(p.cut * seed.length));
  if (p.kind === "extended") return Buffer.concat([seed, p.b]);
  const flipped = Buffer.from(seed);
  const at = p.cut % Math.max(1, flipped.length);
  if (flipped.length) flipped[at]! ^= 1 << p.b[0]!;
  return flipped;
}

const sockets: FuzzTarget = {
  name: "every listener of a running proxy",
  // A case takes ~20 ms (600 ms when left silent): 80 cases in npm test, 40,000 in a default `npm run fuzz`.
  costFactor: 25,
  property: () =>
    fc.asyncProperty(fuzzCase, async (c) => {
      const f = await start();
      f.escaped.length = 0;
      f.logLines.length = 0;
      const l = f.listeners[c.listener % f.listeners.length]!;
      const payload = payloadOf(l, c.payload);
      const what = `${l.name} (${l.printer} ${HOSTS[l.printer].proxy}:${l.port}), ${c.payload.kind} ${payload.length} bytes, ${c.ending}`;
      if (l.transport === "udp") {
        await sendDatagram(l, payload);
      } else {
        const baseline = l.service === "mqtt" ? 1 : 0;
        const tls = l.transport === "tls" && !c.rawOnTls;
        // A client left silent only where a short deadline is injected; elsewhere it would wait 10 s.
        const ending: Ending = c.ending === "silent" && (l.silentMs === undefined || (l.transport === "tls" && !tls)) ? "half-close" : c.ending;
        // Raw bytes on a TLS port are never a stream: the handshake fails, and the connection must close.
        const needClose = ending === "half-close" && (!l.streams || (l.transport === "tls" && !tls));
        const deadline = ending === "silent" ? l.silentMs! + SLACK_MS : HALF_CLOSED_DEADLINE_MS;
        const outcome = await probe(l, payload, tls, ending, deadline, needClose);
        outcome.socket.destroy();
        // A TLS handshake may fail on our side only when the bytes were raw; otherwise the listener must be there.
        if (!outcome.connected && outcome.connectError) fail(`${what}: cannot connect: ${outcome.connectError}`);
        if (ending !== "reset") {
          if (needClose && !outcome.closed) fail(`${what}: still open ${deadline} ms after our FIN${outcome.answered ? " (answered)" : ""}`);
          if (!outcome.answered && !outcome.closed) fail(`${what}: neither answered nor closed within ${deadline} ms`);
        }
        // Whatever happened, the service lets the client go: no slot is held.
        for (let waited = 0; clientsOf(f, l) > baseline; waited += 20) {
          if (waited > SLOT_RELEASE_MS) fail(`${what}: ${l.service} still counts ${clientsOf(f, l)} clients ${SLOT_RELEASE_MS} ms after the client left`);
          await Bun.sleep(20);
        }
      }
      for (const line of f.logLines) {
        if (/\n\s+at |\(\/.*:\d+:\d+\)/.test(line)) fail(`${what}: a stack trace in the log: ${line.slice(0, 300)}`);
        if (line.includes(ACCESS_CODE) || line.includes(CHECK_CODE)) fail(`${what}: a code in the log: ${line.slice(0, 300)}`);
        // What a client caused is logged naming the printer, the service and the peer.
        if (/^\S+ (WARN|ERROR)/.test(line) && !/^\S+ \w+ +\[[^\]/]+\/[^\]]+\] /.test(line)) {
          fail(`${what}: a warning that names no printer and service: ${line.slice(0, 300)}`);
        }
      }
      if (f.escaped.length) fail(`${what}: thrown out of a handler: ${f.escaped.map((e) => (e instanceof Error ? e.stack ?? e.message : String(e))).join("\n")}`);
      const quiet = Date.now() - f.lastReportAt();
      if (quiet > REPORT_STALE_MS) fail(`${what}: the MQTT subscriber heard no report for ${quiet} ms`);
    }),
};

export const targets: FuzzTarget[] = [sockets];
