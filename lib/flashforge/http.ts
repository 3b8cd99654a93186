// FlashForge HTTP 8898: every request is checked (serialNumber and checkCode, in the JSON body or, for
// /uploadGcode, in headers) before anything reaches the printer; wrong ones are refused here in the printer's own
// {code, message} shape. Good ones are forwarded; uploads stream through, honouring Expect: 100-continue.
// node:http rather than Bun.serve + fetch: it lets us check credentials at "checkContinue" before the client sends
// its body, and relay the printer's own 100 Continue, so a refused upload costs no bytes and an accepted one streams.
import { Agent, createServer, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Service, ServiceContext } from "../core/service.ts";
import { createAllowList } from "../core/allow.ts";
import { sameSecret } from "../core/edge.ts";
import { peerOf } from "../core/server.ts";
import { serviceLogger } from "../log.ts";

export const MAX_JSON_BODY_BYTES = 1024 * 1024;
/** /detail answers are small; we read them whole to put the proxy's address in. */
export const MAX_REWRITTEN_RESPONSE_BYTES = 4 * 1024 * 1024;
/**
 * From the connection (or the end of the last response) to a complete request head. Our own timer: Bun's
 * node:http ignores `headersTimeout`, and its socket timeouts are not reset by header bytes (docs/protocol-notes.md).
 */
export const HEADERS_TIMEOUT_MS = 10_000;
/** A JSON request's body (at most MAX_JSON_BODY_BYTES) must have arrived this long after its head. */
export const JSON_BODY_TIMEOUT_MS = 30_000;
/** A connection with no bytes either way for this long is closed (an upload in progress keeps it busy). */
export const IDLE_TIMEOUT_MS = 60_000;
export const UPSTREAM_TIMEOUT_MS = 60_000;
/** The printer's small HTTP server is not asked to do more than this at once; the rest wait in line. */
export const MAX_PRINTER_REQUESTS = 4;
export const MAX_HTTP_CLIENTS = 64;
/** FlashNetwork's FNET_VERIFY_LAN_DEV_FAILED: "invalid serialNumber/checkCode" (Orca-FlashForge FlashNetwork.h). */
export const VERIFY_FAILED_CODE = 1001;

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host"]);

export interface FlashforgeHttpOptions {
  /** Tests shorten HEADERS_TIMEOUT_MS, IDLE_TIMEOUT_MS and JSON_BODY_TIMEOUT_MS with these. */
  headersTimeoutMs?: number;
  idleTimeoutMs?: number;
  jsonBodyTimeoutMs?: number;
}

export function createFlashforgeHttp(ctx: ServiceContext, options: FlashforgeHttpOptions = {}): Service {
  const { printer } = ctx;
  const log = serviceLogger(printer.name, "http");
  const allowList = createAllowList(printer.allow);
  const headersTimeoutMs = options.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
  const idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  const jsonBodyTimeoutMs = options.jsonBodyTimeoutMs ?? JSON_BODY_TIMEOUT_MS;
  const headDeadlines = new WeakMap<Socket, ReturnType<typeof setTimeout>>();
  /** Requests being answered on each connection; the head deadline runs only while there are none. */
  const answering = new WeakMap<Socket, number>();
  const agent = new Agent({ keepAlive: true, maxSockets: MAX_PRINTER_REQUESTS });
  const sockets = new Set<Socket>();
  const refusals = ctx.metrics.counter("pandaproxy_flashforge_http_refused_total", "Requests refused for wrong credentials", { printer: printer.name });
  let listening = false;
  let error: string | undefined;

  const credentialsOk = (serial: unknown, code: unknown) => {
    // Both compared, always, in constant time; a missing or non-string value never matches.
    const serialOk = sameSecret(typeof serial === "string" ? serial : undefined, printer.serial);
    const codeOk = sameSecret(typeof code === "string" ? code : undefined, printer.accessCode);
    return serialOk && codeOk;
  };

  const reply = (res: ServerResponse, body: unknown, status = 200, close = false) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), ...(close ? { Connection: "close" } : {}) });
    res.end(text);
  };

  const refuse = (req: IncomingMessage, res: ServerResponse, why: string, bodyUnread: boolean) => {
    refusals.inc();
    log.with({ peer: peerOf(req.socket) }).warn(`refused ${req.method} ${pathOf(req)}: ${why}`);
    reply(res, { code: VERIFY_FAILED_CODE, message: "verify failed: wrong serialNumber or checkCode" }, 200, bodyUnread);
  };

  const forwardHeaders = (req: IncomingMessage, contentLength?: number): OutgoingHttpHeaders => {
    const headers: OutgoingHttpHeaders = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!;
      if (HOP_BY_HOP.has(name.toLowerCase())) continue;
      if (contentLength !== undefined && name.toLowerCase() === "content-length") continue;
      headers[name] = req.rawHeaders[i + 1]!;
    }
    headers.Host = `${printer.host}:${printer.printerPorts.http}`;
    if (contentLength !== undefined) headers["Content-Length"] = contentLength;
    return headers;
  };

  const relayResponse = (req: IncomingMessage, res: ServerResponse, upstreamRes: IncomingMessage) => {
    const headers: OutgoingHttpHeaders = {};
    for (let i = 0; i + 1 < upstreamRes.rawHeaders.length; i += 2) {
      const name = upstreamRes.rawHeaders[i]!;
      if (!HOP_BY_HOP.has(name.toLowerCase())) headers[name] = upstreamRes.rawHeaders[i + 1]!;
    }
    if (pathOf(req) !== "/detail") {
      res.writeHead(upstreamRes.statusCode ?? 502, headers);
      upstreamRes.pipe(res);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    upstreamRes.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_REWRITTEN_RESPONSE_BYTES) upstreamRes.destroy(new Error("/detail answer is too large"));
      else chunks.push(c);
    });
    upstreamRes.on("end", () => {
      const text = rewriteDetail(Buffer.concat(chunks).toString("utf8"), (req.socket.localAddress ?? printer.bind).replace(/^::ffff:/, ""), printer.ports.camera);
      for (const name of Object.keys(headers)) if (name.toLowerCase() === "content-length") delete headers[name];
      headers["Content-Length"] = Buffer.byteLength(text);
      res.writeHead(upstreamRes.statusCode ?? 502, headers);
      res.end(text);
    });
    upstreamRes.on("error", () => res.destroy());
  };

  const upstreamFailed = (req: IncomingMessage, res: ServerResponse, e: Error, peer: string, clientLeft: boolean) => {
    // Destroying the printer request because the client went away surfaces here as "socket hang up".
    if (clientLeft) return log.with({ peer }).info(`${pathOf(req)}: the client left before the printer answered`);
    log.with({ peer }).warn(`${pathOf(req)}: the printer at ${printer.host}:${printer.printerPorts.http} failed: ${e.message}`);
    if (!res.headersSent) reply(res, { code: 1, message: `pandaproxy could not reach the printer: ${e.message}` }, 502, true);
    else res.destroy();
  };

  const openUpstream = (req: IncomingMessage, res: ServerResponse, headers: OutgoingHttpHeaders) => {
    const out = httpRequest({
      agent, host: printer.host, port: printer.printerPorts.http, method: req.method, path: req.url, headers, timeout: UPSTREAM_TIMEOUT_MS,
    });
    out.on("timeout", () => out.destroy(new Error(`no answer within ${UPSTREAM_TIMEOUT_MS / 1000} s`)));
    // The peer is read now: once the client has reset, its socket no longer knows its address.
    const peer = peerOf(req.socket);
    let clientLeft = false;
    out.on("error", (e) => upstreamFailed(req, res, e, peer, clientLeft));
    out.on("response", (upstreamRes) => relayResponse(req, res, upstreamRes));
    res.on("close", () => {
      if (res.writableFinished) return;
      clientLeft = true;
      out.destroy();
    });
    return out;
  };

  const handleUpload = (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean) => {
    if (!credentialsOk(req.headers["serialnumber"], req.headers["checkcode"])) {
      return refuse(req, res, "wrong or missing serialNumber/checkCode headers", true);
    }
    const size = req.headers["content-length"] ?? req.headers["filesize"] ?? "?";
    log.with({ peer: peerOf(req.socket) }).info(`upload of ${size} bytes to the printer`);
    // The client's Expect header goes along: the printer decides, its 100 Continue is relayed, and only then does
    // the client send the file. Without a Content-Length node sends the body chunked.
    const out = openUpstream(req, res, forwardHeaders(req));
    if (expectsContinue) {
      out.on("continue", () => {
        res.writeContinue();
        req.pipe(out);
      });
      out.flushHeaders();
    } else req.pipe(out);
    req.on("aborted", () => out.destroy(new Error("the client aborted the upload")));
  };

  const handleJson = (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean) => {
    if (expectsContinue) res.writeContinue();
    const bodyDeadline = setTimeout(() => {
      log.with({ peer: peerOf(req.socket) }).warn(`closing: the body of ${req.method} ${pathOf(req)} did not arrive within ${jsonBodyTimeoutMs / 1000} s`);
      req.socket.destroy();
    }, jsonBodyTimeoutMs);
    req.on("close", () => clearTimeout(bodyDeadline));
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_JSON_BODY_BYTES) tooLarge = true;
      else chunks.push(c);
    });
    req.on("end", () => {
      clearTimeout(bodyDeadline);
      if (tooLarge) return refuse(req, res, `body over ${MAX_JSON_BODY_BYTES} bytes`, false);
      const body = Buffer.concat(chunks);
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString("utf8"));
      } catch {
        return refuse(req, res, "body is not JSON, so it carries no credentials", false);
      }
      const fields = (parsed && typeof parsed === "object" ? parsed : {}) as Record<string, unknown>;
      if (!credentialsOk(fields.serialNumber, fields.checkCode)) return refuse(req, res, "wrong or missing serialNumber/checkCode", false);
      openUpstream(req, res, forwardHeaders(req, body.length)).end(body);
    });
  };

  /** Until a request head arrives on `socket`, a deadline runs (silent, half-sent and slow-loris clients). */
  const awaitHead = (socket: Socket) => {
    clearTimeout(headDeadlines.get(socket));
    if (socket.destroyed) return;
    headDeadlines.set(socket, setTimeout(() => {
      log.with({ peer: peerOf(socket) }).info(`closing: no complete request within ${headersTimeoutMs / 1000} s`);
      socket.destroy();
    }, headersTimeoutMs));
  };

  const handle = (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean) => {
    const socket = req.socket;
    // Bun's node:http may emit "connection" after the first request (docs/protocol-notes.md): check here too.
    if (!allowList.allows(socket.remoteAddress)) return void socket.destroy();
    clearTimeout(headDeadlines.get(socket));
    answering.set(socket, (answering.get(socket) ?? 0) + 1);
    let answered = false;
    const over = () => {
      if (answered) return;
      answered = true;
      const left = (answering.get(socket) ?? 1) - 1;
      answering.set(socket, left);
      if (left === 0) awaitHead(socket);
    };
    res.on("finish", over);
    res.on("close", over);
    if (pathOf(req) === "/uploadGcode") handleUpload(req, res, expectsContinue);
    else handleJson(req, res, expectsContinue);
  };

  const server = createServer({ headersTimeout: headersTimeoutMs, requestTimeout: 0 }, (req, res) => handle(req, res, false));
  server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => handle(req, res, true));
  server.maxConnections = MAX_HTTP_CLIENTS;
  server.prependListener("connection", (socket: Socket) => {
    if (!allowList.admit(socket.remoteAddress, log, "FlashForge HTTP", socket.remotePort)) socket.destroy();
  });
  server.on("connection", (socket: Socket) => {
    if (socket.destroyed) return;
    sockets.add(socket);
    socket.setTimeout(idleTimeoutMs, () => {
      log.with({ peer: peerOf(socket) }).info(`closing: idle for ${idleTimeoutMs / 1000} s`);
      socket.destroy();
    });
    awaitHead(socket);
    socket.on("close", () => {
      clearTimeout(headDeadlines.get(socket));
      sockets.delete(socket);
    });
  });
  server.on("clientError", (e: Error, socket: Socket) => {
    log.with({ peer: peerOf(socket) }).info(`closing: not HTTP (${e.message})`);
    socket.destroy();
  });

  return {
    name: "http",
    start: () =>
      new Promise<void>((resolve, reject) => {
        const onError = (e: NodeJS.ErrnoException) => {
          error = `cannot listen for FlashForge HTTP on ${printer.bind}:${printer.ports.http}: ${e.code === "EADDRINUSE" ? "another program already listens there" : e.message}`;
          reject(new Error(error));
        };
        server.once("error", onError);
        server.listen({ host: printer.bind, port: printer.ports.http, exclusive: true }, () => {
          server.off("error", onError);
          listening = true;
          resolve();
        });
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        listening = false;
        for (const s of sockets) s.destroy();
        agent.destroy();
        server.close(() => resolve());
        setTimeout(resolve, 1_000).unref?.();
      }),
    status: () => ({ state: error ? `error: ${error}` : listening ? "listening" : "stopped", clients: sockets.size }),
  };
}

/**
 * Puts the proxy's address where the printer's /detail answer names the printer's own (ipAddr, cameraStreamUrl).
 * Anything that is not such an answer (not JSON, no detail object, a URL that does not parse) passes unchanged.
 */
export function rewriteDetail(text: string, localAddress: string, cameraPort: number): string {
  try {
    const body = JSON.parse(text) as { detail?: unknown };
    const detail = body?.detail;
    if (!detail || typeof detail !== "object" || Array.isArray(detail)) return text;
    const fields = detail as Record<string, unknown>;
    if (typeof fields.ipAddr === "string") fields.ipAddr = localAddress;
    if (typeof fields.cameraStreamUrl === "string" && fields.cameraStreamUrl) {
      const url = new URL(fields.cameraStreamUrl);
      // Only an http(s) URL has a host to change (URL ignores a hostname set on "a:b").
      if (url.protocol === "http:" || url.protocol === "https:") {
        url.hostname = localAddress;
        url.port = String(cameraPort);
        fields.cameraStreamUrl = url.toString();
      }
    }
    return JSON.stringify(body);
  } catch {
    return text;
  }
}

function pathOf(req: IncomingMessage): string {
  return (req.url ?? "/").split("?")[0]!;
}
