// What is left of core/broadcast.ts: the latest-value stream's old name (the fan-out is tests/core-stream.test.ts).
import { expect, test } from "bun:test";
import { createLatestBroadcast } from "../lib/core/broadcast.ts";

test("the old name still makes a latest-value stream (tests that build a camera feed by hand use it)", () => {
  const b = createLatestBroadcast<number>();
  const got: number[] = [];
  b.subscribe((v, done) => (got.push(v), done()), { replayLatest: true });
  b.publish(1);
  expect(got).toEqual([1]);
  expect(b.latest()).toBe(1);
});
