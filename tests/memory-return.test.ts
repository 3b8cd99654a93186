// core/memory-return.ts: when bulk transfers have grown the resident size past an allowance, freed memory is
// handed back, at most every min interval, and what cannot be handed back becomes the new base (no retry loop).
// A clock, a resident size and the hand-back are injected; the RSS effect itself is measured by bench/ftp.ts.
import { describe, expect, test } from "bun:test";
import { createMemoryReturn } from "../lib/core/memory-return.ts";

const MB = 1024 * 1024;

function harness(start: number) {
  const state = { resident: start, now: 0, handBacks: 0, afterHandBack: start };
  const memory = createMemoryReturn({
    checkEveryBytes: 2 * MB,
    allowanceBytes: 10 * MB,
    minIntervalMs: 250,
    quietMs: 2_000,
    residentBytes: () => state.resident,
    now: () => state.now,
    handBack: () => {
      state.handBacks++;
      state.resident = state.afterHandBack;
    },
  });
  return { state, memory };
}

describe("memory return", () => {
  test("nothing is handed back while the resident size stays within the allowance", () => {
    const { state, memory } = harness(60 * MB);
    for (let i = 0; i < 100; i++) {
      state.resident = 60 * MB + (i % 10) * MB;
      memory.moved(512 * 1024);
      state.now += 2;
    }
    expect(state.handBacks).toBe(0);
  });

  test("growth past the allowance is handed back, and the checks come every 2 MB moved", () => {
    const { state, memory } = harness(60 * MB);
    memory.moved(1);
    state.resident = 75 * MB;
    memory.moved(MB);
    expect(state.handBacks).toBe(0);
    memory.moved(MB);
    expect(state.handBacks).toBe(1);
    expect(state.resident).toBe(60 * MB);
    expect(memory.returns).toBe(1);
  });

  test("at most one hand-back per min interval", () => {
    const { state, memory } = harness(60 * MB);
    memory.moved(1);
    state.afterHandBack = 60 * MB;
    for (let i = 0; i < 50; i++) {
      state.resident += 4 * MB; // growing fast: past the allowance within a few checks of every hand-back
      memory.moved(2 * MB);
      state.now += 10;
    }
    // 500 ms of transfers: at 0, 250 and 500 ms at most.
    expect(state.handBacks).toBeGreaterThanOrEqual(2);
    expect(state.handBacks).toBeLessThanOrEqual(3);
  });

  test("what cannot be handed back is the new base, so it is not retried on every check", () => {
    const { state, memory } = harness(60 * MB);
    memory.moved(1);
    state.afterHandBack = 90 * MB; // more clients, more printers: the process really is bigger now
    state.resident = 90 * MB;
    for (let i = 0; i < 20; i++) {
      memory.moved(2 * MB);
      state.now += 300;
    }
    expect(state.handBacks).toBe(1);
  });

  test("after a quiet spell the next transfer counts from its own starting size", () => {
    const { state, memory } = harness(60 * MB);
    memory.moved(1);
    state.now += 5_000;
    state.resident = 80 * MB; // grown by something else between transfers
    memory.moved(1);
    state.resident = 85 * MB;
    memory.moved(2 * MB);
    expect(state.handBacks).toBe(0);
    state.resident = 91 * MB;
    memory.moved(2 * MB);
    expect(state.handBacks).toBe(1);
  });
});
