// Test helpers for the web server: a camera feed backed by a pretend upstream (frames flow while claimed), a
// PrinterRuntime-shaped printer, a started web server on 127.0.8.x (asking for the admin login below), and an
// MJPEG multipart reader.
import { mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createStream } from "../lib/core/stream.ts";
import { createMetrics, type Metrics } from "../lib/core/metrics.ts";
import { createPrinterHub, type CameraFeed, type CameraFrame, type Service, type ServiceStatus } from "../lib/core/service.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import type { PrinterConfig } from "../lib/config.ts";
import { createChamberPicture, readJpegStamp, stampJpeg } from "../lib/sim/jpeg-picture.ts";
import { startWeb, type WebServer } from "../lib/web/server.ts";
import { MJPEG_BOUNDARY } from "../lib/web/mjpeg.ts";
import type { LoginLimitOptions } from "../lib/web/login-limit.ts";

export const WEB_HOST = "127.0.8.1";

/** The [web] username/password the test web servers ask for unless a test says otherwise. */
export const TEST_ADMIN = { username: "admin", password: "web-test-admin" };
export const basicAuth = (user: string, password: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` });
/** Headers that log in as TEST_ADMIN. */
export const ADMIN_AUTH = basicAuth(TEST_ADMIN.username, TEST_ADMIN.password);

const pictures = new Map<string, Buffer>();
/** A real JPEG (cached per size) from the simulator's picture maker. */
export function testJpeg(width = 320, height = 180): Buffer {
  const key = `${width}x${height}`;
  let jpeg = pictures.get(key);
  if (!jpeg) pictures.set(key, (jpeg = createChamberPicture({ name: "web test", width, height }).frameAt(0)));
  return jpeg;
}

/** The JPEG grown to about `bytes` with comment segments (still a valid JPEG): big frames fill socket buffers fast. */
export function padJpeg(jpeg: Buffer, bytes: number): Buffer {
  let out = jpeg;
  while (out.length < bytes) out = stampJpeg(out, "p".repeat(Math.min(60_000, bytes - out.length)));
  return out;
}

export const frameNumber = (jpeg: Uint8Array) => {
  const stamp = readJpegStamp(Buffer.from(jpeg));
  return stamp?.startsWith("frame ") ? Number(stamp.slice(6)) : undefined;
};

export interface TestFeed {
  feed: CameraFeed;
  /** Claims held now. */
  readonly claims: number;
  /** Claims ever taken. */
  readonly claimed: number;
  /** Frames published so far (the next frame's number). */
  readonly published: number;
  /** false: the pretend printer cannot be reached (claims produce nothing). */
  reachable: boolean;
  /** Publish one numbered frame now. */
  publish(): CameraFrame;
  stop(): void;
}

/** A feed whose pretend upstream "connects" on the first claim and publishes numbered frames every `intervalMs`. */
export function createTestFeed(options: { intervalMs?: number; jpeg?: Buffer; reachable?: boolean } = {}): TestFeed {
  const frames = createStream<CameraFrame>();
  const base = options.jpeg ?? testJpeg();
  let claims = 0;
  let claimed = 0;
  let published = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  const times: number[] = [];
  const publish = () => {
    const frame = { jpeg: stampJpeg(base, `frame ${published++}`), receivedAt: Date.now() };
    times.push(frame.receivedAt);
    if (times.length > 100) times.shift();
    frames.publish(frame);
    return frame;
  };
  const test: TestFeed = {
    reachable: options.reachable ?? true,
    feed: {
      source: "chamber",
      frames,
      claim() {
        claims++;
        claimed++;
        if (test.reachable && !timer) timer = setInterval(publish, options.intervalMs ?? 50);
        let released = false;
        return () => {
          if (released) return;
          released = true;
          if (--claims === 0 && timer) {
            clearInterval(timer);
            timer = undefined;
          }
        };
      },
      state: () => (!test.reachable ? (claims > 0 ? "backoff: connection refused" : "idle") : timer ? "connected" : "idle"),
      frameRate: () => times.filter((t) => t > Date.now() - 2_000).length / 2,
    },
    get claims() {
      return claims;
    },
    get claimed() {
      return claimed;
    },
    get published() {
      return published;
    },
    publish,
    stop() {
      clearInterval(timer);
      timer = undefined;
    },
  };
  return test;
}

export function testService(name: string, status: ServiceStatus): Service & { current: ServiceStatus } {
  const service = {
    name,
    current: status,
    start: async () => {},
    stop: async () => {},
    status: () => service.current,
  };
  return service;
}

export function testPrinter(name: string, feed?: CameraFeed, services: Service[] = []): PrinterRuntime {
  const config = {
    name, type: "bambu", host: "192.168.1.50", serial: "01P00A000000001", accessCode: "12345678", bind: "127.0.8.2",
    services: [], camera: "auto", ports: {}, printerPorts: {},
  } as unknown as PrinterConfig;
  const hub = createPrinterHub({ model: "P1S", firmware: "01.08.00.00" });
  if (feed) hub.setCamera(feed);
  return { config, hub, services, start: async () => {}, stop: async () => {} };
}

/** A web server on `host`; its tokens live in a temporary folder (removed at stop) unless `tokensDir` is given. */
export async function startTestWeb(
  printers: PrinterRuntime[],
  options: {
    username?: string; password?: string; host?: string; metrics?: Metrics; mjpegStallMs?: number; open?: boolean;
    tokensDir?: string; loginLimit?: LoginLimitOptions;
  } = {},
): Promise<{ web: WebServer; url: string; metrics: Metrics; tokensDir: string }> {
  const metrics = options.metrics ?? createMetrics();
  const host = options.host ?? WEB_HOST;
  const ownDir = options.tokensDir === undefined ? mkdtempSync(join(tmpdir(), "pp-web-tokens-")) : undefined;
  const tokensDir = options.tokensDir ?? join(ownDir!, "tokens");
  const username = options.username ?? TEST_ADMIN.username;
  const password = options.password ?? TEST_ADMIN.password;
  let started: WebServer;
  try {
    started = await startWeb({
      web: { listen: { host, port: 0 }, username, password, open: options.open ?? false, tokensDir },
      printers: () => printers,
      metrics,
      mjpegStallMs: options.mjpegStallMs,
      loginLimit: options.loginLimit,
    });
  } catch (error) {
    if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    throw error;
  }
  const web: WebServer = {
    port: started.port,
    async stop() {
      await started.stop();
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
  };
  return { web, url: `http://${host}:${web.port}`, metrics, tokensDir };
}

export interface MjpegPart {
  headers: Record<string, string>;
  jpeg: Buffer;
}

/** Splits a multipart/x-mixed-replace byte stream into parts, checking the framing strictly as it goes. */
export function createPartParser(onPart: (part: MjpegPart) => void): (chunk: Uint8Array) => void {
  let buffer = Buffer.alloc(0);
  let pending: Record<string, string> | undefined;
  let length = 0;
  return (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      if (!pending) {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        const lines = buffer.subarray(0, end).toString("latin1").split("\r\n");
        if (lines[0] !== `--${MJPEG_BOUNDARY}`) throw new Error(`part does not start with the boundary: ${JSON.stringify(lines[0])}`);
        pending = {};
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(":");
          pending[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        length = Number(pending["content-length"]);
        if (!Number.isInteger(length) || length <= 0) throw new Error(`bad Content-Length ${pending["content-length"]}`);
        buffer = buffer.subarray(end + 4);
      }
      if (buffer.length < length + 2) return;
      const jpeg = Buffer.from(buffer.subarray(0, length));
      if (buffer.subarray(length, length + 2).toString("latin1") !== "\r\n") throw new Error("part does not end with CRLF");
      buffer = buffer.subarray(length + 2);
      const headers = pending;
      pending = undefined;
      onPart({ headers, jpeg });
    }
  };
}

/** An MJPEG viewer over fetch (logged in as TEST_ADMIN unless `init` has its own headers): collects parts until closed. */
export async function watchMjpeg(url: string, init: RequestInit = {}) {
  const abort = new AbortController();
  const response = await fetch(url, { headers: ADMIN_AUTH, ...init, signal: abort.signal });
  const parts: MjpegPart[] = [];
  const waiters: (() => void)[] = [];
  const parse = createPartParser((part) => {
    parts.push(part);
    for (const w of waiters.splice(0)) w();
  });
  let error: unknown;
  const reading = (async () => {
    const reader = response.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      parse(value);
    }
  })().catch((e) => {
    if (!abort.signal.aborted) error = e;
  });
  return {
    response,
    parts,
    get error() {
      return error;
    },
    /** Resolves once `count` parts arrived in total (rejects after `timeoutMs`). */
    async until(count: number, timeoutMs = 5_000) {
      const deadline = Date.now() + timeoutMs;
      while (parts.length < count) {
        if (error) throw error;
        if (Date.now() > deadline) throw new Error(`only ${parts.length} of ${count} parts within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 100);
        });
      }
    },
    async close() {
      abort.abort();
      await reading;
    },
  };
}

/** A viewer on a raw socket (logged in as TEST_ADMIN), so a test can stop reading (pause) like a stuck browser. */
export function rawMjpegViewer(host: string, port: number, path: string, headers: Record<string, string> = ADMIN_AUTH) {
  const parts: MjpegPart[] = [];
  const parse = createPartParser((part) => parts.push(part));
  let head: Buffer | undefined = Buffer.alloc(0);
  let chunked = false;
  let body = Buffer.alloc(0);
  // Without a Content-Length Bun sends the body chunked: strip the chunk framing before parsing parts.
  const dechunk = (bytes: Buffer) => {
    if (!chunked) return parse(bytes);
    body = Buffer.concat([body, bytes]);
    for (;;) {
      const line = body.indexOf("\r\n");
      if (line < 0) return;
      const size = parseInt(body.subarray(0, line).toString("latin1"), 16);
      if (body.length < line + 2 + size + 2) return;
      parse(body.subarray(line + 2, line + 2 + size));
      body = body.subarray(line + 2 + size + 2);
    }
  };
  const socket: Socket = connect({ host, port });
  socket.on("error", () => {});
  socket.on("data", (chunk: Buffer) => {
    if (!head) return dechunk(chunk);
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf("\r\n\r\n");
    if (end < 0) return;
    chunked = /\r\ntransfer-encoding: *chunked/i.test(head.subarray(0, end).toString("latin1"));
    const rest = head.subarray(end + 4);
    head = undefined;
    dechunk(rest);
  });
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`);
  return { socket, parts, close: () => socket.destroy() };
}

export async function waitFor(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}
