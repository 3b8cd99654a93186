// One MQTT client's requests as its session handles them (pure; used by lib/bambu/mqtt-session.ts): only the request
// topic reaches the printer, and only a JSON object; pushall and get_version are answered from the merged state (a
// viewer, or anyone while the printer is away, waits for it); refused publishes are bounded; a forwarded QoS 1
// publish is acknowledged only after the printer's PUBACK. Also the report packet a client gets (address fields
// rewritten for the proxy address it sees, encoded once per address).
import { carriesAddress, isObject, rewriteAddresses, type JsonObject, type ReportState } from "./mqtt-state.ts";
import { encode, encodePublish, type Packet } from "./mqtt-wire.ts";
import type { LogLevel, MqttAction, MqttSessionOptions, Phase, Role } from "./mqtt-session.ts";

/** Publishes refused to one client before it is closed: a client that keeps sending them is misconfigured. */
export const MAX_REFUSED_PUBLISHES = 16;

/** One client's session: what it holds, and the actions of the event being handled. */
export interface Session {
  options: MqttSessionOptions;
  report: string;
  request: string;
  out: MqttAction[];
  phase: Phase;
  role?: Role;
  protocolVersion: 3 | 4;
  printerUp: boolean;
  subscriptions: Map<string, number>;
  wantsReports: boolean;
  /** Said once per client, so a flood of SUBSCRIBEs over the limit is one log line. */
  toldSubscriptionLimit: boolean;
  refusedPublishes: number;
  /** The sequence ids of a pushall / get_version that waits for the merged state. */
  waitingForState?: string;
  waitingForVersion?: string;
  /** After login: why the idle deadline closes it. */
  idleLine: string;
  /** Requests with the printer, by publish id: the client's QoS and packet id (for its acknowledgement). */
  pending: Map<number, { qos: number; messageId: number; what: string }>;
  nextId: number;
}

export const log = (s: Session, level: LogLevel, message: string) => void s.out.push({ kind: "log", level, message });
export const send = (s: Session, packet: Packet) => void s.out.push({ kind: "send", packet: encode(packet, s.protocolVersion) });

export function close(s: Session, why: string | undefined, level: LogLevel = "info"): void {
  if (s.phase === "closed" || s.phase === "refused") return;
  s.phase = "closed";
  s.waitingForState = undefined;
  s.waitingForVersion = undefined;
  s.out.push({ kind: "close", why, level });
}

/** What a client's PUBLISH asks for. */
export type Request =
  | { kind: "refused"; why: string }
  /** A request the merged state can answer: the full state (pushall) or the version list (get_version). */
  | { kind: "cached"; answer: "state" | "version"; sequenceId: string }
  /** Anything else on the request topic: a command for the printer; `what` names it for the log. */
  | { kind: "command"; what: string };

export function readRequest(topic: string, payload: Buffer, requestTopic: string): Request {
  if (topic !== requestTopic) return { kind: "refused", why: `only ${requestTopic} reaches the printer` };
  let body: unknown;
  try {
    body = JSON.parse(payload.toString("utf8"));
  } catch {
    return { kind: "refused", why: "the payload is not JSON" };
  }
  if (!isObject(body)) return { kind: "refused", why: "the payload is not a JSON object" };
  const [section, command] = Object.entries(body)[0] ?? [];
  const name = isObject(command) ? command.command : undefined;
  const sequenceId = isObject(command) && command.sequence_id !== undefined ? String(command.sequence_id) : "0";
  if (section === "pushing" && name === "pushall") return { kind: "cached", answer: "state", sequenceId };
  if (section === "info" && name === "get_version") return { kind: "cached", answer: "version", sequenceId };
  return { kind: "command", what: String(name ?? section) };
}

/** The merged state's answer, as the printer would send it; undefined while the state does not have it. */
export function cachedAnswer(state: Pick<ReportState, "primed" | "pushallReply" | "versionReply">, answer: "state" | "version", sequenceId: string): JsonObject[] | undefined {
  if (answer === "state") return state.primed ? state.pushallReply(sequenceId) : undefined;
  const reply = state.versionReply(sequenceId);
  return reply ? [reply] : undefined;
}

/** One report from the printer, encoded once per distinct proxy address (every client shares it). */
export interface Outgoing {
  payload: Buffer;
  report: JsonObject | undefined;
  packets: Map<string, Buffer>;
}

export const outgoing = (payload: Buffer, report: JsonObject | undefined): Outgoing => ({ payload, report, packets: new Map() });

/** A report that carries no address: `packet` (the printer's own PUBLISH when it can be) goes to every client. */
export function unchangedReport(payload: Buffer, packet: Buffer): Outgoing {
  const packets = new Map<string, Buffer>();
  packets.set("", packet);
  return { payload, report: undefined, packets };
}

/** The PUBLISH of a report on `topic` for a client that sees the proxy at `proxyAddress`: addresses rewritten. */
export function reportPacket(out: Outgoing, proxyAddress: string, topic: string): Buffer {
  const key = out.report && carriesAddress(out.report) ? proxyAddress : "";
  let packet = out.packets.get(key);
  if (!packet) {
    const payload = key && out.report ? Buffer.from(JSON.stringify(rewriteAddresses(out.report, key))) : out.payload;
    packet = encodePublish(topic, payload);
    out.packets.set(key, packet);
  }
  return packet;
}

/** Sends the cached answer, as the printer would have sent it (to a client that takes reports). */
export function answer(s: Session, reports: JsonObject[]): void {
  if (!s.wantsReports) return;
  s.out.push({ kind: "count", counter: "cached" });
  for (const r of reports) s.out.push({ kind: "send", packet: reportPacket(outgoing(Buffer.from(JSON.stringify(r)), r), s.options.proxyAddress, s.report) });
}

export function answerWaiting(s: Session): void {
  const state = s.waitingForState !== undefined ? cachedAnswer(s.options.state, "state", s.waitingForState) : undefined;
  if (state) {
    answer(s, state);
    s.waitingForState = undefined;
  }
  const version = s.waitingForVersion !== undefined ? cachedAnswer(s.options.state, "version", s.waitingForVersion) : undefined;
  if (version) {
    answer(s, version);
    s.waitingForVersion = undefined;
  }
}

function acknowledge(s: Session, qos: number, messageId: number): void {
  if (qos === 1) send(s, { cmd: "puback", messageId });
  if (qos === 2) send(s, { cmd: "pubrec", messageId });
}

function refuse(s: Session, qos: number, topic: string, why: string): void {
  s.out.push({ kind: "count", counter: "refused" });
  const line = `refused a publish to "${topic}": ${why}`;
  // A QoS 1/2 publish we drop cannot be acknowledged; closing is the only honest answer (MQTT 3.1.1 3.3.5).
  if (qos > 0) close(s, line, "warn");
  else if (++s.refusedPublishes >= MAX_REFUSED_PUBLISHES) close(s, `${line} (${MAX_REFUSED_PUBLISHES} refused publishes: the client keeps sending what the printer does not take)`, "warn");
  else log(s, "warn", line);
}

export function publish(s: Session, packet: Extract<Packet, { cmd: "publish" }>): void {
  const { qos, topic } = packet;
  const messageId = packet.messageId ?? 0;
  const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
  const request = readRequest(topic, payload, s.request);
  if (request.kind === "refused") return refuse(s, qos, topic, request.why);
  if (request.kind === "cached") {
    const reply = cachedAnswer(s.options.state, request.answer, request.sequenceId);
    if (reply) answer(s, reply);
    // A viewer (or anyone while the printer is away) waits for the merged state; an owner asks the printer.
    else if (s.role === "viewer" || !s.printerUp) {
      if (request.answer === "state") s.waitingForState = request.sequenceId;
      else s.waitingForVersion = request.sequenceId;
    }
    if (reply || s.role === "viewer" || !s.printerUp) return acknowledge(s, qos, messageId);
  }
  const what = request.kind === "command" ? request.what : request.answer === "state" ? "pushall" : "get_version";
  if (s.role === "viewer") return refuse(s, qos, topic, "clients using viewer_access_code may not send commands");
  if (!s.printerUp) {
    log(s, "warn", `printer not connected: dropped a "${what}" request`);
    if (qos > 0) close(s, "cannot deliver a QoS 1 request while the printer is away");
    return;
  }
  const id = ++s.nextId;
  s.pending.set(id, { qos, messageId, what });
  s.out.push({ kind: "publish", id, payload, qos: qos > 0 ? 1 : 0 });
}

/** The printer's answer to a forwarded request; `backlog`: it was not sent, the printer's socket is full. */
export function printerAck(s: Session, id: number, delivered: boolean, backlog?: number): void {
  const pending = s.pending.get(id);
  if (!pending) return;
  s.pending.delete(id);
  if (backlog !== undefined) refuse(s, pending.qos, s.request, `the printer is not taking requests as fast as they come (${backlog} bytes waiting for it)`);
  else if (delivered) acknowledge(s, pending.qos, pending.messageId);
  else if (pending.qos > 0) close(s, "the printer did not acknowledge a request; the client may resend it", "warn");
  else log(s, "warn", `the printer session dropped a "${pending.what}" request`);
}
