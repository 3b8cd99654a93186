// FTP data connections for the proxy: a client's passive listener (a port from ftp_data_ports) or its active
// (PORT/EPRT) address, the printer's passive port, and a byte pump with backpressure in both directions.
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import type { PortRange } from "../config.ts";
import type { MemoryReturn } from "../core/memory-return.ts";

/** How long a client (or the printer) gets to open the data connection. */
export const DATA_CONNECT_TIMEOUT_MS = 10_000;

/** Where a client's data connection will come from: a passive listener, or an address to connect to. */
export interface ClientDataPlan {
  readonly mode: "passive" | "active";
  /** The TCP connection, paused (its first bytes wait for our TLS handshake), or undefined after the timeout. */
  connection(): Promise<Socket | undefined>;
  close(): void;
}

const plainIp = (address: string | undefined) => address?.replace(/^::ffff:/, "") ?? "";

/** Listens for one data connection from `peerIp` on `host`, on a port of `range` (any port without one). */
export async function passiveDataPlan(host: string, range: PortRange | undefined, peerIp: string): Promise<ClientDataPlan & { port: number }> {
  const server: Server = createServer({ pauseOnConnect: true });
  let accepted: Socket | undefined;
  const waiting: ((s: Socket | undefined) => void)[] = [];
  server.on("connection", (socket) => {
    socket.on("error", () => {});
    // Only the control connection's peer, which its listener admitted by `allow` (core/server.ts listen).
    if (accepted || plainIp(socket.remoteAddress) !== plainIp(peerIp)) return void socket.destroy();
    accepted = socket;
    server.close();
    for (const w of waiting.splice(0)) w(socket);
  });
  server.on("error", () => {});
  const tryListen = (port: number) =>
    new Promise<boolean>((resolve) => {
      const onError = () => resolve(false);
      server.once("error", onError);
      server.listen({ host, port, exclusive: true }, () => {
        server.off("error", onError);
        resolve(true);
      });
    });
  let listening = false;
  if (range) {
    const size = range.last - range.first + 1;
    const start = Math.floor(Math.random() * size);
    for (let i = 0; i < size && !listening; i++) listening = await tryListen(range.first + ((start + i) % size));
    if (!listening) throw new Error(`every port of ftp_data_ports ${range.first}-${range.last} is in use`);
  } else if (!(listening = await tryListen(0))) throw new Error(`cannot listen for a data connection on ${host}`);
  const port = (server.address() as { port: number }).port;
  return {
    mode: "passive",
    port,
    connection() {
      if (accepted) return Promise.resolve(accepted);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          server.close();
          resolve(undefined);
        }, DATA_CONNECT_TIMEOUT_MS);
        waiting.push((s) => (clearTimeout(timer), resolve(s)));
      });
    },
    close() {
      server.close();
      if (accepted && !accepted.readableEnded) accepted.destroy();
    },
  };
}

/** Connects to `host:port` (PORT/EPRT) from our control connection's address. */
export function activeDataPlan(host: string, port: number, localAddress: string | undefined): ClientDataPlan {
  let socket: Socket | undefined;
  return {
    mode: "active",
    connection: () => connectPaused(host, port, localAddress).then((s) => (socket = s)),
    close: () => socket?.destroy(),
  };
}

/** A TCP connection within DATA_CONNECT_TIMEOUT_MS, or undefined. */
export function connectPaused(host: string, port: number, localAddress?: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = netConnect({ host, port, localAddress });
    socket.pause();
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(undefined);
    }, DATA_CONNECT_TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", onError);
      socket.on("error", () => {});
      resolve(socket);
    });
    const onError = () => {
      clearTimeout(timer);
      resolve(undefined);
    };
    socket.once("error", onError);
  });
}

export type PumpEnd = "end" | "source failed" | "destination failed" | "aborted";

export interface Pump {
  readonly bytes: number;
  /** Settles when the source ended (every byte handed to the destination) or either side failed. */
  readonly done: Promise<PumpEnd>;
  abort(): void;
}

/**
 * Moves bytes from `source` to `destination`, pausing the source while the destination's buffer is full.
 * Bun hands each read (up to 512 KB) over in a buffer of its own that is freed only when the garbage collector
 * gets to it; at 200 MB/s those waiting buffers and the allocator's freed-but-not-yet-reused pages kept 20-35 MB
 * resident. So each read's memory is released (detached) as soon as the destination has taken it, and the next
 * read reuses it. What the allocators still keep is handed back by `memory` (core/memory-return.ts), if given.
 */
export function pump(source: Socket, destination: Socket, memory?: MemoryReturn): Pump {
  let bytes = 0;
  let settle!: (end: PumpEnd) => void;
  let settled = false;
  const done = new Promise<PumpEnd>((resolve) => {
    settle = (end) => {
      if (settled) return;
      settled = true;
      source.off("data", onData);
      destination.off("drain", onDrain);
      resolve(end);
    };
  });
  const onData = (chunk: Buffer) => {
    bytes += chunk.length;
    memory?.moved(chunk.length);
    // The callback runs once the socket has taken the chunk: sent, or copied what the kernel did not take yet.
    if (!destination.write(chunk, (error) => error || release(chunk))) source.pause();
  };
  const onDrain = () => source.resume();
  source.on("data", onData);
  destination.on("drain", onDrain);
  source.once("end", () => settle("end"));
  source.once("error", () => settle("source failed"));
  source.once("close", () => settle(source.readableEnded ? "end" : "source failed"));
  destination.once("error", () => settle("destination failed"));
  destination.once("close", () => settle("destination failed"));
  // A short transfer (an empty file) may have ended while the other side's handshake was running.
  if (source.readableEnded) settle("end");
  else source.resume();
  return {
    get bytes() {
      return bytes;
    },
    done,
    abort: () => settle("aborted"),
  };
}

/** Frees a read's memory now rather than at the next garbage collection, when the buffer is its own whole
 * ArrayBuffer (the pump is the only reader of a data connection, so nothing else holds it). */
export function release(chunk: Buffer): void {
  const memory = chunk.buffer;
  if (memory instanceof ArrayBuffer && chunk.byteOffset === 0 && chunk.byteLength === memory.byteLength && memory.byteLength > 0) memory.transfer(0);
}
