// What is left of core/broadcast.ts: the bounded FIFO and the latest-value stream's old name (the fan-out is tests/core-stream.test.ts).
import { describe, expect, test } from "bun:test";
import { createBoundedQueue, createLatestBroadcast } from "../lib/core/broadcast.ts";

test("the old name still makes a latest-value stream (tests that build a camera feed by hand use it)", () => {
  const b = createLatestBroadcast<number>();
  const got: number[] = [];
  b.subscribe((v, done) => (got.push(v), done()), { replayLatest: true });
  b.publish(1);
  expect(got).toEqual([1]);
  expect(b.latest()).toBe(1);
});

describe("bounded queue", () => {
  test("first in, first out", () => {
    const q = createBoundedQueue<number>(10, () => {});
    for (let i = 0; i < 5; i++) q.push(i);
    expect([q.shift(), q.shift()]).toEqual([0, 1]);
    q.push(5);
    expect(q.length).toBe(4);
    expect([q.shift(), q.shift(), q.shift(), q.shift(), q.shift()]).toEqual([2, 3, 4, 5, undefined]);
  });

  test("overflow refuses the value and calls onOverflow once", () => {
    let overflows = 0;
    const q = createBoundedQueue<string>(3, () => overflows++);
    expect(["a", "b", "c"].map((v) => q.push(v))).toEqual([true, true, true]);
    expect(q.push("d")).toBe(false);
    expect(q.push("e")).toBe(false);
    expect(overflows).toBe(1);
    expect(q.length).toBe(3);
    expect(q.shift()).toBe("a");
    expect(q.push("f")).toBe(true); // room again
    q.clear();
    expect(q.length).toBe(0);
  });

  test("stays correct across many pushes and shifts (internal compaction)", () => {
    const q = createBoundedQueue<number>(5000, () => {
      throw new Error("no overflow expected");
    });
    let next = 0;
    let expected = 0;
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 3000; i++) q.push(next++);
      for (let i = 0; i < 2990; i++) expect(q.shift()).toBe(expected++);
    }
    expect(q.length).toBe(next - expected);
  });
});
