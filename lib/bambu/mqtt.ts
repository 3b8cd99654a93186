// The MQTT service (TLS 8883): any number of clients share the proxy's one session with the printer. Real
// subscription matching, QoS 0/1 acknowledged only once the printer has a message, only the request topic
// reaches the printer (byte for byte), viewers get status but send no commands, `pushall` and `get_version`
// answered from the merged state, and report fields naming the printer's address rewritten to the proxy's.
// The socket glue: lib/bambu/mqtt-session.ts decides, per client, what each packet means; this file runs its
// actions on the socket, the deadlines, the report stream (lib/core/stream.ts) and the printer session.
import type { Socket } from "node:net";
import type { Service, ServiceContext, ServiceStatus } from "../core/service.ts";
import { createStream, type Consumer } from "../core/stream.ts";
import { END_DESTROY_MS, endAndDestroy, idleDeadline, type IdleDeadline } from "../core/edge.ts";
import { listen, type Listening } from "../core/server.ts";
import { upstreamRefusal } from "../core/upstream.ts";
import type { Logger } from "../log.ts";
import { serviceLogger } from "../log.ts";
import { serverTlsOptions } from "../tls.ts";
import { findModel } from "./models.ts";
import { outgoing, reportPacket, unchangedReport, type Outgoing } from "./mqtt-requests.ts";
import { createMqttSession, type LogLevel, type MqttAction, type MqttEvent, type MqttSession, type Role } from "./mqtt-session.ts";
import { createReportState, isObject, mayCarryAddress, type JsonObject } from "./mqtt-state.ts";
import { bambuTelemetry } from "./telemetry.ts";
import { reportTopic } from "./mqtt-topics.ts";
import { createPacketReader, encodePublish, type Packet } from "./mqtt-wire.ts";
import { createPrinterAbsence, type OutageClient, type PrinterAbsence } from "./mqtt-outage.ts";
import { createPrinterSession } from "./mqtt-upstream.ts";
import { learnLiveview } from "./liveview.ts";

export { KEEPALIVE_GRACE, MAX_REFUSED_PUBLISHES, MAX_SUBSCRIPTIONS_PER_CLIENT, NO_KEEPALIVE_IDLE_MS, NO_KEEPALIVE_OUTAGE_MS } from "./mqtt-session.ts";

/** A client must send CONNECT this soon after the TLS handshake. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Before login a client may send only this much (a CONNECT is a few hundred bytes). */
export const MAX_CONNECT_BYTES = 8 * 1024;
/** After login: commands are small JSON; a signed print command is a few KB. */
export const MAX_CLIENT_PACKET_BYTES = 1 << 20;
/** Socket bytes buffered for a client before further messages wait in its queue (its consumer's bytes budget). */
export const CLIENT_WRITE_BUFFER_BYTES = 512 * 1024;
/** Messages a client may have waiting; past this it cannot keep up and is disconnected. */
export const CLIENT_QUEUE_MESSAGES = 1_000;
export const MAX_CLIENTS = 256;

/** Deadlines and limits tests shorten; the defaults are the constants above (and PRINTER_WRITE_BUFFER_BYTES). */
export interface MqttServiceOptions {
  connectTimeoutMs?: number;
  /** After a refused login, how long the client has to close its side before we destroy the socket. */
  endDestroyMs?: number;
  noKeepaliveIdleMs?: number;
  noKeepaliveOutageMs?: number;
  maxSubscriptions?: number;
  /** Request bytes waiting for the printer's socket past which a client's publish is refused. */
  printerWriteBufferBytes?: number;
  maxClients?: number;
}

/** One client's connection: its session, and once it logged in, its consumer of the report stream. */
interface Connection {
  socket: Socket;
  session: MqttSession;
  /** The peer's logger; from login on it names the client id. */
  log: Logger;
  role?: Role;
  /** A bounded FIFO, also carrying the replies to its own packets, in order. */
  consumer?: Consumer<Buffer | Outgoing>;
  /** Its subscriptions match the report topic (the session says when that changes). */
  wantsReports: boolean;
  /** The proxy's address as this client sees it: what rewritten reports point at. */
  proxyAddress: string;
  /** Closed by us or gone: the rest of what it sent is not handled. */
  closed: boolean;
  connectTimer?: ReturnType<typeof setTimeout>;
  idle?: IdleDeadline;
  /** After login: its deadline while the printer is away. */
  outage?: OutageClient;
}

/** What the connections of one MQTT service share. */
interface Shared {
  ctx: ServiceContext;
  log: Logger;
  report: string;
  endDestroyMs: number;
  printer: ReturnType<typeof createPrinterSession>;
  state: ReturnType<typeof createReportState>;
  /** The printer's reports (the producer is the printer session) fanned out to every client. */
  reports: ReturnType<typeof createStream<Buffer | Outgoing>>;
  /** Every connection, logged in or not (they hear when the printer session goes up or down). */
  connections: Set<Connection>;
  clients: Set<Connection>;
  /** Clients whose pushall or get_version waits for the merged state. */
  waiting: Set<Connection>;
  counters: Record<"reports" | "forwarded" | "cached" | "slow" | "refused", { inc(): void; readonly value: number }>;
  absence: PrinterAbsence;
}

/** Hands one event to a client's session and runs what it decides. */
function run(m: Shared, c: Connection, event: MqttEvent): void {
  for (const action of c.session.handle(event)) perform(m, c, action);
  if (c.session.waiting && !c.closed) m.waiting.add(c);
  else m.waiting.delete(c);
}

function perform(m: Shared, c: Connection, action: MqttAction): void {
  switch (action.kind) {
    case "accept":
      return accept(m, c, action);
    case "refuse":
      clearTimeout(c.connectTimer);
      if (action.outage) m.absence.tell();
      return endAndDestroy(c.socket, action.connack, m.endDestroyMs);
    case "send":
      if (!c.closed) c.consumer?.offer(action.packet);
      return;
    case "publish":
      return forward(m, c, action);
    case "reports":
      c.wantsReports = action.wanted;
      return;
    case "close":
      return closeClient(m, c, action.why, action.level);
    case "log":
      return c.log[action.level](action.message);
    case "count":
      return m.counters[action.counter].inc();
  }
}

function accept(m: Shared, c: Connection, action: Extract<MqttAction, { kind: "accept" }>): void {
  clearTimeout(c.connectTimer);
  c.log = c.log.with({ client: action.clientId });
  c.role = action.role;
  c.consumer = addConsumer(m, c);
  m.clients.add(c);
  c.idle = idleDeadline(action.idleMs, () => run(m, c, { kind: "timeout", deadline: "idle" }));
  c.outage = { outageMs: action.outageMs, sendAway: () => run(m, c, { kind: "timeout", deadline: "outage" }) };
  m.absence.watch(c.outage);
  c.socket.write(action.connack);
}

/** A bounded FIFO consumer: waits past CLIENT_WRITE_BUFFER_BYTES on the socket, ends past CLIENT_QUEUE_MESSAGES. */
function addConsumer(m: Shared, c: Connection): Consumer<Buffer | Outgoing> {
  const { socket } = c;
  return m.reports.addConsumer({
    label: `MQTT client ${socket.remoteAddress}:${socket.remotePort}`,
    policy: { kind: "fifo" },
    budget: { bytes: CLIENT_WRITE_BUFFER_BYTES, count: CLIENT_QUEUE_MESSAGES },
    waitingBytes: () => socket.writableLength,
    // Replies to its own packets always; reports only on a matching subscription.
    accepts: (value) => Buffer.isBuffer(value) || c.wantsReports,
    write: (value) => void socket.write(Buffer.isBuffer(value) ? value : reportPacket(value, c.proxyAddress, m.report)),
    onEnd: (_why, cause) => {
      if (cause !== "overflow") return closeClient(m, c, undefined); // the stream logged the failed write
      m.counters.slow.inc();
      closeClient(m, c, `cannot keep up (${CLIENT_QUEUE_MESSAGES} messages waiting); it may reconnect and ask for pushall`, "warn");
    },
  });
}

/** A request for the printer: refused while too much waits for its socket; the session hears how it went. */
function forward(m: Shared, c: Connection, action: Extract<MqttAction, { kind: "publish" }>): void {
  const { id, payload, qos } = action;
  if (!m.printer.hasRoomFor(payload.length)) return run(m, c, { kind: "printer-busy", id, backlog: m.printer.writeBacklog });
  m.counters.forwarded.inc();
  void m.printer.publish(payload, qos).then((delivered) => run(m, c, { kind: "printer-ack", id, delivered }));
}

function closeClient(m: Shared, c: Connection, why: string | undefined, level: LogLevel = "info"): void {
  if (c.closed) return;
  c.closed = true;
  if (c.outage) m.absence.forget(c.outage);
  if (why) c.log[level](`disconnecting: ${why}`);
  m.clients.delete(c);
  m.waiting.delete(c);
  c.consumer?.remove();
  c.socket.destroy();
}

function onClient(m: Shared, options: MqttServiceOptions, socket: Socket, peerLog: Logger): void {
  const { printer } = m.ctx;
  const connectTimeoutMs = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  const proxyAddress = printer.bind !== "0.0.0.0" ? printer.bind : (socket.localAddress ?? "127.0.0.1").replace(/^::ffff:/, "");
  const session = createMqttSession({
    serial: printer.serial, accessCode: printer.accessCode, viewerAccessCode: printer.viewerAccessCode, proxyAddress,
    state: m.state, printerUp: m.printer.connected, connectTimeoutMs, noKeepaliveIdleMs: options.noKeepaliveIdleMs,
    noKeepaliveOutageMs: options.noKeepaliveOutageMs, printerAwayMs: m.absence.awayMs,
    maxSubscriptions: options.maxSubscriptions,
  });
  const c: Connection = { socket, session, log: peerLog, wantsReports: false, proxyAddress, closed: false };
  m.connections.add(c);
  c.connectTimer = setTimeout(() => run(m, c, { kind: "timeout", deadline: "connect" }), connectTimeoutMs);
  const onPacket = (packet: Packet) => {
    // The rest of a pipelined batch after we closed the client is not handled.
    if (c.closed) return;
    c.idle?.touch();
    run(m, c, { kind: "packet", packet });
  };
  const reader = createPacketReader(() => (c.consumer ? MAX_CLIENT_PACKET_BYTES : MAX_CONNECT_BYTES), onPacket);
  socket.on("data", (chunk: Buffer) => {
    if (c.closed || session.phase === "refused") return;
    try {
      reader.push(chunk);
    } catch (error) {
      run(m, c, { kind: "malformed", message: (error as Error).message });
    }
  });
  socket.on("drain", () => c.consumer?.resume());
  socket.on("close", () => {
    clearTimeout(c.connectTimer);
    if (c.outage) m.absence.forget(c.outage);
    c.idle?.clear();
    m.connections.delete(c);
    if (!c.consumer || c.closed) return;
    c.closed = true;
    c.consumer.remove();
    m.clients.delete(c);
    m.waiting.delete(c);
    c.log.info("client went away");
  });
}

/** The firmware, product name and model code, from the printer's get_version reply, for SSDP and bind. */
function learnVersion(ctx: ServiceContext, report: JsonObject): void {
  const info = report.info;
  if (!isObject(info) || info.command !== "get_version" || !Array.isArray(info.module)) return;
  const modules = info.module.filter(isObject);
  const ota = modules.find((mod) => mod.name === "ota");
  const productName = [ota, ...modules].map((mod) => mod?.product_name).find((p): p is string => typeof p === "string" && p !== "");
  const firmware = typeof ota?.sw_ver === "string" ? ota.sw_ver : undefined;
  const modelCode = productName ? findModel(productName.replace(/^Bambu Lab\s+/i, ""))?.code : undefined;
  ctx.hub.update({ firmware, productName, modelCode });
}

/**
 * A report from the printer. One that cannot carry an address field goes to the clients first, as the printer's
 * PUBLISH bytes (one buffer for every client); its parse and merge come after the writes. One that may carry one is
 * parsed first, for the rewriting.
 */
function onReport(m: Shared, payload: Buffer, frame: Buffer | undefined): void {
  m.counters.reports.inc();
  const unchanged = !mayCarryAddress(payload);
  if (unchanged) m.reports.publish(unchangedReport(payload, frame ?? encodePublish(m.report, payload)));
  let parsed: JsonObject | undefined;
  try {
    const value: unknown = JSON.parse(payload.toString("utf8"));
    if (isObject(value)) parsed = value;
  } catch {
    m.log.debug("printer sent a report that is not JSON; passed on as is");
  }
  if (parsed) {
    // On the fast path nothing else holds the parsed report: the state keeps its parts without a copy.
    const notKept = m.state.apply(parsed, unchanged);
    if (notKept) m.log.warn(`a report from the printer was passed on but not kept in the merged state: ${notKept}`);
    learnVersion(m.ctx, parsed);
    learnLiveview(m.ctx.hub, parsed);
  }
  if (!unchanged) m.reports.publish(outgoing(payload, parsed));
  for (const c of m.waiting) run(m, c, { kind: "report" });
}

export function createMqttService(ctx: ServiceContext, options: MqttServiceOptions = {}): Service {
  const { printer, metrics } = ctx;
  const log = serviceLogger(printer.name, "mqtt");
  const labels = { printer: printer.name };
  const clients = new Set<Connection>();
  const m: Shared = {
    ctx, log, report: reportTopic(printer.serial), endDestroyMs: options.endDestroyMs ?? END_DESTROY_MS,
    printer: createPrinterSession(printer, log, {
      writeBufferBytes: options.printerWriteBufferBytes,
      renewals: metrics.counter("pandaproxy_mqtt_session_renewals_total", "Printer sessions renewed because requests stopped getting replies", labels),
    }),
    state: createReportState(), reports: createStream<Buffer | Outgoing>({ log, what: "messages" }),
    connections: new Set(), clients, waiting: new Set(), absence: createPrinterAbsence(log),
    counters: {
      reports: metrics.counter("pandaproxy_mqtt_reports_total", "Reports received from the printer", labels),
      forwarded: metrics.counter("pandaproxy_mqtt_requests_total", "Client requests sent to the printer", labels),
      cached: metrics.counter("pandaproxy_mqtt_cached_answers_total", "pushall/get_version answered from the merged state", labels),
      slow: metrics.counter("pandaproxy_mqtt_slow_clients_total", "Clients disconnected for not keeping up", labels),
      refused: metrics.counter("pandaproxy_mqtt_refused_publishes_total", "Client publishes not passed to the printer", labels),
    },
  };
  const removeGauge = metrics.gauge("pandaproxy_mqtt_clients", "MQTT clients connected", labels, () => clients.size);
  let listening: Listening | undefined;
  const broadcast = (up: boolean) => {
    m.absence.printer(up, [...m.clients].flatMap((c) => (c.outage ? [c.outage] : [])));
    for (const c of m.connections) run(m, c, { kind: "printer", up });
  };
  m.printer.onReport((payload, frame) => onReport(m, payload, frame));
  m.printer.onConnected(() => broadcast(true));
  m.printer.onDisconnected(() => {
    m.state.stale();
    broadcast(false);
  });

  return {
    name: "mqtt",
    async start() {
      listening = await listen({
        log,
        what: "MQTT",
        host: printer.bind,
        allow: printer.allow,
        port: printer.ports.mqtt,
        tls: serverTlsOptions(ctx.tls),
        maxClients: options.maxClients ?? MAX_CLIENTS,
        onClient: (socket, info) => onClient(m, options, socket, info.log),
      });
      m.printer.start();
      ctx.hub.setTelemetry(() => (m.state.primed ? bambuTelemetry(m.state.sections, Date.now()) : undefined));
    },
    async stop() {
      await m.printer.stop();
      await listening?.close();
      listening = undefined;
      removeGauge();
    },
    status(): ServiceStatus {
      let viewers = 0;
      for (const c of clients) if (c.role === "viewer") viewers++;
      return {
        state: listening ? "listening" : "stopped",
        clients: clients.size,
        upstream: upstreamRefusal(m.printer.upstream) ?? m.printer.upstream.state,
        details: { viewers, stateCurrent: m.state.primed, reports: m.counters.reports.value, printerConnects: m.printer.upstream.connects },
      };
    },
  };
}
