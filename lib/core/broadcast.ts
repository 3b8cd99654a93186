// What is left of the old fan-out: the bounded FIFO the MQTT clients still use, and the latest-value broadcast's
// old name for tests that build a camera feed by hand. The fan-out itself is core/stream.ts.
import { createStream, type Stream, type StreamOptions } from "./stream.ts";

/** The camera streams' old name: a stream whose consumers take the latest value (see core/stream.ts). */
export type LatestBroadcast<T> = Stream<T>;
export const createLatestBroadcast = <T>(options: StreamOptions = {}): LatestBroadcast<T> => createStream<T>(options);

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
