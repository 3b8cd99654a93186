// [export.rtsp]: each exported printer's camera pushed to an external media server (MediaMTX, go2rtc) by RTSP
// ANNOUNCE/RECORD, one FFmpeg per printer, always running and restarted with backoff (core/upstream.ts). RTSP
// cameras (X1/H2/P2S): FFmpeg copies our own stream from the loopback server (never a second printer session).
// Chamber and MJPEG cameras (P1/A1, FlashForge): their JPEG frames, as they arrive, are encoded to H.264.
// Either way the push holds the printer's camera connection for as long as it runs.
import type { ProxyConfig } from "../config.ts";
import type { CameraFeed, CameraFrame } from "../core/service.ts";
import { createUpstream, type Link, type Upstream } from "../core/upstream.ts";
import { serviceLogger, type Logger } from "../log.ts";
import type { PrinterRuntime } from "../printer-services.ts";
import { spawnFfmpeg, type FfmpegChild } from "../rtsp/ffmpeg.ts";
import { PRINTER_PLACEHOLDER, type RtspExportConfig } from "./config.ts";

/** A JPEG camera's pictures waiting for FFmpeg's stdin before the push counts as stalled and is restarted. */
export const PUSH_STALL_MS = 10_000;
/** Key frames every this many pictures, so a media server's new reader starts soon. */
const KEY_FRAME_INTERVAL = 30;
const COMMON = ["-hide_banner", "-nostdin", "-loglevel", "warning"];
const OUTPUT = ["-f", "rtsp", "-rtsp_transport", "tcp"];

/** RTSP camera: our own stream, unchanged. */
export function copyPushArgs(input: string, output: string): string[] {
  return [...COMMON, "-rtsp_transport", "tcp", "-i", input, "-map", "0:v", "-c", "copy", ...OUTPUT, output];
}

/**
 * JPEG camera: pictures on stdin, stamped as they arrive (the camera's own rate), encoded to H.264. The smallest
 * probe: FFmpeg's default (5 MB) would wait some fifty 100 kB chamber pictures before it starts.
 */
export function encodePushArgs(output: string): string[] {
  return [
    ...COMMON, "-probesize", "32", "-analyzeduration", "0", "-use_wallclock_as_timestamps", "1", "-f", "image2pipe", "-c:v", "mjpeg", "-i", "pipe:0",
    "-fps_mode", "passthrough", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264", "-preset", "ultrafast",
    "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-g", String(KEY_FRAME_INTERVAL), ...OUTPUT, output,
  ];
}

export const pushUrl = (config: RtspExportConfig, printer: string) => config.url.replaceAll(PRINTER_PLACEHOLDER, encodeURIComponent(printer));

export interface RtspExportOptions {
  config: RtspExportConfig;
  printers: readonly PrinterRuntime[];
  proxy: ProxyConfig;
  /** Tests make it short. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

export interface RtspExport {
  /** Per printer: the push's upstream (state, connects, last error). */
  pushes: ReadonlyMap<string, Upstream<FfmpegChild>>;
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

function startPush(runtime: PrinterRuntime, options: RtspExportOptions, log: Logger): Upstream<FfmpegChild> {
  const name = runtime.config.name;
  const output = pushUrl(options.config, name);
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
      const child = input
        ? spawnFfmpeg(options.proxy.ffmpeg, copyPushArgs(input, output), log)
        : spawnFfmpeg(options.proxy.ffmpeg, encodePushArgs(output), log, { stdin: true });
      // The RTSP reader on our loopback server claims the printer's stream itself; JPEG cameras are claimed here.
      const detach = input ? () => {} : feedFrames(feed, child, `RTSP push to ${output}`);
      const closed = child.exited.then((reason) => {
        detach();
        return new Error(`FFmpeg ${reason}`);
      });
      return { connection: child, closed, close: () => child.kill() };
    },
  });
}

export function startRtspExport(options: RtspExportOptions): RtspExport {
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
    async stop() {
      await Promise.allSettled([...pushes.values()].map((p) => p.stop()));
    },
  };
}
