// TLS connections to printers. Bun 1.4.5's TLSSocket.destroy() before the handshake has finished leaves the TCP
// connection open (measured: the peer never sees a close). A printer at its viewer limit accepts TCP and
// handshakes only when a slot frees, so such a leaked connection would later take one of its one or two slots
// for good. resetAndDestroy() does close it; after the handshake destroy() is right (it ends cleanly).
// Every connection to a printer comes through here, so its identity is checked here, once for all services.
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
import { serviceLogger } from "../log.ts";
import { checkPrinterIdentity, PrinterIdentityRefused, type IdentityVerdict, type PrinterIdentity } from "./printer-identity.ts";

const established = new WeakSet<TLSSocket>();

export interface PrinterConnectionOptions extends ConnectionOptions {
  /** Check the printer's certificate against its pin (lib/core/printer-identity.ts); absent with printer_ca. */
  identity?: PrinterIdentity;
  /** Told when the certificate was pinned for the first time, for the log. */
  onIdentity?: (verdict: IdentityVerdict) => void;
}

/**
 * A TLS connection to a printer. With `identity`, a certificate that is not the pinned one (or not issued to
 * the serial) destroys the socket with a PrinterIdentityRefused error instead of emitting "secureConnect", so
 * no listener ever writes the access code to it. (Node and Bun call checkServerIdentity only when the chain
 * verified, which a printer's BBL chain never does for us, so the check cannot live there.)
 */
export function connectToPrinter(options: PrinterConnectionOptions): TLSSocket {
  const { identity, onIdentity, ...tlsOptions } = options;
  const socket = tlsConnect(tlsOptions);
  if (identity) {
    const emit = socket.emit;
    socket.emit = function (this: TLSSocket, event: string | symbol, ...args: unknown[]): boolean {
      if (event === "secureConnect") {
        const verdict = checkPrinterIdentity(identity, socket.getPeerCertificate()?.raw);
        onIdentity?.(verdict);
        const log = serviceLogger(identity.name, "printer identity");
        if (verdict.kind === "pinned") log.info(`pinned the printer's certificate (issued to ${identity.serial}, key ${verdict.fingerprint}) in ${identity.knownPrintersFile}`);
        if (verdict.kind === "refused") {
          log.error(verdict.reason);
          established.add(socket);
          socket.destroy(new PrinterIdentityRefused(verdict.reason));
          return false;
        }
      }
      return emit.call(this, event, ...args);
    } as typeof socket.emit;
  }
  socket.once("secureConnect", () => established.add(socket));
  return socket;
}

/** Closes a socket made by connectToPrinter, whether or not its handshake has finished. */
export function dropPrinterSocket(socket: TLSSocket): void {
  if (socket.destroyed) return;
  if (established.has(socket)) socket.destroy();
  else socket.resetAndDestroy();
}
