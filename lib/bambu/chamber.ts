// The chamber camera proxy (A1/P1, TLS port 6000): many viewers log in here, one upstream connection to the
// printer (opened on demand, closed after a linger) feeds them all. Each viewer gets the printer's 16-byte header
// as its own TLS record and then the JPEG, always the newest frame: a slow viewer skips frames, never delays
// others. The same frames feed the web page through the printer hub's CameraFeed.
import type { TLSSocket } from "node:tls";
import { connectToPrinter, dropPrinterSocket } from "../core/printer-socket.ts";
import type { Socket } from "node:net";
import { registerSecret, serviceLogger, type Logger } from "../log.ts";
import { createStream, liveFrame } from "../core/stream.ts";
import { createRateMeter } from "../core/rate.ts";
import { listen, readExactly, type Listening } from "../core/server.ts";
import type { CameraFeed, CameraFrame, Service, ServiceContext, ServiceStatus } from "../core/service.ts";
import { createUpstream, LoginRefused, upstreamProblem, upstreamRefusal, type Link } from "../core/upstream.ts";
import { printerClientTlsOptions, serverTlsOptions } from "../tls.ts";
import { END_DESTROY_MS, endAndDestroy } from "../core/edge.ts";
import { createFrameParser, decodeLogin, encodeFrameHeader, encodeLogin, FRAME_HEADER_SIZE, LOGIN_SIZE, loginMatches } from "./chamber-codec.ts";
import { FRAMED_LOGIN_SIZE, isFramedLoginHeader } from "./tunnel.ts";

export const VIEWER_LOGIN_TIMEOUT_MS = 10_000;
/** The login's first bytes, enough to tell a camera login from Bambu Studio's file-tunnel login. */
const LOGIN_KIND_BYTES = 16;
/** A viewer that takes not one frame in this long is gone (or wedged): the stream ends it and we close it. */
export const VIEWER_STALL_TIMEOUT_MS = 30_000;
/** While the printer refuses our login (waiting will not help), viewers get no frames this long, then are closed. */
export const NO_FRAMES_CLOSE_MS = 30_000;
/** A printer that is only unreachable: viewers are kept, quietly, this long without frames (config `camera_wait`),
 * well past a 10 min outage, since a closed viewer gives up after a dozen tries (ha-bambulab). */
export const CAMERA_WAIT_MS = 15 * 60_000;
export const MAX_VIEWERS = 256;
/** A printer with every slot taken accepts TCP but never finishes the handshake. */
export const UPSTREAM_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Printers send about one frame a second; a logged-in stream with nothing for this long is dead. */
export const UPSTREAM_FIRST_FRAME_TIMEOUT_MS = 15_000;
export const UPSTREAM_SILENCE_TIMEOUT_MS = 20_000;
/** Several broken frames in a row mean the stream is out of step: reconnect. */
export const MAX_BAD_FRAMES_IN_A_ROW = 3;
const WATCHDOG_INTERVAL_MS = 1_000;

export interface ChamberOptions {
  lingerMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  viewerStallTimeoutMs?: number;
  noFramesCloseMs?: number;
  /** Default: the printer's `camera_wait`, else CAMERA_WAIT_MS. */
  cameraWaitMs?: number;
  waitingRetryMaxMs?: number;
  viewerLoginTimeoutMs?: number;
  endDestroyMs?: number;
}

interface Viewer {
  socket: Socket;
  log: Logger;
  joinedAt: number;
  /** Stop sending to this viewer and let the upstream go (idempotent; also runs on the socket's close). */
  leave(): void;
}

export function createChamberService(ctx: ServiceContext, options: ChamberOptions = {}): Service {
  const { printer } = ctx;
  const log = serviceLogger(printer.name, "chamber");
  const stallTimeoutMs = options.viewerStallTimeoutMs ?? VIEWER_STALL_TIMEOUT_MS;
  const noFramesCloseMs = options.noFramesCloseMs ?? NO_FRAMES_CLOSE_MS;
  const cameraWaitMs = options.cameraWaitMs ?? printer.cameraWaitMs ?? CAMERA_WAIT_MS;
  const loginTimeoutMs = options.viewerLoginTimeoutMs ?? VIEWER_LOGIN_TIMEOUT_MS;
  const endDestroyMs = options.endDestroyMs ?? END_DESTROY_MS;
  registerSecret(printer.accessCode);
  registerSecret(printer.viewerAccessCode);

  const labels = { printer: printer.name, service: "chamber" };
  const framesIn = ctx.metrics.counter("pandaproxy_camera_frames_total", "Camera frames received from the printer", labels);
  const bytesIn = ctx.metrics.counter("pandaproxy_camera_bytes_total", "Camera bytes received from the printer", labels);
  const framesDropped = ctx.metrics.counter("pandaproxy_camera_frames_dropped_total", "Printer frames dropped because they failed sanity checks", labels);
  const bytesOut = ctx.metrics.counter("pandaproxy_client_bytes_sent_total", "Bytes sent to clients", labels);
  const reconnects = ctx.metrics.counter("pandaproxy_upstream_reconnects_total", "Upstream connections made after the first", labels);

  const frames = createStream<CameraFrame>({ log, what: "frames" });
  const frameRate = createRateMeter();
  const viewers = new Set<Viewer>();
  let lastFrameAt = 0;
  let listening: Listening | undefined;
  let failure: string | undefined;
  let watchdog: ReturnType<typeof setInterval> | undefined;
  const unregister: (() => void)[] = [];
  const printerAddress = `${printer.host}:${printer.printerPorts.chamber}`;

  const publish = (header: Buffer, jpeg: Buffer) => {
    const now = Date.now();
    lastFrameAt = now;
    frameRate.tick();
    framesIn.inc();
    frames.publish({ header, jpeg, receivedAt: now });
  };

  const connect = () =>
    new Promise<Link<TLSSocket>>((resolve, reject) => {
      const socket = connectToPrinter({ ...printerClientTlsOptions(printer), port: printer.printerPorts.chamber });
      let settled = false;
      let loggedIn = false;
      let badInARow = 0;
      let endReason: unknown;
      let resolveClosed: (reason: unknown) => void = () => {};
      const closed = new Promise<unknown>((done) => (resolveClosed = done));
      const link: Link<TLSSocket> = { connection: socket, closed, close: () => dropPrinterSocket(socket) };
      let timer = setTimeout(
        () => fail(new Error(`no TLS handshake within ${UPSTREAM_HANDSHAKE_TIMEOUT_MS / 1000} s (the camera may be serving its maximum of viewers: close Bambu Studio, Home Assistant or other viewers that connect to the printer directly)`)),
        UPSTREAM_HANDSHAKE_TIMEOUT_MS,
      );
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        dropPrinterSocket(socket);
        reject(error);
      };
      const lostStep = (reason: string) => {
        framesDropped.inc();
        if (!settled) return fail(new Error(`stream out of sync: ${reason}`));
        if (upstream.current() === socket) return upstream.reconnect(`stream out of sync: ${reason}`);
        endReason = new Error(`stream out of sync: ${reason}`);
        dropPrinterSocket(socket);
      };
      // Silence after the first frame: the printer is gone without a FIN (Wi-Fi dropped, power cut).
      const watchSilence = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          endReason = new Error(`no data for ${UPSTREAM_SILENCE_TIMEOUT_MS / 1000} s`);
          dropPrinterSocket(socket);
        }, UPSTREAM_SILENCE_TIMEOUT_MS);
      };
      const parser = createFrameParser((event) => {
        if (event.kind === "out-of-sync") return lostStep(event.reason);
        if (event.kind === "bad-frame") {
          framesDropped.inc();
          log.warn(`dropped a frame from the printer: ${event.reason}`);
          if (++badInARow >= MAX_BAD_FRAMES_IN_A_ROW) lostStep(`${badInARow} bad frames in a row`);
          return;
        }
        badInARow = 0;
        if (!settled) {
          settled = true;
          resolve(link);
        }
        watchSilence();
        publish(event.frame.header, event.frame.jpeg);
      });
      socket.once("secureConnect", () => {
        loggedIn = true;
        socket.write(encodeLogin({ username: "bblp", accessCode: printer.accessCode }));
        clearTimeout(timer);
        timer = setTimeout(() => fail(new Error(`logged in but no frame within ${UPSTREAM_FIRST_FRAME_TIMEOUT_MS / 1000} s`)), UPSTREAM_FIRST_FRAME_TIMEOUT_MS);
      });
      socket.on("data", (chunk: Buffer) => {
        bytesIn.inc(chunk.length);
        parser.push(chunk);
      });
      socket.on("error", (error) => {
        endReason ??= error;
        fail(error);
      });
      socket.once("close", () => {
        clearTimeout(timer);
        if (!settled) {
          // The firmware answers a wrong access code by closing right after the login, without a word.
          fail(loggedIn ? new LoginRefused("the printer closed the connection right after the login, without sending a frame") : new Error("connection closed during the TLS handshake"));
        }
        resolveClosed(endReason ?? "the printer closed the connection");
      });
    });

  const upstream = createUpstream<TLSSocket>({
    log,
    describe: `chamber camera at ${printerAddress}`,
    connect,
    onDemand: true,
    lingerMs: options.lingerMs,
    backoffMinMs: options.backoffMinMs,
    backoffMaxMs: options.backoffMaxMs,
    waitingRetryMaxMs: options.waitingRetryMaxMs,
  });
  upstream.on("connected", () => {
    if (upstream.connects > 1) reconnects.inc();
  });
  upstream.on("state", (state) => {
    // A frame from before an idle period would show the wrong moment to the next viewer.
    if (state === "idle") frames.clear();
  });

  const feed: CameraFeed = {
    source: "chamber",
    frames,
    claim: () => upstream.claim(),
    state: () => upstream.state,
    frameRate: frameRate.rate,
    problem: () => upstreamProblem(upstream),
  };
  ctx.hub.setCamera(feed);

  // A printer that is off comes back by itself: its viewers wait. One that refuses our code does not: they are told.
  const watch = () => {
    const now = Date.now();
    const lasting = upstreamProblem(upstream)?.lasting === true;
    const patienceMs = lasting ? noFramesCloseMs : cameraWaitMs;
    for (const viewer of viewers) {
      if (now - Math.max(lastFrameAt, viewer.joinedAt) > patienceMs) {
        const why = upstream.lastError ? ` (${upstream.lastError})` : "";
        viewer.log[lasting ? "warn" : "info"](`closing: no frames from the printer for ${Math.round(patienceMs / 1000)} s; upstream ${upstream.state}${why}`);
        viewer.leave();
        viewer.socket.destroy();
      }
    }
  };

  const startViewer = (socket: Socket, peer: string, viewerLog: Logger) => {
    const viewer: Viewer = { socket, log: viewerLog, joinedAt: Date.now(), leave: () => {} };
    viewers.add(viewer);
    const release = upstream.claim();
    // Viewers have nothing more to say; keep reading so their bytes never pile up.
    socket.on("data", () => {});
    // One write callback per viewer, made here, not one per frame (issue #18): it finishes the frame in flight.
    let inFlightBytes = 0;
    let inFlightDone: (() => void) | undefined;
    const written = () => {
      bytesOut.inc(inFlightBytes);
      const done = inFlightDone;
      inFlightDone = undefined;
      done?.();
    };
    // The newest frame whenever the viewer has taken the last one (latest value: a slow viewer skips frames).
    const consumer = frames.addConsumer({
      label: `viewer ${peer}`,
      replayLatest: true,
      fresh: liveFrame,
      stallMs: stallTimeoutMs,
      write(frame, done) {
        if (socket.destroyed) return;
        inFlightBytes = frame.jpeg.length + FRAME_HEADER_SIZE;
        inFlightDone = done;
        // Separate writes on an idle socket become separate TLS records: strict clients read the header alone.
        socket.write(frame.header ?? encodeFrameHeader(frame.jpeg.length));
        socket.write(frame.jpeg, written);
      },
      onEnd: (why, cause) => {
        if (cause === "stalled") viewerLog.warn(`closing: the viewer ${why}`);
        viewer.leave(); // at once: the socket's close event may come much later
        socket.destroy();
      },
    });
    let left = false;
    viewer.leave = () => {
      if (left) return;
      left = true;
      consumer.remove();
      viewers.delete(viewer);
      release();
      viewerLog.info(`viewer left (${viewers.size} watching)`);
    };
    socket.once("close", viewer.leave);
    viewerLog.info(`viewer logged in (${viewers.size} watching)`);
    if (!watchdog) {
      watchdog = setInterval(watch, WATCHDOG_INTERVAL_MS);
      watchdog.unref?.();
    }
  };

  /** The 80-byte camera login, or "file-tunnel" as soon as the first 32 bytes are the file tunnel's login. */
  const readLogin = async (socket: Socket): Promise<Buffer | "file-tunnel"> => {
    const deadline = Date.now() + loginTimeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    const first = await readExactly(socket, LOGIN_KIND_BYTES, left());
    if (isFramedLoginHeader(first)) {
      await readExactly(socket, FRAMED_LOGIN_SIZE - LOGIN_KIND_BYTES, left());
      return "file-tunnel";
    }
    return Buffer.concat([first, await readExactly(socket, LOGIN_SIZE - LOGIN_KIND_BYTES, left())]);
  };

  const onClient = (socket: Socket, client: { peer: string; log: Logger }) => {
    socket.setNoDelay?.(true);
    readLogin(socket).then(
      (bytes) => {
        if (bytes === "file-tunnel") {
          // What a real P1S answers here is not known yet (docs/protocol-notes.md); a camera-only port closes.
          client.log.info("a file-tunnel login on the camera port (Bambu Studio fetching the job's cover image); this printer has no file tunnel, closing");
          return endAndDestroy(socket, undefined, endDestroyMs);
        }
        const login = decodeLogin(bytes);
        if ("error" in login) {
          client.log.warn(`closing: ${login.error}`);
          return void socket.destroy();
        }
        if (!loginMatches(login, [printer.accessCode, printer.viewerAccessCode])) {
          client.log.warn(`closing: wrong user or access code (user ${JSON.stringify(login.username.slice(0, 32))})`);
          return void socket.destroy();
        }
        startViewer(socket, client.peer, client.log);
      },
      (error: Error) => {
        client.log.info(`closing: no login: ${error.message}`);
        socket.destroy();
      },
    );
  };

  return {
    name: "chamber",
    async start() {
      try {
        listening = await listen({
          log, what: "chamber camera", host: printer.bind, allow: printer.allow, port: printer.ports.chamber,
          tls: serverTlsOptions(ctx.tls), maxClients: MAX_VIEWERS, onClient,
        });
      } catch (error) {
        failure = (error as Error).message;
        throw error;
      }
      failure = undefined;
      ctx.hub.setCamera(feed);
      unregister.push(ctx.metrics.gauge("pandaproxy_clients", "Clients connected now", labels, () => viewers.size));
      upstream.start();
      log.info(`chamber camera listening on ${printer.bind}:${printer.ports.chamber} for the printer at ${printerAddress}`);
    },
    async stop() {
      if (watchdog) clearInterval(watchdog);
      watchdog = undefined;
      await listening?.close();
      listening = undefined;
      await upstream.stop();
      for (const u of unregister.splice(0)) u();
      if (ctx.hub.camera === feed) ctx.hub.setCamera(undefined);
    },
    status(): ServiceStatus {
      return {
        state: failure ? `error: ${failure}` : listening ? "listening" : "stopped",
        clients: viewers.size,
        upstream: upstreamRefusal(upstream) ?? (upstream.lastError && upstream.state !== "connected" ? `${upstream.state} (${upstream.lastError})` : upstream.state),
        details: {
          fps: Math.round(frameRate.rate() * 10) / 10,
          lastFrameAgeMs: lastFrameAt ? Date.now() - lastFrameAt : undefined,
          frames: frames.published,
          dropped: framesDropped.value,
        },
      };
    },
  };
}
