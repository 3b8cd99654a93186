// The queue in front of the few printer FTPS sessions (lib/bambu/ftp-upstream.ts): each is lent to one client
// command at a time; clients wait in a queue, uploads first; a session nobody used for PRINTER_IDLE_CLOSE_MS is
// closed. No sockets here: sessions come from `connect`.
import type { Logger } from "../log.ts";
import { PrinterFtpError, type PrinterSession } from "./ftp-upstream.ts";

export const PRINTER_IDLE_CLOSE_MS = 30_000;

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

const poolState = (options: PrinterPoolOptions) => ({
  options,
  idleCloseMs: options.idleCloseMs ?? PRINTER_IDLE_CLOSE_MS,
  idle: new Map<PrinterSession, ReturnType<typeof setTimeout>>(),
  busy: new Set<PrinterSession>(),
  waiters: [] as Waiter[],
  connecting: 0,
  stopped: false,
});
type PoolState = ReturnType<typeof poolState>;

export function createPrinterPool(options: PrinterPoolOptions): PrinterPool {
  const pool = poolState(options);
  return {
    acquire: (upload) => enqueue(pool, upload),
    get open() {
      return pool.idle.size + pool.busy.size;
    },
    get busy() {
      return pool.busy.size;
    },
    get waiting() {
      return pool.waiters.length;
    },
    close() {
      pool.stopped = true;
      for (const w of pool.waiters.splice(0)) w.reject(new PrinterFtpError("pandaproxy is stopping"));
      for (const s of [...pool.idle.keys(), ...pool.busy]) {
        forget(pool, s);
        s.close();
      }
    },
  };
}

function enqueue(pool: PoolState, upload: boolean): { lease: Promise<Lease>; cancel(): void } {
  let waiter!: Waiter;
  const lease = new Promise<Lease>((resolve, reject) => {
    waiter = { upload, cancelled: false, resolve, reject };
  });
  // Uploads first: after the last waiting upload, before every other command.
  const at = upload ? pool.waiters.findIndex((w) => !w.upload) : -1;
  if (at < 0) pool.waiters.push(waiter);
  else pool.waiters.splice(at, 0, waiter);
  dispatch(pool);
  return {
    lease,
    cancel() {
      waiter.cancelled = true;
      const i = pool.waiters.indexOf(waiter);
      if (i >= 0) pool.waiters.splice(i, 1);
    },
  };
}

function forget(pool: PoolState, s: PrinterSession): void {
  clearTimeout(pool.idle.get(s));
  pool.idle.delete(s);
  pool.busy.delete(s);
}

function makeIdle(pool: PoolState, s: PrinterSession): void {
  pool.busy.delete(s);
  if (s.closed || pool.stopped) return forget(pool, s);
  pool.idle.set(s, setTimeout(() => {
    pool.options.log.debug(`printer session ${s.id} idle for ${pool.idleCloseMs / 1000} s: closing it`);
    forget(pool, s);
    s.close();
  }, pool.idleCloseMs));
}

function give(pool: PoolState, s: PrinterSession, w: Waiter): void {
  clearTimeout(pool.idle.get(s));
  pool.idle.delete(s);
  if (w.cancelled) return makeIdle(pool, s);
  pool.busy.add(s);
  let released = false;
  w.resolve({
    session: s,
    release() {
      if (released) return;
      released = true;
      makeIdle(pool, s);
      dispatch(pool);
    },
  });
}

/** Hands free sessions to the waiters in order, and opens new ones while under the limit. */
function dispatch(pool: PoolState): void {
  for (const [s] of pool.idle) if (s.closed) forget(pool, s);
  while (pool.waiters.length && !pool.stopped) {
    const w = pool.waiters[0]!;
    if (w.cancelled) {
      pool.waiters.shift();
      continue;
    }
    const free = pool.idle.keys().next();
    if (!free.done) {
      pool.waiters.shift();
      give(pool, free.value, w);
      continue;
    }
    if (pool.idle.size + pool.busy.size + pool.connecting >= pool.options.max) return;
    pool.waiters.shift();
    connectFor(pool, w);
  }
}

function connectFor(pool: PoolState, w: Waiter): void {
  pool.connecting++;
  pool.options.connect().then(
    (s) => {
      pool.connecting--;
      s.socket.once("close", () => {
        forget(pool, s);
        dispatch(pool);
      });
      if (pool.stopped) return s.close();
      give(pool, s, w);
      dispatch(pool);
    },
    (error: Error) => {
      pool.connecting--;
      w.reject(error);
      dispatch(pool);
    },
  );
}
