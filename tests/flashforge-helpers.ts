// Shared by the flashforge-*.test.ts files: a printer entry pointing at a simulated Adventurer 5M, and the
// ServiceContext a FlashForge service is built from. Addresses: 127.0.7.0/24 only.
import { serviceContext } from "./support.ts";
import { type ServiceContext } from "../lib/core/service.ts";
import type { SimFlashforge } from "../lib/sim/flashforge/index.ts";

export function flashforgeContext(sim: SimFlashforge, bind: string, extra = ""): ServiceContext {
  const { identity } = sim;
  const p = identity.ports;
  return serviceContext(
    `name = "ff5m"\ntype = "flashforge"\nhost = "${identity.host}"\nserial = "${identity.serial}"\ncheck_code = "${identity.checkCode}"\n` +
      `bind = "${bind}"\nprinter_ports = { tcp = ${p.tcp}, http = ${p.http}, discovery = ${p.discovery}, camera = ${p.camera} }\n${extra}`,
    `[web]\nlisten = ""`,
  );
}

/** A raw TCP client of the console: sends lines, reads replies up to (and including) the "ok" line. */
export async function consoleClient(host: string, port: number) {
  const { connect } = await import("node:net");
  const socket = connect({ host, port });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  let buffer: Buffer = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let closed = false;
  socket.on("data", (c: Buffer) => {
    buffer = Buffer.concat([buffer, c]);
    wake?.();
  });
  socket.on("close", () => {
    closed = true;
    wake?.();
  });
  socket.on("error", () => {});
  const waitFor = async (ready: () => number, timeoutMs = 5_000): Promise<Buffer> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = ready();
      if (end >= 0) {
        const out = buffer.subarray(0, end);
        buffer = buffer.subarray(end);
        return out;
      }
      if (closed) throw new Error("connection closed");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; have ${JSON.stringify(buffer.toString("latin1").slice(0, 200))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  };
  return {
    socket,
    send: (line: string) => socket.write(`${line}\r\n`),
    /** Text up to and including "ok\r\n". */
    readText: () =>
      waitFor(() => {
        const i = buffer.indexOf("\nok\r\n");
        return i === -1 ? -1 : i + 5;
      }).then((b) => b.toString("latin1")),
    readBytes: (n: number) => waitFor(() => (buffer.length >= n ? n : -1)),
    get closed() {
      return closed;
    },
    waitClosed: (timeoutMs = 5_000) => waitFor(() => (closed ? 0 : -1), timeoutMs).catch((e) => (closed ? Buffer.alloc(0) : Promise.reject(e))),
    close: () => socket.destroy(),
  };
}

/**
 * A bare printer console for what the simulator does not do: answers ~M601/~M602/~M115/~M119/~M27 like the
 * Adventurer 5M, and drops the whole connection a moment after it receives `dropOn` (as a printer that reboots
 * mid-command would), without replying.
 */
export async function startFakeConsole(host: string, port: number, dropOn: string) {
  const { createServer } = await import("node:net");
  const { parseCommand, textReply } = await import("../lib/flashforge/tcp-codec.ts");
  const sockets = new Set<import("node:net").Socket>();
  const seen: string[] = [];
  let sessions = 0;
  const server = createServer((socket) => {
    sessions++;
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
    let buffer = "";
    socket.on("data", (chunk: Buffer) => {
      buffer += chunk.toString("latin1");
      for (let nl = buffer.indexOf("\n"); nl !== -1; nl = buffer.indexOf("\n")) {
        const command = parseCommand(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        if (!command) continue;
        seen.push(command.code);
        if (command.code === dropOn) {
          setTimeout(() => socket.destroy(), 200);
          continue;
        }
        const lines: Record<string, string[]> = {
          M601: ["Control Success V2.1."], M602: ["Control Release."], M27: ["SD printing byte 0/100", "Layer: 0/0"],
          M115: ["Machine Type: Flashforge Adventurer 5M", "Machine Name: fake", "Firmware: v3.1.3", "SN: SNMOMC9900002"],
          M119: ["MachineStatus: READY"],
        };
        socket.write(textReply(command.code, lines[command.code] ?? []));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    seen,
    get sessions() {
      return sessions;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Sends one discovery probe as FlashPrint does from `client` and returns the first reply, with where it came from. */
export async function discoveryProbe(to: string, port: number, client: string): Promise<{ reply: Buffer; from: string }> {
  const { createSocket } = await import("node:dgram");
  return new Promise((resolve, reject) => {
    const socket = createSocket("udp4");
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no discovery reply from ${to}`));
    }, 3_000);
    socket.on("message", (reply, from) => {
      clearTimeout(timer);
      socket.close();
      resolve({ reply, from: from.address });
    });
    socket.bind(0, client, () => socket.send(Buffer.from("www.usr\"e6\xc0"), port, to));
  });
}
