// MJPEG over HTTP (multipart/x-mixed-replace) fed from a printer's camera stream (core/stream.ts): each browser gets the newest
// frame whenever its connection can take one (latest wins, never a queue), and the camera runs while anyone watches.
import type { Logger } from "../log.ts";
import { liveFrame, type Consumer } from "../core/stream.ts";
import type { CameraFeed, CameraFrame } from "../core/service.ts";
import { MJPEG_OPENING, mjpegFirstPart, mjpegPart } from "../core/mjpeg.ts";

export { MJPEG_BOUNDARY, MJPEG_CONTENT_TYPE } from "../core/mjpeg.ts";

export const MJPEG_STALL_MS = 30_000;
/** How often a stream checks that its printer still has this camera (a reload or restart replaces the feed). */
export const FEED_CHECK_MS = 2_000;

export interface MjpegViewerHooks {
  /** "web viewer 127.0.0.1:5000", for the stream's aggregated "too slow" lines. */
  label: string;
  log: Logger;
  /** false once the printer's camera is another feed (or none): the stream ends so the page reconnects. */
  stillCurrent(): boolean;
  /** A part was handed to the connection. */
  sent(bytes: number): void;
  /** The viewer is gone (tab closed, stalled, server stopping); called once. */
  closed(): void;
}

/**
 * The response body for one browser. Bun pulls the next part only when the socket has room, so a slow browser
 * holds at most one frame; the stream replaces (and counts) what it could not take (latest-value policy). The
 * first boundary line goes out at once, so the browser has the whole response head while the printer is away.
 * Nothing here allocates per frame: the parts are encoded once per frame for every viewer (core/mjpeg.ts).
 */
export function mjpegStream(feed: CameraFeed, hooks: MjpegViewerHooks, signal: AbortSignal, options: { stallMs?: number } = {}): ReadableStream<Uint8Array> {
  const stallMs = options.stallMs ?? MJPEG_STALL_MS;
  let release: (() => void) | undefined;
  let consumer: Consumer<CameraFrame> | undefined;
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  /** A frame the stream delivered that the connection has not pulled yet, and its acknowledgement. */
  let heldFrame: CameraFrame | undefined;
  let heldDone: (() => void) | undefined;
  /** Bun asked for a part and none was there: the next frame goes straight to it. */
  let wanted = false;
  let first = true;
  /** Tells the stream the previous part has left, so it may deliver the next one. */
  let acknowledge: (() => void) | undefined;
  let feedCheck: ReturnType<typeof setInterval> | undefined;
  let closed = false;

  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(feedCheck);
    consumer?.remove();
    release?.();
    heldFrame = undefined;
    heldDone = undefined;
    hooks.closed();
  };
  const end = (why: string) => {
    hooks.log.info(`${hooks.label}: ${why}; closing it`);
    close();
    try {
      controller?.close();
    } catch {
      // already closed by the server
    }
  };
  const send = (frame: CameraFrame, done: () => void) => {
    wanted = false;
    const part = first ? mjpegFirstPart(frame) : mjpegPart(frame);
    first = false;
    acknowledge = done;
    controller!.enqueue(part);
    hooks.sent(part.length);
  };

  return new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        if (signal.aborted) return close();
        signal.addEventListener("abort", close, { once: true });
        c.enqueue(MJPEG_OPENING);
        feedCheck = setInterval(() => {
          if (!hooks.stillCurrent()) end("the camera was replaced or removed");
        }, FEED_CHECK_MS);
        release = feed.claim();
        consumer = feed.frames.addConsumer({
          label: hooks.label,
          replayLatest: true,
          fresh: liveFrame,
          // The stream's deadline runs from a frame's delivery to its acknowledgement, the pull after Bun took the
          // part: a browser whose socket takes no part for stallMs is ended.
          stallMs,
          write(frame, done) {
            if (closed) return done();
            if (wanted) return send(frame, done);
            heldFrame = frame;
            heldDone = done;
          },
          onEnd: (why, cause) => end(cause === "stalled" ? `took no frame for ${stallMs / 1000} s` : why),
        });
      },
      // Returns nothing: a pull with no frame at hand leaves Bun's read pending until `write` enqueues one.
      pull() {
        if (closed) return;
        wanted = true;
        const ack = acknowledge;
        acknowledge = undefined;
        ack?.(); // may hand the next frame over at once (straight to `send`, as `wanted` is set)
        if (heldFrame && wanted) {
          const frame = heldFrame;
          const done = heldDone!;
          heldFrame = undefined;
          heldDone = undefined;
          send(frame, done);
        }
      },
      cancel() {
        close();
      },
    },
    { highWaterMark: 0 },
  );
}
