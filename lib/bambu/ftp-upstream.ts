// The printer side of the FTPS proxy: logged-in control sessions to the printer's vsftpd, few of them (the
// printer allows very few), lent to one client command at a time. Clients wait in a queue, uploads first;
// a session nobody used for PRINTER_IDLE_CLOSE_MS is closed.
import type { TLSSocket } from "node:tls";
import { connectToPrinter, dropPrinterSocket } from "../core/printer-socket.ts";
import type { PrinterConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import { printerClientTlsOptions } from "../tls.ts";
import { createLineSplitter, createReplyAssembler, parseQuotedPath, replyMessage, type FtpReply } from "./ftp-codec.ts";

export const PRINTER_IDLE_CLOSE_MS = 30_000;
export const PRINTER_CONNECT_TIMEOUT_MS = 10_000;
/** A command's reply; transfers wait for their final reply with their own (longer) limit. */
export const PRINTER_REPLY_TIMEOUT_MS = 30_000;

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

export async function openPrinterSession(printer: PrinterConfig, log: Logger): Promise<PrinterSession> {
  const replies: FtpReply[] = [];
  const waiters: { resolve(r: FtpReply): void; reject(e: Error): void }[] = [];
  let closed = false;
  let tlsSession: Buffer | undefined;
  const describe = `printer FTPS ${printer.host}:${printer.printerPorts.ftp}`;

  const socket = connectToPrinter({ ...printerClientTlsOptions(printer), port: printer.printerPorts.ftp });
  socket.on("session", (s: Buffer) => (tlsSession = s));
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
  const command = (line: string, timeoutMs?: number) => {
    if (closed) return Promise.reject(new PrinterFtpError(`${describe} is closed`));
    socket.write(line + "\r\n");
    return next(timeoutMs);
  };
  const expect = async (line: string, codes: number[], what: string) => {
    const reply = await command(line, PRINTER_CONNECT_TIMEOUT_MS);
    if (!codes.includes(reply.code)) throw new PrinterFtpError(`${describe} refused ${what}: ${replyMessage(reply)}`, reply);
    return reply;
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new PrinterFtpError(`${describe}: no TLS handshake within ${PRINTER_CONNECT_TIMEOUT_MS / 1000} s`)), PRINTER_CONNECT_TIMEOUT_MS);
      socket.once("secureConnect", () => (clearTimeout(timer), resolve()));
      socket.once("close", () => (clearTimeout(timer), reject(new PrinterFtpError(`${describe}: connection failed`))));
    });
    tlsSession ??= socket.getSession();
    const greeting = await next(PRINTER_CONNECT_TIMEOUT_MS);
    if (greeting.code !== 220) throw new PrinterFtpError(`${describe} is not ready: ${replyMessage(greeting)}`, greeting);
    const user = await expect("USER bblp", [230, 331], "the user bblp");
    if (user.code === 331) await expect(`PASS ${printer.accessCode}`, [230], "the login (check access_code)");
    await expect("PBSZ 0", [200], "PBSZ 0");
    await expect("PROT P", [200], "PROT P");
    const home = parseQuotedPath(replyMessage(await expect("PWD", [257], "PWD"))) ?? "/";
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
        return closed;
      },
      command,
      next,
      close() {
        if (closed) return;
        closed = true;
        socket.end("QUIT\r\n");
        setTimeout(() => dropPrinterSocket(socket), 1_000).unref?.();
      },
    };
  } catch (error) {
    dropPrinterSocket(socket);
    throw error;
  }
}

export interface Lease {
  readonly session: PrinterSession;
  release(): void;
}

export interface PrinterPool {
  /** Waits for a printer session; uploads go before everything else. Cancel when the client leaves. */
  acquire(upload: boolean): { lease: Promise<Lease>; cancel(): void };
  readonly open: number;
  readonly busy: number;
  readonly waiting: number;
  close(): void;
}

interface Waiter {
  upload: boolean;
  cancelled: boolean;
  resolve(lease: Lease): void;
  reject(error: Error): void;
}

export interface PrinterPoolOptions {
  max: number;
  log: Logger;
  connect(): Promise<PrinterSession>;
  /** Closes a session nobody used for this long (default PRINTER_IDLE_CLOSE_MS; tests inject a short one). */
  idleCloseMs?: number;
}

export function createPrinterPool(options: PrinterPoolOptions): PrinterPool {
  const idleCloseMs = options.idleCloseMs ?? PRINTER_IDLE_CLOSE_MS;
  const idle = new Map<PrinterSession, ReturnType<typeof setTimeout>>();
  const busy = new Set<PrinterSession>();
  const waiters: Waiter[] = [];
  let connecting = 0;
  let stopped = false;

  const count = () => idle.size + busy.size + connecting;
  const forget = (s: PrinterSession) => {
    clearTimeout(idle.get(s));
    idle.delete(s);
    busy.delete(s);
  };
  const makeIdle = (s: PrinterSession) => {
    busy.delete(s);
    if (s.closed || stopped) {
      forget(s);
      return;
    }
    idle.set(s, setTimeout(() => {
      options.log.debug(`printer session ${s.id} idle for ${idleCloseMs / 1000} s: closing it`);
      forget(s);
      s.close();
    }, idleCloseMs));
  };
  const give = (s: PrinterSession, w: Waiter) => {
    clearTimeout(idle.get(s));
    idle.delete(s);
    if (w.cancelled) return makeIdle(s);
    busy.add(s);
    let released = false;
    w.resolve({
      session: s,
      release() {
        if (released) return;
        released = true;
        makeIdle(s);
        dispatch();
      },
    });
  };
  const dispatch = () => {
    for (const [s] of idle) if (s.closed) forget(s);
    while (waiters.length && !stopped) {
      const w = waiters[0]!;
      if (w.cancelled) {
        waiters.shift();
        continue;
      }
      const free = idle.keys().next();
      if (!free.done) {
        waiters.shift();
        give(free.value, w);
        continue;
      }
      if (count() >= options.max) return;
      waiters.shift();
      connecting++;
      options.connect().then(
        (s) => {
          connecting--;
          s.socket.once("close", () => {
            forget(s);
            dispatch();
          });
          if (stopped) return s.close();
          give(s, w);
          dispatch();
        },
        (error: Error) => {
          connecting--;
          w.reject(error);
          dispatch();
        },
      );
    }
  };

  return {
    acquire(upload) {
      let waiter!: Waiter;
      const lease = new Promise<Lease>((resolve, reject) => {
        waiter = { upload, cancelled: false, resolve, reject };
      });
      // Uploads first: after the last waiting upload, before every other command.
      const at = upload ? waiters.findIndex((w) => !w.upload) : -1;
      if (at < 0) waiters.push(waiter);
      else waiters.splice(at, 0, waiter);
      dispatch();
      return {
        lease,
        cancel() {
          waiter.cancelled = true;
          const i = waiters.indexOf(waiter);
          if (i >= 0) waiters.splice(i, 1);
        },
      };
    },
    get open() {
      return idle.size + busy.size;
    },
    get busy() {
      return busy.size;
    },
    get waiting() {
      return waiters.length;
    },
    close() {
      stopped = true;
      for (const w of waiters.splice(0)) w.reject(new PrinterFtpError("pandaproxy is stopping"));
      for (const s of [...idle.keys(), ...busy]) {
        forget(s);
        s.close();
      }
    },
  };
}
