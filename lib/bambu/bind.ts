// The slicer's bind/detect responder on TCP 3000 (plain) and 3002 (TLS): Bambu Studio and Orca add a LAN
// printer only after this exchange, so the proxy answers it itself with the printer's identity.
import type { Socket } from "node:net";
import { END_DESTROY_MS, endAndDestroy } from "../core/edge.ts";
import { listen, type ClientInfo, type Listening } from "../core/server.ts";
import type { PrinterHub, Service, ServiceContext, ServiceStatus } from "../core/service.ts";
import type { PrinterConfig } from "../config.ts";
import { serviceLogger } from "../log.ts";
import { serverTlsOptions } from "../tls.ts";
import { decodeBindFrame, detectReply, encodeBindFrame, isDetectRequest, type DetectIdentity } from "./bind-codec.ts";
import { findModel, modelOf } from "./models.ts";

/** A slicer sends its request at once; a client silent this long is closed. */
export const BIND_SILENCE_TIMEOUT_MS = 10_000;
export const BIND_MAX_CLIENTS = 16;
/** A firmware capture answered 3021; ours counts up from here (the firmware does not echo the request's). */
export const BIND_FIRST_SEQUENCE_ID = 3000;
/** Studio needs a non-empty version; used until MQTT's get_version (or the printer's SSDP) tells us the real one. */
export const FIRMWARE_PLACEHOLDER = "01.00.00.00";

/** What the proxy says this printer is, from what the printer told us (hub) or else the configuration. */
export function advertisedIdentity(printer: Pick<PrinterConfig, "name" | "serial" | "model">, hub?: PrinterHub): Partial<DetectIdentity> & Omit<DetectIdentity, "modelCode"> {
  const modelCode = hub?.info.modelCode ?? findModel(hub?.info.model)?.code ?? modelOf(printer)?.code;
  return { serial: printer.serial, modelCode, name: printer.name, firmware: hub?.info.firmware || FIRMWARE_PLACEHOLDER };
}

export interface DetectExchangeOptions {
  /** Undefined while the model is not known yet: the client is closed with a log line saying what to set. */
  identity(): DetectIdentity | undefined;
  nextSequenceId(): number;
  silenceMs?: number;
  /** After our reply, how long the slicer has to close its side before we destroy the socket. */
  endDestroyMs?: number;
}

export type DetectOutcome = "answered" | "refused";

/** One exchange on an accepted (and, on 3002, handshaken) socket: a detect request, our reply, then close. */
export function serveDetectExchange(socket: Socket, client: ClientInfo, options: DetectExchangeOptions): Promise<DetectOutcome> {
  const { log } = client;
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    let finished = false;
    const finish = (outcome: DetectOutcome, why?: string) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.off("data", onData);
      if (why) {
        log.info(`closing: ${why}`);
        socket.destroy();
      }
      resolve(outcome);
    };
    const silenceMs = options.silenceMs ?? BIND_SILENCE_TIMEOUT_MS;
    const timer = setTimeout(() => finish("refused", `no complete detect request within ${silenceMs / 1000} s`), silenceMs);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const decoded = decodeBindFrame(received);
      if (decoded.kind === "incomplete") return;
      if (decoded.kind === "invalid") return finish("refused", `not a bind frame: ${decoded.reason}`);
      if (!isDetectRequest(decoded.message)) {
        return finish("refused", `not a detect request: ${JSON.stringify(decoded.message).slice(0, 120)}`);
      }
      const identity = options.identity();
      if (!identity) {
        return finish("refused", "cannot answer detect: the printer's model is not known yet (set `model` in printers.toml)");
      }
      const sequenceId = options.nextSequenceId();
      endAndDestroy(socket, encodeBindFrame(detectReply(identity, sequenceId)), options.endDestroyMs ?? END_DESTROY_MS);
      log.info(`answered detect as ${identity.modelCode} ${identity.serial} (sequence_id ${sequenceId})`);
      finish("answered");
    };
    socket.on("data", onData);
    socket.once("close", () => finish("refused"));
    socket.once("end", () => {
      if (!finished) finish("refused", `closed by the client after ${received.length} bytes, before a complete request`);
    });
  });
}

export interface BindServiceOptions {
  silenceMs?: number;
  endDestroyMs?: number;
  maxClients?: number;
}

export function createBindService(ctx: ServiceContext, options: BindServiceOptions = {}): Service {
  const { printer, hub } = ctx;
  const log = serviceLogger(printer.name, "bind");
  const listeners: { what: string; port: number; tls: boolean; listening?: Listening; error?: string }[] = [
    { what: "slicer bind/detect (plain)", port: printer.ports.bind, tls: false },
    { what: "slicer bind/detect (TLS)", port: printer.ports.bind_tls, tls: true },
  ].filter((l) => l.port > 0);
  let sequenceId = BIND_FIRST_SEQUENCE_ID;
  let answered = 0;
  let refused = 0;
  let warnedUnknownModel = false;
  const answeredCounter = ctx.metrics.counter("pandaproxy_bind_detect_answered_total", "Slicer detect requests answered", { printer: printer.name });

  const identity = (): DetectIdentity | undefined => {
    const known = advertisedIdentity(printer, hub);
    if (known.modelCode) return { ...known, modelCode: known.modelCode };
    if (!warnedUnknownModel) {
      warnedUnknownModel = true;
      log.warn(`the model of serial ${printer.serial} is unknown: slicers cannot add this printer until \`model\` is set in printers.toml or MQTT reports it`);
    }
    return undefined;
  };

  const onClient = (socket: Socket, client: ClientInfo) => {
    void serveDetectExchange(socket, client, {
      identity,
      nextSequenceId: () => sequenceId++,
      silenceMs: options.silenceMs,
      endDestroyMs: options.endDestroyMs,
    }).then((outcome) => {
      if (outcome === "answered") {
        answered++;
        answeredCounter.inc();
      } else refused++;
    });
  };

  return {
    name: "bind",
    async start() {
      const results = await Promise.allSettled(
        listeners.map(async (l) => {
          l.error = undefined;
          l.listening = await listen({
            log,
            what: l.what,
            host: printer.bind,
            allow: printer.allow,
            port: l.port,
            tls: l.tls ? serverTlsOptions(ctx.tls) : undefined,
            maxClients: options.maxClients ?? BIND_MAX_CLIENTS,
            onClient,
          });
        }),
      );
      results.forEach((result, i) => {
        if (result.status === "rejected") {
          const l = listeners[i]!;
          l.error = (result.reason as Error).message;
          log.error(`${l.error}; ${listeners.length > 1 ? "the other bind port is still served" : "slicers cannot bind"}`);
        }
      });
      if (listeners.length && listeners.every((l) => l.error)) throw new Error(listeners.map((l) => l.error).join("; "));
    },
    async stop() {
      await Promise.all(listeners.map((l) => l.listening?.close()));
      for (const l of listeners) l.listening = undefined;
    },
    status(): ServiceStatus {
      const failed = listeners.filter((l) => l.error);
      const running = listeners.filter((l) => l.listening);
      return {
        state: failed.length ? `error: ${failed.map((l) => l.error).join("; ")}` : running.length ? "listening" : "stopped",
        clients: running.reduce((n, l) => n + (l.listening?.clients ?? 0), 0),
        details: {
          ports: listeners.map((l) => `${l.port}${l.tls ? " (TLS)" : ""}${l.error ? " failed" : ""}`).join(", "),
          answered,
          refused,
        },
      };
    },
  };
}
