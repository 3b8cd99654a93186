// Live video for browsers from an RTSP camera, without decoding: an FFmpeg run on demand (while someone watches,
// then a linger) reads our own stream and rewraps its H.264 as fragmented MP4 (`-c copy`). Its output is cut into
// boxes (fmp4.ts); the init segment and the fragments since the last key frame are kept for viewers who join, and
// every fragment is fanned out through the stream core (core/stream.ts) to the viewers (web/live-video.ts).
import { createStream, type Stream } from "../core/stream.ts";
import { createUpstream, type Upstream } from "../core/upstream.ts";
import type { Logger } from "../log.ts";
import { remuxArgs, spawnFfmpeg, watchOutput, type FfmpegChild, type OutputWatchdog } from "./ffmpeg.ts";
import { createBoxSplitter, createFmp4Keeper, type Fmp4Keeper, type Fragment } from "./fmp4.ts";

/** The remuxing FFmpeg keeps running this long after the last viewer left (as the JPEG one does). */
export const REMUX_LINGER_MS = 10_000;

declare module "../core/service.ts" {
  interface CameraFeed {
    /** RTSP cameras: the H.264 stream as fragmented MP4 for browsers (Media Source Extensions). */
    liveVideo?: LiveVideo;
  }
}

/** One fragment as the fan-out carries it, with the FFmpeg run that made it (a new run needs a new init segment). */
export interface LiveFragment extends Fragment {
  run: number;
}

export interface LiveVideo {
  fragments: Stream<LiveFragment>;
  /** What a viewer joining now needs first: the run, its init segment and the fragments since its last key frame. */
  joining(): { run: number; init: Buffer; sinceKey: readonly Fragment[]; codec: string | undefined } | undefined;
  /** Ask for the remuxing FFmpeg; call the returned function when done. */
  claim(): () => void;
  /** The running FFmpeg's init segment no longer fits the camera's stream (its SPS changed): start a new run. */
  restart(reason: string): void;
  /** Resolves true once the running FFmpeg wrote its init segment and a key fragment; false after `timeoutMs`. */
  whenReady(timeoutMs: number): Promise<boolean>;
  readonly state: string;
  readonly viewers: number;
  /** FFmpeg runs so far. */
  readonly runs: number;
  /** Runs restarted because they wrote nothing while the camera sent video. */
  readonly stalls: number;
  readonly pid: number | undefined;
  start(): void;
  stop(): Promise<void>;
}

export interface LiveVideoOptions {
  log: Logger;
  ffmpeg: string;
  /** Our own stream's loopback URL (read per start). */
  input(): string | undefined;
  lingerMs?: number;
  backoffMinMs?: number;
  /** When our own stream got its last packet (performance.now()): with it, a wedged FFmpeg is restarted. */
  lastPacketAt?: () => number;
  stallTimeoutMs?: number;
}

export function createLiveVideo(options: LiveVideoOptions): LiveVideo {
  const { log } = options;
  const fragments = createStream<LiveFragment>({ log, what: "video fragments" });
  let keeper: Fmp4Keeper | undefined;
  let run = 0;
  let current: FfmpegChild | undefined;
  let watchdog: OutputWatchdog | undefined;
  const readyWaiters = new Set<() => void>();
  const ready = () => keeper?.init !== undefined && keeper.sinceKey.length > 0;

  const upstream: Upstream<FfmpegChild> = createUpstream<FfmpegChild>({
    log, describe: "FFmpeg remuxing the camera's H.264 for the web page", onDemand: true,
    lingerMs: options.lingerMs ?? REMUX_LINGER_MS, backoffMinMs: options.backoffMinMs,
    connect: async () => {
      const input = options.input();
      if (!input) throw new Error("the loopback RTSP server is not running");
      const child = spawnFfmpeg(options.ffmpeg, remuxArgs(input), log, { stdout: true });
      const thisRun = ++run;
      const own = createFmp4Keeper();
      keeper = own;
      current = child;
      watchdog?.wrote();
      const split = createBoxSplitter(
        (box) => {
          if (run === thisRun) watchdog?.wrote();
          const fragment = own.add(box);
          if (!fragment || run !== thisRun) return;
          fragments.publish({ ...fragment, run: thisRun });
          if (ready()) for (const wake of [...readyWaiters]) wake();
        },
        (why) => {
          log.warn(`the remuxing FFmpeg's output lost sync (${why}); restarting it`);
          upstream.reconnect("its MP4 output lost sync");
        },
      );
      void (async () => {
        for await (const chunk of child.process.stdout as ReadableStream<Uint8Array>) split(Buffer.from(chunk));
      })().catch(() => undefined);
      return {
        connection: child,
        closed: child.exited.then((reason) => {
          if (current === child) current = undefined;
          return new Error(`remuxing FFmpeg ${reason}`);
        }),
        close: () => child.kill(),
      };
    },
  });

  return {
    fragments,
    joining() {
      const k = keeper;
      if (!k?.init || !k.sinceKey.length || !current) return undefined;
      return { run, init: k.init, sinceKey: k.sinceKey, codec: k.codec };
    },
    claim: () => upstream.claim(),
    restart(reason) {
      // The upstream logs it ("reconnecting FFmpeg remuxing …: <reason>").
      if (upstream.state === "connected") upstream.reconnect(reason);
    },
    whenReady(timeoutMs) {
      if (ready() && current) return Promise.resolve(true);
      return new Promise((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          readyWaiters.delete(wake);
          resolve(true);
        };
        const timer = setTimeout(() => {
          readyWaiters.delete(wake);
          resolve(false);
        }, timeoutMs);
        readyWaiters.add(wake);
      });
    },
    get state() {
      return upstream.state;
    },
    get viewers() {
      return upstream.claims;
    },
    get runs() {
      return run;
    },
    get stalls() {
      return watchdog?.stalls ?? 0;
    },
    get pid() {
      return current?.process.exitCode === null ? current.process.pid : undefined;
    },
    start() {
      upstream.start();
      const { lastPacketAt } = options;
      if (lastPacketAt) watchdog = watchOutput({ upstream, log, what: "the remuxing FFmpeg", lastPacketAt, timeoutMs: options.stallTimeoutMs });
    },
    async stop() {
      watchdog?.stop();
      const child = current;
      await upstream.stop();
      child?.kill();
      if (child) await child.exited;
      keeper = undefined;
    },
  };
}
