// The proxy's one MQTT session with the printer: a stable client id, subscribed to the report topic only,
// reconnected with backoff (clients stay connected meanwhile), and after each connect it asks once for the full
// state (`pushall`) and the versions (`get_version`). Publishes go out with their payload bytes untouched. A session
// that stops answering requests (mqtt-health.ts) or outlives `mqtt_session_max_age` is renewed: a new connection,
// clients untouched, nothing sent again.
import type { TLSSocket } from "node:tls";
import { connectToPrinter, dropPrinterSocket } from "../core/printer-socket.ts";
import type { PrinterConfig } from "../config.ts";
import { createUpstream, LoginRefused, type Upstream } from "../core/upstream.ts";
import type { Counter } from "../core/metrics.ts";
import type { Logger } from "../log.ts";
import { printerClientTlsOptions } from "../tls.ts";
import { createSessionHealth } from "./mqtt-health.ts";
import { reportTopic, requestTopic } from "./mqtt-topics.ts";
import {
  CONNACK_ACCEPTED, CONNACK_BAD_CREDENTIALS, CONNACK_NOT_AUTHORIZED, SUBACK_FAILURE, createPacketReader, encode,
  encodePublish, type Packet,
} from "./mqtt-wire.ts";

export const UPSTREAM_CONNECT_TIMEOUT_MS = 10_000;
export const UPSTREAM_KEEPALIVE_S = 30;
/** How long the printer has to acknowledge a QoS 1 publish before we give up on it. */
export const UPSTREAM_PUBACK_TIMEOUT_MS = 10_000;
/** Reports can be large (a full P1/X1 status with AMS is tens of KB); anything past this is broken. */
export const UPSTREAM_MAX_PACKET_BYTES = 4 << 20;
/** Our own requests use sequence ids from here, so they never collide with a client's. */
export const PROXY_SEQUENCE_BASE = 2_000_000_000;
/** Request bytes waiting for the printer's socket past which client publishes are refused (a printer that
 * stops reading must not make us buffer every client's commands). */
export const PRINTER_WRITE_BUFFER_BYTES = 256 * 1024;
/** How often a connected session is checked for requests left unanswered. */
export const SESSION_HEALTH_CHECK_MS = 1_000;
/** Renewals for unanswered requests come at most this often: a printer that never answers is not hammered. */
export const SESSION_RENEW_MIN_INTERVAL_MS = 60_000;
/** MQTT packet identifiers are 1..65535 (3.1.1 section 2.3.1). */
const MAX_MESSAGE_ID = 65_535;

export interface PrinterSessionOptions {
  writeBufferBytes?: number;
  /** Counts the sessions renewed (the metrics counter, when the service has one). */
  renewals?: Counter;
}

export interface PrinterSession {
  start(): void;
  stop(): Promise<void>;
  /**
   * Sends a request payload byte for byte. Resolves true once the printer has it (QoS 1: its PUBACK; QoS 0:
   * written to the socket), false when there is no session or it was lost first.
   */
  publish(payload: Buffer, qos: 0 | 1): Promise<boolean>;
  /** False when a request of `bytes` would take the bytes waiting for the printer past the limit. */
  hasRoomFor(bytes: number): boolean;
  /** Bytes written to the printer's socket that it has not taken yet. */
  readonly writeBacklog: number;
  /**
   * Each report as the printer sent it; `frame`: its whole PUBLISH, when it is one a client may get byte for byte
   * (QoS 0, no DUP or RETAIN flag, on the report topic).
   */
  onReport(listener: (payload: Buffer, frame: Buffer | undefined) => void): () => void;
  onConnected(listener: () => void): () => void;
  onDisconnected(listener: () => void): () => void;
  readonly connected: boolean;
  /** Sessions renewed so far because requests went unanswered or the session reached its maximum age. */
  readonly renewals: number;
  readonly upstream: Upstream<PrinterLink>;
}

interface PrinterLink {
  socket: TLSSocket;
  /** A packet id not waiting for its PUBACK; undefined when all 65,535 are. */
  nextMessageId(): number | undefined;
  acks: Map<number, (ok: boolean) => void>;
}

export function createPrinterSession(printer: PrinterConfig, log: Logger, options: PrinterSessionOptions = {}): PrinterSession {
  const writeBufferBytes = options.writeBufferBytes ?? PRINTER_WRITE_BUFFER_BYTES;
  const report = reportTopic(printer.serial);
  const request = requestTopic(printer.serial);
  const clientId = `pandaproxy_${printer.serial}`;
  const reportListeners = new Set<(payload: Buffer, frame: Buffer | undefined) => void>();
  const connectedListeners = new Set<() => void>();
  const disconnectedListeners = new Set<() => void>();
  let ownSequence = 0;
  const health = createSessionHealth();
  let renewals = 0;
  let lastRenewAt = -Infinity;

  const connect = () =>
    new Promise<{ connection: PrinterLink; closed: Promise<unknown>; close(): void }>((resolve, reject) => {
      const socket = connectToPrinter({ ...printerClientTlsOptions(printer), port: printer.printerPorts.mqtt });
      let messageId = 0;
      const acks = new Map<number, (ok: boolean) => void>();
      const link: PrinterLink = {
        socket,
        // After the wrap an id may still be waiting for its PUBACK; reusing it would answer the wrong publish.
        nextMessageId: () => {
          for (let tried = 0; tried < MAX_MESSAGE_ID; tried++) {
            messageId = (messageId % MAX_MESSAGE_ID) + 1;
            if (!acks.has(messageId)) return messageId;
          }
          return undefined;
        },
        acks,
      };
      let phase: "tls" | "connack" | "suback" | "ready" = "tls";
      let settled = false;
      let lastHeard = Date.now();
      let pingTimer: ReturnType<typeof setInterval> | undefined;
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        dropPrinterSocket(socket);
        reject(error);
      };
      const deadline = setTimeout(() => fail(new Error(`no answer within ${UPSTREAM_CONNECT_TIMEOUT_MS / 1000} s (${phase})`)), UPSTREAM_CONNECT_TIMEOUT_MS);
      const closed = new Promise<unknown>((done) => {
        socket.once("close", () => {
          if (pingTimer) clearInterval(pingTimer);
          for (const ack of link.acks.values()) ack(false);
          link.acks.clear();
          done(socket.errored ?? "closed by the printer");
        });
      });
      socket.on("error", (error) => fail(error));
      socket.once("close", () => fail(new Error(`closed by the printer during ${phase}`)));

      const onPacket = (packet: Packet, frame: Buffer) => {
        lastHeard = Date.now();
        if (phase === "connack") {
          if (packet.cmd !== "connack") return fail(new Error(`expected CONNACK, got ${packet.cmd}`));
          const code = packet.returnCode ?? packet.reasonCode ?? 0;
          if (code === CONNACK_BAD_CREDENTIALS || code === CONNACK_NOT_AUTHORIZED) return fail(new LoginRefused(`CONNACK ${code}: ${code === CONNACK_BAD_CREDENTIALS ? "bad user name or password" : "not authorized"}`));
          if (code !== CONNACK_ACCEPTED) return fail(new Error(`printer refused the session (CONNACK ${code})`));
          phase = "suback";
          socket.write(encode({ cmd: "subscribe", messageId: link.nextMessageId(), subscriptions: [{ topic: report, qos: 0 }] }));
          return;
        }
        if (phase === "suback") {
          if (packet.cmd !== "suback") return;
          if (packet.granted[0] === SUBACK_FAILURE) return fail(new Error(`printer refused the subscription to ${report}`));
          phase = "ready";
          settled = true;
          clearTimeout(deadline);
          pingTimer = setInterval(() => {
            if (Date.now() - lastHeard > UPSTREAM_KEEPALIVE_S * 1500) {
              log.warn(`printer silent for ${UPSTREAM_KEEPALIVE_S * 1.5} s; dropping the session`);
              dropPrinterSocket(socket);
              return;
            }
            socket.write(encode({ cmd: "pingreq" }));
          }, UPSTREAM_KEEPALIVE_S * 1000);
          resolve({ connection: link, closed, close: () => dropPrinterSocket(socket) });
          return;
        }
        switch (packet.cmd) {
          case "publish": {
            if (packet.topic !== report) return;
            const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
            if (packet.qos === 1) socket.write(encode({ cmd: "puback", messageId: packet.messageId ?? 0 }));
            const plain = packet.qos === 0 && !packet.retain && !packet.dup ? frame : undefined;
            for (const l of reportListeners) l(payload, plain);
            // After the clients have it: whether it answers a request is no reason to make them wait.
            health.reportReceived(payload);
            return;
          }
          case "puback": {
            const ack = link.acks.get(packet.messageId ?? -1);
            if (ack) {
              link.acks.delete(packet.messageId ?? -1);
              ack(true);
            }
            return;
          }
          default:
            return;
        }
      };
      const reader = createPacketReader(() => UPSTREAM_MAX_PACKET_BYTES, onPacket);
      socket.on("data", (chunk: Buffer) => {
        try {
          reader.push(chunk);
        } catch (error) {
          log.warn(`printer sent malformed MQTT (${(error as Error).message}); reconnecting`);
          dropPrinterSocket(socket);
        }
      });
      socket.once("secureConnect", () => {
        phase = "connack";
        socket.write(encode({
          cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId, keepalive: UPSTREAM_KEEPALIVE_S,
          username: "bblp", password: Buffer.from(printer.accessCode),
        }));
      });
    });

  const upstream = createUpstream<PrinterLink>({
    log,
    describe: `printer MQTT at ${printer.host}:${printer.printerPorts.mqtt}`,
    connect,
    onDemand: false,
  });

  const write = (link: PrinterLink, payload: Buffer, qos: 0 | 1): Promise<boolean> => {
    if (link.socket.destroyed) return Promise.resolve(false);
    if (qos === 0) {
      link.socket.write(encodePublish(request, payload));
      return Promise.resolve(true);
    }
    const id = link.nextMessageId();
    if (id === undefined) {
      log.warn(`all ${MAX_MESSAGE_ID} MQTT packet ids are waiting for the printer's PUBACK; a request was not sent`);
      return Promise.resolve(false);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (link.acks.delete(id)) resolve(false);
      }, UPSTREAM_PUBACK_TIMEOUT_MS);
      link.acks.set(id, (ok) => {
        clearTimeout(timer);
        resolve(ok);
      });
      link.socket.write(encodePublish(request, payload, 1, id));
    });
  };

  const renew = (link: PrinterLink, why: string) => {
    renewals++;
    options.renewals?.inc();
    lastRenewAt = Date.now();
    log.warn(`renewing the printer's MQTT session (${why}); clients stay connected, no request is sent again`);
    link.socket.destroy(new Error(`session renewed by the proxy: ${why}`));
  };

  const watchHealth = (link: PrinterLink) => {
    health.reset();
    const check = setInterval(() => {
      const why = health.wedged(Date.now());
      if (why && Date.now() - lastRenewAt >= SESSION_RENEW_MIN_INTERVAL_MS) renew(link, why);
    }, SESSION_HEALTH_CHECK_MS);
    const maxAgeMs = printer.mqttSessionMaxAgeMs;
    const aged = maxAgeMs === undefined ? undefined : setTimeout(() => renew(link, `the session is ${maxAgeMs / 1000} s old, mqtt_session_max_age`), maxAgeMs);
    link.socket.once("close", () => {
      clearInterval(check);
      clearTimeout(aged);
    });
  };

  upstream.on("connected", (link) => {
    watchHealth(link);
    // Once per connect: the state clients are waiting for, and the firmware version for SSDP and bind.
    const pushall = { pushing: { sequence_id: String(PROXY_SEQUENCE_BASE + ++ownSequence), command: "pushall" } };
    const version = { info: { sequence_id: String(PROXY_SEQUENCE_BASE + ++ownSequence), command: "get_version" } };
    void write(link, Buffer.from(JSON.stringify(pushall)), 0);
    void write(link, Buffer.from(JSON.stringify(version)), 0);
    for (const l of connectedListeners) l();
  });
  upstream.on("disconnected", () => {
    for (const l of disconnectedListeners) l();
  });

  return {
    start: () => upstream.start(),
    stop: () => upstream.stop(),
    publish(payload, qos) {
      const link = upstream.current();
      if (!link) return Promise.resolve(false);
      health.requestSent(payload, Date.now());
      return write(link, payload, qos);
    },
    onReport(listener) {
      reportListeners.add(listener);
      return () => reportListeners.delete(listener);
    },
    onConnected(listener) {
      connectedListeners.add(listener);
      return () => connectedListeners.delete(listener);
    },
    onDisconnected(listener) {
      disconnectedListeners.add(listener);
      return () => disconnectedListeners.delete(listener);
    },
    hasRoomFor(bytes) {
      const waiting = upstream.current()?.socket.writableLength ?? 0;
      // An empty buffer takes any request, however large: the limit is on what piles up.
      return waiting === 0 || waiting + bytes <= writeBufferBytes;
    },
    get writeBacklog() {
      return upstream.current()?.socket.writableLength ?? 0;
    },
    get connected() {
      return upstream.state === "connected";
    },
    get renewals() {
      return renewals;
    },
    upstream,
  };
}
