// One MQTT client's session as a pure state machine: events in (a decoded packet, a printer report kept in the
// merged state, the printer's answer to a forwarded publish, the printer session up or down, a deadline), plain
// actions out (accept or refuse the login, send a packet, publish to the printer, take reports or not, close, log);
// lib/bambu/mqtt.ts runs them on the socket, the report stream and the printer session. No I/O here.
import { sameSecret } from "../core/edge.ts";
import { answer, answerWaiting, close, log, printerAck, publish, send, type Session } from "./mqtt-requests.ts";
import type { ReportState } from "./mqtt-state.ts";
import { reportTopic, requestTopic, topicMatches, validFilter } from "./mqtt-topics.ts";
import {
  CONNACK_ACCEPTED, CONNACK_NOT_AUTHORIZED, CONNACK_SERVER_UNAVAILABLE, CONNACK_UNACCEPTABLE_PROTOCOL, SUBACK_FAILURE, connackBytes, encode,
  type Packet,
} from "./mqtt-wire.ts";

/** A client is dropped after 1.5 x its keepalive without a packet (MQTT 3.1.1 section 3.1.2.10). */
export const KEEPALIVE_GRACE = 1.5;
/** A client that asked for no keepalive (0) is closed after this long without a packet of its own. */
export const NO_KEEPALIVE_IDLE_MS = 5 * 60_000;
/** How long the printer may be away before a client that asked for no keepalive (0) is sent away to reconnect. */
export const NO_KEEPALIVE_OUTAGE_MS = 60_000;
/** Topic filters one client may hold; Bambu clients subscribe to one report topic, dashboards to a few. */
export const MAX_SUBSCRIPTIONS_PER_CLIENT = 64;
export { MAX_REFUSED_PUBLISHES } from "./mqtt-requests.ts";

export type Role = "owner" | "viewer";
export type LogLevel = "debug" | "info" | "warn";

export type MqttEvent =
  | { kind: "packet"; packet: Packet }
  /** The client's bytes are not MQTT, or a packet is over the limit. */
  | { kind: "malformed"; message: string }
  /** No CONNECT in time, or (after login) no packet within the idle deadline. */
  | { kind: "timeout"; deadline: Deadline }
  /** A printer report went into the merged state: a pushall or get_version waiting for it may be answered now. */
  | { kind: "report" }
  | { kind: "printer"; up: boolean }
  /** The outcome of a `publish` action: the printer has it (QoS 1: its PUBACK), or it was lost first. */
  | { kind: "printer-ack"; id: number; delivered: boolean }
  /** A `publish` action found too many bytes waiting for the printer's socket: it was not sent. */
  | { kind: "printer-busy"; id: number; backlog: number };

/** "outage": the printer has been away longer than the client's `outageMs`. */
export type Deadline = "connect" | "idle" | "outage";

export type MqttAction =
  /**
   * Login accepted: the client gets its consumer of the report stream and its idle deadline; `connack` goes out at
   * once. Once the printer has been away `outageMs`, the client is sent away (an "outage" timeout).
   */
  | { kind: "accept"; role: Role; clientId: string; idleMs: number; outageMs: number; connack: Buffer }
  /** Login refused: `connack`, then the connection ends (destroyed shortly after, whatever the client does).
   * `outage`: refused because the printer is away (CONNACK 3), not for the client's credentials. */
  | { kind: "refuse"; connack: Buffer; outage?: boolean }
  /** To the client, through its consumer (in order with the reports). */
  | { kind: "send"; packet: Buffer }
  /** A request for the printer, its payload byte for byte; the answer comes back as printer-ack or printer-busy. */
  | { kind: "publish"; id: number; payload: Buffer; qos: 0 | 1 }
  /** Reports on the report topic go to this client from now on (or no longer). */
  | { kind: "reports"; wanted: boolean }
  /** Destroy the connection; `why` (after login only) is logged as "disconnecting: why" at `level`. */
  | { kind: "close"; why?: string; level: LogLevel }
  | { kind: "log"; level: LogLevel; message: string }
  | { kind: "count"; counter: "cached" | "refused" };

export interface MqttSessionOptions {
  serial: string;
  accessCode: string;
  viewerAccessCode?: string;
  /** The proxy's address as this client sees it: what rewritten reports point at. */
  proxyAddress: string;
  /** The merged state (read only here): pushall and get_version are answered from it. */
  state: Pick<ReportState, "primed" | "pushallReply" | "versionReply">;
  /** Whether the printer session is up when the client connects (later changes come as `printer` events). */
  printerUp: boolean;
  connectTimeoutMs: number;
  noKeepaliveIdleMs?: number;
  noKeepaliveOutageMs?: number;
  /** How long the printer session has been down now (0 while it is up; default: never away). */
  printerAwayMs?(): number;
  maxSubscriptions?: number;
}

export type Phase = "connecting" | "open" | "refused" | "closed";

export interface MqttSession {
  handle(event: MqttEvent): MqttAction[];
  readonly phase: Phase;
  /** A pushall or get_version waits for the merged state: `report` events matter to it. */
  readonly waiting: boolean;
}

export function createMqttSession(options: MqttSessionOptions): MqttSession {
  const s: Session = {
    options, report: reportTopic(options.serial), request: requestTopic(options.serial), out: [], phase: "connecting",
    protocolVersion: 4, printerUp: options.printerUp, subscriptions: new Map(), wantsReports: false,
    toldSubscriptionLimit: false, refusedPublishes: 0, idleLine: "", pending: new Map(), nextId: 0,
  };
  return {
    handle(event) {
      handle(s, event);
      return s.out.splice(0);
    },
    get phase() {
      return s.phase;
    },
    get waiting() {
      return s.waitingForState !== undefined || s.waitingForVersion !== undefined;
    },
  };
}

/** Before login the line is the session's own (no client id to name); the connection just ends. */
function closeBeforeLogin(s: Session, level: LogLevel, message: string): void {
  log(s, level, message);
  close(s, undefined);
}

function handle(s: Session, event: MqttEvent): void {
  switch (event.kind) {
    case "packet":
      if (s.phase === "connecting") return connecting(s, event.packet);
      if (s.phase === "open") return packet(s, event.packet);
      return; // the rest of a pipelined batch after a refusal or a close is not handled
    case "malformed": {
      const why = `malformed or oversized MQTT (${event.message})`;
      if (s.phase === "open") return close(s, why, "warn");
      if (s.phase === "connecting") return closeBeforeLogin(s, "warn", `closing: ${why}`);
      return;
    }
    case "timeout":
      return timeout(s, event.deadline);
    case "report":
      return answerWaiting(s);
    case "printer":
      s.printerUp = event.up;
      return;
    case "printer-ack":
      return printerAck(s, event.id, event.delivered);
    case "printer-busy":
      return printerAck(s, event.id, false, event.backlog);
  }
}

function timeout(s: Session, deadline: Deadline): void {
  if (deadline === "idle" && s.phase === "open") close(s, s.idleLine);
  if (deadline === "outage" && s.phase === "open") close(s, "the printer is away for longer than its keepalive; it may reconnect", "debug");
  if (deadline === "connect" && s.phase === "connecting") closeBeforeLogin(s, "info", `no CONNECT within ${s.options.connectTimeoutMs / 1000} s; closing`);
}

function connecting(s: Session, packet: Packet): void {
  if (packet.cmd !== "connect") return closeBeforeLogin(s, "info", `sent ${packet.cmd} before CONNECT; closing`);
  const { options } = s;
  if (packet.protocolVersion === 5) {
    log(s, "info", "refused: MQTT 5 client (the printer speaks MQTT 3.1.1; configure the client for 3.1.1)");
    return refuseLogin(s, CONNACK_UNACCEPTABLE_PROTOCOL);
  }
  s.protocolVersion = packet.protocolVersion === 3 ? 3 : 4;
  const bblp = packet.username === "bblp";
  const owner = bblp && sameSecret(packet.password, options.accessCode);
  const viewer = !owner && bblp && options.viewerAccessCode !== undefined && sameSecret(packet.password, options.viewerAccessCode);
  if (!owner && !viewer) {
    log(s, "warn", `refused login${bblp ? ": wrong access code" : `: user "${packet.username ?? ""}" (expected bblp)`}`);
    return refuseLogin(s, CONNACK_NOT_AUTHORIZED);
  }
  const keepaliveS = packet.keepalive ?? 0;
  const outageMs = keepaliveS > 0 ? keepaliveS * 1000 : options.noKeepaliveOutageMs ?? NO_KEEPALIVE_OUTAGE_MS;
  const awayMs = options.printerAwayMs?.() ?? 0;
  // Accepting now would hide the outage from the client's own reconnect logic: it retries until the printer is back.
  if (awayMs > outageMs) {
    log(s, "debug", `refused with CONNACK 3: the printer has been away for ${Math.round(awayMs / 1000)} s`);
    s.phase = "refused";
    s.out.push({ kind: "refuse", connack: connackBytes(CONNACK_SERVER_UNAVAILABLE), outage: true });
    return;
  }
  s.phase = "open";
  s.role = owner ? "owner" : "viewer";
  const keepaliveMs = keepaliveS * 1000 * KEEPALIVE_GRACE;
  const idleMs = keepaliveMs > 0 ? keepaliveMs : options.noKeepaliveIdleMs ?? NO_KEEPALIVE_IDLE_MS;
  s.idleLine = keepaliveMs > 0
    ? `silent for ${idleMs / 1000} s (1.5 x its keepalive)`
    : `no packet for ${idleMs / 1000} s from a client that asked for no keepalive (0)`;
  const connack = encode({ cmd: "connack", returnCode: CONNACK_ACCEPTED, sessionPresent: false }, s.protocolVersion);
  s.out.push({ kind: "accept", role: s.role, clientId: packet.clientId, idleMs, outageMs, connack });
  log(s, "info", `connected as ${s.role} (MQTT ${s.protocolVersion === 3 ? "3.1" : "3.1.1"}, id "${packet.clientId}")`);
  if (packet.will) log(s, "info", "ignoring the client's will message: the printer takes requests from connected clients only");
}

/** What the client sends while we close is not read (no second try on one socket). */
function refuseLogin(s: Session, returnCode: number): void {
  s.phase = "refused";
  s.out.push({ kind: "refuse", connack: connackBytes(returnCode) });
}

function packet(s: Session, packet: Packet): void {
  const messageId = "messageId" in packet ? packet.messageId ?? 0 : 0;
  switch (packet.cmd) {
    case "subscribe":
      return subscribe(s, packet);
    case "unsubscribe":
      for (const topic of packet.unsubscriptions) s.subscriptions.delete(topic);
      send(s, { cmd: "unsuback", messageId, granted: [] });
      return reportsWanted(s);
    case "publish":
      return publish(s, packet);
    case "pubrel":
      return send(s, { cmd: "pubcomp", messageId });
    case "pingreq":
      return send(s, { cmd: "pingresp" });
    case "disconnect":
      close(s, undefined);
      return log(s, "debug", "disconnected");
    case "puback":
    case "pubrec":
    case "pubcomp":
      return;
    default:
      close(s, `sent an unexpected ${packet.cmd}`);
  }
}

/** Whether a subscription matches the report topic changed: the report stream is told. */
function reportsWanted(s: Session): void {
  const wanted = [...s.subscriptions.keys()].some((filter) => topicMatches(filter, s.report));
  if (wanted === s.wantsReports) return;
  s.wantsReports = wanted;
  s.out.push({ kind: "reports", wanted });
}

function subscribe(s: Session, packet: Extract<Packet, { cmd: "subscribe" }>): void {
  const maxSubscriptions = s.options.maxSubscriptions ?? MAX_SUBSCRIPTIONS_PER_CLIENT;
  const granted: number[] = [];
  const hadReports = s.wantsReports;
  for (const { topic, qos } of packet.subscriptions) {
    if (!validFilter(topic)) {
      log(s, "info", `invalid topic filter "${topic}"`);
      granted.push(SUBACK_FAILURE);
      continue;
    }
    // MQTT 3.1.1 (3.9.3) lets a server refuse each filter on its own: 0x80 for those over the limit.
    if (!s.subscriptions.has(topic) && s.subscriptions.size >= maxSubscriptions) {
      if (!s.toldSubscriptionLimit) log(s, "warn", `refused topic filter "${topic.slice(0, 80)}" and any further ones: a client may hold ${maxSubscriptions} subscriptions`);
      s.toldSubscriptionLimit = true;
      granted.push(SUBACK_FAILURE);
      continue;
    }
    const q = Math.min(qos, 1);
    s.subscriptions.set(topic, q);
    granted.push(q);
  }
  reportsWanted(s);
  send(s, { cmd: "suback", messageId: packet.messageId ?? 0, granted });
  // A new subscriber gets the current state at once, instead of each client asking the printer.
  if (!hadReports && s.wantsReports && s.options.state.primed) answer(s, s.options.state.pushallReply("0"));
}

