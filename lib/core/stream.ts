// One producer, many consumers: the fan-out under every camera, the RTSP readers and the MQTT clients.
// The producer publishes values; each consumer has a policy for when it cannot keep up and a budget that says when
// that is: latest value (camera frames: hold only the newest), bounded FIFO (messages: queue, and end the consumer
// on overflow, because a message stream with holes is worse than a reconnect) or skip to the next key frame (RTP).
// A consumer whose write throws, or that accepts nothing for its stall deadline, is ended alone; drops are counted
// per consumer and logged as one aggregated line per consumer every few seconds, never a line per value (as MediaMTX's
// readers do). The per-consumer steps are core/stream-consumer.ts.
import type { Logger } from "../log.ts";
import { createEntry, handle, offer, reportDrops, retire, type Entry, type Owner } from "./stream-consumer.ts";

export const DROP_REPORT_INTERVAL_MS = 5_000;
/** A camera frame older than this is not live: no viewer of any kind is handed it as the current picture. */
export const LIVE_FRAME_MAX_AGE_MS = 3_000;

/** Whether a camera frame is still live (the `fresh` test every camera viewer uses). */
export const liveFrame = (frame: { receivedAt: number }): boolean => Date.now() - frame.receivedAt <= LIVE_FRAME_MAX_AGE_MS;

export type Policy<T> =
  | { kind: "latest" }
  | { kind: "fifo" }
  | { kind: "key-frame"; isKey: (value: T) => boolean };

export interface Budget {
  /** Bytes that may wait on the consumer's side (as `waitingBytes` measures them) before its policy steps in. */
  bytes?: number;
  /** FIFO only: values the stream may queue for the consumer; one more ends it (overflow). */
  count?: number;
}

export type EndCause = "overflow" | "write-failed" | "stalled";

export interface ConsumerOptions<T> {
  /** "viewer 127.0.0.1:5000": what the drop lines name. */
  label: string;
  /** Default: latest value. */
  policy?: Policy<T>;
  /** Hands one value over. An acknowledging consumer calls `done` once it can take another (its write finished). */
  write(value: T, done: () => void): void;
  /** Default: true for the latest-value policy, false for the others (their writes count as done at once). */
  acknowledges?: boolean;
  budget?: Budget;
  /** Bytes waiting on the consumer's side now, e.g. its socket's writableLength. */
  waitingBytes?(): number;
  /** Values this consumer does not take at all (not its track, not its topic); they are not drops. */
  accepts?(value: T): boolean;
  /** Hand the newest value (if any) over at once. */
  replayLatest?: boolean;
  /**
   * Freshness: a value this says is too old (a camera frame from before an outage) is never handed over: not
   * replayed, and passed over (acknowledged unwritten) when it waited that long for a slow consumer.
   */
  fresh?(value: T): boolean;
  /**
   * Acknowledging consumers: a write not done within this long ends the consumer (cause "stalled", reason "accepted
   * nothing for N s"); its owner logs the line, it knows the peer. Default: no deadline.
   */
  stallMs?: number;
  /** The stream ended this consumer: its write threw (the stream logs that), it overflowed its FIFO budget, or it stalled. */
  onEnd?(reason: string, cause: EndCause): void;
}

export interface Consumer<T> {
  /** Hand this consumer alone a value under its policy (a reply to its own request, in order with the rest). */
  offer(value: T): void;
  /** The consumer's side has room again (its socket drained): write what waits. */
  resume(): void;
  /** The owner is done with it: nothing more is written; its outstanding drops are reported now. */
  remove(): void;
  /** Same as remove (the name the camera code used). */
  unsubscribe(): void;
  readonly delivered: number;
  readonly dropped: number;
  /** Same as dropped (the name the camera code used). */
  readonly skipped: number;
  /** Key-frame policy: nothing goes out until the next key value (it just joined, fell behind, or a producer restarted). */
  readonly waitingForKey: boolean;
  /** Values the stream holds for it (FIFO queue, or the newest frame waiting). */
  readonly queued: number;
  readonly ended: boolean;
}

export interface Stream<T> {
  publish(value: T): void;
  addConsumer(options: ConsumerOptions<T>): Consumer<T>;
  /** A latest-value consumer that acknowledges with `done` (the camera viewers' shape). */
  subscribe(write: (value: T, done: () => void) => void, options?: { replayLatest?: boolean; label?: string }): Consumer<T>;
  /** A new producer started: every key-frame consumer waits for the next key value (not counted as drops). */
  awaitKeyFrame(): void;
  latest(): T | undefined;
  /** Forget the newest value (e.g. when it is too old to show). */
  clear(): void;
  readonly consumers: number;
  readonly published: number;
}

export interface StreamOptions {
  log?: Logger;
  /** What the values are, for the drop lines: "frames", "packets", "messages". */
  what?: string;
  /** How often outstanding drops are logged (tests shorten it). */
  reportIntervalMs?: number;
}

function freshOnly<T>(options: ConsumerOptions<T>): ConsumerOptions<T> {
  const { fresh, write } = options;
  if (!fresh) return options;
  return { ...options, write: (value, done) => (fresh(value) ? write(value, done) : done()) };
}

export function createStream<T>(options: StreamOptions = {}): Stream<T> {
  const entries = new Set<Entry<T>>();
  const reportIntervalMs = options.reportIntervalMs ?? DROP_REPORT_INTERVAL_MS;
  let newest: T | undefined;
  let hasNewest = false;
  let published = 0;
  let reportTimer: ReturnType<typeof setInterval> | undefined;

  const owner: Owner<T> = {
    log: options.log,
    what: options.what ?? "values",
    detach(e) {
      if (e.ended) return false;
      entries.delete(e);
      retire(e);
      if (entries.size === 0 && reportTimer) {
        clearInterval(reportTimer);
        reportTimer = undefined;
      }
      return true;
    },
  };

  const stream: Stream<T> = {
    publish(value) {
      newest = value;
      hasNewest = true;
      published++;
      for (const e of entries) offer(e, value);
    },
    addConsumer(consumerOptions) {
      const e = createEntry(freshOnly(consumerOptions), owner);
      entries.add(e);
      if (options.log && !reportTimer) {
        reportTimer = setInterval(() => entries.forEach(reportDrops), reportIntervalMs);
        reportTimer.unref?.();
      }
      if (consumerOptions.replayLatest && hasNewest && (consumerOptions.fresh?.(newest as T) ?? true)) offer(e, newest as T);
      return handle(e);
    },
    subscribe(write, subscribeOptions = {}) {
      return stream.addConsumer({ label: subscribeOptions.label ?? "a consumer", write, replayLatest: subscribeOptions.replayLatest });
    },
    awaitKeyFrame() {
      for (const e of entries) if (e.policy.kind === "key-frame") e.waitingKey = true;
    },
    latest: () => (hasNewest ? newest : undefined),
    clear() {
      newest = undefined;
      hasNewest = false;
    },
    get consumers() {
      return entries.size;
    },
    get published() {
      return published;
    },
  };
  return stream;
}

/** How often a wait for the next value asks whether waiting is pointless. */
export const GIVE_UP_POLL_MS = 200;

/**
 * The next value `stream` publishes (not the one it holds), or undefined after `waitMs`, or as soon as `giveUp()`
 * says waiting is pointless (e.g. the printer refused our code).
 */
export function nextValue<T>(stream: Pick<Stream<T>, "subscribe">, waitMs: number, giveUp?: () => boolean, label = "a snapshot"): Promise<T | undefined> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (value: T | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(poll);
      queueMicrotask(() => subscription.unsubscribe());
      resolve(value);
    };
    const timer = setTimeout(() => finish(undefined), waitMs);
    const poll = setInterval(() => giveUp?.() && finish(undefined), GIVE_UP_POLL_MS);
    const subscription = stream.subscribe((value, done) => {
      done();
      finish(value);
    }, { label });
  });
}
