// /printers/<name>/live.mp4: an RTSP camera's H.264 as fragmented MP4 (rtsp/fmp4-live.ts) for one browser. It gets
// the init segment, the fragments since the last key frame (so its decoder starts on a key frame), then every
// fragment as it comes. Bun pulls the next chunk only when the socket has room; what waits is this viewer's FIFO
// in the stream core, bounded in bytes and in fragments: a browser that falls that far behind is ended (the page
// reconnects at the live edge), never buffered without bound. A new FFmpeg run (new init segment) ends it too.
import type { Logger } from "../log.ts";
import type { Consumer } from "../core/stream.ts";
import type { CameraFeed } from "../core/service.ts";
import type { LiveFragment, LiveVideo } from "../rtsp/fmp4-live.ts";

/** How long a new viewer waits for the remuxing FFmpeg's first key fragment before it is answered 503. */
export const LIVE_START_WAIT_MS = 15_000;
/** Bytes that may wait for one browser before its FIFO holds fragments back. */
export const LIVE_VIEWER_BUDGET_BYTES = 2 * 1024 * 1024;
/** Fragments (about REMUX_FRAGMENT_US each) held back for one browser before it is ended as too slow. */
export const LIVE_VIEWER_MAX_FRAGMENTS = 50;
/** The header that tells the page the stream's codec string (for MediaSource.isTypeSupported). */
export const CODEC_HEADER = "X-Video-Codec";
/** How often a stream checks that its printer still has this camera. */
const FEED_CHECK_MS = 2_000;
/** A viewer that got no fragment for this long (the camera is gone and its FFmpeg not back) is ended. */
export const LIVE_SILENCE_MS = 30_000;
/** An ended viewer's waiting bytes may still go out for this long; then its response is aborted. */
const ENDING_GRACE_MS = 5_000;

/** How much may wait for one browser (tests make it small). */
export interface LiveViewerBudget {
  bytes?: number;
  fragments?: number;
}

export interface LiveViewerHooks {
  label: string;
  log: Logger;
  stillCurrent(): boolean;
  sent(bytes: number): void;
  closed(): void;
}

/** The answer for one browser: 503 when the camera gave no video in time, else the endless MP4 body. */
export async function liveVideoResponse(
  feed: CameraFeed & { liveVideo: LiveVideo }, hooks: LiveViewerHooks, signal: AbortSignal, headers: Record<string, string>, budget: LiveViewerBudget = {},
): Promise<Response> {
  const live = feed.liveVideo;
  const release = live.claim();
  let handedOver = false;
  try {
    if (!(await live.whenReady(LIVE_START_WAIT_MS)) || signal.aborted) {
      const why = `the camera gave no video within ${LIVE_START_WAIT_MS / 1000} s (camera ${feed.state()}${feed.problem?.() ? `: ${feed.problem()!.reason}` : ""})`;
      if (!signal.aborted) hooks.log.info(`${hooks.label}: ${why}; answered 503`);
      return new Response(`${why}\n`, {
        status: 503, headers: { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store" },
      });
    }
    const start = live.joining();
    if (!start) return new Response("the camera's video restarted; try again\n", { status: 503, headers: { "Cache-Control": "no-store" } });
    handedOver = true;
    // The replayed fragments are the keeper's own buffers, shared by every viewer, not copies.
    const body = liveBody(live, start, release, hooks, signal, budget);
    return new Response(body, { headers: { ...headers, "Content-Type": "video/mp4", ...(start.codec ? { [CODEC_HEADER]: start.codec } : {}) } });
  } finally {
    if (!handedOver) {
      release();
      hooks.closed();
    }
  }
}

function liveBody(
  live: LiveVideo, start: NonNullable<ReturnType<LiveVideo["joining"]>>, release: () => void, hooks: LiveViewerHooks, signal: AbortSignal,
  budget: LiveViewerBudget,
): ReadableStream<Uint8Array> {
  const waiting: Buffer[] = [];
  let waitingBytes = 0;
  let wake: (() => void) | undefined;
  let consumer: Consumer<LiveFragment> | undefined;
  let feedCheck: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  let ending = false;
  let abort: ((why: string) => void) | undefined;
  let lastFragmentAt = performance.now();

  const push = (bytes: Buffer) => {
    waiting.push(bytes);
    waitingBytes += bytes.length;
    const w = wake;
    wake = undefined;
    w?.();
  };
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(feedCheck);
    consumer?.remove();
    release();
    waiting.length = 0;
    waitingBytes = 0;
    const w = wake;
    wake = undefined;
    w?.();
    hooks.closed();
  };
  const end = (why: string) => {
    if (closed || ending) return;
    hooks.log.info(`${hooks.label}: ${why}; closing it`);
    ending = true; // what is waiting still goes out, then the body ends
    consumer?.remove();
    setTimeout(() => abort?.(why), ENDING_GRACE_MS).unref?.();
    const w = wake;
    wake = undefined;
    w?.();
  };

  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        if (signal.aborted) return close();
        abort = (why) => {
          if (closed) return;
          close();
          controller.error(new Error(why)); // a browser that took nothing more: drop its connection
        };
        signal.addEventListener("abort", close, { once: true });
        feedCheck = setInterval(() => {
          if (!hooks.stillCurrent()) end("the camera was replaced or removed");
          else if (performance.now() - lastFragmentAt > LIVE_SILENCE_MS) end(`no video for ${LIVE_SILENCE_MS / 1000} s`);
        }, FEED_CHECK_MS);
        consumer = live.fragments.addConsumer({
          label: hooks.label,
          policy: { kind: "fifo" },
          budget: { bytes: budget.bytes ?? LIVE_VIEWER_BUDGET_BYTES, count: budget.fragments ?? LIVE_VIEWER_MAX_FRAGMENTS },
          waitingBytes: () => waitingBytes,
          write(fragment) {
            if (fragment.run !== start.run) return end("the camera's video restarted");
            lastFragmentAt = performance.now();
            push(fragment.bytes);
          },
          onEnd: (why) => end(why),
        });
        push(start.init);
        for (const fragment of start.sinceKey) push(fragment.bytes);
      },
      async pull(controller) {
        while (!closed && !waiting.length && !ending) await new Promise<void>((resolve) => (wake = resolve));
        if (closed) return;
        const bytes = waiting.shift();
        if (!bytes) {
          close();
          controller.close();
          return;
        }
        waitingBytes -= bytes.length;
        controller.enqueue(bytes);
        hooks.sent(bytes.length);
        consumer?.resume(); // what the FIFO held back may go now
      },
      cancel() {
        close();
      },
    },
    { highWaterMark: 0 },
  );
}
