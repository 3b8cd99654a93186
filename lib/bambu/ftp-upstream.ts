// The printer side of the FTPS proxy: logged-in control sessions to the printer's vsftpd (the printer allows
// very few; lib/bambu/ftp-pool.ts lends them to one client command at a time).
import type { TLSSocket } from "node:tls";
import { connectToPrinter, dropPrinterSocket } from "../core/printer-socket.ts";
import type { PrinterConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import { printerClientTlsOptions } from "../tls.ts";
import { createLineSplitter, createReplyAssembler, parseQuotedPath, replyMessage, type FtpReply } from "./ftp-codec.ts";

export const PRINTER_CONNECT_TIMEOUT_MS = 10_000;
/** A command's reply; transfers wait for their final reply with their own (longer) limit. */
export const PRINTER_REPLY_TIMEOUT_MS = 30_000;
/** After our QUIT, the printer's own close is awaited this long. */
const QUIT_GRACE_MS = 1_000;

export class PrinterFtpError extends Error {
  constructor(message: string, readonly reply?: FtpReply) {
    super(message);
    this.name = "PrinterFtpError";
  }
}

export interface PrinterSession {
  readonly id: number;
  readonly socket: TLSSocket;
  /** The control connection's TLS session, for data connections to resume. */
  readonly tlsSession: Buffer | undefined;
  /** The directory the printer put us in at login. */
  readonly home: string;
  cwd: string;
  type: string;
  readonly closed: boolean;
  /** Sends one command line and waits for its next reply. */
  command(line: string, timeoutMs?: number): Promise<FtpReply>;
  /** The next reply (e.g. the final one after a 150). */
  next(timeoutMs?: number): Promise<FtpReply>;
  close(): void;
}

let sessionIds = 0;

/** A printer control connection's replies, in order, each to the command (or wait) that asked for it. */
type ReplyChannel = ReturnType<typeof replyChannel>;

function replyChannel(socket: TLSSocket, describe: string, log: Logger) {
  const replies: FtpReply[] = [];
  const waiters: { resolve(r: FtpReply): void; reject(e: Error): void }[] = [];
  let closed = false;
  const failAll = (error: Error) => {
    closed = true;
    for (const w of waiters.splice(0)) w.reject(error);
  };
  socket.on("error", (e) => failAll(new PrinterFtpError(`${describe}: ${e.message}`)));
  socket.on("close", () => failAll(new PrinterFtpError(`${describe} closed the connection`)));
  socket.on("data", createLineSplitter(createReplyAssembler((reply) => {
    const w = waiters.shift();
    if (w) w.resolve(reply);
    else if (reply.code === 421) {
      log.info(`${describe} closed an idle session: ${replyMessage(reply)}`);
      dropPrinterSocket(socket);
    } else replies.push(reply);
  }), () => dropPrinterSocket(socket)));

  const next = (timeoutMs = PRINTER_REPLY_TIMEOUT_MS) => {
    const ready = replies.shift();
    if (ready) return Promise.resolve(ready);
    if (closed) return Promise.reject(new PrinterFtpError(`${describe} is closed`));
    return new Promise<FtpReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        dropPrinterSocket(socket);
        reject(new PrinterFtpError(`${describe} did not answer within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      waiters.push({
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  };
  return {
    next,
    command(line: string, timeoutMs?: number) {
      if (closed) return Promise.reject(new PrinterFtpError(`${describe} is closed`));
      socket.write(line + "\r\n");
      return next(timeoutMs);
    },
    get closed() {
      return closed;
    },
    /** No more commands (we sent QUIT). */
    end: () => void (closed = true),
  };
}

/** The TLS handshake, the greeting and the login (USER bblp, the access code, PBSZ, PROT P); the home directory. */
async function logIn(socket: TLSSocket, channel: ReplyChannel, printer: PrinterConfig, describe: string): Promise<string> {
  const expect = async (line: string, codes: number[], what: string) => {
    const reply = await channel.command(line, PRINTER_CONNECT_TIMEOUT_MS);
    if (!codes.includes(reply.code)) throw new PrinterFtpError(`${describe} refused ${what}: ${replyMessage(reply)}`, reply);
    return reply;
  };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new PrinterFtpError(`${describe}: no TLS handshake within ${PRINTER_CONNECT_TIMEOUT_MS / 1000} s`)), PRINTER_CONNECT_TIMEOUT_MS);
    socket.once("secureConnect", () => (clearTimeout(timer), resolve()));
    socket.once("close", () => (clearTimeout(timer), reject(new PrinterFtpError(`${describe}: connection failed`))));
  });
  const greeting = await channel.next(PRINTER_CONNECT_TIMEOUT_MS);
  if (greeting.code !== 220) throw new PrinterFtpError(`${describe} is not ready: ${replyMessage(greeting)}`, greeting);
  const user = await expect("USER bblp", [230, 331], "the user bblp");
  if (user.code === 331) await expect(`PASS ${printer.accessCode}`, [230], "the login (check access_code)");
  await expect("PBSZ 0", [200], "PBSZ 0");
  await expect("PROT P", [200], "PROT P");
  return parseQuotedPath(replyMessage(await expect("PWD", [257], "PWD"))) ?? "/";
}

export async function openPrinterSession(printer: PrinterConfig, log: Logger): Promise<PrinterSession> {
  let tlsSession: Buffer | undefined;
  const describe = `printer FTPS ${printer.host}:${printer.printerPorts.ftp}`;
  const socket = connectToPrinter({ ...printerClientTlsOptions(printer), port: printer.printerPorts.ftp });
  socket.on("session", (s: Buffer) => (tlsSession = s));
  const channel = replyChannel(socket, describe, log);
  try {
    socket.once("secureConnect", () => (tlsSession ??= socket.getSession()));
    const home = await logIn(socket, channel, printer, describe);
    tlsSession = socket.getSession() ?? tlsSession;
    const id = ++sessionIds;
    log.debug(`printer session ${id} logged in (home ${home})`);
    return {
      id,
      socket,
      get tlsSession() {
        return tlsSession;
      },
      home,
      cwd: home,
      type: "A",
      get closed() {
        return channel.closed;
      },
      command: channel.command,
      next: channel.next,
      close() {
        if (channel.closed) return;
        channel.end();
        socket.end("QUIT\r\n");
        setTimeout(() => dropPrinterSocket(socket), QUIT_GRACE_MS).unref?.();
      },
    };
  } catch (error) {
    dropPrinterSocket(socket);
    throw error;
  }
}
