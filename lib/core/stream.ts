// One producer, many consumers: the fan-out under every camera, the RTSP readers and the MQTT clients.
// The producer publishes values; each consumer has a policy for when it cannot keep up and a budget that says when
// that is: latest value (camera frames: hold only the newest), bounded FIFO (messages: queue, and end the consumer
// on overflow, because a message stream with holes is worse than a reconnect) or skip to the next key frame (RTP).
// A consumer whose write throws is ended alone; drops are counted per consumer and logged as one aggregated line
// per consumer every few seconds, never a line per value (as MediaMTX's readers do).
import type { Logger } from "../log.ts";

export const DROP_REPORT_INTERVAL_MS = 5_000;

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

export type EndCause = "overflow" | "write-failed";

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
  /** The stream ended this consumer: its write threw (the stream logs that), or it overflowed its FIFO budget. */
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

interface Entry<T> {
  options: ConsumerOptions<T>;
  policy: Policy<T>;
  /** What the consumer's stream does for it: drop lines and taking it out of the set. */
  owner: Owner<T>;
  acknowledges: boolean;
  inFlight: boolean;
  /** FIFO: the values waiting; latest value: the newest one waiting (at most one). */
  queue: T[];
  queueHead: number;
  waitingKey: boolean;
  /** Waiting for a key because it fell behind (not because it joined): skipped values count as drops. */
  dropping: boolean;
  delivered: number;
  dropped: number;
  droppedSinceReport: number;
  ended: boolean;
}

interface Owner<T> {
  log?: Logger;
  what: string;
  /** Takes the consumer out of the stream; false when it was out already. */
  detach(e: Entry<T>): boolean;
}

const queued = <T>(e: Entry<T>) => e.queue.length - e.queueHead;

function overBudget<T>(e: Entry<T>): boolean {
  if (e.inFlight) return true;
  const bytes = e.options.budget?.bytes;
  return bytes !== undefined && (e.options.waitingBytes?.() ?? 0) > bytes;
}

function drop<T>(e: Entry<T>): void {
  e.dropped++;
  e.droppedSinceReport++;
}

function reportDrops<T>(e: Entry<T>): void {
  if (e.droppedSinceReport === 0) return;
  e.owner.log?.warn(`${e.options.label} is too slow, dropped ${e.droppedSinceReport} ${e.owner.what}`);
  e.droppedSinceReport = 0;
}

function end<T>(e: Entry<T>, reason: string, cause: EndCause): void {
  if (e.owner.detach(e)) e.options.onEnd?.(reason, cause);
}

const NOTHING_TO_ACKNOWLEDGE = () => {};

/** The `done` for one write of an acknowledging consumer: once only, then what waits goes out. */
function doneOnce<T>(e: Entry<T>): () => void {
  let called = false;
  return () => {
    if (called) return;
    called = true;
    e.inFlight = false;
    if (!e.ended) flush(e);
  };
}

function write<T>(e: Entry<T>, value: T): void {
  try {
    if (e.acknowledges) {
      e.inFlight = true;
      e.options.write(value, doneOnce(e));
    } else e.options.write(value, NOTHING_TO_ACKNOWLEDGE); // RTP and MQTT: no closure per value
    e.delivered++;
  } catch (error) {
    const why = (error as Error)?.message ?? String(error);
    e.owner.log?.warn(`${e.options.label}: ending it, its write failed: ${why}`);
    end(e, `write failed: ${why}`, "write-failed");
  }
}

/** Writes what the stream holds for the consumer while it has room. */
function flush<T>(e: Entry<T>): void {
  while (!e.ended && queued(e) > 0 && !overBudget(e)) {
    const value = e.queue[e.queueHead]!;
    e.queue[e.queueHead++] = undefined as T;
    if (e.queueHead === e.queue.length) {
      e.queue.length = 0;
      e.queueHead = 0;
    } else if (e.queueHead > 1024 && e.queueHead * 2 > e.queue.length) {
      e.queue = e.queue.slice(e.queueHead);
      e.queueHead = 0;
    }
    write(e, value);
  }
}

function offerLatest<T>(e: Entry<T>, value: T): void {
  if (!overBudget(e)) return write(e, value);
  if (queued(e) > 0) drop(e); // the one waiting is replaced by a newer one
  e.queue = [value];
  e.queueHead = 0;
}

function offerFifo<T>(e: Entry<T>, value: T): void {
  if (queued(e) === 0 && !overBudget(e)) return write(e, value);
  const limit = e.options.budget?.count ?? Infinity;
  // Not a drop to report: the consumer ends, and its owner says why (a message stream with holes is worse).
  if (queued(e) >= limit) return end(e, `cannot keep up (${limit} ${e.owner.what} waiting)`, "overflow");
  e.queue.push(value);
}

function offerKeyFrame<T>(e: Entry<T>, value: T, isKey: (value: T) => boolean): void {
  if (e.waitingKey) {
    if (!isKey(value)) {
      if (e.dropping) drop(e);
      return;
    }
    e.waitingKey = false;
    e.dropping = false;
  }
  if (overBudget(e)) {
    e.waitingKey = true;
    e.dropping = true;
    return drop(e);
  }
  write(e, value);
}

function offer<T>(e: Entry<T>, value: T): void {
  if (e.ended || (e.options.accepts && !e.options.accepts(value))) return;
  const policy = e.policy;
  if (policy.kind === "latest") offerLatest(e, value);
  else if (policy.kind === "fifo") offerFifo(e, value);
  else offerKeyFrame(e, value, policy.isKey);
}

function handle<T>(e: Entry<T>): Consumer<T> {
  const remove = () => void e.owner.detach(e);
  return {
    offer: (value) => offer(e, value),
    resume: () => flush(e),
    remove,
    unsubscribe: remove,
    get delivered() {
      return e.delivered;
    },
    get dropped() {
      return e.dropped;
    },
    get skipped() {
      return e.dropped;
    },
    get waitingForKey() {
      return e.waitingKey;
    },
    get queued() {
      return queued(e);
    },
    get ended() {
      return e.ended;
    },
  };
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
      e.ended = true;
      entries.delete(e);
      e.queue = [];
      e.queueHead = 0;
      reportDrops(e); // before forgetting it, or its last drops would never be logged
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
      const policy = consumerOptions.policy ?? { kind: "latest" };
      const e: Entry<T> = {
        options: consumerOptions, policy, owner, acknowledges: consumerOptions.acknowledges ?? policy.kind === "latest",
        inFlight: false, queue: [], queueHead: 0, waitingKey: policy.kind === "key-frame", dropping: false,
        delivered: 0, dropped: 0, droppedSinceReport: 0, ended: false,
      };
      entries.add(e);
      if (options.log && !reportTimer) {
        reportTimer = setInterval(() => entries.forEach(reportDrops), reportIntervalMs);
        reportTimer.unref?.();
      }
      if (consumerOptions.replayLatest && hasNewest) offer(e, newest as T);
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
