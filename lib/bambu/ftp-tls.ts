// The TLS server end of one FTPS service (proxy or simulated printer): control AND data connections are
// accepted as plain TCP and handed to ONE non-listening tls.Server, so a data connection can resume the
// control connection's TLS session. Bun 1.4.5 shares no session state between two tls.Server objects
// (getTicketKeys/setTicketKeys are "not implemented", a shared `ticketKeys` option does not resume, and
// `new TLSSocket(raw, { isServer })` never resumes), but a socket emitted into the same server does.
import type { Socket } from "node:net";
import { createServer, type TLSSocket, type TlsOptions } from "node:tls";
import { describeTlsClientError } from "../core/server.ts";

export const FTPS_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface FtpsTls {
  /** Runs the TLS server handshake on an accepted (or connected) TCP socket. */
  secure(raw: Socket): Promise<TLSSocket>;
  close(): void;
}

const keyOf = (s: Socket) => `${s.localAddress}|${s.localPort}|${s.remoteAddress}|${s.remotePort}`;

export function createFtpsTls(options: TlsOptions, handshakeTimeoutMs = FTPS_HANDSHAKE_TIMEOUT_MS): FtpsTls {
  const pending = new Map<string, { resolve(s: TLSSocket): void; reject(e: Error): void; raw: Socket }>();
  const server = createServer({ ...options, handshakeTimeout: handshakeTimeoutMs }, (socket) => {
    const key = keyOf(socket);
    const waiter = pending.get(key);
    pending.delete(key);
    if (!waiter) {
      socket.destroy();
      return;
    }
    waiter.resolve(socket);
  });
  server.on("tlsClientError", (error: Error, socket: Socket) => {
    const key = keyOf(socket);
    const waiter = pending.get(key);
    pending.delete(key);
    socket.destroy();
    waiter?.raw.destroy();
    // describeTlsClientError speaks of the listeners' own deadline; ours may be another (injected) one.
    const timedOut = /timed? ?out/i.test(error.message);
    waiter?.reject(new Error(timedOut ? `no TLS handshake within ${handshakeTimeoutMs / 1000} s` : describeTlsClientError(error)));
  });
  return {
    secure(raw) {
      return new Promise((resolve, reject) => {
        if (raw.destroyed) return reject(new Error("connection closed before the TLS handshake"));
        const key = keyOf(raw);
        const timer = setTimeout(() => {
          if (pending.get(key)?.raw !== raw) return;
          pending.delete(key);
          raw.destroy();
          reject(new Error(`no TLS handshake within ${handshakeTimeoutMs / 1000} s`));
        }, handshakeTimeoutMs + 1_000);
        const onClose = () => {
          if (pending.get(key)?.raw !== raw) return;
          pending.delete(key);
          clearTimeout(timer);
          reject(new Error("connection closed during the TLS handshake"));
        };
        raw.once("close", onClose);
        pending.set(key, {
          raw,
          resolve: (s) => {
            clearTimeout(timer);
            raw.off("close", onClose);
            resolve(s);
          },
          reject: (e) => {
            clearTimeout(timer);
            raw.off("close", onClose);
            reject(e);
          },
        });
        server.emit("connection", raw);
      });
    },
    close() {
      for (const waiter of pending.values()) waiter.raw.destroy();
      pending.clear();
      server.close();
    },
  };
}

/** Ends a TLS data connection the way printers do: a TCP FIN after the last byte, no close_notify. */
export function endWithoutCloseNotify(tlsSocket: TLSSocket, raw: Socket): Promise<void> {
  return new Promise((resolve) => {
    tlsSocket.write(Buffer.alloc(0), () => {
      raw.end(() => resolve());
      setTimeout(resolve, 1_000).unref?.();
    });
  });
}

/** Waits for the client-side TLS handshake of `data` (started over the paused `raw`, which this resumes). */
export function handshakeWithin(data: TLSSocket, raw: Socket, ms: number): Promise<TLSSocket> {
  return new Promise<TLSSocket>((resolve, reject) => {
    const timer = setTimeout(() => {
      data.destroy();
      reject(new Error("no TLS handshake"));
    }, ms);
    data.once("secureConnect", () => {
      clearTimeout(timer);
      resolve(data);
    });
    data.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    raw.resume();
  });
}

/** Resets a data connection so a partial upload is reported as failed, never complete. */
export function resetDataConnection(data: TLSSocket, raw: Socket): void {
  // The TCP reset must come first: a TLS-level close would reach vsftpd as a clean end of file.
  const resettable = raw as Socket & { resetAndDestroy?: () => void };
  if (typeof resettable.resetAndDestroy === "function") resettable.resetAndDestroy();
  else raw.destroy();
  data.destroy();
}

/** Ends our side of a download (close_notify, then FIN) without waiting longer than `ms` for the client. */
export function closeDataConnection(data: TLSSocket, raw: Socket, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      raw.destroy();
      resolve();
    }, ms);
    data.end(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
