// TCP and TLS listeners with the rules every service shares: a handshake deadline, a client limit, clear log
// lines for clients that misbehave, and a close() that ends every client so shutdown is prompt.
import { createServer as createTcpServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket, type TlsOptions } from "node:tls";
import type { Logger } from "../log.ts";
import { createAllowList } from "./allow.ts";
import { TCP_KEEPALIVE_MS } from "./edge.ts";
import { runForClient } from "./client-context.ts";

export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_CLIENTS = 64;

export interface ClientInfo {
  /** "192.168.1.20:53422" */
  peer: string;
  log: Logger;
}

export interface ListenOptions {
  log: Logger;
  /** For messages: "MQTT", "chamber camera". */
  what: string;
  host: string;
  port: number;
  /** TLS server options; omit for plain TCP. */
  tls?: TlsOptions;
  maxClients?: number;
  /** Who may connect (CIDR ranges, lib/core/allow.ts); default DEFAULT_ALLOW. Checked before a byte is read. */
  allow?: readonly string[];
  onClient(socket: Socket | TLSSocket, client: ClientInfo): void;
}

export interface Listening {
  readonly address: { host: string; port: number };
  readonly clients: number;
  readonly accepted: number;
  readonly sockets: ReadonlySet<Socket>;
  close(): Promise<void>;
}

export function peerOf(socket: Socket): string {
  return `${socket.remoteAddress?.replace(/^::ffff:/, "") ?? "?"}:${socket.remotePort ?? "?"}`;
}

/** What a client's TLS alert means for the person reading the log. */
const CLIENT_ALERTS: Record<string, string> = {
  SSLV3_ALERT_BAD_CERTIFICATE: "bad certificate",
  TLSV1_ALERT_UNKNOWN_CA: "unknown CA",
  SSLV3_ALERT_CERTIFICATE_UNKNOWN: "certificate unknown",
  TLSV1_ALERT_ACCESS_DENIED: "access denied",
  SSLV3_ALERT_UNSUPPORTED_CERTIFICATE: "unsupported certificate",
  SSLV3_ALERT_CERTIFICATE_EXPIRED: "certificate expired",
  TLSV1_ALERT_DECRYPT_ERROR: "decrypt error",
  // Bun reports a TLS 1.3 client's alert (sent under the handshake keys) as a bad packet length; in practice
  // that is a client that verified our certificate and refused it (docs/protocol-notes.md).
  BAD_PACKET_LENGTH: "an alert Bun cannot decode, as TLS 1.3 clients send when they refuse the certificate",
};

export const TRUST_HINT = "slicers and Home Assistant must trust the proxy's CA, see `pandaproxy ca`";

/** One log line for a failed TLS handshake, in words, with what to do about it when we know. */
export function describeTlsClientError(error: Error & { code?: string }): string {
  const code = (error.code ?? "").replace(/^ERR_SSL_/, "");
  const alert = CLIENT_ALERTS[code];
  if (alert) return `the client did not accept our certificate (${alert}): ${TRUST_HINT}`;
  if (code === "HTTP_REQUEST") return "TLS handshake failed: the client spoke plain HTTP to a TLS port";
  if (code === "WRONG_VERSION_NUMBER" || code === "UNSUPPORTED_PROTOCOL") return `TLS handshake failed: not TLS, or a TLS version we do not offer (${code})`;
  if (code === "NO_SHARED_CIPHER") return "TLS handshake failed: the client offers no cipher suite we accept";
  if (error.code === "ECONNRESET" || /hang up/.test(error.message)) return "the client closed the connection during the TLS handshake";
  if (/timed? ?out/i.test(error.message)) return `no TLS handshake within ${TLS_HANDSHAKE_TIMEOUT_MS / 1000} s`;
  return `TLS handshake failed: ${error.message}`;
}

export function listen(options: ListenOptions): Promise<Listening> {
  const maxClients = options.maxClients ?? DEFAULT_MAX_CLIENTS;
  const sockets = new Set<Socket>();
  let accepted = 0;
  // The address is read when the connection arrives: once a handshake has failed the socket may be gone.
  const peers = new WeakMap<Socket, string>();
  const peerAtAccept = (socket: Socket) => peers.get(socket) ?? peerOf(socket);

  const allowList = createAllowList(options.allow);
  const refused = new WeakSet<Socket>();

  const admit = (socket: Socket) => {
    if (socket.destroyed) return; // refused by the allow list at its connection event
    const peer = peerAtAccept(socket);
    const log = options.log.with({ peer });
    socket.setKeepAlive?.(true, TCP_KEEPALIVE_MS);
    socket.on("error", (error) => log.debug(`socket error: ${error.message}`));
    if (sockets.size >= maxClients) {
      log.warn(`refused: ${options.what} already has ${maxClients} clients (the limit)`);
      socket.destroy();
      return;
    }
    sockets.add(socket);
    accepted++;
    socket.once("close", () => sockets.delete(socket));
    runForClient({ log, socket }, () => options.onClient(socket, { peer, log }));
  };

  let server: Server;
  if (options.tls) {
    server = createTlsServer({ ...options.tls, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS }, (socket) => admit(socket));
    server.on("tlsClientError", (error: Error, socket: Socket) => {
      if (refused.has(socket)) return; // already logged by the allow list; Bun still reports the cut handshake
      options.log.with({ peer: peerAtAccept(socket) }).info(describeTlsClientError(error));
      socket.destroy();
    });
  } else {
    server = createTcpServer((socket) => admit(socket));
  }
  // Before anything else hears of the connection (a plain server's admit, a TLS server's handshake).
  server.prependListener("connection", (socket: Socket) => {
    if (!allowList.admit(socket.remoteAddress, options.log, options.what, socket.remotePort)) {
      refused.add(socket);
      socket.on("error", () => {});
      socket.destroy();
      return;
    }
    peers.set(socket, peerOf(socket));
  });

  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      const hint =
        error.code === "EADDRINUSE" ? "another program (or printer entry) already listens there"
        : error.code === "EACCES" ? "ports below 1024 need root or CAP_NET_BIND_SERVICE (see `pandaproxy service install`)"
        : error.code === "EADDRNOTAVAIL" ? "this host has no such address: add it as an IP alias or fix `bind`"
        : error.message;
      reject(new Error(`cannot listen for ${options.what} on ${options.host}:${options.port}: ${hint}`));
    };
    server.once("error", onError);
    server.listen({ host: options.host, port: options.port, exclusive: true }, () => {
      server.off("error", onError);
      server.on("error", (error) => options.log.error(`${options.what} listener error: ${error.message}`));
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : options.port;
      resolve({
        address: { host: options.host, port },
        get clients() {
          return sockets.size;
        },
        get accepted() {
          return accepted;
        },
        sockets,
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
            setTimeout(done, 1_000).unref?.();
          }),
      });
    });
  });
}

/** Reads exactly `length` bytes from a socket within `timeoutMs`, or rejects (silent or short clients). */
export function readExactly(socket: Socket, length: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`sent ${have} of ${length} bytes in ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    const onClose = () => {
      cleanup();
      reject(new Error(`closed after ${have} of ${length} bytes`));
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      have += chunk.length;
      if (have >= length) {
        cleanup();
        const all = Buffer.concat(chunks);
        const rest = all.subarray(length);
        if (rest.length) keepForNextReader(socket, rest);
        resolve(all.subarray(0, length));
      }
    };
    socket.on("data", onData);
    socket.once("close", onClose);
  });
}

/**
 * Puts bytes read too far back on the socket. A flowing socket with no "data" listener would emit them to
 * nobody, so it is paused until the next reader attaches a "data" listener.
 */
function keepForNextReader(socket: Socket, rest: Buffer): void {
  socket.pause();
  socket.unshift(rest);
  const resumeForReader = (event: string | symbol) => {
    if (event !== "data") return;
    socket.off("newListener", resumeForReader);
    socket.resume(); // the data flows on a later tick, after the listener is attached
  };
  socket.on("newListener", resumeForReader);
}
