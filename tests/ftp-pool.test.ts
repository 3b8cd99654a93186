// The queue in front of the printer's few FTPS sessions, without sockets: stand-in sessions from `connect`.
import { describe, expect, test } from "bun:test";
import { EventEmitter } from "node:events";
import type { TLSSocket } from "node:tls";
import { createPrinterPool, type Lease, type PrinterPool } from "../lib/bambu/ftp-pool.ts";
import type { PrinterSession } from "../lib/bambu/ftp-upstream.ts";
import { serviceLogger } from "../lib/log.ts";

const log = serviceLogger("pool-test", "ftp");

interface StandIn extends PrinterSession {
  closes: number;
  /** The printer drops the control connection. */
  drop(): void;
}

let ids = 0;
function standIn(): StandIn {
  const socket = new EventEmitter() as unknown as TLSSocket;
  let closed = false;
  const s: StandIn = {
    id: ++ids, socket, tlsSession: undefined, home: "/", cwd: "/", type: "A", closes: 0,
    get closed() {
      return closed;
    },
    command: () => Promise.reject(new Error("not used")),
    next: () => Promise.reject(new Error("not used")),
    close() {
      s.closes++;
      closed = true;
    },
    drop() {
      closed = true;
      socket.emit("close");
    },
  };
  return s;
}

function pool(max: number, idleCloseMs = 60_000): { pool: PrinterPool; made: StandIn[] } {
  const made: StandIn[] = [];
  return {
    made,
    pool: createPrinterPool({ max, log, idleCloseMs, connect: async () => made[made.push(standIn()) - 1]! }),
  };
}

/** Lets the pool's promise callbacks run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("printer FTPS session pool", () => {
  test("one session is lent to one command at a time; the next waits for the release", async () => {
    const { pool: p, made } = pool(1);
    const first = await p.acquire(false).lease;
    let second: Lease | undefined;
    void p.acquire(false).lease.then((l) => (second = l));
    await settle();
    expect(second).toBeUndefined();
    expect(p.waiting).toBe(1);
    first.release();
    await settle();
    expect(second?.session).toBe(first.session);
    expect(made.length).toBe(1);
    expect(p.busy).toBe(1);
  });

  test("uploads go before every waiting command that is not an upload, after the uploads already waiting", async () => {
    const { pool: p } = pool(1);
    const held = await p.acquire(false).lease;
    const order: string[] = [];
    const wait = (name: string, upload: boolean) => void p.acquire(upload).lease.then((l) => (order.push(name), l.release()));
    wait("list", false);
    wait("stor1", true);
    wait("retr", false);
    wait("stor2", true);
    held.release();
    for (let i = 0; i < 10 && order.length < 4; i++) await settle();
    expect(order).toEqual(["stor1", "stor2", "list", "retr"]);
  });

  test("a cancelled waiter is taken out of the queue and never given a session", async () => {
    const { pool: p } = pool(1);
    const held = await p.acquire(false).lease;
    const ticket = p.acquire(false);
    let given = false;
    void ticket.lease.then(() => (given = true));
    ticket.cancel();
    expect(p.waiting).toBe(0);
    held.release();
    await settle();
    expect(given).toBe(false);
    expect(p.busy).toBe(0);
  });

  test("up to `max` sessions are opened; a session the printer drops is replaced on demand", async () => {
    const { pool: p, made } = pool(2);
    const [a, b] = await Promise.all([p.acquire(false).lease, p.acquire(true).lease]);
    expect(made.length).toBe(2);
    expect(p.open).toBe(2);
    a.release();
    (b.session as StandIn).drop();
    b.release();
    await settle();
    expect(p.open).toBe(1);
    const [c, d] = await Promise.all([p.acquire(false).lease, p.acquire(false).lease]);
    expect(new Set([c.session, d.session]).size).toBe(2);
    expect(made.length).toBe(3);
  });

  test("an unused session is closed after the idle time; closing the pool rejects the waiters", async () => {
    const { pool: p, made } = pool(1, 20);
    (await p.acquire(false).lease).release();
    for (let i = 0; i < 50 && made[0]!.closes === 0; i++) await Bun.sleep(10);
    expect(made[0]!.closes).toBe(1);
    expect(p.open).toBe(0);
    const held = await p.acquire(false).lease;
    const waiting = p.acquire(true).lease;
    p.close();
    await expect(waiting).rejects.toThrow("pandaproxy is stopping");
    expect((held.session as StandIn).closes).toBe(1);
  });
});
