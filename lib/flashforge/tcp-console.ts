// The FlashForge printer's TCP 8899 console, as the proxy's one session: connect, log in (~M601 S1, then ~M115 for
// the status page), one request at a time with its reply split by tcp-codec.ts, and close with ~M602 (or without,
// when the printer is owed upload bytes). What to send when is tcp-scheduler.ts's decision.
import { connect as tcpConnect, type Socket } from "node:net";
import { endAndDestroy } from "../core/edge.ts";
import type { Link } from "../core/upstream.ts";
import type { ServiceContext } from "../core/service.ts";
import type { Logger } from "../log.ts";
import { createReplyReader, encodeCommand, parseCommand, replyFields, type Command, type Reply } from "./tcp-codec.ts";
import { DEFAULT_LOGIN_LINE, REPLY_TIMEOUT_MS } from "./tcp-scheduler.ts";

export const CONNECT_TIMEOUT_MS = 10_000;
/** After "ok" of ~M661/~M662 the binary part follows; if nothing starts within this, there is none. */
export const BINARY_GRACE_MS = 2_000;
const STOP_GRACE_MS = 500;

export interface PrinterConsole {
  socket: Socket;
  request(command: Command, timeoutMs: number): Promise<Reply>;
  write(bytes: Buffer): Promise<void>;
}

/** Opens the printer's console and logs in (~M601 S1, then ~M115 for the status page). */
export async function openConsole(ctx: ServiceContext, log: Logger, owesUploadBytes: () => boolean): Promise<{ link: Link<PrinterConsole>; loginLine: string }> {
  const { printer } = ctx;
  const socket = await connectTo(printer.host, printer.printerPorts.tcp);
  socket.setNoDelay(true);
  const connection = consoleOver(socket, log);
  const closed = new Promise<unknown>((resolve) => {
    socket.on("error", (e) => resolve(e));
    socket.on("close", () => resolve(new Error("the printer closed the connection")));
  });
  const close = () => {
    // After ~M28 the printer takes the next bytes as the file: even ~M602 would become file data.
    if (owesUploadBytes()) return socket.destroy();
    // Without ~M602 the printer keeps control reserved and refuses the next session for a while.
    if (!socket.destroyed && socket.writable) endAndDestroy(socket, encodeCommand("~M602"), STOP_GRACE_MS);
    else socket.destroy();
  };
  try {
    const login = await connection.request(parseCommand("~M601 S1")!, REPLY_TIMEOUT_MS);
    if (!/Control Success/i.test(login.text)) {
      throw new Error(`the printer refused control (${summary(login.text)}): another program holds its only TCP session`);
    }
    const loginLine = login.text.split(/\r?\n/).find((l) => /Control Success/i.test(l))?.trim() ?? DEFAULT_LOGIN_LINE;
    const info = replyFields((await connection.request(parseCommand("~M115")!, REPLY_TIMEOUT_MS)).text);
    ctx.hub.update({ model: info["Machine Name"] ?? info["Machine Type"], productName: info["Machine Type"], firmware: info["Firmware"] });
    return { link: { connection, closed, close }, loginLine };
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

function connectTo(host: string, port: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = tcpConnect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS / 1000} s`));
    }, CONNECT_TIMEOUT_MS);
    s.once("connect", () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** One request at a time over the printer's socket; replies are split by the codec. */
function consoleOver(socket: Socket, log: Logger): PrinterConsole {
  const reader = createReplyReader();
  let waiter: { resolve(r: Reply): void; reject(e: Error): void } | undefined;
  let replyTimer: ReturnType<typeof setTimeout> | undefined;
  let graceTimer: ReturnType<typeof setTimeout> | undefined;
  const settle = (outcome: Reply | Error) => {
    clearTimeout(replyTimer);
    clearTimeout(graceTimer);
    const w = waiter;
    waiter = undefined;
    if (!w) return;
    if (outcome instanceof Error) w.reject(outcome);
    else w.resolve(outcome);
  };
  const drain = () => {
    for (;;) {
      const step = reader.next();
      if (step.kind === "reply") return settle(step.reply);
      if (step.kind === "error") {
        settle(new Error(`unreadable reply: ${step.why}`));
        return socket.destroy();
      }
      if (step.kind === "waiting-binary") {
        clearTimeout(graceTimer);
        graceTimer = setTimeout(() => {
          const reply = reader.endWithoutBinary();
          if (reply) settle(reply);
        }, BINARY_GRACE_MS);
      }
      const stray = reader.takeStray();
      if (stray.length) log.debug(`ignored ${stray.length} bytes the printer sent with no command outstanding`);
      return;
    }
  };
  socket.on("data", (chunk: Buffer) => {
    clearTimeout(graceTimer);
    reader.push(chunk);
    drain();
  });
  socket.on("close", () => settle(new Error("the printer closed the connection")));
  return {
    socket,
    request(command, timeoutMs) {
      if (waiter) return Promise.reject(new Error("a command is already in flight"));
      return new Promise<Reply>((resolve, reject) => {
        waiter = { resolve, reject };
        reader.expect(command.code);
        replyTimer = setTimeout(() => {
          settle(new Error(`no reply to ${command.code} within ${Math.round(timeoutMs / 1000)} s`));
        }, timeoutMs);
        socket.write(command.wire);
      });
    },
    write: (bytes) =>
      new Promise<void>((resolve, reject) => {
        if (socket.destroyed) return reject(new Error("the printer connection is closed"));
        socket.write(bytes, (e) => (e ? reject(e) : resolve()));
      }),
  };
}

function summary(text: string): string {
  return text.split(/\r?\n/).filter((l) => l && l !== "ok" && !l.startsWith("CMD ")).join(" ").slice(0, 80) || "no answer";
}
