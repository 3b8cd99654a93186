// The web server (Bun.serve): status page, camera wall (/wall), /api/printers, camera MJPEG, live video (RTSP
// cameras' H.264 as fragmented MP4) and snapshots, /metrics. Every request passes the gate (gate.ts, access.ts): credentials by default, anonymous only with
// [web] open = true.
import type { WebConfig } from "../config.ts";
import { createAllowList } from "../core/allow.ts";
import { processLogger, serviceLogger } from "../log.ts";
import type { Counter, Metrics } from "../core/metrics.ts";
import type { CameraFeed, ServiceStatus } from "../core/service.ts";
import type { PrinterRuntime } from "../printer-services.ts";
import { MJPEG_CONTENT_TYPE, mjpegStream } from "./mjpeg.ts";
import type { WebRoute } from "./access.ts";
import { createGate } from "./gate.ts";
import type { LoginLimitOptions } from "./login-limit.ts";
import { STATUS_PAGE } from "./page.ts";
import { WALL_PAGE } from "./wall.ts";
import { registerTelemetryGauges } from "../core/telemetry-metrics.ts";
import { SNAPSHOT_WAIT_MS, takeSnapshot } from "./snapshot.ts";
import { liveVideoResponse, type LiveViewerBudget } from "./live-video.ts";
import type { LiveVideo } from "../rtsp/fmp4-live.ts";

/** Idle keep-alive connections close after this many seconds (MJPEG streams are exempt: they have their own stall limit). */
export const WEB_IDLE_TIMEOUT_S = 30;

export interface WebServer {
  readonly port: number;
  stop(): Promise<void>;
}

export interface WebOptions {
  web: WebConfig;
  printers: () => readonly PrinterRuntime[];
  metrics: Metrics;
  /** Tests shorten MJPEG_STALL_MS with this. */
  mjpegStallMs?: number;
  /** Tests shorten the failed-login limits with this. */
  loginLimit?: LoginLimitOptions;
  /** Tests make live.mp4's per-browser budget small with this. */
  liveViewerBudget?: LiveViewerBudget;
  /** Rows for a printer's exports ([export.mqtt], [export.rtsp]), shown after its services. */
  exportStatus?: (printer: string) => NamedStatus[];
}

export type NamedStatus = ServiceStatus & { name: string };

/** What the web side counts per printer; counters live in the shared Metrics, so they survive a web restart. */
interface WebCameraStats {
  viewers: number;
  /** Browsers watching live.mp4 now. */
  videoViewers: number;
  framesSent: Counter;
  bytesSent: Counter;
  snapshots: Counter;
  snapshotFailures: Counter;
}

const cameraPath = (name: string, file: string) => `printers/${encodeURIComponent(name)}/${file}`;

// Each feed gets a number: when a reload or a service restart replaces a printer's camera, the page sees a new
// number and reconnects its image.
const feedIds = new WeakMap<CameraFeed, number>();
let nextFeedId = 1;
const feedId = (feed: CameraFeed) => {
  let id = feedIds.get(feed);
  if (id === undefined) feedIds.set(feed, (id = nextFeedId++));
  return id;
};

export function printerSummary(p: PrinterRuntime, webViewers = 0, exports: readonly NamedStatus[] = []) {
  const feed = p.hub.camera;
  const latest = feed?.frames.latest();
  const frameAt = Math.max(feed?.lastFrameAt?.() ?? 0, latest?.receivedAt ?? 0);
  return {
    name: p.config.name,
    type: p.config.type,
    host: p.config.host,
    bind: p.config.bind,
    serial: p.config.serial,
    model: p.hub.info.model ?? null,
    firmware: p.hub.info.firmware ?? null,
    telemetry: p.hub.telemetry() ?? null,
    camera: feed
      ? {
          id: feedId(feed),
          kind: feed.source,
          state: feed.state(),
          problem: feed.problem?.()?.reason ?? null,
          fps: feed.frameRate(),
          lastFrameAgeMs: frameAt ? Math.max(0, Date.now() - frameAt) : null,
          webViewers,
          mjpeg: cameraPath(p.config.name, "camera.mjpeg"),
          // RTSP cameras only: H.264 in fragmented MP4 for Media Source Extensions (the codec is in its X-Video-Codec header).
          live: feed.liveVideo ? cameraPath(p.config.name, "live.mp4") : null,
          snapshot: cameraPath(p.config.name, "snapshot.jpg"),
        }
      : null,
    services: [...p.services.map((s) => ({ name: s.name, ...s.status() })), ...exports],
  };
}

/**
 * The request's URL. Without a Host header (HTTP/1.0) Bun hands over a bare path, and with a Host that is not a
 * name ("a b", "[") a string no URL parser takes: both are the client's mistake, answered 400, never a 500.
 */
function requestUrl(request: Request): URL | undefined {
  try {
    return new URL(request.url, "http://pandaproxy.invalid");
  } catch {
    return undefined;
  }
}

const text = (status: number, body: string) =>
  new Response(body + "\n", { status, headers: { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store" } });

const CAMERA_ROUTE = /^\/printers\/([^/]+)\/(camera\.mjpeg|snapshot\.jpg|live\.mp4)$/;

/** The route of a path: a WebRoute, or the answer for a path that serves nothing (no credentials needed). */
function routeOf(path: string): (WebRoute & { file?: string }) | Response {
  if (path === "/" || path === "/index.html") return { kind: "page" };
  if (path === "/wall") return { kind: "page", file: "wall" };
  if (path === "/api/printers") return { kind: "api" };
  if (path === "/metrics") return { kind: "metrics" };
  const camera = CAMERA_ROUTE.exec(path);
  if (camera) {
    try {
      return { kind: "camera", printer: decodeURIComponent(camera[1]!), file: camera[2]! };
    } catch {
      return text(400, "bad printer name in the URL");
    }
  }
  if (path === "/favicon.ico") return new Response(null, { status: 204 });
  return text(404, "not found");
}

export async function startWeb(options: WebOptions): Promise<WebServer> {
  const log = processLogger("web");
  const allowList = createAllowList(options.web.allow);
  const listen = options.web.listen!;
  const { metrics } = options;
  const stats = new Map<string, WebCameraStats>();
  const unregister: (() => void)[] = [
    registerTelemetryGauges(metrics, () => options.printers().map((p) => ({ printer: p.config.name, telemetry: p.hub.telemetry() }))),
  ];

  const findPrinter = (name: string) => options.printers().find((p) => p.config.name === name);
  let gate;
  try {
    gate = createGate({ web: options.web, printers: () => options.printers().map((p) => p.config), loginLimit: options.loginLimit });
  } catch (error) {
    throw new Error(`cannot start the web page: ${(error as Error).message}`);
  }

  const statsFor = (printer: string): WebCameraStats => {
    let s = stats.get(printer);
    if (s) return s;
    const labels = { printer };
    s = {
      viewers: 0,
      videoViewers: 0,
      framesSent: metrics.counter("pandaproxy_web_frames_sent_total", "Camera frames sent to web viewers (MJPEG parts and snapshots)", labels),
      bytesSent: metrics.counter("pandaproxy_web_bytes_sent_total", "Camera bytes sent to web viewers", labels),
      snapshots: metrics.counter("pandaproxy_web_snapshots_total", "Snapshots served", labels),
      snapshotFailures: metrics.counter("pandaproxy_web_snapshot_failures_total", "Snapshots answered 503: the camera gave no frame in time", labels),
    };
    const entry = s;
    stats.set(printer, entry);
    unregister.push(metrics.gauge("pandaproxy_web_viewers", "Browsers watching the MJPEG stream now", labels, () => entry.viewers));
    unregister.push(metrics.gauge("pandaproxy_web_video_viewers", "Browsers watching the live MP4 video now", labels, () => entry.videoViewers));
    unregister.push(
      metrics.gauge("pandaproxy_web_camera_frame_age_seconds", "Age of the newest camera frame (-1: none)", labels, () => {
        const latest = findPrinter(printer)?.hub.camera?.frames.latest();
        return latest ? (Date.now() - latest.receivedAt) / 1000 : -1;
      }),
    );
    unregister.push(
      metrics.gauge("pandaproxy_web_camera_frames_per_second", "Camera frame rate as the web side sees it", labels, () => findPrinter(printer)?.hub.camera?.frameRate() ?? 0),
    );
    return entry;
  };

  const peerOf = (request: Request) => {
    const ip = server.requestIP(request);
    return ip ? `${ip.family === "IPv6" ? `[${ip.address}]` : ip.address}:${ip.port}` : "unknown";
  };

  const mjpeg = (request: Request, p: PrinterRuntime): Response => {
    const headers = { "Content-Type": MJPEG_CONTENT_TYPE, "Cache-Control": "no-store, no-cache", Pragma: "no-cache" };
    // A HEAD (link checkers, monitoring) must not start the camera.
    if (request.method === "HEAD") return new Response(null, { headers });
    const feed = p.hub.camera!;
    const name = p.config.name;
    const s = statsFor(name);
    const peer = peerOf(request);
    const viewerLog = serviceLogger(name, "web").with({ peer });
    s.viewers++;
    viewerLog.info(`web viewer connected to the ${feed.source} camera (${s.viewers} watching)`);
    server.timeout(request, 0);
    const body = mjpegStream(
      feed,
      {
        label: `web viewer ${peer}`,
        log: viewerLog,
        stillCurrent: () => findPrinter(name)?.hub.camera === feed,
        sent(bytes) {
          s.framesSent.inc();
          s.bytesSent.inc(bytes);
        },
        closed() {
          s.viewers--;
          viewerLog.info(`web viewer left (${s.viewers} watching)`);
        },
      },
      request.signal,
      { stallMs: options.mjpegStallMs },
    );
    return new Response(body, { headers });
  };

  const liveVideo = (request: Request, p: PrinterRuntime): Response | Promise<Response> => {
    const feed = p.hub.camera!;
    const name = p.config.name;
    if (!feed.liveVideo) return text(404, `printer "${name}": live video is for RTSP cameras; this ${feed.source} camera has camera.mjpeg`);
    const headers = { "Cache-Control": "no-store, no-cache", Pragma: "no-cache" };
    if (request.method === "HEAD") return new Response(null, { headers: { ...headers, "Content-Type": "video/mp4" } });
    const s = statsFor(name);
    const peer = peerOf(request);
    const viewerLog = serviceLogger(name, "web").with({ peer });
    s.videoViewers++;
    viewerLog.info(`web viewer connected to the ${feed.source} camera's live video (${s.videoViewers} watching)`);
    server.timeout(request, 0);
    return liveVideoResponse(
      feed as CameraFeed & { liveVideo: LiveVideo },
      {
        label: `video viewer ${peer}`,
        log: viewerLog,
        stillCurrent: () => findPrinter(name)?.hub.camera === feed,
        sent: (bytes) => s.bytesSent.inc(bytes),
        closed() {
          s.videoViewers--;
          viewerLog.info(`video viewer left (${s.videoViewers} watching)`);
        },
      },
      request.signal,
      headers,
      options.liveViewerBudget,
    );
  };

  const snapshot = async (request: Request, p: PrinterRuntime): Promise<Response> => {
    const feed = p.hub.camera!;
    const s = statsFor(p.config.name);
    const { frame, cameraState: state, problem } = await takeSnapshot(feed);
    if (!frame) {
      s.snapshotFailures.inc();
      const why = problem ? problem.reason : `no frame within ${SNAPSHOT_WAIT_MS / 1000} s (camera ${state})`;
      serviceLogger(p.config.name, "web").with({ peer: peerOf(request) }).info(`snapshot failed: ${why}`);
      return text(
        503,
        problem?.lasting
          ? `printer "${p.config.name}" (${p.config.host}): no picture: ${problem.reason}.`
          : `printer "${p.config.name}" (${p.config.host}): the ${feed.source} camera gave no picture within ${SNAPSHOT_WAIT_MS / 1000} s ` +
              `(camera ${state}${problem ? `: ${problem.reason}` : ""}). Check that the printer is on and reachable from this host.`,
      );
    }
    s.snapshots.inc();
    s.framesSent.inc();
    s.bytesSent.inc(frame.jpeg.length);
    return new Response(frame.jpeg, {
      headers: {
        "Content-Type": "image/jpeg",
        "Cache-Control": "no-store",
        "Last-Modified": new Date(frame.receivedAt).toUTCString(),
      },
    });
  };

  const camera = (request: Request, printerName: string, file: string): Response | Promise<Response> => {
    const p = findPrinter(printerName);
    if (!p) return text(404, `no printer named "${printerName}"`);
    if (!p.hub.camera) return text(404, `printer "${printerName}" has no camera here (no camera service is running for it)`);
    if (file === "live.mp4") return liveVideo(request, p);
    return file === "camera.mjpeg" ? mjpeg(request, p) : snapshot(request, p);
  };

  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: listen.host,
      port: listen.port,
      idleTimeout: WEB_IDLE_TIMEOUT_S,
      fetch(request) {
        const from = server.requestIP(request);
        if (!allowList.admit(from?.address, log, "web", from?.port)) return text(403, "this address may not use pandaproxy: see `allow` in [proxy]");
        if (request.method !== "GET" && request.method !== "HEAD") return text(405, "only GET is served here");
        const url = requestUrl(request);
        if (!url) return text(400, "the request's Host header or target is not a URL");
        const route = routeOf(url.pathname);
        if (route instanceof Response) return route;
        const ip = server.requestIP(request);
        const access = gate.admit(request, url, route, { address: ip?.address ?? "unknown", label: peerOf(request) });
        if (access instanceof Response) return access;
        switch (route.kind) {
          case "page":
            return new Response(route.file === "wall" ? WALL_PAGE : STATUS_PAGE, { headers: { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" } });
          case "api":
            return Response.json(
              options.printers()
                .filter((p) => access.printers.has(p.config.name))
                .map((p) => printerSummary(p, (stats.get(p.config.name)?.viewers ?? 0) + (stats.get(p.config.name)?.videoViewers ?? 0), options.exportStatus?.(p.config.name))),
              { headers: { "Cache-Control": "no-store" } },
            );
          case "metrics":
            for (const p of options.printers()) if (p.hub.camera) statsFor(p.config.name);
            return new Response(metrics.render(), { headers: { "Content-Type": "text/plain; version=0.0.4" } });
          case "camera":
            return camera(request, route.printer, route.file!);
        }
      },
      error(error) {
        log.error(`web request failed: ${error.message}`);
        return text(500, "internal error");
      },
    });
  } catch (error) {
    throw new Error(`cannot start the web page on ${listen.host}:${listen.port}: ${(error as Error).message}`);
  }
  log.info(`web page on http://${listen.host === "0.0.0.0" ? "<this host>" : listen.host}:${server.port}/`);
  if (options.web.open) {
    log.warn(
      `[web] open = true: the status page, /api, /metrics and every printer's camera are served to anyone who can reach ` +
        `${listen.host}:${server.port}, without credentials; remove "open" to ask for the printers' access codes again`,
    );
  }
  return {
    port: server.port!,
    async stop() {
      await server.stop(true);
      for (const remove of unregister.splice(0)) remove();
      stats.clear();
    },
  };
}
