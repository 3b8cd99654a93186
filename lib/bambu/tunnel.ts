// Port 6000 of P2S, H2 and X2D printers: Bambu Studio's file browser and uploads ("BambuTunnelLocal"), not a
// camera. Relayed opaquely: TLS ends here and at the printer, bytes are piped both ways, one printer session per
// client session, several at once. Only the login is read, to check the access code before touching the printer.
// Login forms (../shared/PROTOCOLS.md, Doridian/OpenBambuAPI lan-file-tunnel.md; the sources disagree):
// a 16-byte header (magic 3F 01 at bytes 4..5, subchannel 01) + `bblp` and the code in 8 bytes each, or a bare
// 64-byte packet (`bblp` in 8, the code in 32, 24 reserved).
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { connectToPrinter, dropPrinterSocket } from "../core/printer-socket.ts";
import { END_DESTROY_MS, endAndDestroy, idleDeadline, sameSecret } from "../core/edge.ts";
import { listen, readExactly, type Listening } from "../core/server.ts";
import type { Service, ServiceContext, ServiceStatus } from "../core/service.ts";
import { registerSecret, serviceLogger, type Logger } from "../log.ts";
import { printerClientTlsOptions, serverTlsOptions } from "../tls.ts";

export const TUNNEL_LOGIN_TIMEOUT_MS = 10_000;
export const TUNNEL_CONNECT_TIMEOUT_MS = 10_000;
/** A session with no bytes either way for this long is closed (Studio's file browser polls while it is open). */
export const TUNNEL_IDLE_TIMEOUT_MS = 5 * 60_000;
/** Studio opens a few sessions (browser, upload); this bounds what a misbehaving client can make us open. */
export const MAX_TUNNEL_SESSIONS = 16;
const HEADER_SIZE = 16;
const MAGIC_LOW = 0x013f;
const SUBCHANNEL_LOGIN = 0x01;
const FRAMED_LOGIN_PAYLOAD = 16;
/** The framed login: its 16-byte header and 16 bytes of user and code. */
export const FRAMED_LOGIN_SIZE = HEADER_SIZE + FRAMED_LOGIN_PAYLOAD;
const BARE_LOGIN_SIZE = 64;
const BARE_USER = Buffer.from("bblp\0\0\0\0");

export interface TunnelLogin {
  /** Every byte read so far: forwarded to the printer unchanged. */
  bytes: Buffer;
  /** undefined when the login is in neither known form. */
  credentials?: { username: Buffer; accessCode: Buffer };
}

/**
 * True when these first 16 bytes are the framed login's header: length 16, magic 3F 01, subchannel 01. The
 * chamber camera's login starts u32 0x40, u32 0x3000 instead, so 16 bytes tell the two apart.
 */
export function isFramedLoginHeader(first: Buffer): boolean {
  return first.length >= HEADER_SIZE && first.readUInt32LE(0) === FRAMED_LOGIN_PAYLOAD && first.readUInt16LE(4) === MAGIC_LOW && first[6] === SUBCHANNEL_LOGIN;
}

/** Reads the client's login in either known form (or just its first 16 bytes when it is neither). */
export async function readTunnelLogin(socket: Socket, timeoutMs = TUNNEL_LOGIN_TIMEOUT_MS): Promise<TunnelLogin> {
  const first = await readExactly(socket, HEADER_SIZE, timeoutMs);
  if (isFramedLoginHeader(first)) {
    const payload = await readExactly(socket, FRAMED_LOGIN_PAYLOAD, timeoutMs);
    return { bytes: Buffer.concat([first, payload]), credentials: { username: payload.subarray(0, 8), accessCode: payload.subarray(8, 16) } };
  }
  if (first.subarray(0, 8).equals(BARE_USER)) {
    const rest = await readExactly(socket, BARE_LOGIN_SIZE - HEADER_SIZE, timeoutMs);
    const bytes = Buffer.concat([first, rest]);
    return { bytes, credentials: { username: bytes.subarray(0, 8), accessCode: bytes.subarray(8, 40) } };
  }
  return { bytes: first };
}

function padded(text: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  out.write(text.slice(0, size), "latin1");
  return out;
}

/** Constant time; the file tunnel uploads and deletes, so only the full access code opens it. */
export function tunnelLoginMatches(credentials: NonNullable<TunnelLogin["credentials"]>, accessCode: string): boolean {
  const userOk = sameSecret(credentials.username, padded("bblp", credentials.username.length));
  const codeOk = sameSecret(credentials.accessCode, padded(accessCode, credentials.accessCode.length));
  return userOk && codeOk && accessCode.length > 0;
}

/**
 * Pipes bytes one way with backpressure. When this side ends, the other is ended and destroyed after
 * `endDestroyMs` (a peer that keeps its half open must not hold the session).
 */
function pipe(from: Socket, to: Socket, count: (n: number) => void, endDestroyMs: number): void {
  from.on("data", (chunk: Buffer) => {
    count(chunk.length);
    if (!to.write(chunk)) {
      from.pause();
      to.once("drain", () => from.resume());
    }
  });
  from.once("end", () => endAndDestroy(to, undefined, endDestroyMs));
  from.once("close", () => to.destroy());
}

export interface TunnelOptions {
  loginTimeoutMs?: number;
  idleTimeoutMs?: number;
  endDestroyMs?: number;
}

export function createTunnelService(ctx: ServiceContext, options: TunnelOptions = {}): Service {
  const { printer } = ctx;
  const loginTimeoutMs = options.loginTimeoutMs ?? TUNNEL_LOGIN_TIMEOUT_MS;
  const idleTimeoutMs = options.idleTimeoutMs ?? TUNNEL_IDLE_TIMEOUT_MS;
  const endDestroyMs = options.endDestroyMs ?? END_DESTROY_MS;
  const log = serviceLogger(printer.name, "tunnel");
  registerSecret(printer.accessCode);
  const labels = { printer: printer.name, service: "tunnel" };
  const bytesUp = ctx.metrics.counter("pandaproxy_tunnel_bytes_to_printer_total", "File tunnel bytes relayed to the printer", labels);
  const bytesDown = ctx.metrics.counter("pandaproxy_client_bytes_sent_total", "Bytes sent to clients", labels);
  const sessionsTotal = ctx.metrics.counter("pandaproxy_tunnel_sessions_total", "File tunnel sessions relayed", labels);
  const printerAddress = `${printer.host}:${printer.printerPorts.chamber}`;
  const upstreams = new Set<TLSSocket>();
  let listening: Listening | undefined;
  let failure: string | undefined;
  let lastError: string | undefined;
  let unregister: (() => void) | undefined;

  const openPrinterSession = (clientLog: Logger) =>
    new Promise<TLSSocket>((resolve, reject) => {
      const upstream = connectToPrinter({ ...printerClientTlsOptions(printer), port: printer.printerPorts.chamber });
      const timer = setTimeout(() => {
        dropPrinterSocket(upstream);
        reject(new Error(`no TLS handshake from the printer at ${printerAddress} within ${TUNNEL_CONNECT_TIMEOUT_MS / 1000} s`));
      }, TUNNEL_CONNECT_TIMEOUT_MS);
      upstream.once("secureConnect", () => {
        clearTimeout(timer);
        resolve(upstream);
      });
      upstream.once("error", (error) => {
        clearTimeout(timer);
        clientLog.debug(`printer session error: ${error.message}`);
        reject(new Error(`cannot reach the printer's file tunnel at ${printerAddress}: ${error.message}`));
      });
    });

  const onClient = async (client: Socket, info: { peer: string; log: Logger }) => {
    let login: TunnelLogin;
    try {
      login = await readTunnelLogin(client, loginTimeoutMs);
    } catch (error) {
      info.log.info(`closing: no login: ${(error as Error).message}`);
      return void client.destroy();
    }
    if (login.credentials && !tunnelLoginMatches(login.credentials, printer.accessCode)) {
      info.log.warn("closing: wrong user or access code for the file tunnel");
      return void client.destroy();
    }
    if (!login.credentials) {
      // Neither documented form: the printer judges it. Only the framing bytes are logged, never a code.
      info.log.warn(`login in an unknown form (starts ${login.bytes.subarray(0, 8).toString("hex")}); relaying it to the printer as is`);
    }
    client.pause();
    let upstream: TLSSocket;
    try {
      upstream = await openPrinterSession(info.log);
    } catch (error) {
      lastError = (error as Error).message;
      info.log.warn(`closing: ${lastError}`);
      return void client.destroy();
    }
    if (client.destroyed) return void upstream.destroy();
    lastError = undefined;
    upstreams.add(upstream);
    sessionsTotal.inc();
    upstream.on("error", (error) => info.log.debug(`printer session error: ${error.message}`));
    upstream.once("close", () => upstreams.delete(upstream));
    upstream.write(login.bytes);
    bytesUp.inc(login.bytes.length);
    const idle = idleDeadline(idleTimeoutMs, () => {
      info.log.info(`closing: no bytes either way for ${idleTimeoutMs / 1000} s`);
      client.destroy();
      upstream.destroy();
    });
    pipe(client, upstream, (n) => {
      idle.touch();
      bytesUp.inc(n);
    }, endDestroyMs);
    pipe(upstream, client, (n) => {
      idle.touch();
      bytesDown.inc(n);
    }, endDestroyMs);
    client.resume();
    info.log.info(`file tunnel session open (${upstreams.size} at once)`);
    client.once("close", () => {
      idle.clear();
      info.log.info("file tunnel session closed");
    });
  };

  return {
    name: "tunnel",
    async start() {
      try {
        listening = await listen({
          log, what: "file tunnel", host: printer.bind, allow: printer.allow, port: printer.ports.chamber,
          tls: serverTlsOptions(ctx.tls), maxClients: MAX_TUNNEL_SESSIONS,
          onClient: (socket, info) => void onClient(socket, info),
        });
      } catch (error) {
        failure = (error as Error).message;
        throw error;
      }
      failure = undefined;
      unregister = ctx.metrics.gauge("pandaproxy_clients", "Clients connected now", labels, () => listening?.clients ?? 0);
      log.info(`file tunnel listening on ${printer.bind}:${printer.ports.chamber} for the printer at ${printerAddress}`);
    },
    async stop() {
      await listening?.close();
      listening = undefined;
      for (const upstream of upstreams) upstream.destroy();
      unregister?.();
      unregister = undefined;
    },
    status(): ServiceStatus {
      return {
        state: failure ? `error: ${failure}` : listening ? "listening" : "stopped",
        clients: listening?.clients ?? 0,
        upstream: lastError ? `error (${lastError})` : `${upstreams.size} printer session${upstreams.size === 1 ? "" : "s"}`,
        details: { sessions: sessionsTotal.value },
      };
    },
  };
}
