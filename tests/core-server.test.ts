// listen(): clear bind errors, a client limit, TLS handshake failures logged, close() ends every client;
// readExactly(): whole reads, short and silent clients rejected.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as tcpConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { listen, peerOf, readExactly, type Listening } from "../lib/core/server.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import { parseConfig } from "../lib/config.ts";
import { printerTlsMaterial, serverTlsOptions } from "../lib/tls.ts";

const HOST = "127.0.1.60";
const log = serviceLogger("p1s", "server-test");
let capture: ReturnType<typeof captureLogs>;
const open: Listening[] = [];
const dir = mkdtempSync(join(tmpdir(), "pp-server-"));
beforeAll(() => {
  setupLogging("debug", { quiet: true });
  capture = captureLogs();
});
afterAll(async () => {
  capture.stop();
  await Promise.all(open.map((l) => l.close()));
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const echo = (socket: Socket) => socket.on("data", (d) => socket.write(d));

function connectTo(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: HOST, port }, () => resolve(s));
    s.on("error", reject);
  });
}

// resume(): a socket nobody reads never sees the peer's close behind unread bytes (e.g. a TLS alert).
const closedPromise = (s: Socket) => new Promise<void>((r) => (s.destroyed ? r() : (s.once("close", () => r()), s.resume())));

describe("listen()", () => {
  test("EADDRINUSE says another program or printer entry listens there", async () => {
    const first = await listen({ log, what: "MQTT", host: HOST, port: 0, onClient: echo });
    open.push(first);
    const port = first.address.port;
    await expect(listen({ log, what: "MQTT", host: HOST, port, onClient: echo })).rejects.toThrow(
      `cannot listen for MQTT on ${HOST}:${port}: another program (or printer entry) already listens there`,
    );
  });

  test("an address this host does not have says to add an IP alias or fix bind", async () => {
    await expect(listen({ log, what: "FTPS", host: "192.0.2.77", port: 0, onClient: echo })).rejects.toThrow(
      "cannot listen for FTPS on 192.0.2.77:0: this host has no such address: add it as an IP alias or fix `bind`",
    );
  });

  test("the client limit refuses the extra client with a log line, and others keep working", async () => {
    const server = await listen({ log, what: "chamber camera", host: HOST, port: 0, maxClients: 2, onClient: echo });
    open.push(server);
    const a = await connectTo(server.address.port);
    const b = await connectTo(server.address.port);
    const c = await connectTo(server.address.port);
    await closedPromise(c);
    expect(server.clients).toBe(2);
    expect(server.accepted).toBe(2);
    expect(capture.lines.some((l) => l.includes("[p1s/server-test]") && l.includes("refused: chamber camera already has 2 clients (the limit)"))).toBe(true);
    a.write("ping");
    const reply = await readExactly(a, 4, 1_000);
    expect(reply.toString()).toBe("ping");
    b.destroy();
    a.destroy();
  });

  test("onClient throwing closes that client only, with a log line naming the peer", async () => {
    const server = await listen({
      log, what: "bind", host: HOST, port: 0,
      onClient: () => {
        throw new Error("malformed hello");
      },
    });
    open.push(server);
    const s = await connectTo(server.address.port);
    const peer = `${s.localAddress}:${s.localPort}`;
    await closedPromise(s);
    expect(capture.lines.some((l) => l.includes(`${peer} closing: malformed hello`))).toBe(true);
  });

  test("close() ends every connected client and frees the port", async () => {
    const server = await listen({ log, what: "MQTT", host: HOST, port: 0, onClient: echo });
    const port = server.address.port;
    const clients = await Promise.all([connectTo(port), connectTo(port), connectTo(port)]);
    await sleep(20);
    expect(server.sockets.size).toBe(3);
    await server.close();
    await Promise.all(clients.map(closedPromise));
    const again = await listen({ log, what: "MQTT", host: HOST, port, onClient: echo });
    await again.close();
  });

  test("TLS: a client that fails the handshake is logged and dropped; a good one is served", async () => {
    const printer = parseConfig(`[[printer]]\nname = "p1s"\nhost = "h"\nserial = "S1"\naccess_code = "12345678"\nbind = "${HOST}"\n`).printers[0]!;
    const material = printerTlsMaterial(join(dir, "state"), printer);
    const server = await listen({ log, what: "MQTT", host: HOST, port: 0, tls: serverTlsOptions(material), onClient: echo });
    open.push(server);
    const port = server.address.port;
    const plain = await connectTo(port);
    plain.write("this is not a TLS hello\r\n\r\n");
    await closedPromise(plain);
    await until(() => capture.lines.some((l) => l.includes("TLS handshake failed")));
    const good = await new Promise<Socket>((resolve, reject) => {
      const s = tlsConnect({ host: HOST, port, ca: material.ca }, () => resolve(s));
      s.on("error", reject);
    });
    good.write("hello");
    expect((await readExactly(good, 5, 1_000)).toString()).toBe("hello");
    good.destroy();
  });
});

async function until(check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(5);
  }
}

describe("readExactly()", () => {
  let server: ReturnType<typeof createServer>;
  let port = 0;
  const script: ((s: Socket) => void)[] = [];
  beforeAll(async () => {
    server = createServer((s) => script.shift()?.(s));
    await new Promise<void>((r) => server.listen(0, HOST, r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => void server.close());

  test("assembles a read from pieces and leaves the rest for the next reader", async () => {
    script.push((s) => {
      s.write("ab");
      setTimeout(() => s.write("cdEF"), 20);
    });
    const c = await connectTo(port);
    expect((await readExactly(c, 4, 1_000)).toString()).toBe("abcd");
    expect((await readExactly(c, 2, 1_000)).toString()).toBe("EF");
    c.destroy();
  });

  test("a silent peer is rejected after the timeout, a short one when it closes", async () => {
    script.push(() => {});
    const silent = await connectTo(port);
    await expect(readExactly(silent, 16, 100)).rejects.toThrow("sent 0 of 16 bytes in 0 s");
    silent.destroy();
    script.push((s) => s.end("abc"));
    const short = await connectTo(port);
    expect(peerOf(short)).toBe(`${HOST}:${port}`);
    await expect(readExactly(short, 16, 1_000)).rejects.toThrow("closed after 3 of 16 bytes");
  });
});
