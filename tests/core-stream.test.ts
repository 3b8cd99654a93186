// The stream core: one producer, many consumers, each with its policy and budget; a failing consumer ends alone;
// drops are logged as one aggregated line per consumer. No sockets: consumers are plain functions.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createStream, DROP_REPORT_INTERVAL_MS } from "../lib/core/stream.ts";
import { createRateMeter, FRAME_RATE_WINDOW_MS, MAX_RATE_SAMPLES } from "../lib/core/rate.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";

let capture: ReturnType<typeof captureLogs>;
beforeAll(() => {
  setupLogging("debug", { quiet: true });
  capture = captureLogs();
});
afterAll(() => capture.stop());

describe("latest value (camera frames)", () => {
  test("a slow consumer gets only the newest value next and never delays a fast one", () => {
    const s = createStream<number>();
    const fast: number[] = [];
    const slow: number[] = [];
    let finishSlow: (() => void) | undefined;
    s.subscribe((v, done) => (fast.push(v), done()));
    const slowConsumer = s.subscribe((v, done) => {
      slow.push(v);
      finishSlow = done;
    });
    for (let i = 1; i <= 5; i++) s.publish(i);
    expect(fast).toEqual([1, 2, 3, 4, 5]);
    expect(slow).toEqual([1]); // busy with 1
    finishSlow!();
    expect(slow).toEqual([1, 5]); // 2, 3, 4 replaced by newer values
    expect(slowConsumer.dropped).toBe(3);
    finishSlow!();
    s.publish(6);
    expect(slow).toEqual([1, 5, 6]);
    expect(s.published).toBe(6);
    expect(s.consumers).toBe(2);
  });

  test("calling done twice does not deliver twice", () => {
    const s = createStream<string>();
    const got: string[] = [];
    let done: (() => void) | undefined;
    s.subscribe((v, d) => (got.push(v), (done = d)));
    s.publish("a");
    s.publish("b");
    done!();
    done!();
    expect(got).toEqual(["a", "b"]);
    s.publish("c");
    expect(got).toEqual(["a", "b", "c"]);
  });

  test("a stale done, called again once the consumer's next write began, does not acknowledge that write", () => {
    const s = createStream<string>();
    const got: string[] = [];
    const dones: (() => void)[] = [];
    s.subscribe((v, d) => (got.push(v), dones.push(d)));
    s.publish("a");
    dones[0]!();
    s.publish("b"); // in flight
    dones[0]!(); // late, from the write of "a"
    s.publish("c");
    expect(got).toEqual(["a", "b"]); // "c" still waits for "b"
    dones[1]!();
    expect(got).toEqual(["a", "b", "c"]);
  });

  test("an acknowledging consumer's writes reuse two done callbacks made once (nothing per write)", () => {
    const s = createStream<number>();
    const dones: (() => void)[] = [];
    s.subscribe((_v, d) => (dones.push(d), d()));
    for (let i = 0; i < 6; i++) s.publish(i);
    expect(dones).toHaveLength(6);
    expect(new Set(dones).size).toBe(2);
    expect(dones[0]).toBe(dones[2]!);
    expect(dones[1]).toBe(dones[3]!);
  });

  test("replay hands a new consumer the newest value at once; clear() forgets it", () => {
    const s = createStream<string>();
    s.publish("old");
    s.publish("new");
    const got: string[] = [];
    s.subscribe((v, done) => (got.push(v), done()), { replayLatest: true });
    expect(got).toEqual(["new"]);
    const without: string[] = [];
    s.subscribe((v, done) => (without.push(v), done()));
    expect(without).toEqual([]);
    s.clear();
    expect(s.latest()).toBeUndefined();
    const late: string[] = [];
    s.subscribe((v, done) => (late.push(v), done()), { replayLatest: true });
    expect(late).toEqual([]);
  });

  test("a removed consumer gets nothing more, even the value that waited for it", () => {
    const s = createStream<number>();
    const got: number[] = [];
    let done: (() => void) | undefined;
    const consumer = s.subscribe((v, d) => (got.push(v), (done = d)));
    s.publish(1);
    s.publish(2);
    consumer.remove();
    done!();
    s.publish(3);
    expect(got).toEqual([1]);
    expect(s.consumers).toBe(0);
    expect(consumer.ended).toBe(true);
  });

  test("a bytes budget: over it the consumer holds only the newest value until it resumes", () => {
    const s = createStream<number>();
    let waiting = 0;
    const got: number[] = [];
    const c = s.addConsumer({ label: "c", acknowledges: false, budget: { bytes: 100 }, waitingBytes: () => waiting, write: (v) => got.push(v) });
    s.publish(1);
    waiting = 500;
    s.publish(2);
    s.publish(3);
    expect(got).toEqual([1]);
    expect(c.queued).toBe(1);
    waiting = 0;
    c.resume();
    expect(got).toEqual([1, 3]);
    expect(c.dropped).toBe(1);
  });
});

describe("bounded FIFO (messages)", () => {
  test("first in, first out, in order with values offered to this consumer alone", () => {
    const s = createStream<string>();
    const a: string[] = [];
    const b: string[] = [];
    const ca = s.addConsumer({ label: "a", policy: { kind: "fifo" }, write: (v) => a.push(v) });
    s.addConsumer({ label: "b", policy: { kind: "fifo" }, write: (v) => b.push(v) });
    s.publish("r1");
    ca.offer("suback");
    s.publish("r2");
    expect(a).toEqual(["r1", "suback", "r2"]);
    expect(b).toEqual(["r1", "r2"]);
  });

  test("over its bytes budget a consumer queues; resume writes the queue while it has room", () => {
    const s = createStream<number>();
    let waiting = 0;
    const got: number[] = [];
    const c = s.addConsumer({
      label: "slow", policy: { kind: "fifo" }, budget: { bytes: 10, count: 100 }, waitingBytes: () => waiting,
      write: (v) => {
        got.push(v);
        waiting += 4;
      },
    });
    for (let i = 0; i < 6; i++) s.publish(i);
    expect(got).toEqual([0, 1, 2]); // 12 bytes waiting > 10
    expect(c.queued).toBe(3);
    waiting = 0;
    c.resume();
    expect(got).toEqual([0, 1, 2, 3, 4, 5]);
    expect(c.dropped).toBe(0);
  });

  test("one value over its count budget ends that consumer alone through onEnd; the others keep receiving", () => {
    const s = createStream<number>();
    const ends: string[] = [];
    const fast: number[] = [];
    const slow = s.addConsumer({
      label: "slow", policy: { kind: "fifo" }, budget: { bytes: 0, count: 3 }, waitingBytes: () => 1,
      write: () => {}, onEnd: (why, cause) => ends.push(`${cause}: ${why}`),
    });
    s.addConsumer({ label: "fast", policy: { kind: "fifo" }, write: (v) => fast.push(v) });
    for (let i = 0; i < 10; i++) s.publish(i);
    expect(ends).toHaveLength(1);
    expect(ends[0]).toStartWith("overflow: cannot keep up (3");
    expect(slow.ended).toBe(true);
    expect(slow.queued).toBe(0);
    expect(fast).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(s.consumers).toBe(1);
  });

  test("stays in order across many queued values (internal compaction)", () => {
    const s = createStream<number>();
    let room = false;
    const got: number[] = [];
    const c = s.addConsumer({ label: "c", policy: { kind: "fifo" }, budget: { bytes: 0, count: 5_000 }, waitingBytes: () => (room ? 0 : 1), write: (v) => got.push(v) });
    let next = 0;
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 3_000; i++) s.publish(next++);
      room = true;
      c.resume();
      room = false;
    }
    expect(got).toHaveLength(next);
    expect(got.every((v, i) => v === i)).toBe(true);
  });
});

describe("skip to the next key frame (RTP)", () => {
  interface Packet {
    n: number;
    key: boolean;
  }
  const packets = (spec: string): Packet[] => [...spec].map((ch, n) => ({ n, key: ch === "K" }));
  const keyFrames = { kind: "key-frame" as const, isKey: (p: Packet) => p.key };

  test("a new consumer starts at the next key frame; what it missed before is not a drop", () => {
    const s = createStream<Packet>();
    const got: number[] = [];
    const c = s.addConsumer({ label: "r", policy: keyFrames, write: (p) => got.push(p.n) });
    for (const p of packets("ddKdd")) s.publish(p);
    expect(got).toEqual([2, 3, 4]);
    expect(c.dropped).toBe(0);
    expect(c.delivered).toBe(3);
  });

  test("a consumer over its bytes budget drops up to the next key frame; the others get every packet", () => {
    const s = createStream<Packet>();
    let backlog = 0;
    const slow: number[] = [];
    const fast: number[] = [];
    const c = s.addConsumer({ label: "slow", policy: keyFrames, budget: { bytes: 1000 }, waitingBytes: () => backlog, write: (p) => slow.push(p.n) });
    s.addConsumer({ label: "fast", policy: keyFrames, write: (p) => fast.push(p.n) });
    const all = packets("KddddKdd");
    s.publish(all[0]!);
    s.publish(all[1]!);
    backlog = 5000; // its socket backs up
    s.publish(all[2]!);
    backlog = 0; // drained, but the frame it broke is useless: wait for the key
    s.publish(all[3]!);
    s.publish(all[4]!);
    s.publish(all[5]!);
    s.publish(all[6]!);
    expect(slow).toEqual([0, 1, 5, 6]);
    expect(fast).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(c.dropped).toBe(3);
    expect(c.waitingForKey).toBe(false);
  });

  test("awaitKeyFrame (a producer restart) makes consumers wait for a key without counting drops", () => {
    const s = createStream<Packet>();
    const got: number[] = [];
    const c = s.addConsumer({ label: "r", policy: keyFrames, write: (p) => got.push(p.n) });
    for (const p of packets("Kdd")) s.publish(p);
    s.awaitKeyFrame();
    expect(c.waitingForKey).toBe(true);
    s.publish({ n: 10, key: false });
    s.publish({ n: 11, key: true });
    expect(got).toEqual([0, 1, 2, 11]);
    expect(c.dropped).toBe(0);
  });

  test("values a consumer does not accept are neither written nor dropped", () => {
    const s = createStream<Packet>();
    const got: number[] = [];
    const c = s.addConsumer({ label: "r", policy: keyFrames, accepts: (p) => p.n % 2 === 0, write: (p) => got.push(p.n) });
    for (const p of packets("KKKKK")) s.publish(p);
    expect(got).toEqual([0, 2, 4]);
    expect(c.dropped).toBe(0);
  });
});

describe("failing consumers", () => {
  for (const kind of ["latest", "fifo", "key-frame"] as const) {
    test(`a ${kind} consumer whose write throws is ended alone; the others keep receiving`, () => {
      const s = createStream<number>({ log: serviceLogger("p1s", "stream-test") });
      const policy = kind === "key-frame" ? { kind, isKey: () => true } : { kind };
      const before: number[] = [];
      const after: number[] = [];
      const ends: string[] = [];
      s.addConsumer({ label: "before", policy, acknowledges: false, write: (v) => before.push(v) });
      const broken = s.addConsumer({
        label: "broken", policy, acknowledges: false, onEnd: (why) => ends.push(why),
        write: (v) => {
          if (v === 2) throw new Error("socket gone");
        },
      });
      s.addConsumer({ label: "after", policy, acknowledges: false, write: (v) => after.push(v) });
      for (let i = 1; i <= 4; i++) s.publish(i);
      expect(before).toEqual([1, 2, 3, 4]);
      expect(after).toEqual([1, 2, 3, 4]);
      expect(broken.ended).toBe(true);
      expect(ends).toEqual(["write failed: socket gone"]);
      expect(s.consumers).toBe(2);
    });
  }

  test("a consumer that throws while the newest frame is handed to it on replay does not break subscribing", () => {
    const s = createStream<number>();
    s.publish(1);
    const c = s.subscribe(() => {
      throw new Error("boom");
    }, { replayLatest: true });
    expect(c.ended).toBe(true);
    const got: number[] = [];
    s.subscribe((v, done) => (got.push(v), done()), { replayLatest: true });
    expect(got).toEqual([1]);
  });
});

describe("stall deadline", () => {
  test("a consumer that accepts nothing for its stall deadline is ended alone (cause stalled); the others keep receiving", async () => {
    const s = createStream<number>();
    const ends: [string, string][] = [];
    const stuck = s.addConsumer({ label: "stuck", stallMs: 30, write: () => {}, onEnd: (why, cause) => ends.push([why, cause]) });
    const got: number[] = [];
    s.addConsumer({ label: "keeps up", stallMs: 30, write: (v, done) => (got.push(v), done()) });
    s.publish(1);
    for (let i = 0; i < 200 && !stuck.ended; i++) await Bun.sleep(10);
    expect(stuck.ended).toBe(true);
    expect(ends).toEqual([["accepted nothing for 0 s", "stalled"]]);
    s.publish(2);
    expect(got).toEqual([1, 2]);
    expect(s.consumers).toBe(1);
  });

  test("the deadline runs only while a write is not done: a consumer that is waiting for values is not stalled", async () => {
    const s = createStream<number>();
    let pending: (() => void) | undefined;
    const c = s.addConsumer({ label: "slow but alive", stallMs: 40, write: (_v, done) => void (pending = done) });
    s.publish(1);
    pending!(); // done in time
    await Bun.sleep(100); // nothing in flight: no deadline
    expect(c.ended).toBe(false);
    s.publish(2);
    for (let i = 0; i < 200 && !c.ended; i++) await Bun.sleep(10);
    expect(c.ended).toBe(true);
  });

  test("a removed consumer's deadline does not fire", async () => {
    const s = createStream<number>();
    const ends: string[] = [];
    const c = s.addConsumer({ label: "gone", stallMs: 20, write: () => {}, onEnd: (why) => ends.push(why) });
    s.publish(1);
    c.remove();
    await Bun.sleep(60);
    expect(ends).toEqual([]);
  });
});

describe("aggregated drop lines", () => {
  test("one warn line per consumer per interval, never a line per value; removal reports what is outstanding", async () => {
    const log = serviceLogger("p1s", "chamber");
    const s = createStream<number>({ log, what: "frames", reportIntervalMs: 20 });
    const before = capture.lines.length;
    const stuck = s.subscribe(() => {}, { label: "viewer 127.0.30.50:4000" }); // never done: always busy
    const other = s.subscribe(() => {}, { label: "viewer 127.0.30.51:4000" });
    for (let i = 0; i < 100; i++) s.publish(i);
    expect(capture.lines.length).toBe(before); // nothing per frame
    const until = Date.now() + 2_000;
    while (capture.lines.length < before + 2 && Date.now() < until) await Bun.sleep(10);
    const lines = capture.lines.slice(before);
    expect(lines).toHaveLength(2);
    expect(lines.join("\n")).toContain("[p1s/chamber] viewer 127.0.30.50:4000 is too slow, dropped 98 frames");
    expect(lines.join("\n")).toContain("viewer 127.0.30.51:4000 is too slow, dropped 98 frames");
    expect(lines[0]).toContain("WARN");
    for (let i = 0; i < 5; i++) s.publish(i);
    stuck.remove(); // reports its own outstanding drops at once
    const afterRemove = capture.lines.slice(before + 2);
    expect(afterRemove).toHaveLength(1);
    expect(afterRemove[0]).toContain("viewer 127.0.30.50:4000 is too slow, dropped 5 frames");
    other.remove();
    expect(DROP_REPORT_INTERVAL_MS).toBeGreaterThan(0);
  });
});

describe("frame-rate meter", () => {
  test("values per second over the window; old arrivals fall out", () => {
    let now = 0;
    const meter = createRateMeter({ now: () => now });
    for (let i = 0; i < 50; i++) {
      meter.tick();
      now += 100; // 10 per second
    }
    expect(meter.rate()).toBeCloseTo(10, 0);
    now += FRAME_RATE_WINDOW_MS + 1;
    expect(meter.rate()).toBe(0);
  });

  test("keeps a bounded number of arrivals however fast they come", () => {
    const meter = createRateMeter({ now: () => 0 });
    for (let i = 0; i < MAX_RATE_SAMPLES * 3; i++) meter.tick();
    expect(meter.rate()).toBe(MAX_RATE_SAMPLES / (FRAME_RATE_WINDOW_MS / 1000));
  });
});
