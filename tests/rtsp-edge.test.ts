// The RTSP edge policy (issue 12) at the unit of one relay and one server: the loopback relay between FFmpeg
// and the printer holds back either side while the other does not read, and our RTSP server takes a client's
// pipelined requests one at a time (bounded), closes a client that sends no whole request in time.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tcpConnect, type Socket } from "node:net";
import { createServer as createTlsServer, type Server, type TLSSocket } from "node:tls";
import { listen, type Listening } from "../lib/core/server.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import { createAuthenticator } from "../lib/rtsp/auth.ts";
import { encodeFrame } from "../lib/rtsp/message.ts";
import { startRelay, type Relay } from "../lib/rtsp/relay.ts";
import { createRtspServer } from "../lib/rtsp/server.ts";
import { createStream } from "../lib/rtsp/stream.ts";
import { makeLeaf } from "../lib/tls.ts";
import { testProxyCa } from "./support.ts";

const PRINTER = "127.0.24.40";
const SERVER = "127.0.24.41";
const PRINTER_PORT = 8322;
/** What the flooding side tries to push; far beyond every buffer on the way when nothing holds it back. */
const FLOOD_BYTES = 48 * 1024 * 1024;
const FRAME = Buffer.alloc(60_000, 0x42);
const BACKLOG = 256 * 1024;

let capture: ReturnType<typeof captureLogs>;
const log = serviceLogger("x1c", "rtsp");
beforeAll(() => {
  setupLogging("info", { quiet: true });
  capture = captureLogs();
});
afterAll(() => capture.stop());

/** Writes interleaved frames as fast as `socket` takes them; resolves to the bytes it took before a 1 s stall. */
async function flood(socket: Socket): Promise<number> {
  let taken = 0;
  const frame = encodeFrame(0, FRAME);
  while (taken < FLOOD_BYTES && !socket.destroyed) {
    if (socket.write(frame)) {
      taken += frame.length;
      continue;
    }
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 1_000);
      socket.once("drain", () => (clearTimeout(timer), resolve(true)));
    });
    if (!drained) break;
    taken += frame.length;
  }
  return taken;
}

describe("the loopback relay between FFmpeg and the printer", () => {
  let printer: Server;
  let relay: Relay;
  let onPrinterSocket: (socket: TLSSocket) => void = () => {};
  beforeAll(async () => {
    const leaf = makeLeaf(testProxyCa(), "00M09A350100123", { dns: ["localhost"], ips: [PRINTER] });
    printer = createTlsServer({ key: leaf.key, cert: leaf.cert }, (socket) => onPrinterSocket(socket));
    await new Promise<void>((resolve) => printer.listen(PRINTER_PORT, PRINTER, resolve));
    relay = await startRelay({
      log, host: PRINTER, port: PRINTER_PORT, tls: { rejectUnauthorized: false }, user: "bblp", password: () => "12345678",
      maxBacklogBytes: BACKLOG,
    });
  });
  afterAll(async () => {
    await relay?.close();
    printer?.close();
  });

  const relayPort = () => Number(new URL(relay.url("/x")).port);

  test("a printer flooding frames at an FFmpeg that does not read is held back", async () => {
    const taken = new Promise<number>((resolve) => (onPrinterSocket = (socket) => {
      socket.on("error", () => {});
      resolve(flood(socket));
    }));
    const ffmpeg = tcpConnect({ host: "127.0.0.1", port: relayPort() });
    ffmpeg.on("error", () => {});
    ffmpeg.pause();
    const bytes = await taken;
    ffmpeg.destroy();
    expect(bytes).toBeLessThan(FLOOD_BYTES / 2);
  }, 20_000);

  test("an FFmpeg flooding frames at a printer that does not read is held back", async () => {
    const connected = new Promise<TLSSocket>((resolve) => (onPrinterSocket = (socket) => {
      socket.on("error", () => {});
      socket.pause();
      resolve(socket);
    }));
    const ffmpeg = tcpConnect({ host: "127.0.0.1", port: relayPort() });
    ffmpeg.on("error", () => {});
    const printerSide = await connected;
    const bytes = await flood(ffmpeg);
    ffmpeg.destroy();
    printerSide.destroy();
    expect(bytes).toBeLessThan(FLOOD_BYTES / 2);
  }, 20_000);
});

describe("our RTSP server's requests", () => {
  const FIRST_REQUEST_MS = 600;
  const MAX_PENDING = 16;
  let listening: Listening;
  /** Readers waiting for the (never live) stream: what keeps FFmpeg running. */
  let claims = 0;
  beforeAll(async () => {
    const stream = createStream("/streaming/live/1", log);
    stream.setDemand(() => {
      claims++;
      return () => void claims--;
    });
    const server = createRtspServer({
      log,
      streams: new Map([["/streaming/live/1", stream]]),
      readerAuth: createAuthenticator({ realm: "test", allowBasic: true, credentials: () => [{ user: "bblp", password: "12345678", role: "access code" }] }),
      firstRequestTimeoutMs: FIRST_REQUEST_MS,
      idleTimeoutMs: 10_000,
      maxPendingRequests: MAX_PENDING,
    });
    listening = await listen({ log, what: "RTSP test", host: SERVER, port: 8554, onClient: server.handle });
  });
  afterAll(() => listening?.close());

  const connectRaw = async () => {
    const socket = tcpConnect({ host: SERVER, port: 8554 });
    socket.on("error", () => {});
    let text = "";
    socket.on("data", (b: Buffer) => (text += b.toString()));
    const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now())));
    await new Promise((resolve) => socket.once("connect", resolve));
    // Read now: Bun forgets the local port once the socket is closed.
    return { socket, closed, text: () => text, peer: `:${socket.localPort} ` };
  };
  const options = (cseq: number) => `OPTIONS rtsp://${SERVER}:8554/streaming/live/1 RTSP/1.0\r\nCSeq: ${cseq}\r\n\r\n`;

  test("pipelined requests are answered one at a time, in order", async () => {
    const c = await connectRaw();
    c.socket.write([1, 2, 3, 4, 5].map(options).join(""));
    for (let i = 0; i < 200 && (c.text().match(/RTSP\/1\.0 200/g) ?? []).length < 5; i++) await Bun.sleep(10);
    expect([...c.text().matchAll(/CSeq: (\d+)/g)].map((m) => m[1])).toEqual(["1", "2", "3", "4", "5"]);
    c.socket.destroy();
  });

  test("a flood of pipelined requests is closed with a log line naming the peer", async () => {
    const c = await connectRaw();
    c.socket.write(Array.from({ length: 3_000 }, (_, i) => options(i + 1)).join(""));
    const at = await Promise.race([c.closed, Bun.sleep(5_000).then(() => 0)]);
    expect(at).toBeGreaterThan(0);
    expect((c.text().match(/RTSP\/1\.0 200/g) ?? []).length).toBeLessThanOrEqual(MAX_PENDING + 2);
    const line = capture.lines.find((l) => l.includes(c.peer) && l.includes(`more than ${MAX_PENDING} requests`));
    expect(line).toBeDefined();
  });

  test("a client that trickles a request one byte at a time is closed at the first-request deadline", async () => {
    const c = await connectRaw();
    const started = Date.now();
    const request = options(1);
    let i = 0;
    const trickle = setInterval(() => !c.socket.destroyed && c.socket.write(request[i++ % request.length]!), 150);
    const at = await Promise.race([c.closed, Bun.sleep(4_000).then(() => 0)]);
    clearInterval(trickle);
    expect(at).toBeGreaterThan(0);
    expect(at - started).toBeLessThan(FIRST_REQUEST_MS + 1_000);
    expect(capture.lines.some((l) => l.includes(c.peer) && l.includes("no whole request within"))).toBe(true);
  });

  test("a plain RTSP client that leaves while DESCRIBE waits for the stream releases its claim at once", async () => {
    const c = await connectRaw();
    const basic = Buffer.from("bblp:12345678").toString("base64");
    c.socket.write(`DESCRIBE rtsp://${SERVER}:8554/streaming/live/1 RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic ${basic}\r\n\r\n`);
    for (let i = 0; i < 100 && claims === 0; i++) await Bun.sleep(10);
    expect(claims).toBe(1);
    c.socket.destroy();
    for (let i = 0; i < 50 && claims > 0; i++) await Bun.sleep(10);
    expect(claims).toBe(0);
  });
});
