// A simulated printer's bind/detect ports: TCP 3000 plain and 3002 TLS (plain-RSA suites, TLS 1.2, as the X1C
// offers), one detect exchange per connection, answered with the printer's own identity.
// The printer side is the simulator's own: only the pure frame codec (lib/bambu/bind-codec.ts, checked against
// tests/golden/) is shared with the proxy, never its bind responder, so a test against this proves the proxy's
// responder against the documented framing rather than against itself.
import type { Socket } from "node:net";
import { endAndDestroy } from "../core/edge.ts";
import { listen, type Listening } from "../core/server.ts";
import { serviceLogger, type Logger } from "../log.ts";
import { decodeBindFrame, detectReply, encodeBindFrame, isDetectRequest, type DetectIdentity } from "../bambu/bind-codec.ts";
import type { SimService, SimStarter } from "./types.ts";

/** X1C 3002 offers only plain-RSA suites (maziggy/bambuddy#620). */
export const SIM_BIND_TLS_CIPHERS = "AES256-GCM-SHA384:AES128-GCM-SHA256";
/** The firmware capture in Bambuddy's bind_server.py answered 3021; the simulator counts up from there. */
export const SIM_BIND_FIRST_SEQUENCE_ID = 3021;
/** A slicer sends its request at once; the simulated printer hangs up on a client silent this long. */
export const SIM_BIND_SILENCE_MS = 10_000;
/** After its reply, how long the simulated printer waits for the slicer to close before it destroys the socket. */
export const SIM_BIND_CLOSE_MS = 2_000;

export interface SimBindService extends SimService {
  readonly answered: number;
}

/** One exchange, as the firmware does it: a detect request, the reply, then close; anything else is hung up on. */
function answerDetect(socket: Socket, log: Logger, identity: DetectIdentity, nextSequenceId: () => number, onAnswered: () => void): void {
  let received = Buffer.alloc(0);
  const hangUp = (why: string) => {
    clearTimeout(silence);
    socket.off("data", onData);
    log.debug(`closing: ${why}`);
    socket.destroy();
  };
  const silence = setTimeout(() => hangUp("no detect request in time"), SIM_BIND_SILENCE_MS);
  socket.once("close", () => clearTimeout(silence));
  const onData = (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    const decoded = decodeBindFrame(received);
    if (decoded.kind === "incomplete") return;
    if (decoded.kind === "invalid") return hangUp(`not a bind frame: ${decoded.reason}`);
    if (!isDetectRequest(decoded.message)) return hangUp("not a detect request");
    clearTimeout(silence);
    socket.off("data", onData);
    endAndDestroy(socket, encodeBindFrame(detectReply(identity, nextSequenceId())), SIM_BIND_CLOSE_MS);
    onAnswered();
  };
  socket.on("data", onData);
}

export const startSimBind: SimStarter = async (identity) => {
  const log = serviceLogger(identity.name, "sim-bind");
  let sequenceId = SIM_BIND_FIRST_SEQUENCE_ID;
  let answered = 0;
  const detectIdentity: DetectIdentity = { serial: identity.serial, modelCode: identity.model.code, name: identity.name, firmware: identity.firmware };
  const open: Listening[] = [];
  const ports = [
    { port: identity.ports.bind, tls: false },
    { port: identity.ports.bind_tls, tls: true },
  ].filter((p) => p.port > 0);
  try {
    for (const { port, tls } of ports) {
      open.push(
        await listen({
          log,
          what: `simulated bind/detect${tls ? " (TLS)" : ""}`,
          host: identity.host,
          port,
          tls: tls
            ? { key: identity.tls.key, cert: identity.tls.cert, ciphers: SIM_BIND_TLS_CIPHERS, minVersion: "TLSv1.2", maxVersion: "TLSv1.2" }
            : undefined,
          onClient: (socket, client) => answerDetect(socket, client.log, detectIdentity, () => sequenceId++, () => void answered++),
        }),
      );
    }
  } catch (error) {
    await Promise.all(open.map((l) => l.close()));
    throw error;
  }
  const service: SimBindService = {
    name: "bind",
    get answered() {
      return answered;
    },
    stop: async () => void (await Promise.all(open.map((l) => l.close()))),
  };
  return service;
};
