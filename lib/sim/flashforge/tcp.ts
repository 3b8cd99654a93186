// The simulated printer's TCP 8899 console: one session holds control (~M601 S1), a second one gets
// "Control Failed."; text replies as the Adventurer 5M writes them (Parallel-7/flashforge-api-docs legacy-api.md);
// ~M661/~M662 send binary after "ok"; ~M28 takes a raw upload; a session silent for a while is dropped.
import { createServer, type Server, type Socket } from "node:net";
import { parseCommand, textReply } from "../../flashforge/tcp-codec.ts";
import { simReply } from "./replies.ts";
import type { FlashforgeSimState } from "./state.ts";

/** The printer drops a session that sends nothing for a few seconds (FlashPrint and ff-5mp-api poll every ~5 s). */
export const SIM_TCP_IDLE_TIMEOUT_MS = 10_000;
/** Pause between a reply's text and its binary part: clients must not assume both arrive in one read. */
const BINARY_GAP_MS = 15;

/** Commands the machine takes its time over (homing, heating and waiting): answered after `slowCommandMs`. */
const SLOW_COMMANDS = new Set(["G28", "M109", "M190"]);

export interface SimTcpOptions {
  idleTimeoutMs?: number;
  /** How long G28/M109/M190 take before their reply (default 0); later replies wait behind them, as on the printer. */
  slowCommandMs?: number;
}

export interface SimTcp {
  readonly name: "tcp";
  /** TCP sessions accepted so far. */
  readonly sessions: number;
  /** Every command line received, with the session number that sent it, and its bytes (without the line end). */
  readonly commands: readonly { session: number; line: string; bytes: Buffer }[];
  /** Sessions dropped for idling. */
  readonly idleDrops: number;
  stop(): Promise<void>;
}

export async function startSimTcp(state: FlashforgeSimState, options: SimTcpOptions = {}): Promise<SimTcp> {
  const idleTimeoutMs = options.idleTimeoutMs ?? SIM_TCP_IDLE_TIMEOUT_MS;
  const { identity } = state;
  const sockets = new Set<Socket>();
  const slowCommandMs = options.slowCommandMs ?? 0;
  const commands: { session: number; line: string; bytes: Buffer }[] = [];
  let holder: Socket | undefined;
  let sessions = 0;
  let idleDrops = 0;

  const server: Server = createServer((socket) => {
    const session = ++sessions;
    sockets.add(socket);
    socket.on("error", () => {});
    socket.setTimeout(idleTimeoutMs, () => {
      idleDrops++;
      socket.destroy();
    });
    socket.on("close", () => {
      sockets.delete(socket);
      if (holder === socket) holder = undefined;
    });

    let buffer: Buffer = Buffer.alloc(0);
    let upload: { path: string; size: number; chunks: Buffer[]; have: number } | undefined;
    let writing = Promise.resolve();
    const send = (text: Buffer, binary?: Buffer) => {
      writing = writing.then(async () => {
        if (socket.destroyed) return;
        socket.write(text);
        if (!binary) return;
        await Bun.sleep(BINARY_GAP_MS);
        const half = Math.floor(binary.length / 2);
        socket.write(binary.subarray(0, half));
        await Bun.sleep(1);
        if (!socket.destroyed) socket.write(binary.subarray(half));
      });
    };

    const handleLine = (raw: Buffer) => {
      const command = parseCommand(raw);
      if (!command) return;
      commands.push({ session, line: command.line, bytes: command.wire.subarray(0, command.wire.length - 2) });
      const { code, args } = command;
      if (SLOW_COMMANDS.has(code) && slowCommandMs > 0 && holder === socket) writing = writing.then(() => Bun.sleep(slowCommandMs));
      if (code === "M601") {
        if (!holder || holder === socket) {
          holder = socket;
          send(textReply(code, ["Control Success V2.1."]));
        } else send(textReply(code, ["Control Failed."]));
        return;
      }
      if (holder !== socket) return; // Assumed: the printer answers nothing to a session without control.
      if (code === "M602") {
        holder = undefined;
        send(textReply(code, ["Control Release."]));
        return;
      }
      if (code === "M28") {
        const m = /^(\d+)\s+(.+)$/.exec(args);
        if (!m) return send(textReply(code, ["Invalid file size or name"]));
        upload = { path: m[2]!, size: Number(m[1]), chunks: [], have: 0 };
        return send(textReply(code, [`Writing to file: ${m[2]}`]));
      }
      if (code === "M29") {
        return send(textReply(code, ["Done saving file."]));
      }
      const reply = simReply(state, code, args);
      send(reply.text, reply.binary);
    };

    socket.on("data", (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      for (;;) {
        if (upload) {
          const take = Math.min(upload.size - upload.have, buffer.length);
          upload.chunks.push(Buffer.from(buffer.subarray(0, take)));
          upload.have += take;
          buffer = buffer.subarray(take);
          if (upload.have < upload.size) return;
          state.addFile(upload.path, Buffer.concat(upload.chunks), "tcp");
          upload = undefined;
          continue;
        }
        const nl = buffer.indexOf(0x0a);
        if (nl === -1) {
          if (buffer.length > 4096) socket.destroy();
          return;
        }
        const line = buffer.subarray(0, nl);
        buffer = buffer.subarray(nl + 1);
        handleLine(line);
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: identity.host, port: identity.ports.tcp, exclusive: true }, () => resolve());
  });

  return {
    name: "tcp",
    get sessions() {
      return sessions;
    },
    commands,
    get idleDrops() {
      return idleDrops;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
