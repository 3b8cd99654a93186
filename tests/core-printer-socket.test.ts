// A printer at its viewer limit accepts TCP and holds the handshake: giving up on it must close the TCP
// connection, or the printer hands its next free slot to a connection nobody uses.
import { afterAll, describe, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { connectToPrinter, dropPrinterSocket } from "../lib/core/printer-socket.ts";
import { makeCa, makeLeaf } from "../lib/tls.ts";

const HOST = "127.0.9.61";
const servers: Server[] = [];

function listenOn(server: Server): Promise<number> {
  servers.push(server);
  return new Promise((resolve) => server.listen(0, HOST, () => resolve((server.address() as { port: number }).port)));
}

function closedWithin(socket: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once("close", () => (clearTimeout(timer), resolve(true)));
  });
}

afterAll(() => {
  for (const s of servers) s.close();
});

describe("dropPrinterSocket", () => {
  test("closes the TCP connection of a handshake the printer never answered", async () => {
    let held: Socket | undefined;
    const port = await listenOn(createServer((s) => (held = s.on("error", () => {}))));
    const socket = connectToPrinter({ host: HOST, port, rejectUnauthorized: false });
    socket.on("error", () => {});
    await new Promise((r) => setTimeout(r, 200));
    expect(held).toBeDefined();
    dropPrinterSocket(socket);
    expect(await closedWithin(held!, 2_000)).toBe(true);
  });

  test("ends an established connection normally", async () => {
    const ca = makeCa("test CA", "pandaproxy tests");
    const leaf = makeLeaf(ca, "01P00A000000001", { dns: [], ips: [HOST] });
    let peer: Socket | undefined;
    const port = await listenOn(createTlsServer({ key: leaf.key, cert: leaf.cert }, (s) => (peer = s.on("error", () => {}))));
    const socket = connectToPrinter({ host: HOST, port, rejectUnauthorized: false });
    await new Promise((resolve) => socket.once("secureConnect", resolve));
    await new Promise((r) => setTimeout(r, 100));
    dropPrinterSocket(socket);
    expect(await closedWithin(peer!, 2_000)).toBe(true);
    dropPrinterSocket(socket); // twice is harmless
  });
});
