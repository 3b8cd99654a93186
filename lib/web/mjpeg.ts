// MJPEG over HTTP (multipart/x-mixed-replace) fed from a printer's camera stream (core/stream.ts): each browser gets the newest
// frame whenever its connection can take one (latest wins, never a queue), and the camera runs while anyone watches.
import type { Logger } from "../log.ts";
import { liveFrame, type Consumer } from "../core/stream.ts";
import type { CameraFeed, CameraFrame } from "../core/service.ts";
import { mjpegPart } from "../core/mjpeg.ts";

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

interface Delivery {
  frame: CameraFrame;
  done: () => void;
}

/**
 * The response body for one browser. Bun pulls the next part only when the socket has room, so a slow browser
 * holds at most one frame; the stream replaces (and counts) what it could not take (latest-value policy).
 */
export function mjpegStream(feed: CameraFeed, hooks: MjpegViewerHooks, signal: AbortSignal, options: { stallMs?: number } = {}): ReadableStream<Uint8Array> {
  const stallMs = options.stallMs ?? MJPEG_STALL_MS;
  let release: (() => void) | undefined;
  let consumer: Consumer<CameraFrame> | undefined;
  /** A frame the stream delivered that the connection has not pulled yet. */
  let held: Delivery | undefined;
  /** A pull waiting for the next frame. */
  let waiting: ((delivery: Delivery | undefined) => void) | undefined;
  /** Tells the stream the previous part has left, so it may deliver the next one. */
  let acknowledge: (() => void) | undefined;
  let feedCheck: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  let end: ((why: string) => void) | undefined;

  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(feedCheck);
    consumer?.remove();
    release?.();
    const w = waiting;
    waiting = undefined;
    w?.(undefined);
    hooks.closed();
  };

  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        if (signal.aborted) return close();
        signal.addEventListener("abort", close, { once: true });
        end = (why: string) => {
          hooks.log.info(`${hooks.label}: ${why}; closing it`);
          close();
          try {
            controller.close();
          } catch {
            // already closed by the server
          }
        };
        feedCheck = setInterval(() => {
          if (!hooks.stillCurrent()) end?.("the camera was replaced or removed");
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
            const delivery = { frame, done };
            if (waiting) {
              const w = waiting;
              waiting = undefined;
              w(delivery);
              return;
            }
            held = delivery;
          },
          onEnd: (why, cause) => end?.(cause === "stalled" ? `took no frame for ${stallMs / 1000} s` : why),
        });
      },
      pull(controller) {
        const ack = acknowledge;
        acknowledge = undefined;
        ack?.(); // may hand over the frame that waited in the stream, into `held`
        const take = (delivery: Delivery | undefined) => {
          if (!delivery || closed) return;
          const part = mjpegPart(delivery.frame);
          controller.enqueue(part);
          acknowledge = delivery.done;
          hooks.sent(part.length);
        };
        if (held) {
          const h = held;
          held = undefined;
          return take(h);
        }
        if (closed) return;
        return new Promise<void>((resolve) => {
          waiting = (delivery) => {
            take(delivery);
            resolve();
          };
        });
      },
      cancel() {
        close();
      },
    },
    { highWaterMark: 0 },
  );
}
