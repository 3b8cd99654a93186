// One producer, many consumers. Two disciplines:
// - latest-wins (camera frames): a consumer still busy with one value gets only the newest next; the values it
//   skipped are counted and reported as one aggregated line every few seconds (never a line per frame);
// - bounded FIFO (messages): each consumer owns a queue of at most N values; overflow calls `onOverflow` (the
//   owner usually disconnects that client), because a message stream with holes is worse than a reconnect.
import type { Logger } from "../log.ts";

export const DROP_REPORT_INTERVAL_MS = 5_000;

/** A consumer gets a value and calls `done` once it can take another (e.g. on socket drain). */
export type Deliver<T> = (value: T, done: () => void) => void;

export interface Subscription {
  unsubscribe(): void;
  /** Values this consumer skipped so far. */
  readonly skipped: number;
}

export interface LatestBroadcast<T> {
  publish(value: T): void;
  /** Subscribes; the newest value (if any) is delivered at once when `replayLatest` is true. */
  subscribe(deliver: Deliver<T>, options?: { replayLatest?: boolean; label?: string }): Subscription;
  latest(): T | undefined;
  /** Forget the newest value (e.g. when it is too old to show). */
  clear(): void;
  readonly consumers: number;
  readonly published: number;
}

export function createLatestBroadcast<T>(options: { log?: Logger; what?: string } = {}): LatestBroadcast<T> {
  interface Consumer {
    deliver: Deliver<T>;
    busy: boolean;
    pending: T | undefined;
    hasPending: boolean;
    skipped: number;
    skippedSinceReport: number;
    label: string;
    closed: boolean;
  }
  const consumers = new Set<Consumer>();
  let newest: T | undefined;
  let hasNewest = false;
  let published = 0;
  let reportTimer: ReturnType<typeof setInterval> | undefined;

  const report = () => {
    for (const c of consumers) {
      if (c.skippedSinceReport > 0) {
        options.log?.info(`${c.label} is too slow, skipped ${c.skippedSinceReport} ${options.what ?? "values"}`);
        c.skippedSinceReport = 0;
      }
    }
  };

  const send = (c: Consumer, value: T) => {
    c.busy = true;
    let called = false;
    c.deliver(value, () => {
      if (called) return;
      called = true;
      c.busy = false;
      if (!c.closed && c.hasPending) {
        const next = c.pending as T;
        c.pending = undefined;
        c.hasPending = false;
        send(c, next);
      }
    });
  };

  return {
    publish(value) {
      newest = value;
      hasNewest = true;
      published++;
      for (const c of consumers) {
        if (!c.busy) send(c, value);
        else {
          if (c.hasPending) {
            c.skipped++;
            c.skippedSinceReport++;
          }
          c.pending = value;
          c.hasPending = true;
        }
      }
    },
    subscribe(deliver, subscribeOptions = {}) {
      const c: Consumer = {
        deliver, busy: false, pending: undefined, hasPending: false, skipped: 0, skippedSinceReport: 0,
        label: subscribeOptions.label ?? "a consumer", closed: false,
      };
      consumers.add(c);
      if (options.log && !reportTimer) {
        reportTimer = setInterval(report, DROP_REPORT_INTERVAL_MS);
        reportTimer.unref?.();
      }
      if (subscribeOptions.replayLatest && hasNewest) send(c, newest as T);
      return {
        unsubscribe() {
          c.closed = true;
          // Report before forgetting the consumer, or its last skips would never be logged.
          if (c.skippedSinceReport > 0) report();
          consumers.delete(c);
          if (consumers.size === 0 && reportTimer) {
            clearInterval(reportTimer);
            reportTimer = undefined;
          }
        },
        get skipped() {
          return c.skipped;
        },
      };
    },
    latest: () => (hasNewest ? newest : undefined),
    clear() {
      newest = undefined;
      hasNewest = false;
    },
    get consumers() {
      return consumers.size;
    },
    get published() {
      return published;
    },
  };
}

export interface BoundedQueue<T> {
  push(value: T): boolean;
  shift(): T | undefined;
  readonly length: number;
  clear(): void;
}

/** A FIFO of at most `limit` values; `push` returns false (and calls onOverflow once) when full. */
export function createBoundedQueue<T>(limit: number, onOverflow: () => void): BoundedQueue<T> {
  let items: T[] = [];
  let head = 0;
  let overflowed = false;
  return {
    push(value) {
      if (items.length - head >= limit) {
        if (!overflowed) {
          overflowed = true;
          onOverflow();
        }
        return false;
      }
      items.push(value);
      return true;
    },
    shift() {
      if (head >= items.length) return undefined;
      const value = items[head++];
      if (head > 1024 && head * 2 > items.length) {
        items = items.slice(head);
        head = 0;
      }
      return value;
    },
    get length() {
      return items.length - head;
    },
    clear() {
      items = [];
      head = 0;
    },
  };
}
