// The FTPS data pump (lib/bambu/ftp-data.ts) frees each read as soon as the destination has taken it, so a large
// transfer does not leave its read buffers waiting for the garbage collector (RSS: bench/ftp.ts). Proved over real
// TLS sockets with a slow receiver (backpressure): every byte arrives intact, and the reads the pump got are
// released; a buffer that shares its memory with others is never released. Loopback 127.0.54.10-12.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import type { Socket } from "node:net";
import { connect as tlsConnect, createServer as createTlsServer, type Server, type TLSSocket } from "node:tls";
import { pump, release } from "../lib/bambu/ftp-data.ts";
import { makeCa, makeLeaf } from "../lib/tls.ts";

const SENDER_SIDE = "127.0.54.10";
const RECEIVER_SIDE = "127.0.54.11";
const BYTES = 24 * 1024 * 1024;
const BLOCK = 256 * 1024;

let inbound: Server;
let outbound: Server;
const accepted = { inbound: [] as TLSSocket[], outbound: [] as TLSSocket[] };

beforeAll(async () => {
  const ca = makeCa("ftp memory test", "pandaproxy tests");
  const leaf = (ip: string) => makeLeaf(ca, ip, { dns: [], ips: [ip] });
  const a = leaf(SENDER_SIDE);
  const b = leaf(RECEIVER_SIDE);
  inbound = createTlsServer({ key: a.key, cert: a.cert }, (s) => void accepted.inbound.push(s));
  outbound = createTlsServer({ key: b.key, cert: b.cert }, (s) => {
    s.pause();
    accepted.outbound.push(s);
  });
  await new Promise<void>((resolve) => inbound.listen(0, SENDER_SIDE, resolve));
  await new Promise<void>((resolve) => outbound.listen(0, RECEIVER_SIDE, resolve));
});
afterAll(() => {
  for (const s of [...accepted.inbound, ...accepted.outbound]) s.destroy();
  inbound?.close();
  outbound?.close();
});

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !ok(); await Bun.sleep(5)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

describe("FTPS data pump memory", () => {
  test("a transfer through the pump arrives intact and every read it got is released once written", async () => {
    // sender -> [inbound TLS] -> pump -> [outbound TLS] -> slow receiver
    const sender = tlsConnect({ host: SENDER_SIDE, port: (inbound.address() as { port: number }).port, rejectUnauthorized: false });
    const toReceiver = tlsConnect({ host: RECEIVER_SIDE, port: (outbound.address() as { port: number }).port, rejectUnauthorized: false });
    await new Promise((resolve) => toReceiver.once("secureConnect", resolve));
    await until("both connections", () => accepted.inbound.length === 1 && accepted.outbound.length === 1);
    const source = accepted.inbound[0]! as unknown as Socket;
    const receiver = accepted.outbound[0]!;

    const reads: Buffer[] = [];
    source.on("data", (chunk: Buffer) => void reads.push(chunk));
    let reported = 0;
    const flow = pump(source, toReceiver as unknown as Socket, { moved: (n) => void (reported += n), returns: 0 });

    const got = createHash("sha256");
    let received = 0;
    receiver.on("data", (d: Buffer) => {
      got.update(d);
      received += d.length;
    });
    // The receiver reads nothing at first: the pump must hold the sender back (backpressure) meanwhile.
    setTimeout(() => receiver.resume(), 300);

    const sent = createHash("sha256");
    for (let at = 0; at < BYTES; at += BLOCK) {
      const block = Buffer.alloc(BLOCK, (at / BLOCK) & 0xff);
      block.writeUInt32BE(at, 0);
      sent.update(block);
      if (!sender.write(block)) await new Promise((resolve) => sender.once("drain", resolve));
    }
    sender.end();
    expect(await flow.done).toBe("end");
    toReceiver.end();
    await until("every byte", () => received === BYTES);
    expect(flow.bytes).toBe(BYTES);
    expect(reported).toBe(BYTES); // every byte counted towards handing memory back (core/memory-return.ts)
    expect(got.digest("hex")).toBe(sent.digest("hex"));
    // Bun gives each read its own buffer: the pump released them (detached: zero length now).
    const own = reads.filter((r) => r.byteOffset === 0);
    expect(reads.length).toBeGreaterThan(0);
    expect(own.length).toBeGreaterThan(0);
    expect(own.every((r) => r.buffer.byteLength === 0)).toBe(true);
    sender.destroy();
  }, 30_000);

  test("a buffer that is a view into shared memory is left alone", () => {
    const shared = new ArrayBuffer(64);
    const view = Buffer.from(shared, 16, 16).fill(7);
    const neighbour = Buffer.from(shared, 0, 16).fill(1);
    release(view);
    expect(shared.byteLength).toBe(64);
    expect([...neighbour]).toEqual(new Array(16).fill(1));
    const own = Buffer.alloc(32, 3);
    release(own);
    expect(own.buffer.byteLength).toBe(0);
  });
});
