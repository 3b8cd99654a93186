// FFmpeg children: every argument list in one place (with per-model additions), a supervisor that runs a
// publisher on demand (linger, backoff via core/upstream.ts) and kills it when no packet arrived for a while, and a
// watchdog for the FFmpegs that read our own stream (remux, JPEG) and may stop writing while it flows.
import { existsSync } from "node:fs";
import type { Subprocess } from "bun";
import { createUpstream, LoginRefused, type Upstream } from "../core/upstream.ts";
import { redact, type Logger } from "../log.ts";
import type { Stream } from "./stream.ts";

/** FFmpeg is killed and restarted when no RTP packet reached our server for this long. */
export const STALL_TIMEOUT_MS = 10_000;
/** How long a fresh FFmpeg may take to open the printer's stream and start publishing. */
export const PUBLISH_START_TIMEOUT_MS = 20_000;
const STALL_CHECK_INTERVAL_MS = 1_000;
const STDERR_TAIL_LINES = 12;
/**
 * An FFmpeg reading our stream that wrote nothing for this long while the camera's packets kept coming is wedged:
 * it is restarted. (The remuxer writes a fragment at least every 200 ms of video, the JPEG one 4 pictures a
 * second; each probes its input for well under a second first.)
 */
export const OUTPUT_STALL_TIMEOUT_MS = 15_000;
/** The camera counts as sending while its last packet is this recent: a camera that is away is not FFmpeg's fault. */
const INPUT_LIVE_MS = 3_000;

/** Per-model input options: P2S firmware sends non-advancing RTP timestamps and slow key frames. */
const MODEL_INPUT_ARGS: Record<string, string[]> = {
  P2S: ["-use_wallclock_as_timestamps", "1", "-probesize", "5000000", "-analyzeduration", "5000000"],
};

const COMMON = ["-hide_banner", "-nostdin", "-loglevel", "warning"];

/** Pull the printer's stream (through our credential relay) and publish it unchanged into our server. */
export function relayArgs(input: string, output: string, model?: string): string[] {
  return [
    ...COMMON, "-rtsp_transport", "tcp", ...(model ? MODEL_INPUT_ARGS[model] ?? [] : []),
    "-i", input, "-map", "0:v", "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", output,
  ];
}

/** The simulated X1C camera: FFmpeg's test pattern as H.264, published into our server. */
export function testPatternArgs(output: string, size = "1280x720", fps = 15): string[] {
  return [
    ...COMMON, "-re", "-f", "lavfi", "-i", `testsrc2=size=${size}:rate=${fps}`, "-c:v", "libx264", "-preset", "ultrafast",
    // SPS and PPS in the stream before every key frame as well as in the SDP, as camera encoders send them: a
    // reader that joins late, or a picture size that changes mid-stream, is carried by the stream itself.
    "-tune", "zerolatency", "-x264-params", "repeat-headers=1", "-g", String(fps * 2), "-pix_fmt", "yuv420p",
    "-f", "rtsp", "-rtsp_transport", "tcp", output,
  ];
}

/** JPEG frames for the web page: read our own stream, write MJPEG to stdout at a few frames per second. */
export function jpegArgs(input: string, fps: number): string[] {
  return [
    ...COMMON, "-rtsp_transport", "tcp", "-i", input, "-an", "-vf", `fps=${fps}`, "-q:v", "5", "-f", "mjpeg", "pipe:1",
  ];
}

/** Fragment length for the browsers' live video (microseconds): short, so a fragment leaves soon after its frames. */
export const REMUX_FRAGMENT_US = 200_000;
/** How long the remuxing FFmpeg looks at our stream before it writes the init segment (microseconds). */
export const REMUX_PROBE_US = 500_000;

/**
 * Live video for browsers: read our own stream and rewrap its H.264 as fragmented MP4 on stdout, without decoding
 * (`-c copy`). A fragment starts at every key frame and otherwise every REMUX_FRAGMENT_US. Our server starts
 * every reader at a key frame with its SPS and PPS, so half a second of probing is plenty (the default five
 * seconds made a viewer wait 3.5 s instead of 1.5 s for its first picture).
 */
export function remuxArgs(input: string): string[] {
  return [
    ...COMMON, "-rtsp_transport", "tcp", "-analyzeduration", String(REMUX_PROBE_US), "-i", input, "-map", "0:v:0", "-an", "-c", "copy",
    "-f", "mp4", "-movflags", "empty_moov+default_base_moof+frag_keyframe", "-frag_duration", String(REMUX_FRAGMENT_US),
    "-flush_packets", "1", "pipe:1",
  ];
}

/** One JPEG from one H.264 access unit (Annex B, with its SPS and PPS) on stdin: a snapshot, decoded once. */
export function keyFrameJpegArgs(): string[] {
  return [...COMMON, "-f", "h264", "-i", "pipe:0", "-frames:v", "1", "-q:v", "4", "-f", "image2", "-c:v", "mjpeg", "pipe:1"];
}

/** A clear message when the configured FFmpeg cannot be run, else undefined. */
export function ffmpegMissing(binary: string): string | undefined {
  const found = binary.includes("/") ? existsSync(binary) : Bun.which(binary) !== null;
  if (found) return undefined;
  return `FFmpeg not found ("${binary}"): install it (e.g. \`apt install ffmpeg\`) or set [proxy] ffmpeg = "/path/to/ffmpeg"`;
}

export interface FfmpegChild {
  process: Subprocess<"ignore" | "pipe", "pipe" | "ignore", "pipe">;
  /** Settles when the process has exited, with a one-line reason. */
  exited: Promise<string>;
  kill(): void;
}

/** Starts FFmpeg with `args`; its warnings are logged (redacted) at debug, the tail kept for the exit reason. */
export function spawnFfmpeg(binary: string, args: string[], log: Logger, options: { stdout?: boolean; stdin?: boolean } = {}): FfmpegChild {
  const child = Bun.spawn([binary, ...args], { stdin: options.stdin ? "pipe" : "ignore", stdout: options.stdout ? "pipe" : "ignore", stderr: "pipe" });
  const tail: string[] = [];
  const stderrDone = (async () => {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of child.stderr) {
      const text = partial + decoder.decode(chunk, { stream: true });
      const lines = text.split(/\r?\n/);
      partial = lines.pop() ?? "";
      for (const line of lines) {
        if (!line.trim()) continue;
        const clean = redact(line);
        log.debug(`ffmpeg: ${clean}`);
        tail.push(clean);
        if (tail.length > STDERR_TAIL_LINES) tail.shift();
      }
    }
  })().catch(() => undefined);
  const exited = child.exited.then(async (code) => {
    await Promise.race([stderrDone, Bun.sleep(200)]);
    const how = child.signalCode ? `killed by ${child.signalCode}` : `exited with code ${code}`;
    const last = tail.filter((l) => !/^\s*(Last message repeated|frame=)/.test(l)).slice(-2).join(" / ");
    return last ? `${how}: ${last}` : how;
  });
  return {
    process: child as FfmpegChild["process"],
    exited,
    kill: () => {
      if (child.exitCode === null && !child.killed) child.kill("SIGKILL");
    },
  };
}

export interface OutputWatchdog {
  /** The running FFmpeg started or wrote something. */
  wrote(): void;
  /** Restarts so far. */
  readonly stalls: number;
  stop(): void;
}

/**
 * Restarts `upstream` (an FFmpeg reading our own stream) when, connected, it wrote nothing for `timeoutMs` of
 * packets arriving (`lastPacketAt`, performance.now()). Without it a wedged FFmpeg kept its viewers waiting
 * until they gave up, and they came back to the same silent process.
 */
export function watchOutput(options: { upstream: Upstream<unknown>; log: Logger; what: string; lastPacketAt: () => number; timeoutMs?: number }): OutputWatchdog {
  const timeoutMs = options.timeoutMs ?? OUTPUT_STALL_TIMEOUT_MS;
  let lastOutputAt = performance.now();
  let stalls = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    // Silence counts only while the camera sends: after an outage FFmpeg gets the whole timeout to speak again.
    if (options.upstream.state !== "connected" || now - options.lastPacketAt() > INPUT_LIVE_MS) {
      lastOutputAt = now;
      return;
    }
    const silent = now - lastOutputAt;
    if (silent <= timeoutMs) return;
    stalls++;
    lastOutputAt = now;
    options.log.warn(`${options.what} wrote nothing for ${Math.round(silent / 1000)} s while the camera sent video; restarting it`);
    options.upstream.reconnect("it wrote nothing while the camera sent video");
  }, Math.min(STALL_CHECK_INTERVAL_MS, timeoutMs / 2));
  timer.unref?.();
  return {
    wrote: () => void (lastOutputAt = performance.now()),
    get stalls() {
      return stalls;
    },
    stop: () => clearInterval(timer),
  };
}

export interface PublisherOptions {
  log: Logger;
  binary: string;
  /** "FFmpeg for the printer's camera". */
  describe: string;
  /** Built per start, so it picks up the relay's and server's current ports. */
  args: () => string[];
  stream: Stream;
  lingerMs?: number;
  stallTimeoutMs?: number;
  backoffMinMs?: number;
  /** The longest retry interval while a reader waits (default WAITING_RETRY_MAX_MS of core/upstream.ts). */
  waitingRetryMaxMs?: number;
  /** true when the printer refused our login (then we wait the longest backoff). */
  loginRefused?: () => boolean;
}

export interface Publisher {
  upstream: Upstream<FfmpegChild>;
  /** Processes started so far. */
  readonly starts: number;
  /** The running FFmpeg's process id, if any. */
  readonly pid: number | undefined;
  readonly stalls: number;
  start(): void;
  stop(): Promise<void>;
}

/** Runs a publishing FFmpeg while the stream is claimed: started on demand, restarted with backoff, killed on stall. */
export function createPublisher(options: PublisherOptions): Publisher {
  const stallTimeoutMs = options.stallTimeoutMs ?? STALL_TIMEOUT_MS;
  let starts = 0;
  let stalls = 0;
  let current: FfmpegChild | undefined;
  let watchdog: ReturnType<typeof setInterval> | undefined;
  let connectedAt = 0;

  const upstream = createUpstream<FfmpegChild>({
    log: options.log,
    describe: options.describe,
    onDemand: true,
    lingerMs: options.lingerMs,
    backoffMinMs: options.backoffMinMs,
    waitingRetryMaxMs: options.waitingRetryMaxMs,
    connect: async () => {
      // Whatever published before is gone (we only start when not connected): wait for the new one.
      options.stream.unpublish();
      const child = spawnFfmpeg(options.binary, options.args(), options.log);
      starts++;
      current = child;
      options.log.debug(`started FFmpeg (pid ${child.process.pid})`);
      let exitReason: string | undefined;
      void child.exited.then((reason) => (exitReason = reason));
      try {
        await Promise.race([
          options.stream.whenLive(PUBLISH_START_TIMEOUT_MS),
          child.exited.then((reason) => Promise.reject(new Error(`FFmpeg ${reason}`))),
        ]);
      } catch (error) {
        child.kill();
        await child.exited;
        if (current === child) current = undefined;
        const refused = options.loginRefused?.() ?? false;
        options.stream.failWaiters(refused ? "the printer refused the access code" : (error as Error).message);
        if (refused) throw new LoginRefused((error as Error).message);
        throw error;
      }
      return {
        connection: child,
        closed: child.exited.then((reason) => {
          if (current === child) current = undefined;
          return new Error(exitReason ?? `FFmpeg ${reason}`);
        }),
        close: () => child.kill(),
      };
    },
  });

  return {
    upstream,
    get starts() {
      return starts;
    },
    get pid() {
      return current?.process.exitCode === null ? current.process.pid : undefined;
    },
    get stalls() {
      return stalls;
    },
    start() {
      upstream.on("connected", () => (connectedAt = performance.now()));
      upstream.start();
      watchdog = setInterval(() => {
        if (upstream.state !== "connected") return;
        const since = performance.now() - Math.max(connectedAt, options.stream.lastPacketAt);
        if (since > stallTimeoutMs) {
          stalls++;
          upstream.reconnect(`no video packet for ${Math.round(since / 1000)} s; killing FFmpeg`);
        }
      }, STALL_CHECK_INTERVAL_MS);
      watchdog.unref?.();
    },
    async stop() {
      if (watchdog) clearInterval(watchdog);
      const child = current;
      await upstream.stop();
      child?.kill();
      if (child) await child.exited;
    },
  };
}
