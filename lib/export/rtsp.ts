// [export.rtsp]: each exported printer's camera pushed to an external media server (MediaMTX, go2rtc) by RTSP
// ANNOUNCE/RECORD, one FFmpeg per printer, always running and restarted with backoff (core/upstream.ts). RTSP
// cameras (X1/H2/P2S): FFmpeg copies our own stream from the loopback server (never a second printer session).
// Chamber and MJPEG cameras (P1/A1, FlashForge): their JPEG frames, as they arrive, are encoded to H.264.
// Either way the push holds the printer's camera connection for as long as it runs.
// FFmpeg pushes to a loopback relay (rtsp/relay.ts, plain TCP to the media server), never to the media server
// itself: the relay answers the media server's 401 (Basic or Digest) with [export.rtsp] username and password,
// which therefore appear in no process list, and it tells us when RECORD was accepted: only then is the push
// connected. A media server that refuses the login is retried after the long backoff (60 s), as a printer that
// refuses the access code is; one that is away or fails otherwise, with the growing backoff.
import type { ProxyConfig } from "../config.ts";
import type { CameraFeed, CameraFrame, ServiceStatus } from "../core/service.ts";
import { createUpstream, LoginRefused, upstreamProblem, type Link, type Upstream } from "../core/upstream.ts";
import { registerSecret, serviceLogger, type Logger } from "../log.ts";
import type { PrinterRuntime } from "../printer-services.ts";
import { spawnFfmpeg, type FfmpegChild } from "../rtsp/ffmpeg.ts";
import { startRelay, type Relay } from "../rtsp/relay.ts";
import { PRINTER_PLACEHOLDER, type RtspExportConfig } from "./config.ts";

/**
 * A JPEG camera's pictures waiting for FFmpeg's stdin, or the push's bytes waiting for the media server (the
 * relay), this long: the push counts as stalled and is restarted.
 */
export const PUSH_STALL_MS = 10_000;
/** From FFmpeg's start to the media server's answer to RECORD (an RTSP camera's first key frame comes first). */
export const PUSH_START_TIMEOUT_MS = 30_000;
export const DEFAULT_RTSP_PORT = 554;
/**
 * A key frame every this many seconds, so a media server's new reader starts soon: by time, not by count, as a
 * chamber camera's own rate can be one picture a second (30 pictures would be half a minute of nothing).
 */
export const KEY_FRAME_SECONDS = 2;
const COMMON = ["-hide_banner", "-nostdin", "-loglevel", "warning"];
const OUTPUT = ["-f", "rtsp", "-rtsp_transport", "tcp"];

/** RTSP camera: our own stream, unchanged. */
export function copyPushArgs(input: string, output: string): string[] {
  return [...COMMON, "-rtsp_transport", "tcp", "-i", input, "-map", "0:v", "-c", "copy", ...OUTPUT, output];
}

/**
 * JPEG camera: pictures on stdin, stamped as they arrive, encoded to H.264: by default at the camera's own rate
 * (each picture one frame, passthrough) and size (made even, as yuv420p needs); `fps` makes it constant (pictures
 * repeated or dropped), `width` scales it down (or up) keeping the aspect. The smallest probe: FFmpeg's default
 * (5 MB) would wait some fifty 100 kB chamber pictures before it starts.
 */
export function encodePushArgs(output: string, shape: { fps?: number; width?: number } = {}): string[] {
  const filters = [
    ...(shape.fps ? [`fps=${shape.fps}`] : []),
    shape.width ? `scale=${shape.width}:-2` : "scale=trunc(iw/2)*2:trunc(ih/2)*2",
  ];
  const rate = shape.fps
    ? ["-fps_mode", "cfr", "-g", String(shape.fps * KEY_FRAME_SECONDS)]
    : ["-fps_mode", "passthrough", "-force_key_frames", `expr:gte(t,n_forced*${KEY_FRAME_SECONDS})`];
  return [
    ...COMMON, "-probesize", "32", "-analyzeduration", "0", "-use_wallclock_as_timestamps", "1", "-f", "image2pipe", "-c:v", "mjpeg", "-i", "pipe:0",
    "-vf", filters.join(","), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", ...rate, ...OUTPUT, output,
  ];
}

/** The media server's address and the path the camera goes to, from the url with the printer's name in. */
export function pushTarget(url: string): { host: string; port: number; path: string } {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: Number(parsed.port) || DEFAULT_RTSP_PORT, path: `${parsed.pathname}${parsed.search}` };
}

export const pushUrl = (config: RtspExportConfig, printer: string) => config.url.replaceAll(PRINTER_PLACEHOLDER, encodeURIComponent(printer));

export interface RtspExportOptions {
  config: RtspExportConfig;
  printers: readonly PrinterRuntime[];
  proxy: ProxyConfig;
  /** Tests make it short. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  startTimeoutMs?: number;
}

export interface RtspExport {
  /** Per printer: the push's upstream (state, connects, last error). */
  pushes: ReadonlyMap<string, Upstream<FfmpegChild>>;
  /** The push of `printer` as a row of its status (undefined: not pushed). */
  status(printer: string): ServiceStatus | undefined;
  stop(): Promise<void>;
}

/** The JPEG frames into FFmpeg's stdin, one at a time (a slow FFmpeg gets the newest picture, not a queue). */
function feedFrames(feed: CameraFeed, child: FfmpegChild, label: string): () => void {
  const stdin = child.process.stdin as import("bun").FileSink;
  const consumer = feed.frames.addConsumer({
    label,
    stallMs: PUSH_STALL_MS,
    write(frame: CameraFrame, done) {
      Promise.resolve(stdin.write(frame.jpeg)).then(() => stdin.flush()).then(() => done(), () => child.kill());
    },
    onEnd: () => child.kill(),
  });
  const release = feed.claim();
  return () => {
    consumer.remove();
    release();
    try {
      void stdin.end();
    } catch {
      // FFmpeg is gone already.
    }
  };
}

/** The relay to the media server, and a promise of FFmpeg's RECORD being accepted (or refused). */
async function relayTo(output: string, config: RtspExportConfig, log: Logger): Promise<{ relay: Relay; recording: Promise<void> }> {
  const { host, port } = pushTarget(output);
  const user = config.username ?? "";
  let accepted = () => {};
  let refusedAt: (error: Error) => void = () => {};
  const recording = new Promise<void>((resolve, reject) => ((accepted = resolve), (refusedAt = reject)));
  recording.catch(() => {});
  const relay = await startRelay({
    log, host, port, user, password: () => config.password ?? "",
    peer: "media server",
    maxClients: 1,
    writeStallMs: PUSH_STALL_MS,
    refusedMessage: user
      ? `media server ${host}:${port} refused the login of user "${user}": check [export.rtsp] username and password`
      : `media server ${host}:${port} asks for a login: set [export.rtsp] username and password`,
    onResponse(method, status) {
      if (method === "RECORD" && status < 300) accepted();
      // A refused login waits the long backoff (BACKOFF_MAX_MS), as a printer's does: retrying soon cannot help.
      else if (status === 401) refusedAt(new LoginRefused(`the media server refused the login (${method} answered 401)`, "[export.rtsp] username and password"));
      else if (status >= 300) refusedAt(new Error(`the media server answered ${method} with ${status}`));
    },
  });
  return { relay, recording };
}

function startPush(runtime: PrinterRuntime, options: RtspExportOptions, log: Logger): Upstream<FfmpegChild> {
  const name = runtime.config.name;
  const output = pushUrl(options.config, name);
  const startTimeoutMs = options.startTimeoutMs ?? PUSH_START_TIMEOUT_MS;
  let toldCopied = false;
  return createUpstream<FfmpegChild>({
    log,
    describe: `FFmpeg pushing the camera to ${output}`,
    onDemand: false,
    backoffMinMs: options.backoffMinMs,
    backoffMaxMs: options.backoffMaxMs,
    async connect(): Promise<Link<FfmpegChild>> {
      const feed = runtime.hub.camera;
      if (!feed) throw new Error("the printer has no camera service running");
      const input = feed.loopbackUrl?.();
      if (feed.loopbackUrl && !input) throw new Error("the RTSP camera's loopback server is not running");
      if (input && (options.config.fps || options.config.width) && !toldCopied) {
        toldCopied = true;
        log.info("[export.rtsp] fps and width apply to chamber and MJPEG cameras; this RTSP camera is pushed as the printer sends it");
      }
      const { relay, recording } = await relayTo(output, options.config, log);
      const local = relay.url(pushTarget(output).path);
      const child = input
        ? spawnFfmpeg(options.proxy.ffmpeg, copyPushArgs(input, local), log)
        : spawnFfmpeg(options.proxy.ffmpeg, encodePushArgs(local, options.config), log, { stdin: true });
      // The RTSP reader on our loopback server claims the printer's stream itself; JPEG cameras are claimed here.
      const detach = input ? () => {} : feedFrames(feed, child, `RTSP push to ${output}`);
      const closed = child.exited.then(async (reason) => {
        detach();
        await relay.close();
        return new Error(`FFmpeg ${reason}`);
      });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const started = await Promise.race([
        recording.then(() => undefined, (error: Error) => error),
        closed,
        new Promise<Error>((resolve) => (timer = setTimeout(() => resolve(new Error(`the media server did not accept the push in ${startTimeoutMs / 1000} s`)), startTimeoutMs))),
      ]);
      clearTimeout(timer);
      if (started) {
        child.kill();
        await closed;
        throw started;
      }
      return { connection: child, closed, close: () => child.kill() };
    },
  });
}

export function startRtspExport(options: RtspExportOptions): RtspExport {
  registerSecret(options.config.password);
  const pushes = new Map<string, Upstream<FfmpegChild>>();
  for (const runtime of options.printers) {
    const printer = runtime.config;
    if (options.config.skip.includes(printer.name)) continue;
    const log = serviceLogger(printer.name, "export rtsp");
    if (!printer.services.includes("camera")) {
      log.info(`not pushed to the media server (its camera service is off)`);
      continue;
    }
    const push = startPush(runtime, options, log);
    push.start();
    pushes.set(printer.name, push);
  }
  return {
    pushes,
    status(printer) {
      const push = pushes.get(printer);
      if (!push) return undefined;
      const problem = upstreamProblem(push);
      const state = push.state === "connected"
        ? "pushing"
        : problem ? (problem.lasting ? `error: ${problem.reason}` : `waiting to retry: ${problem.reason}`) : push.state;
      return { state, clients: 0, details: { to: pushUrl(options.config, printer), pushes: push.connects } };
    },
    async stop() {
      await Promise.allSettled([...pushes.values()].map((p) => p.stop()));
    },
  };
}
