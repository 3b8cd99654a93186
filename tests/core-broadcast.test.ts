// One producer, many consumers: latest-wins for frames (skips counted and reported), bounded FIFO for messages.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createBoundedQueue, createLatestBroadcast, DROP_REPORT_INTERVAL_MS } from "../lib/core/broadcast.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";

let capture: ReturnType<typeof captureLogs>;
beforeAll(() => {
  setupLogging("debug", { quiet: true });
  capture = captureLogs();
});
afterAll(() => capture.stop());

describe("latest-wins broadcast", () => {
  test("a slow consumer gets only the newest value next; the skipped ones are counted; a fast one gets all", () => {
    const b = createLatestBroadcast<number>();
    const fast: number[] = [];
    const slow: number[] = [];
    let finishSlow: (() => void) | undefined;
    b.subscribe((v, done) => (fast.push(v), done()));
    const slowSub = b.subscribe((v, done) => {
      slow.push(v);
      finishSlow = done;
    });
    for (let i = 1; i <= 5; i++) b.publish(i);
    expect(fast).toEqual([1, 2, 3, 4, 5]);
    expect(slow).toEqual([1]); // busy with 1
    finishSlow!();
    expect(slow).toEqual([1, 5]); // 2, 3, 4 replaced by newer values
    expect(slowSub.skipped).toBe(3);
    finishSlow!();
    b.publish(6);
    expect(slow).toEqual([1, 5, 6]);
    expect(b.published).toBe(6);
    expect(b.consumers).toBe(2);
  });

  test("calling done twice does not deliver twice", () => {
    const b = createLatestBroadcast<string>();
    const got: string[] = [];
    let done: (() => void) | undefined;
    b.subscribe((v, d) => (got.push(v), (done = d)));
    b.publish("a");
    b.publish("b");
    done!();
    done!();
    expect(got).toEqual(["a", "b"]);
    b.publish("c");
    expect(got).toEqual(["a", "b", "c"]);
  });

  test("replayLatest hands a new consumer the newest value at once; clear() forgets it", () => {
    const b = createLatestBroadcast<string>();
    b.publish("old");
    b.publish("new");
    const got: string[] = [];
    b.subscribe((v, done) => (got.push(v), done()), { replayLatest: true });
    expect(got).toEqual(["new"]);
    const without: string[] = [];
    b.subscribe((v, done) => (without.push(v), done()));
    expect(without).toEqual([]);
    b.clear();
    expect(b.latest()).toBeUndefined();
    const late: string[] = [];
    b.subscribe((v, done) => (late.push(v), done()), { replayLatest: true });
    expect(late).toEqual([]);
  });

  test("an unsubscribed consumer gets nothing more, even a pending value", () => {
    const b = createLatestBroadcast<number>();
    const got: number[] = [];
    let done: (() => void) | undefined;
    const sub = b.subscribe((v, d) => (got.push(v), (done = d)));
    b.publish(1);
    b.publish(2);
    sub.unsubscribe();
    done!();
    b.publish(3);
    expect(got).toEqual([1]);
    expect(b.consumers).toBe(0);
  });

  test("skips are logged as one aggregated line per consumer, not a line per value", () => {
    const log = serviceLogger("p1s", "chamber");
    const b = createLatestBroadcast<number>({ log, what: "frames" });
    const before = capture.lines.length;
    const sub = b.subscribe(() => {}, { label: "viewer 127.0.1.50:4000" }); // never done: always busy
    for (let i = 0; i < 100; i++) b.publish(i);
    expect(capture.lines.length).toBe(before); // nothing per frame
    sub.unsubscribe(); // reports what is outstanding
    const lines = capture.lines.slice(before);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("[p1s/chamber] viewer 127.0.1.50:4000 is too slow, skipped 98 frames");
    expect(DROP_REPORT_INTERVAL_MS).toBeGreaterThan(0);
  });
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
