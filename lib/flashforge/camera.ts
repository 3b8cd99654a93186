// FlashForge camera: the printer's mjpg-streamer (http://printer:8080/?action=stream) serves one viewer, so we
// hold that one stream (on demand, with linger) and fan its frames out to any number of viewers on bind:8080
// (`/?action=stream`, `/?action=snapshot`, as mjpg-streamer answers them) and to the web page via the CameraFeed.
// Slow viewers follow the chamber camera's rules: latest frame wins, skipped frames are counted, and a viewer that
// accepts nothing for VIEWER_STALL_MS is closed.
import { request as httpRequest, type ClientRequest, type IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { createStream, LIVE_FRAME_MAX_AGE_MS, type Consumer } from "../core/stream.ts";
import { createRateMeter } from "../core/rate.ts";
import { listen, type Listening } from "../core/server.ts";
import { MJPEG_CONTENT_TYPE, mjpegPart } from "../core/mjpeg.ts";
import { createUpstream, upstreamProblem, type Link } from "../core/upstream.ts";
import { MAX_CAMERA_JPEG_BYTES, type CameraFeed, type CameraFrame, type Service, type ServiceContext } from "../core/service.ts";
import { endAndDestroy } from "../core/edge.ts";
import { serviceLogger, type Logger } from "../log.ts";
import { parseCameraRequestLine } from "./camera-request.ts";

export const CONNECT_TIMEOUT_MS = 10_000;
/** No frame from the printer for this long: the stream is stuck, reconnect. */
export const FRAME_STALL_MS = 10_000;
const MAX_PART_HEADER_BYTES = 4 * 1024;
/** A viewer that accepts no bytes for this long is closed. */
export const VIEWER_STALL_MS = 30_000;
export const REQUEST_HEAD_TIMEOUT_MS = 10_000;
export const MAX_REQUEST_HEAD_BYTES = 8 * 1024;
/** A frame older than this is not replayed to a new viewer nor served as a snapshot. */
export const SNAPSHOT_WAIT_MS = 10_000;
export const MAX_CAMERA_VIEWERS = 64;

export interface FlashforgeCameraOptions {
  lingerMs?: number;
  viewerStallMs?: number;
  /** Tests shorten REQUEST_HEAD_TIMEOUT_MS with this. */
  requestHeadTimeoutMs?: number;
}

/**
 * Splits a multipart/x-mixed-replace body into JPEGs. Parts carry Content-Length with mjpg-streamer; without it
 * the part ends at the next boundary line. Throws on a part that is too large or a stream that is not multipart.
 */
export function createMjpegParser(boundary: string) {
  const delimiter = Buffer.from(`--${boundary.replace(/^--/, "")}`);
  let buffer: Buffer = Buffer.alloc(0);
  return {
    push(chunk: Buffer): Buffer[] {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      const frames: Buffer[] = [];
      for (;;) {
        const start = buffer.indexOf(delimiter);
        if (start === -1) {
          if (buffer.length > MAX_CAMERA_JPEG_BYTES) throw new Error(`no boundary in ${buffer.length} bytes`);
          return frames;
        }
        const headEnd = buffer.indexOf("\r\n\r\n", start);
        if (headEnd === -1) {
          if (buffer.length - start > MAX_PART_HEADER_BYTES) throw new Error("part header too long");
          return frames;
        }
        const head = buffer.subarray(start + delimiter.length, headEnd).toString("latin1");
        const bodyStart = headEnd + 4;
        const lengthMatch = /content-length:\s*(\d+)/i.exec(head);
        let bodyEnd: number;
        if (lengthMatch) {
          const length = Number(lengthMatch[1]);
          if (length > MAX_CAMERA_JPEG_BYTES) throw new Error(`a ${length}-byte frame is over the ${MAX_CAMERA_JPEG_BYTES}-byte limit`);
          if (buffer.length < bodyStart + length) return frames;
          bodyEnd = bodyStart + length;
        } else {
          const next = buffer.indexOf(delimiter, bodyStart);
          if (next === -1) {
            if (buffer.length - bodyStart > MAX_CAMERA_JPEG_BYTES) throw new Error(`a frame over the ${MAX_CAMERA_JPEG_BYTES}-byte limit`);
            return frames;
          }
          bodyEnd = next;
          while (bodyEnd > bodyStart && (buffer[bodyEnd - 1] === 0x0a || buffer[bodyEnd - 1] === 0x0d)) bodyEnd--;
        }
        const body = buffer.subarray(bodyStart, bodyEnd);
        if (body[0] === 0xff && body[1] === 0xd8) frames.push(Buffer.from(body));
        buffer = buffer.subarray(bodyEnd);
      }
    },
  };
}

interface StreamConnection {
  response: IncomingMessage;
}

export function createFlashforgeCamera(ctx: ServiceContext, options: FlashforgeCameraOptions = {}): Service & { feed: CameraFeed } {
  const { printer } = ctx;
  const log = serviceLogger(printer.name, "camera");
  const viewerStallMs = options.viewerStallMs ?? VIEWER_STALL_MS;
  const requestHeadTimeoutMs = options.requestHeadTimeoutMs ?? REQUEST_HEAD_TIMEOUT_MS;
  const where = `http://${printer.host}:${printer.printerPorts.camera}/?action=stream`;
  const frames = createStream<CameraFrame>({ log, what: "camera frames" });
  const frameRate = createRateMeter();
  let listening: Listening | undefined;
  let error: string | undefined;
  const framesIn = ctx.metrics.counter("pandaproxy_flashforge_camera_frames_total", "Frames received from the printer's camera", { printer: printer.name });

  const upstream = createUpstream<StreamConnection>({
    log,
    describe: `camera stream ${where}`,
    onDemand: true,
    lingerMs: options.lingerMs,
    connect: () => openStream(),
  });

  function openStream(): Promise<Link<StreamConnection>> {
    return new Promise((resolve, reject) => {
      let request: ClientRequest | undefined = undefined;
      const timer = setTimeout(() => request?.destroy(new Error(`no answer within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
      request = httpRequest({ host: printer.host, port: printer.printerPorts.camera, path: "/?action=stream", headers: { Connection: "close" } });
      request.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      request.on("response", (response) => {
        clearTimeout(timer);
        const type = response.headers["content-type"] ?? "";
        const boundary = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(type);
        if (response.statusCode !== 200 || !boundary) {
          response.resume();
          request?.destroy();
          const why = response.statusCode === 503 ? "another viewer is watching the printer's camera (it serves one)" : `answered ${response.statusCode} ${type}`;
          return reject(new Error(why));
        }
        const parser = createMjpegParser(boundary[1] ?? boundary[2]!);
        let stall = setTimeout(() => upstream.reconnect(`no frame for ${FRAME_STALL_MS / 1000} s`), FRAME_STALL_MS);
        const closed = new Promise<unknown>((done) => {
          response.on("close", () => done(new Error("the camera closed the stream")));
          response.on("error", (e) => done(e));
        }).finally(() => clearTimeout(stall));
        response.on("data", (chunk: Buffer) => {
          let jpegs: Buffer[];
          try {
            jpegs = parser.push(chunk);
          } catch (e) {
            return upstream.reconnect(`unreadable stream: ${(e as Error).message}`);
          }
          for (const jpeg of jpegs) {
            clearTimeout(stall);
            stall = setTimeout(() => upstream.reconnect(`no frame for ${FRAME_STALL_MS / 1000} s`), FRAME_STALL_MS);
            const receivedAt = Date.now();
            frameRate.tick();
            framesIn.inc();
            frames.publish({ jpeg, receivedAt });
          }
        });
        resolve({ connection: { response }, closed, close: () => request?.destroy() });
      });
      request.end();
    });
  }

  const fresh = (frame: CameraFrame | undefined) => frame !== undefined && Date.now() - frame.receivedAt <= LIVE_FRAME_MAX_AGE_MS;

  const feed: CameraFeed = {
    source: "mjpeg",
    frames,
    claim: () => upstream.claim(),
    state: () => upstream.state,
    problem: () => upstreamProblem(upstream),
    frameRate: frameRate.rate,
  };

  const serveStream = (socket: Socket, clientLog: Logger, peer: string) => {
    socket.write(
      "HTTP/1.0 200 OK\r\nConnection: close\r\nServer: pandaproxy\r\nCache-Control: no-store, no-cache, must-revalidate, max-age=0\r\n" +
        `Pragma: no-cache\r\nContent-Type: ${MJPEG_CONTENT_TYPE}\r\n\r\n`,
    );
    const release = upstream.claim();
    let consumer: Consumer<CameraFrame> | undefined;
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      consumer?.remove();
      release();
    };
    // Latest value: the newest frame whenever the viewer has taken the last one.
    consumer = frames.addConsumer({
      label: `camera viewer ${peer}`,
      replayLatest: fresh(frames.latest()),
      stallMs: viewerStallMs,
      write(frame, done) {
        if (socket.destroyed) return done();
        socket.write(mjpegPart(frame), done);
      },
      onEnd: (why, cause) => {
        if (cause === "stalled") clientLog.warn(`closing: ${why}`);
        leave(); // at once: the socket's close event may come much later
        socket.destroy();
      },
    });
    socket.on("close", leave);
  };

  const serveSnapshot = async (socket: Socket) => {
    const release = upstream.claim();
    try {
      let frame = frames.latest();
      if (!fresh(frame)) {
        frame = await new Promise<CameraFrame | undefined>((resolve) => {
          const timer = setTimeout(() => {
            sub.unsubscribe();
            resolve(undefined);
          }, SNAPSHOT_WAIT_MS);
          const sub = frames.subscribe((f, done) => {
            clearTimeout(timer);
            queueMicrotask(() => sub.unsubscribe());
            done();
            resolve(f);
          });
        });
      }
      if (!frame) return respond(socket, 503, "text/plain", Buffer.from("the printer's camera sent no picture\n"));
      respond(socket, 200, "image/jpeg", frame.jpeg);
    } finally {
      release();
    }
  };

  const onClient = (socket: Socket, info: { peer: string; log: Logger }) => {
    let head: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      info.log.info(`closing: no HTTP request within ${requestHeadTimeoutMs / 1000} s`);
      socket.destroy();
    }, requestHeadTimeoutMs);
    socket.on("close", () => clearTimeout(timer));
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end === -1) {
        if (head.length > MAX_REQUEST_HEAD_BYTES) {
          info.log.warn(`closing: request head over ${MAX_REQUEST_HEAD_BYTES} bytes`);
          socket.destroy();
        }
        return;
      }
      socket.off("data", onData);
      clearTimeout(timer);
      const requestLine = head.subarray(0, head.indexOf("\r\n")).toString("latin1");
      const request = parseCameraRequestLine(requestLine);
      // Viewers only read from here on; anything they send is ignored.
      socket.resume();
      if (request === "invalid") {
        info.log.warn(`closing: not an HTTP request we can read (${JSON.stringify(requestLine.slice(0, 60))})`);
        return respond(socket, 400, "text/plain", Buffer.from("400: Bad Request\n"));
      }
      if (request.method !== "GET") return respond(socket, 405, "text/plain", Buffer.from("only GET\n"));
      const action = request.action;
      if (action === "stream") return serveStream(socket, info.log, info.peer);
      if (action === "snapshot") return void serveSnapshot(socket);
      respond(socket, 404, "text/plain", Buffer.from("404: Not Found!\n"));
    };
    socket.on("data", onData);
  };

  return {
    name: "camera",
    feed,
    async start() {
      upstream.start();
      ctx.hub.setCamera(feed);
      listening = await listen({ log, what: "FlashForge camera", host: printer.bind, allow: printer.allow, port: printer.ports.camera, maxClients: MAX_CAMERA_VIEWERS, onClient }).catch((e) => {
        error = (e as Error).message;
        throw e;
      });
    },
    async stop() {
      if (ctx.hub.camera === feed) ctx.hub.setCamera(undefined);
      await listening?.close();
      await upstream.stop();
    },
    status: () => ({
      state: error ? `error: ${error}` : listening ? "listening" : "stopped",
      clients: listening?.clients ?? 0,
      upstream: upstream.state,
      details: { fps: Math.round(feed.frameRate() * 10) / 10, viewers: frames.consumers },
    }),
  };
}

function respond(socket: Socket, status: number, type: string, body: Buffer): void {
  const reason = status === 200 ? "OK" : status === 400 ? "Bad Request" : status === 404 ? "Not Found" : status === 405 ? "Method Not Allowed" : "Service Unavailable";
  endAndDestroy(socket, Buffer.concat([
    Buffer.from(`HTTP/1.0 ${status} ${reason}\r\nConnection: close\r\nServer: pandaproxy\r\nCache-Control: no-store\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\n\r\n`),
    body,
  ]));
}
