// The reconnecting upstream, driven by fake connect functions: on demand with linger, always on, exponential
// backoff, a refused login waiting the longest backoff, a fresh claim skipping a long backoff, clean stop.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createUpstream, LoginRefused, type Link, type UpstreamState } from "../lib/core/upstream.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";

let capture: ReturnType<typeof captureLogs>;
beforeAll(() => {
  setupLogging("debug", { quiet: true });
  capture = captureLogs();
});
afterAll(() => capture.stop());

const log = serviceLogger("p1s", "upstream-test");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A fake printer connection: counts attempts, fails the ones `outcome` says, and can be dropped. */
function fakePrinter(outcome: (attempt: number) => "ok" | Error = () => "ok") {
  const attempts: number[] = [];
  const open: { id: number; drop(reason?: unknown): void; closed: boolean }[] = [];
  const connect = async (): Promise<Link<number>> => {
    attempts.push(Date.now());
    const result = outcome(attempts.length);
    if (result instanceof Error) throw result;
    let drop!: (reason?: unknown) => void;
    const closed = new Promise<unknown>((resolve) => (drop = resolve));
    const entry = { id: attempts.length, drop: (reason?: unknown) => drop(reason), closed: false };
    open.push(entry);
    return { connection: entry.id, closed, close: () => ((entry.closed = true), drop("closed by proxy")) };
  };
  return { connect, attempts, open };
}

describe("an always-on upstream", () => {
  test("connects on start, reconnects quickly after a drop, and stop() closes it for good", async () => {
    const printer = fakePrinter();
    const states: UpstreamState[] = [];
    const up = createUpstream({ log, describe: "fake printer", connect: printer.connect, onDemand: false, backoffMinMs: 20, backoffMaxMs: 200 });
    up.on("state", (s) => states.push(s));
    const connected: number[] = [];
    up.on("connected", (c) => connected.push(c));
    up.start();
    await until("first connection", () => up.state === "connected");
    expect(up.current()).toBe(1);
    printer.open[0]!.drop(new Error("printer rebooted"));
    await until("second connection", () => up.connects === 2);
    expect(connected).toEqual([1, 2]);
    expect(capture.lines.some((l) => l.includes("lost fake printer (printer rebooted); reconnecting"))).toBe(true);
    await up.stop();
    expect(up.state).toBe("stopped");
    expect(printer.open[1]!.closed).toBe(true);
    await sleep(60);
    expect(printer.attempts).toHaveLength(2);
    expect(states).toEqual(["connecting", "connected", "backoff", "connecting", "connected", "stopped"]);
  });

  test("failures back off exponentially up to the maximum", async () => {
    const printer = fakePrinter((n) => (n <= 4 ? new Error("ECONNREFUSED") : "ok"));
    const up = createUpstream({ log, describe: "fake printer", connect: printer.connect, onDemand: false, backoffMinMs: 30, backoffMaxMs: 100 });
    up.start();
    await until("connection after four failures", () => up.state === "connected");
    const gaps = printer.attempts.slice(1).map((t, i) => t - printer.attempts[i]!);
    // setTimeout never fires early: each gap is at least its backoff (30, 60, then capped at 100).
    expect(gaps[0]!).toBeGreaterThanOrEqual(28);
    expect(gaps[1]!).toBeGreaterThanOrEqual(58);
    expect(gaps[2]!).toBeGreaterThanOrEqual(98);
    expect(gaps[3]!).toBeGreaterThanOrEqual(98);
    expect(up.lastError).toBeUndefined();
    expect(capture.lines.some((l) => l.includes("cannot reach fake printer: ECONNREFUSED; retrying in"))).toBe(true);
    await up.stop();
  });

  test("a refused login waits the longest backoff, loudly, instead of retrying at once", async () => {
    const printer = fakePrinter(() => new LoginRefused("bad access code"));
    const up = createUpstream({ log, describe: "fake printer", connect: printer.connect, onDemand: false, backoffMinMs: 10, backoffMaxMs: 400 });
    up.start();
    await until("first attempt", () => up.state === "backoff");
    await sleep(150); // several ordinary backoffs would have passed
    expect(printer.attempts).toHaveLength(1);
    expect(up.lastError).toBe("bad access code");
    expect(capture.lines.some((l) => l.includes("ERROR") && l.includes("fake printer refused the login: bad access code; check access_code"))).toBe(true);
    await up.stop();
    await sleep(300);
    expect(printer.attempts).toHaveLength(1); // stop() cancelled the retry
  });

  test("reconnect() drops the current connection and opens a new one", async () => {
    const printer = fakePrinter();
    const up = createUpstream({ log, describe: "fake printer", connect: printer.connect, onDemand: false, backoffMinMs: 20 });
    up.start();
    await until("connected", () => up.state === "connected");
    up.reconnect("stream out of sync");
    expect(printer.open[0]!.closed).toBe(true);
    await until("reconnected", () => up.connects === 2);
    expect(up.current()).toBe(2);
    await up.stop();
  });
});

describe("an on-demand upstream", () => {
  test("connects only while claimed and closes after the linger", async () => {
    const printer = fakePrinter();
    const up = createUpstream({ log, describe: "fake camera", connect: printer.connect, onDemand: true, lingerMs: 80, backoffMinMs: 20 });
    up.start();
    await sleep(30);
    expect(printer.attempts).toHaveLength(0);
    expect(up.state).toBe("idle");
    const release = up.claim();
    const second = up.claim();
    await until("connected", () => up.state === "connected");
    release();
    release(); // a second call is harmless
    second();
    expect(up.claims).toBe(0);
    await sleep(30);
    expect(up.state).toBe("connected"); // lingering
    await until("closed after linger", () => up.state === "idle");
    expect(printer.open[0]!.closed).toBe(true);
    expect(capture.lines.some((l) => l.includes("no clients for 0 s: closing fake camera"))).toBe(true);
    await up.stop();
  });

  test("a claim during the linger keeps the same connection", async () => {
    const printer = fakePrinter();
    const up = createUpstream({ log, describe: "fake camera", connect: printer.connect, onDemand: true, lingerMs: 60, backoffMinMs: 20 });
    up.start();
    up.claim()();
    await until("connected", () => up.state === "connected");
    await sleep(30);
    const again = up.claim();
    await sleep(80);
    expect(up.state).toBe("connected");
    expect(printer.attempts).toHaveLength(1);
    again();
    await up.stop();
  });

  test("a new viewer does not wait out a long backoff left from an earlier failure", async () => {
    const printer = fakePrinter((n) => (n === 1 ? new Error("EHOSTUNREACH") : "ok"));
    const up = createUpstream({ log, describe: "fake camera", connect: printer.connect, onDemand: true, lingerMs: 5_000, backoffMinMs: 10_000 });
    up.start();
    const first = up.claim();
    await until("backoff", () => up.state === "backoff");
    first();
    up.claim();
    await until("connected well before the 10 s backoff", () => up.state === "connected", 2_000);
    expect(printer.attempts).toHaveLength(2);
    await up.stop();
  });

  test("viewers that come and go do not cut short the backoff after a refused login", async () => {
    const printer = fakePrinter(() => new LoginRefused("bad access code"));
    const up = createUpstream({ log, describe: "fake camera", connect: printer.connect, onDemand: true, lingerMs: 5_000, backoffMinMs: 10, backoffMaxMs: 400 });
    up.start();
    const first = up.claim();
    await until("backoff", () => up.state === "backoff");
    first();
    const second = up.claim();
    await sleep(150);
    expect(printer.attempts).toHaveLength(1);
    second();
    await up.stop();
  });

  test("stop() while connecting closes the connection that arrives late", async () => {
    let finish!: () => void;
    const gate = new Promise<void>((r) => (finish = r));
    const printer = fakePrinter();
    const slowConnect = async () => (await gate, printer.connect());
    const up = createUpstream({ log, describe: "slow printer", connect: slowConnect, onDemand: false });
    up.start();
    expect(up.state).toBe("connecting");
    await up.stop();
    finish();
    await until("late connection", () => printer.open.length === 1);
    await sleep(5);
    expect(printer.open[0]!.closed).toBe(true);
    expect(up.state).toBe("stopped");
    expect(up.current()).toBeUndefined();
  });
});

describe("the printer link belongs to no client", () => {
  test("a claim made while handling one client opens the link outside that client's context", async () => {
    const { runForClient, currentClient } = await import("../lib/core/client-context.ts");
    const { Socket } = await import("node:net");
    let contextAtConnect: unknown = "not called";
    const printer = fakePrinter();
    const up = createUpstream({
      log, describe: "fake printer", onDemand: true, lingerMs: 20, backoffMinMs: 10, backoffMaxMs: 50,
      connect: async () => ((contextAtConnect = currentClient()), printer.connect()),
    });
    up.start();
    const viewer = new Socket();
    let release!: () => void;
    runForClient({ log, socket: viewer }, () => (release = up.claim()));
    await until("the link", () => up.state === "connected");
    expect(contextAtConnect).toBeUndefined();
    release();
    await up.stop();
    viewer.destroy();
  });
});
