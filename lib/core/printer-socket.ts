// TLS connections to printers. Bun 1.4.5's TLSSocket.destroy() before the handshake has finished leaves the TCP
// connection open (measured: the peer never sees a close). A printer at its viewer limit accepts TCP and
// handshakes only when a slot frees, so such a leaked connection would later take one of its one or two slots
// for good. resetAndDestroy() does close it; after the handshake destroy() is right (it ends cleanly).
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";

const established = new WeakSet<TLSSocket>();

export function connectToPrinter(options: ConnectionOptions): TLSSocket {
  const socket = tlsConnect(options);
  socket.once("secureConnect", () => established.add(socket));
  return socket;
}

/** Closes a socket made by connectToPrinter, whether or not its handshake has finished. */
export function dropPrinterSocket(socket: TLSSocket): void {
  if (socket.destroyed) return;
  if (established.has(socket)) socket.destroy();
  else socket.resetAndDestroy();
}
