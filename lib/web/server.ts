// The web server (Bun.serve): status page, /api/printers, camera MJPEG and snapshots, /metrics.
// Optional basic auth from [web] username/password.
import { timingSafeEqual } from "node:crypto";
import type { WebConfig } from "../config.ts";
import { processLogger } from "../log.ts";
import type { Metrics } from "../core/metrics.ts";
import type { PrinterRuntime } from "../core/service.ts";

export interface WebServer {
  readonly port: number;
  stop(): Promise<void>;
}

export interface WebOptions {
  web: WebConfig;
  printers: () => readonly PrinterRuntime[];
  metrics: Metrics;
}

export function printerSummary(p: PrinterRuntime) {
  return {
    name: p.config.name,
    type: p.config.type,
    host: p.config.host,
    bind: p.config.bind,
    serial: p.config.serial,
    model: p.hub.info.model ?? null,
    firmware: p.hub.info.firmware ?? null,
    camera: p.hub.camera ? { kind: p.hub.camera.kind, state: p.hub.camera.state(), fps: p.hub.camera.frameRate() } : null,
    services: p.services.map((s) => ({ name: s.name, ...s.status() })),
  };
}

function authorized(request: Request, web: WebConfig): boolean {
  if (web.username === undefined || web.password === undefined) return true;
  const header = request.headers.get("authorization") ?? "";
  if (!header.startsWith("Basic ")) return false;
  const given = Buffer.from(Buffer.from(header.slice(6), "base64").toString("utf8"));
  const wanted = Buffer.from(`${web.username}:${web.password}`);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

export async function startWeb(options: WebOptions): Promise<WebServer> {
  const log = processLogger("web");
  const listen = options.web.listen!;
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: listen.host,
      port: listen.port,
      idleTimeout: 0,
      fetch(request) {
        if (!authorized(request, options.web)) {
          return new Response("authentication required\n", { status: 401, headers: { "WWW-Authenticate": 'Basic realm="pandaproxy"' } });
        }
        const url = new URL(request.url);
        if (url.pathname === "/api/printers") return Response.json(options.printers().map(printerSummary));
        if (url.pathname === "/metrics") return new Response(options.metrics.render(), { headers: { "Content-Type": "text/plain; version=0.0.4" } });
        return new Response("not found\n", { status: 404 });
      },
    });
  } catch (error) {
    throw new Error(`cannot start the web page on ${listen.host}:${listen.port}: ${(error as Error).message}`);
  }
  log.info(`web page on http://${listen.host === "0.0.0.0" ? "<this host>" : listen.host}:${server.port}/`);
  return {
    port: server.port!,
    async stop() {
      server.stop(true);
    },
  };
}
