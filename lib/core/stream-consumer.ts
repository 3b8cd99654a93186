// The per-consumer half of the stream core (core/stream.ts): what one consumer's policy does with a value it is
// offered, its writes and acknowledgements, its stall deadline, its drop count and its end.
import type { Logger } from "../log.ts";
import type { Consumer, ConsumerOptions, EndCause, Policy } from "./stream.ts";

export interface Entry<T> {
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
  /** Runs while an acknowledging write is not done, when the consumer has a stall deadline. */
  stallTimer: ReturnType<typeof setTimeout> | undefined;
  /** Acknowledging consumers: writes handed over so far; the one in flight is number `writes`. */
  writes: number;
  /**
   * The `done` of even and of odd writes, made once per consumer (nothing allocated per write). Each acknowledges
   * a write in flight of its own parity: a late second call, made while the next write is in flight, is ignored.
   * (One made two writes late would acknowledge that one; the callers call done once, from their write callback.)
   */
  dones: [() => void, () => void];
}

export interface Owner<T> {
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

export function reportDrops<T>(e: Entry<T>): void {
  if (e.droppedSinceReport === 0) return;
  e.owner.log?.warn(`${e.options.label} is too slow, dropped ${e.droppedSinceReport} ${e.owner.what}`);
  e.droppedSinceReport = 0;
}

function end<T>(e: Entry<T>, reason: string, cause: EndCause): void {
  if (e.owner.detach(e)) e.options.onEnd?.(reason, cause);
}

function armStall<T>(e: Entry<T>): void {
  const ms = e.options.stallMs;
  if (ms === undefined) return;
  e.stallTimer = setTimeout(() => end(e, `accepted nothing for ${Math.round(ms / 1000)} s`, "stalled"), ms);
  e.stallTimer.unref?.();
}

function clearStall<T>(e: Entry<T>): void {
  if (e.stallTimer === undefined) return;
  clearTimeout(e.stallTimer);
  e.stallTimer = undefined;
}

export function createEntry<T>(options: ConsumerOptions<T>, owner: Owner<T>): Entry<T> {
  const policy = options.policy ?? { kind: "latest" };
  const e: Entry<T> = {
    options, policy, owner, acknowledges: options.acknowledges ?? policy.kind === "latest",
    inFlight: false, queue: [], queueHead: 0, waitingKey: policy.kind === "key-frame", dropping: false,
    delivered: 0, dropped: 0, droppedSinceReport: 0, ended: false, stallTimer: undefined,
    writes: 0, dones: [NOTHING_TO_ACKNOWLEDGE, NOTHING_TO_ACKNOWLEDGE],
  };
  if (e.acknowledges) e.dones = [() => acknowledge(e, 0), () => acknowledge(e, 1)];
  return e;
}

/** The consumer is out of its stream: nothing waits for it any more, and its outstanding drops are logged. */
export function retire<T>(e: Entry<T>): void {
  e.ended = true;
  clearStall(e);
  e.queue = [];
  e.queueHead = 0;
  reportDrops(e); // before forgetting it, or its last drops would never be logged
}

function NOTHING_TO_ACKNOWLEDGE(): void {}

/** A `done` of the even (0) or odd (1) writes: the write in flight, if it is of that parity, is done. */
function acknowledge<T>(e: Entry<T>, parity: 0 | 1): void {
  if (!e.inFlight || (e.writes & 1) !== parity) return;
  e.inFlight = false;
  clearStall(e);
  if (!e.ended) flush(e);
}

function write<T>(e: Entry<T>, value: T): void {
  try {
    if (e.acknowledges) {
      e.inFlight = true;
      armStall(e);
      e.options.write(value, e.dones[++e.writes & 1]!);
    } else e.options.write(value, NOTHING_TO_ACKNOWLEDGE); // RTP and MQTT: nothing to acknowledge
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

export function offer<T>(e: Entry<T>, value: T): void {
  if (e.ended || (e.options.accepts && !e.options.accepts(value))) return;
  const policy = e.policy;
  if (policy.kind === "latest") offerLatest(e, value);
  else if (policy.kind === "fifo") offerFifo(e, value);
  else offerKeyFrame(e, value, policy.isKey);
}

export function handle<T>(e: Entry<T>): Consumer<T> {
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
