// The simulated printer's MQTT broker (TLS 8883), with the firmware's habits: login `bblp` / access code, at most
// N connections, a client subscribing to `#` or to the request topic is dropped, a wrong serial in SUBSCRIBE
// closes the connection silently, a publish anywhere but the request topic is dropped with the connection.
// Optional firmware faults: a command budget per session (replies queue until a reconnect) and session decay.
// It shares the pure MQTT codec (lib/bambu/mqtt-wire.ts, on mqtt-packet) with the proxy; mosquitto plays the
// printer's broker in tests/mqtt-mosquitto-printer.test.ts, so what a real broker does is proven there.
import type { Socket } from "node:net";
import { sameSecret } from "../core/edge.ts";
import { listen, type Listening } from "../core/server.ts";
import { serviceLogger } from "../log.ts";
import { printerTlsOptions } from "./printer-tls.ts";
import type { JsonObject } from "../bambu/mqtt-state.ts";
import { reportTopic, requestTopic } from "../bambu/mqtt-topics.ts";
import {
  CONNACK_ACCEPTED, CONNACK_NOT_AUTHORIZED, CONNACK_UNACCEPTABLE_PROTOCOL, connackBytes, createPacketReader, encode,
  encodePublish, type Packet,
} from "../bambu/mqtt-wire.ts";
import { createSimPrint, type SimPrint } from "./print-state.ts";
import { openSdCard } from "./sdcard.ts";
import type { SimIdentity, SimOptions, SimService } from "./types.ts";

export const SIM_MQTT_MAX_CLIENTS = 4;

const isJsonObject = (value: unknown): value is JsonObject => typeof value === "object" && value !== null && !Array.isArray(value);
export const SIM_MQTT_REPORT_INTERVAL_MS = 1_000;
export const SIM_MQTT_CONNECT_TIMEOUT_MS = 10_000;
export const SIM_MQTT_MAX_PACKET_BYTES = 1 << 20;
/** Replies a wedged session holds at most (the firmware's ring buffer; older ones are lost). */
export const SIM_MQTT_HELD_REPLIES = 64;

export interface SimMqtt extends SimService {
  readonly print: SimPrint;
  /** Clients connected and logged in. */
  readonly clients: number;
  /** Connections accepted so far (refused ones included). */
  readonly accepted: number;
  /** Every request payload received, byte for byte. */
  readonly requests: Buffer[];
  /** Send a report to the subscribers now (an object is serialised; a Buffer goes as is). */
  report(report: JsonObject | Buffer): void;
  /** Send one status delta now, as the timer does. */
  tick(): void;
}

interface SimClient {
  socket: Socket;
  subscribed: boolean;
  /** Requests this session sent (the command budget counts them). */
  requests: number;
  connectedAt: number;
}

export async function startSimMqtt(identity: SimIdentity, options: SimOptions): Promise<SimMqtt> {
  const log = serviceLogger(identity.name, "sim-mqtt");
  // The card FTPS serves (lib/sim/bambu.ts passes one root to both), read by `project_file`.
  const card = openSdCard(options.ftpRoot);
  const print = createSimPrint(identity, card, { liveviewOff: options.liveviewOff, hmsAfterMs: options.hmsAfterMs, hmsForMs: options.hmsForMs });
  const report = reportTopic(identity.serial);
  const request = requestTopic(identity.serial);
  const clients = new Set<SimClient>();
  const requests: Buffer[] = [];
  /** Replies the wedged response handler holds; a new session releases them at once. */
  let heldReplies: JsonObject[] = [];
  const budget = options.mqttCommandBudget;
  const decayMs = options.mqttSessionDecayMs;

  const send = (payload: Buffer) => {
    const packet = encodePublish(report, payload);
    for (const c of clients) if (c.subscribed && !c.socket.destroyed) c.socket.write(packet);
  };
  const sendReport = (value: JsonObject | Buffer) => send(Buffer.isBuffer(value) ? value : Buffer.from(JSON.stringify(value)));

  const answer = (client: SimClient, body: JsonObject) => {
    client.requests++;
    if (decayMs !== undefined && Date.now() - client.connectedAt > decayMs) return; // a decayed session ignores it
    const replies = print.command(body);
    if (budget !== undefined && client.requests > budget) heldReplies = [...heldReplies, ...replies].slice(-SIM_MQTT_HELD_REPLIES);
    else for (const reply of replies) sendReport(reply);
  };

  const onClient = (socket: Socket, peerLog: typeof log) => {
    let client: SimClient | undefined;
    const connectTimer = setTimeout(() => socket.destroy(), SIM_MQTT_CONNECT_TIMEOUT_MS);
    const drop = (why: string) => {
      peerLog.info(`dropping client: ${why}`);
      socket.destroy();
    };
    const onPacket = (packet: Packet) => {
      if (!client) {
        if (packet.cmd !== "connect") return drop(`sent ${packet.cmd} before CONNECT`);
        clearTimeout(connectTimer);
        if (packet.protocolVersion === 5) {
          socket.end(connackBytes(CONNACK_UNACCEPTABLE_PROTOCOL));
          return;
        }
        if (packet.username !== "bblp" || !sameSecret(packet.password, identity.accessCode)) {
          peerLog.info("refused login: wrong user or access code");
          socket.end(connackBytes(CONNACK_NOT_AUTHORIZED));
          return;
        }
        client = { socket, subscribed: false, requests: 0, connectedAt: Date.now() };
        clients.add(client);
        socket.write(connackBytes(CONNACK_ACCEPTED));
        return;
      }
      switch (packet.cmd) {
        case "subscribe": {
          for (const { topic } of packet.subscriptions) {
            if (topic.includes("#") || topic.includes("+")) return drop(`subscribed to wildcard "${topic}"`);
            if (topic === request) return drop("subscribed to the request topic");
            if (topic !== report) {
              socket.destroy(); // the firmware closes without a word
              return;
            }
          }
          client.subscribed = true;
          socket.write(encode({ cmd: "suback", messageId: packet.messageId ?? 0, granted: packet.subscriptions.map((s) => Math.min(s.qos, 1)) }));
          for (const reply of heldReplies.splice(0)) sendReport(reply);
          return;
        }
        case "unsubscribe":
          client.subscribed = false;
          socket.write(encode({ cmd: "unsuback", messageId: packet.messageId ?? 0, granted: [] }));
          return;
        case "publish": {
          if (packet.topic !== request) return drop(`published to "${packet.topic}"`);
          const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
          requests.push(Buffer.from(payload));
          if (packet.qos > 0) socket.write(encode({ cmd: "puback", messageId: packet.messageId ?? 0 }));
          let body: unknown;
          try {
            body = JSON.parse(payload.toString("utf8"));
          } catch {
            return drop("published something that is not JSON");
          }
          if (!isJsonObject(body)) return drop("published something that is not a JSON object");
          answer(client, body);
          return;
        }
        case "pingreq":
          socket.write(encode({ cmd: "pingresp" }));
          return;
        case "disconnect":
          socket.end();
          return;
        default:
          return;
      }
    };
    const reader = createPacketReader(() => SIM_MQTT_MAX_PACKET_BYTES, onPacket);
    socket.on("data", (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (error) {
        drop(`malformed MQTT: ${(error as Error).message}`);
      }
    });
    socket.on("close", () => {
      clearTimeout(connectTimer);
      if (client) clients.delete(client);
    });
  };

  const listening: Listening = await listen({
    log,
    what: "simulated MQTT",
    host: identity.host,
    port: identity.ports.mqtt,
    tls: printerTlsOptions(identity.tls, "mqtt"),
    maxClients: options.mqttMaxClients ?? SIM_MQTT_MAX_CLIENTS,
    onClient: (socket, info) => onClient(socket, info.log),
  });

  const intervalMs = options.mqttReportIntervalMs ?? SIM_MQTT_REPORT_INTERVAL_MS;
  const timer = intervalMs > 0 ? setInterval(() => sendReport(print.tick()), intervalMs) : undefined;

  return {
    name: "mqtt",
    print,
    get clients() {
      return clients.size;
    },
    get accepted() {
      return listening.accepted;
    },
    requests,
    report: sendReport,
    tick: () => sendReport(print.tick()),
    async stop() {
      if (timer) clearInterval(timer);
      await listening.close();
      card.remove();
    },
  };
}
