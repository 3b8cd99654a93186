// Fuzz target for the web routes (lib/web/server.ts): random methods, paths, query strings and headers, whole or
// cut short, over raw TCP against a running web server (one without and one with basic auth). Property: the
// answer is a well-formed HTTP status line (never a 500, never a stack trace), or a close, within a deadline.
import fc from "fast-check";
import { connect } from "node:net";
import { createMetrics } from "../../lib/core/metrics.ts";
import { startWeb, type WebServer } from "../../lib/web/server.ts";
import { testStateDir } from "../support.ts";
import { createTestFeed, testPrinter, type TestFeed } from "../web-fixtures.ts";
import { wireText } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const OPEN_HOST = "127.0.21.10";
const AUTH_HOST = "127.0.21.11";
const USERNAME = "admin";
const PASSWORD = "fuzz-secret";
/** The test printers' access code (tests/web-fixtures.ts): with user bblp it opens them on the web page too. */
const PRINTER_LOGIN = "bblp:12345678";
/** Longer than any route takes here (snapshots come from a live feed), far shorter than Bun's request deadline. */
const ANSWER_DEADLINE_MS = 3_000;
/** Statuses the routes (and Bun for requests it cannot parse) give; 500 means a handler threw. */
const EXPECTED_STATUSES = new Set([200, 204, 400, 401, 403, 404, 405, 408, 413, 414, 429, 431, 503, 505]);

const fail = (why: string): never => {
  throw new Error(why);
};

let fixture: Promise<{ open: WebServer; auth: WebServer; feeds: TestFeed[] }> | undefined;
const start = () =>
  (fixture ??= (async () => {
    const feeds = [createTestFeed({ intervalMs: 100 }), createTestFeed({ intervalMs: 100 })];
    for (const feed of feeds) feed.publish(); // a snapshot is answered at once
    const printers = [testPrinter("p1s", feeds[0]!.feed), testPrinter("gärage 2", feeds[1]!.feed), testPrinter("nocam")];
    const metrics = createMetrics();
    const open = await startWeb({ web: { listen: { host: OPEN_HOST, port: 0 }, open: true }, printers: () => printers, metrics });
    // Failed logins lock an address out briefly, so the fuzzer meets the 429 and still gets past it.
    const auth = await startWeb({
      web: { listen: { host: AUTH_HOST, port: 0 }, username: USERNAME, password: PASSWORD, tokensDir: testStateDir() },
      printers: () => printers, metrics, loginLimit: { failuresAllowed: 20, windowMs: 200, lockoutMs: 100 },
    });
    return { open, auth, feeds };
  })());

export async function teardown(): Promise<void> {
  if (!fixture) return;
  const { open, auth, feeds } = await fixture;
  fixture = undefined;
  await Promise.all([open.stop(), auth.stop()]);
  for (const feed of feeds) feed.stop();
}

const pathPiece = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom("/", "/index.html", "/api/printers", "/metrics", "/favicon.ico", "/printers/p1s/snapshot.jpg", "/printers/p1s/camera.mjpeg",
    "/printers/g%C3%A4rage%202/snapshot.jpg", "/printers/nocam/snapshot.jpg", "/printers/%ZZ/snapshot.jpg", "/printers/%/camera.mjpeg",
    "/printers//snapshot.jpg", "/printers/p1s/../../etc/passwd", "//[", "*", "http://x/metrics", "/%00", "/printers/%E0%A4%A/snapshot.jpg") },
  { weight: 1, arbitrary: wireText(30).map((t) => `/${t}`) },
  // Mostly text a URL may carry, so the request line parses and the routes see it.
  { weight: 3, arbitrary: wireText(30).map((t) => `/${t.replace(/[\s]/g, "%20")}`) },
);
const query = fc.oneof(fc.constant(""), wireText(20).map((t) => `?${t.replace(/\s/g, "+")}`), fc.constantFrom("?token=x", "?a=%", "?%%%", "#frag"));
const method = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom("GET", "HEAD") },
  { weight: 2, arbitrary: fc.constantFrom("POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH", "get", "BREW") },
  { weight: 1, arbitrary: wireText(8) },
);
const basic = (text: string) => `Basic ${Buffer.from(text).toString("base64")}`;
const header = fc.oneof(
  fc.tuple(fc.constantFrom("Accept", "User-Agent", "Connection", "Content-Length", "Transfer-Encoding", "Range", "X-Forwarded-For"), wireText(20)),
  fc.tuple(fc.constant("Authorization"), fc.oneof(
    fc.constantFrom(basic(`${USERNAME}:${PASSWORD}`), basic(PRINTER_LOGIN), basic(`${USERNAME}:wrong`), basic(""), "Basic", "Basic !!!", "Bearer x",
      basic(`${USERNAME}:${PASSWORD}x`), `basic  ${basic(PRINTER_LOGIN).slice(6)} `, basic("01P00A000000001:12345678")),
    wireText(20).map((t) => `Basic ${t}`),
  )),
  fc.tuple(wireText(10), wireText(20)),
);
const request = fc.record({
  method, path: pathPiece, query, version: fc.oneof({ weight: 8, arbitrary: fc.constant("HTTP/1.1") }, { weight: 2, arbitrary: fc.constant("HTTP/1.0") },
    { weight: 1, arbitrary: fc.constantFrom("HTTP/2", "HTTP/1.1 extra", "", "HTTP/9.9", "http/1.1") }),
  headers: fc.array(header, { maxLength: 6 }),
  /** Cut the request after this fraction of its bytes and half-close (1: whole). */
  cut: fc.oneof({ weight: 4, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.double({ min: 0, max: 1, noNaN: true }) }),
  auth: fc.boolean(),
  /** The Host header: the server's own name mostly, sometimes none (HTTP/1.0 style) or one that is not a name. */
  host: fc.oneof({ weight: 6, arbitrary: fc.constant("valid") }, { weight: 1, arbitrary: fc.constantFrom("none", "", "a b", "[", "%%", "x:99999") }),
});

/** Sends one raw request, reads until the status line and headers are in (or the close), then hangs up. */
function exchange(host: string, port: number, bytes: Buffer, halfClose: boolean): Promise<{ head: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let received = Buffer.alloc(0);
    let done = false;
    let headed = false;
    const timer = setTimeout(() => {
      done = true;
      socket.destroy();
      reject(new Error(`no answer and no close within ${ANSWER_DEADLINE_MS} ms (got ${JSON.stringify(received.toString("latin1").slice(0, 80))})`));
    }, ANSWER_DEADLINE_MS);
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ head: received.toString("latin1"), closed });
    };
    socket.on("connect", () => (halfClose ? socket.end(bytes) : socket.write(bytes)));
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      // The start of a body is read too (a few ms more), so a stack trace in it would be seen.
      if (!headed && received.includes("\r\n\r\n")) {
        headed = true;
        setTimeout(() => finish(false), 15);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => finish(true));
  });
}

const webRoutes: FuzzTarget = {
  name: "web routes",
  costFactor: 4,
  property: () =>
    fc.asyncProperty(request, async (r) => {
      const { open, auth } = await start();
      // Without a Host header (HTTP/1.0) or with one that is not a name, Bun's request.url is no absolute URL.
      const host = r.host === "valid" ? [`Host: ${r.auth ? AUTH_HOST : OPEN_HOST}`] : r.host === "none" ? [] : [`Host: ${r.host}`];
      const text = [`${r.method} ${r.path}${r.query}${r.version ? ` ${r.version}` : ""}`, ...host, ...r.headers.map(([n, v]) => `${n}: ${v}`)].join("\r\n") + "\r\n\r\n";
      const whole = Buffer.from(text, "utf8");
      const bytes = r.cut < 1 ? whole.subarray(0, Math.floor(r.cut * whole.length)) : whole;
      const server = r.auth ? auth : open;
      const { head } = await exchange(r.auth ? AUTH_HOST : OPEN_HOST, server.port, bytes, r.cut < 1);
      if (head.length === 0) return; // closed without an answer: allowed for bytes that are not a request
      const status = /^HTTP\/1\.[01] (\d{3}) /.exec(head);
      if (!status) fail(`not an HTTP status line: ${JSON.stringify(head.slice(0, 80))}`);
      const code = Number(status![1]);
      if (code === 500) fail(`500 for ${JSON.stringify(text.slice(0, 200))}: ${JSON.stringify(head.slice(0, 300))}`);
      if (!EXPECTED_STATUSES.has(code)) fail(`status ${code} for ${JSON.stringify(text.slice(0, 200))}`);
      if (/\n\s+at .+:\d+:\d+/.test(head) || /node_modules|\/work\//.test(head)) fail(`a stack trace or a path in the answer: ${JSON.stringify(head.slice(0, 400))}`);
      const logins = [basic(`${USERNAME}:${PASSWORD}`), basic(PRINTER_LOGIN)].map((b) => b.slice(6));
      if (r.auth && code === 200 && !r.headers.some(([n, v]) => n === "Authorization" && logins.some((l) => v.includes(l)))) {
        fail(`200 without the password for ${JSON.stringify(text.slice(0, 200))}`);
      }
    }),
};

export const targets: FuzzTarget[] = [webRoutes];
