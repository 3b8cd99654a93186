// Every fuzz target of every tests/fuzz/*.fuzz.ts module, seeded and short (a few thousand cases; socket-level
// targets scaled down by their costFactor). `npm run fuzz` runs the same targets for a million cases each.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { setupLogging } from "../lib/log.ts";
import { DEFAULT_FUZZ_SEED, casesFor, failureReport, loadFuzzModules, runFuzzTarget } from "../scripts/fuzz.ts";

/** Cases per parser target here; the whole file stays well under a minute on a small machine. */
const TEST_CASES = 2_000;
/** Per target: the socket-level ones start a simulator and a proxy on their first case. */
const TARGET_TIMEOUT_MS = 45_000;

// Lines are formatted (the socket-level target reads them) but not printed.
beforeAll(() => setupLogging("info", { quiet: true }));
const modules = await loadFuzzModules();

test("the fuzz targets are found (an empty glob would make this file pass with nothing run)", () => {
  expect(modules.length).toBeGreaterThanOrEqual(5);
  expect(modules.flatMap((m) => m.targets).length).toBeGreaterThan(20);
});

for (const module of modules) {
  describe(`fuzz: ${module.area}`, () => {
    afterAll(async () => void (await module.teardown?.()));
    for (const target of module.targets) {
      test(`${target.name} (${casesFor(target, TEST_CASES)} cases)`, async () => {
        const { details, seconds } = await runFuzzTarget(target, { cases: TEST_CASES, seed: DEFAULT_FUZZ_SEED });
        console.log(`fuzz ${module.area}: ${target.name}: ${details.numRuns} cases in ${seconds.toFixed(2)} s`);
        if (details.failed) throw new Error(failureReport(details));
        expect(details.numRuns).toBe(casesFor(target, TEST_CASES));
      }, TARGET_TIMEOUT_MS);
    }
  });
}
