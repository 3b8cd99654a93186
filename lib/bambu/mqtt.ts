// The MQTT service (TLS 8883): any number of clients share the proxy's one session with the printer. Real
// subscription matching, QoS 0/1 acknowledged only once the printer has a message, only the request topic
// reaches the printer (byte for byte), viewers get status but send no commands, `pushall` and `get_version`
// answered from the merged state, and report fields naming the printer's address rewritten to the proxy's.
import type { Socket } from "node:net";
import type { Service, ServiceContext, ServiceStatus } from "../core/service.ts";
import { createStream, type Consumer } from "../core/stream.ts";
import { END_DESTROY_MS, endAndDestroy, idleDeadline, sameSecret, type IdleDeadline } from "../core/edge.ts";
import { listen, type Listening } from "../core/server.ts";
import { upstreamRefusal } from "../core/upstream.ts";
import type { Logger } from "../log.ts";
import { serviceLogger } from "../log.ts";
import { serverTlsOptions } from "../tls.ts";
import { findModel } from "./models.ts";
import {
  carriesAddress, createReportState, isObject, rewriteAddresses, type JsonObject,
} from "./mqtt-state.ts";
import { reportTopic, requestTopic, topicMatches, validFilter } from "./mqtt-topics.ts";
import {
  CONNACK_ACCEPTED, CONNACK_NOT_AUTHORIZED, CONNACK_UNACCEPTABLE_PROTOCOL, SUBACK_FAILURE, connackBytes,
  createPacketReader, encode, encodePublish, type Packet,
} from "./mqtt-wire.ts";
import { createPrinterSession } from "./mqtt-upstream.ts";

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
/** A client is dropped after 1.5 x its keepalive without a packet (MQTT 3.1.1 section 3.1.2.10). */
export const KEEPALIVE_GRACE = 1.5;
/** A client that asked for no keepalive (0) is closed after this long without a packet of its own. */
export const NO_KEEPALIVE_IDLE_MS = 5 * 60_000;
/** Topic filters one client may hold; Bambu clients subscribe to one report topic, dashboards to a few. */
export const MAX_SUBSCRIPTIONS_PER_CLIENT = 64;
/** Publishes refused to one client before it is closed: a client that keeps sending them is misconfigured. */
export const MAX_REFUSED_PUBLISHES = 16;
export const MAX_CLIENTS = 256;

/** Deadlines and limits tests shorten; the defaults are the constants above (and PRINTER_WRITE_BUFFER_BYTES). */
export interface MqttServiceOptions {
  connectTimeoutMs?: number;
  /** After a refused login, how long the client has to close its side before we destroy the socket. */
  endDestroyMs?: number;
  noKeepaliveIdleMs?: number;
  maxSubscriptions?: number;
  /** Request bytes waiting for the printer's socket past which a client's publish is refused. */
  printerWriteBufferBytes?: number;
  maxClients?: number;
}

type Role = "owner" | "viewer";

interface Client {
  socket: Socket;
  log: Logger;
  role: Role;
  subscriptions: Map<string, number>;
  /** Said once per client, so a flood of SUBSCRIBEs over the limit is one log line. */
  toldSubscriptionLimit: boolean;
  refusedPublishes: number;
  /** Its consumer of the report stream: a bounded FIFO, also carrying the replies to its own packets, in order. */
  consumer: Consumer<Buffer | Outgoing>;
  /** The proxy's address as this client sees it: what rewritten reports point at. */
  proxyAddress: string;
  closed: boolean;
}

/** One report from the printer, encoded once per distinct proxy address. */
interface Outgoing {
  payload: Buffer;
  report: JsonObject | undefined;
  packets: Map<string, Buffer>;
}

export function createMqttService(ctx: ServiceContext, options: MqttServiceOptions = {}): Service {
  const { printer } = ctx;
  const connectTimeoutMs = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  const endDestroyMs = options.endDestroyMs ?? END_DESTROY_MS;
  const noKeepaliveIdleMs = options.noKeepaliveIdleMs ?? NO_KEEPALIVE_IDLE_MS;
  const maxSubscriptions = options.maxSubscriptions ?? MAX_SUBSCRIPTIONS_PER_CLIENT;
  const log = serviceLogger(printer.name, "mqtt");
  const report = reportTopic(printer.serial);
  const request = requestTopic(printer.serial);
  const session = createPrinterSession(printer, log, { writeBufferBytes: options.printerWriteBufferBytes });
  const state = createReportState();
  const clients = new Set<Client>();
  /** The printer's reports (the producer is the printer session) fanned out to every client. */
  const reports = createStream<Buffer | Outgoing>({ log, what: "messages" });
  /** Viewers (or owners while the printer is away) waiting for the state to answer their pushall. */
  const waitingForState = new Map<Client, string>();
  const waitingForVersion = new Map<Client, string>();
  let listening: Listening | undefined;
  const labels = { printer: printer.name };
  const reportsCounter = ctx.metrics.counter("pandaproxy_mqtt_reports_total", "Reports received from the printer", labels);
  const forwardedCounter = ctx.metrics.counter("pandaproxy_mqtt_requests_total", "Client requests sent to the printer", labels);
  const cachedCounter = ctx.metrics.counter("pandaproxy_mqtt_cached_answers_total", "pushall/get_version answered from the merged state", labels);
  const slowCounter = ctx.metrics.counter("pandaproxy_mqtt_slow_clients_total", "Clients disconnected for not keeping up", labels);
  const refusedCounter = ctx.metrics.counter("pandaproxy_mqtt_refused_publishes_total", "Client publishes not passed to the printer", labels);
  const removeGauge = ctx.metrics.gauge("pandaproxy_mqtt_clients", "MQTT clients connected", labels, () => clients.size);

  const wants = (client: Client) => {
    for (const filter of client.subscriptions.keys()) if (topicMatches(filter, report)) return true;
    return false;
  };

  const packetFor = (out: Outgoing, client: Client): Buffer => {
    const key = out.report && carriesAddress(out.report) ? client.proxyAddress : "";
    let packet = out.packets.get(key);
    if (!packet) {
      const payload = key && out.report ? Buffer.from(JSON.stringify(rewriteAddresses(out.report, key))) : out.payload;
      packet = encodePublish(report, payload);
      out.packets.set(key, packet);
    }
    return packet;
  };

  const deliver = (client: Client, packet: Buffer) => {
    if (!client.closed) client.consumer.offer(packet);
  };

  /** A bounded FIFO consumer: waits past CLIENT_WRITE_BUFFER_BYTES on the socket, ends past CLIENT_QUEUE_MESSAGES. */
  const addConsumer = (socket: Socket, client: () => Client): Consumer<Buffer | Outgoing> =>
    reports.addConsumer({
      label: `MQTT client ${socket.remoteAddress}:${socket.remotePort}`,
      policy: { kind: "fifo" },
      budget: { bytes: CLIENT_WRITE_BUFFER_BYTES, count: CLIENT_QUEUE_MESSAGES },
      waitingBytes: () => socket.writableLength,
      // Replies to its own packets always; reports only on a matching subscription.
      accepts: (value) => Buffer.isBuffer(value) || wants(client()),
      write: (value) => void socket.write(Buffer.isBuffer(value) ? value : packetFor(value, client())),
      onEnd: (_why, cause) => {
        if (cause !== "overflow") return closeClient(client(), undefined); // the stream logged the failed write
        slowCounter.inc();
        closeClient(client(), `cannot keep up (${CLIENT_QUEUE_MESSAGES} messages waiting); it may reconnect and ask for pushall`, "warn");
      },
    });

  /** Sends the cached answer to one client, as the printer would have sent it. */
  const answer = (client: Client, reports: JsonObject[]) => {
    if (!wants(client)) return;
    cachedCounter.inc();
    for (const r of reports) {
      deliver(client, packetFor({ payload: Buffer.from(JSON.stringify(r)), report: r, packets: new Map() }, client));
    }
  };

  const answerWaiting = () => {
    if (state.primed) {
      for (const [client, sequenceId] of waitingForState) answer(client, state.pushallReply(sequenceId));
      waitingForState.clear();
    }
    for (const [client, sequenceId] of waitingForVersion) {
      const reply = state.versionReply(sequenceId);
      if (!reply) break;
      answer(client, [reply]);
      waitingForVersion.delete(client);
    }
  };

  const learnVersion = (report: JsonObject) => {
    const info = report.info;
    if (!isObject(info) || info.command !== "get_version" || !Array.isArray(info.module)) return;
    const modules = info.module.filter(isObject);
    const ota = modules.find((m) => m.name === "ota");
    const productName = [ota, ...modules].map((m) => m?.product_name).find((p): p is string => typeof p === "string" && p !== "");
    const firmware = typeof ota?.sw_ver === "string" ? ota.sw_ver : undefined;
    const modelCode = productName ? findModel(productName.replace(/^Bambu Lab\s+/i, ""))?.code : undefined;
    ctx.hub.update({ firmware, productName, modelCode });
  };

  session.onReport((payload) => {
    reportsCounter.inc();
    let parsed: JsonObject | undefined;
    try {
      const value: unknown = JSON.parse(payload.toString("utf8"));
      if (isObject(value)) parsed = value;
    } catch {
      log.debug("printer sent a report that is not JSON; passed on as is");
    }
    if (parsed) {
      const notKept = state.apply(parsed);
      if (notKept) log.warn(`a report from the printer was passed on but not kept in the merged state: ${notKept}`);
      learnVersion(parsed);
    }
    reports.publish({ payload, report: parsed, packets: new Map() });
    if (waitingForState.size || waitingForVersion.size) answerWaiting();
  });
  session.onDisconnected(() => state.stale());

  const closeClient = (client: Client, why: string | undefined, level: "info" | "warn" = "info") => {
    if (client.closed) return;
    client.closed = true;
    if (why) client.log[level](`disconnecting: ${why}`);
    clients.delete(client);
    waitingForState.delete(client);
    waitingForVersion.delete(client);
    client.consumer.remove();
    client.socket.destroy();
  };

  const onPublish = (client: Client, packet: Extract<Packet, { cmd: "publish" }>) => {
    const qos = packet.qos;
    const messageId = packet.messageId ?? 0;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const refuse = (why: string) => {
      refusedCounter.inc();
      const line = `refused a publish to "${packet.topic}": ${why}`;
      // A QoS 1/2 publish we drop cannot be acknowledged; closing is the only honest answer (MQTT 3.1.1 3.3.5).
      if (qos > 0) closeClient(client, line, "warn");
      else if (++client.refusedPublishes >= MAX_REFUSED_PUBLISHES) closeClient(client, `${line} (${MAX_REFUSED_PUBLISHES} refused publishes: the client keeps sending what the printer does not take)`, "warn");
      else client.log.warn(line);
    };
    const acknowledge = () => {
      if (qos === 1) deliver(client, encode({ cmd: "puback", messageId }));
      if (qos === 2) deliver(client, encode({ cmd: "pubrec", messageId }));
    };
    if (packet.topic !== request) return refuse(`only ${request} reaches the printer`);
    let body: unknown;
    try {
      body = JSON.parse(payload.toString("utf8"));
    } catch {
      return refuse("the payload is not JSON");
    }
    if (!isObject(body)) return refuse("the payload is not a JSON object");
    const [section, command] = Object.entries(body)[0] ?? [];
    const name = isObject(command) ? command.command : undefined;
    const sequenceId = isObject(command) && command.sequence_id !== undefined ? String(command.sequence_id) : "0";

    if (section === "pushing" && name === "pushall") {
      if (state.primed) {
        answer(client, state.pushallReply(sequenceId));
        return acknowledge();
      }
      if (client.role === "viewer" || !session.connected) {
        waitingForState.set(client, sequenceId);
        return acknowledge();
      }
    }
    if (section === "info" && name === "get_version") {
      const reply = state.versionReply(sequenceId);
      if (reply) {
        answer(client, [reply]);
        return acknowledge();
      }
      if (client.role === "viewer" || !session.connected) {
        waitingForVersion.set(client, sequenceId);
        return acknowledge();
      }
    }
    if (client.role === "viewer") return refuse("clients using viewer_access_code may not send commands");
    if (!session.connected) {
      client.log.warn(`printer not connected: dropped a "${String(name ?? section)}" request`);
      if (qos > 0) closeClient(client, "cannot deliver a QoS 1 request while the printer is away");
      return;
    }
    if (!session.hasRoomFor(payload.length)) {
      return refuse(`the printer is not taking requests as fast as they come (${session.writeBacklog} bytes waiting for it)`);
    }
    forwardedCounter.inc();
    void session.publish(payload, qos > 0 ? 1 : 0).then((delivered) => {
      if (delivered) acknowledge();
      else if (qos > 0) closeClient(client, "the printer did not acknowledge a request; the client may resend it", "warn");
      else client.log.warn(`the printer session dropped a "${String(name ?? section)}" request`);
    });
  };

  const onClient = (socket: Socket, peerLog: Logger) => {
    let client: Client | undefined;
    let protocolVersion: 3 | 4 = 4;
    /** Refused before login: what the client sends while we close is not read (no second try on one socket). */
    let refused = false;
    let idle: IdleDeadline | undefined;
    const refuseLogin = (connack: Buffer) => {
      refused = true;
      endAndDestroy(socket, connack, endDestroyMs);
    };
    const connectTimer = setTimeout(() => {
      peerLog.info(`no CONNECT within ${connectTimeoutMs / 1000} s; closing`);
      socket.destroy();
    }, connectTimeoutMs);

    const onConnect = (packet: Extract<Packet, { cmd: "connect" }>) => {
      clearTimeout(connectTimer);
      if (packet.protocolVersion === 5) {
        peerLog.info("refused: MQTT 5 client (the printer speaks MQTT 3.1.1; configure the client for 3.1.1)");
        return refuseLogin(connackBytes(CONNACK_UNACCEPTABLE_PROTOCOL));
      }
      protocolVersion = packet.protocolVersion === 3 ? 3 : 4;
      const owner = packet.username === "bblp" && sameSecret(packet.password, printer.accessCode);
      const viewer = !owner && packet.username === "bblp" && printer.viewerAccessCode !== undefined && sameSecret(packet.password, printer.viewerAccessCode);
      if (!owner && !viewer) {
        peerLog.warn(`refused login${packet.username === "bblp" ? ": wrong access code" : `: user "${packet.username ?? ""}" (expected bblp)`}`);
        return refuseLogin(connackBytes(CONNACK_NOT_AUTHORIZED));
      }
      const log = peerLog.with({ client: packet.clientId });
      const proxyAddress = printer.bind !== "0.0.0.0" ? printer.bind : (socket.localAddress ?? "127.0.0.1").replace(/^::ffff:/, "");
      const c: Client = {
        socket, log, role: owner ? "owner" : "viewer", subscriptions: new Map(), toldSubscriptionLimit: false, refusedPublishes: 0,
        proxyAddress, closed: false, consumer: addConsumer(socket, () => c),
      };
      client = c;
      clients.add(c);
      const keepaliveMs = (packet.keepalive ?? 0) * 1000 * KEEPALIVE_GRACE;
      idle = keepaliveMs > 0
        ? idleDeadline(keepaliveMs, () => closeClient(c, `silent for ${keepaliveMs / 1000} s (1.5 x its keepalive)`))
        : idleDeadline(noKeepaliveIdleMs, () => closeClient(c, `no packet for ${noKeepaliveIdleMs / 1000} s from a client that asked for no keepalive (0)`));
      socket.write(encode({ cmd: "connack", returnCode: CONNACK_ACCEPTED, sessionPresent: false }, protocolVersion));
      log.info(`connected as ${c.role} (MQTT ${protocolVersion === 3 ? "3.1" : "3.1.1"}, id "${packet.clientId}")`);
      if (packet.will) log.info("ignoring the client's will message: the printer takes requests from connected clients only");
    };

    const onPacket = (packet: Packet) => {
      if (refused) return;
      if (!client) {
        if (client === undefined && packet.cmd === "connect") return onConnect(packet);
        peerLog.info(`sent ${packet.cmd} before CONNECT; closing`);
        socket.destroy();
        return;
      }
      // The rest of a pipelined batch after we closed the client is not handled.
      if (client.closed) return;
      idle?.touch();
      switch (packet.cmd) {
        case "subscribe": {
          const granted: number[] = [];
          let newReportSubscriber = false;
          const hadReport = wants(client);
          for (const { topic, qos } of packet.subscriptions) {
            if (!validFilter(topic)) {
              client.log.info(`invalid topic filter "${topic}"`);
              granted.push(SUBACK_FAILURE);
              continue;
            }
            // MQTT 3.1.1 (3.9.3) lets a server refuse each filter on its own: 0x80 for those over the limit.
            if (!client.subscriptions.has(topic) && client.subscriptions.size >= maxSubscriptions) {
              if (!client.toldSubscriptionLimit) client.log.warn(`refused topic filter "${topic.slice(0, 80)}" and any further ones: a client may hold ${maxSubscriptions} subscriptions`);
              client.toldSubscriptionLimit = true;
              granted.push(SUBACK_FAILURE);
              continue;
            }
            const q = Math.min(qos, 1);
            client.subscriptions.set(topic, q);
            granted.push(q);
          }
          newReportSubscriber = !hadReport && wants(client);
          deliver(client, encode({ cmd: "suback", messageId: packet.messageId ?? 0, granted }, protocolVersion));
          // A new subscriber gets the current state at once, instead of each client asking the printer.
          if (newReportSubscriber && state.primed) answer(client, state.pushallReply("0"));
          return;
        }
        case "unsubscribe":
          for (const topic of packet.unsubscriptions) client.subscriptions.delete(topic);
          deliver(client, encode({ cmd: "unsuback", messageId: packet.messageId ?? 0, granted: [] }, protocolVersion));
          return;
        case "publish":
          return onPublish(client, packet);
        case "pubrel":
          deliver(client, encode({ cmd: "pubcomp", messageId: packet.messageId ?? 0 }, protocolVersion));
          return;
        case "pingreq":
          deliver(client, encode({ cmd: "pingresp" }, protocolVersion));
          return;
        case "disconnect":
          closeClient(client, undefined);
          client.log.debug("disconnected");
          return;
        case "puback":
        case "pubrec":
        case "pubcomp":
          return;
        default:
          closeClient(client, `sent an unexpected ${packet.cmd}`);
      }
    };

    const reader = createPacketReader(() => (client ? MAX_CLIENT_PACKET_BYTES : MAX_CONNECT_BYTES), onPacket);
    socket.on("data", (chunk: Buffer) => {
      if (client?.closed || refused) return;
      try {
        reader.push(chunk);
      } catch (error) {
        const why = `malformed or oversized MQTT (${(error as Error).message})`;
        if (client) closeClient(client, why, "warn");
        else {
          peerLog.warn(`closing: ${why}`);
          socket.destroy();
        }
      }
    });
    socket.on("drain", () => client?.consumer.resume());
    socket.on("close", () => {
      clearTimeout(connectTimer);
      idle?.clear();
      if (client && !client.closed) {
        client.closed = true;
        client.consumer.remove();
        clients.delete(client);
        waitingForState.delete(client);
        waitingForVersion.delete(client);
        client.log.info("client went away");
      }
    });
  };

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
        onClient: (socket, info) => onClient(socket, info.log),
      });
      session.start();
    },
    async stop() {
      await session.stop();
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
        upstream: upstreamRefusal(session.upstream) ?? session.upstream.state,
        details: { viewers, stateCurrent: state.primed, reports: reportsCounter.value, printerConnects: session.upstream.connects },
      };
    },
  };
}
