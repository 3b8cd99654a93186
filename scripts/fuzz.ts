// `npm run fuzz`: every target of every tests/fuzz/*.fuzz.ts module for many cases (a million for parser
// targets by default), with cases per second; on a failure, fast-check's own report (seed, path, counterexample)
// and a non-zero exit. tests/fuzz.test.ts runs the same targets briefly through loadFuzzTargets/runFuzzTarget.
import fc from "fast-check";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { setupLogging } from "../lib/log.ts";
import type { FuzzTarget } from "../tests/fuzz/target.ts";

export const FUZZ_DIR = join(import.meta.dir, "..", "tests", "fuzz");
export const DEFAULT_FUZZ_CASES = 1_000_000;
/** The seed of `npm test` and of `npm run fuzz` without --seed, so a failure there is reproducible as is. */
export const DEFAULT_FUZZ_SEED = 20_261_201;

export interface FuzzModule {
  /** "bambu" for tests/fuzz/bambu.fuzz.ts */
  area: string;
  targets: FuzzTarget[];
  /** A module that starts fixtures (a simulator, a proxy) once per run may export this to stop them. */
  teardown?: () => Promise<void> | void;
}

/** Every tests/fuzz/*.fuzz.ts module, in name order (new modules are picked up without a list to edit). */
export async function loadFuzzModules(): Promise<FuzzModule[]> {
  const files = [...new Bun.Glob("*.fuzz.ts").scanSync({ cwd: FUZZ_DIR })].sort();
  const modules: FuzzModule[] = [];
  for (const file of files) {
    const loaded = (await import(join(FUZZ_DIR, file))) as { targets?: FuzzTarget[]; teardown?: () => Promise<void> | void };
    if (!Array.isArray(loaded.targets)) throw new Error(`tests/fuzz/${file} exports no \`targets\` array`);
    modules.push({ area: basename(file, ".fuzz.ts"), targets: loaded.targets, teardown: loaded.teardown });
  }
  return modules;
}

/** Cases a target runs when `cases` are asked for: socket-level targets are scaled down by their costFactor. */
export function casesFor(target: FuzzTarget, cases: number): number {
  return Math.max(1, Math.round(cases / (target.costFactor ?? 1)));
}

export interface FuzzRun {
  details: fc.RunDetails<unknown>;
  seconds: number;
}

export async function runFuzzTarget(target: FuzzTarget, options: { cases: number; seed: number; path?: string }): Promise<FuzzRun> {
  const property = target.property();
  const parameters = { numRuns: casesFor(target, options.cases), seed: options.seed, path: options.path, includeErrorInReport: true };
  const started = performance.now();
  const details = property.isAsync()
    ? await fc.check(property as fc.IAsyncProperty<unknown>, parameters)
    : fc.check(property as fc.IProperty<unknown>, parameters);
  return { details: details as fc.RunDetails<unknown>, seconds: (performance.now() - started) / 1000 };
}

/** Longest report printed: a counterexample of a few kilobytes of bytes prints as a wall of numbers. */
export const MAX_REPORT_CHARS = 6_000;

/** fast-check's report of a failed run (seed, path, counterexample, the error), cut to MAX_REPORT_CHARS. */
export function failureReport(details: fc.RunDetails<unknown>): string {
  const report = fc.defaultReportMessage(details) ?? "failed (no report)";
  if (report.length <= MAX_REPORT_CHARS) return report;
  const error = details.errorInstance instanceof Error ? `\nGot error: ${details.errorInstance.message.slice(0, 1_000)}` : "";
  return `${report.slice(0, MAX_REPORT_CHARS)}\n… (${report.length - MAX_REPORT_CHARS} more characters; replay with --seed ${details.seed} --path "${details.counterexamplePath}")${error}`;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      cases: { type: "string" },
      target: { type: "string" },
      seed: { type: "string" },
      path: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log("bun scripts/fuzz.ts [--cases N] [--target NAME] [--seed S] [--path P]\n" +
      "  --cases N     cases per parser target (default 1000000; socket-level targets run N / costFactor)\n" +
      "  --target NAME only targets whose name contains NAME (case-insensitive)\n" +
      "  --seed S      fast-check seed (default " + DEFAULT_FUZZ_SEED + "); --path P replays one failure's path");
    return 0;
  }
  const cases = values.cases === undefined ? DEFAULT_FUZZ_CASES : Number(values.cases);
  const seed = values.seed === undefined ? DEFAULT_FUZZ_SEED : Number(values.seed);
  if (!Number.isInteger(cases) || cases < 1) throw new Error(`--cases must be a positive integer, not "${values.cases}"`);
  if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, not "${values.seed}"`);
  const filter = values.target?.toLowerCase();

  // Lines are formatted (the socket-level target reads them) but not printed.
  setupLogging("info", { quiet: true });
  const modules = await loadFuzzModules();
  const rows: string[][] = [];
  let failed = 0;
  console.log(`seed ${seed}`);
  for (const module of modules) {
    const chosen = module.targets.filter((t) => !filter || t.name.toLowerCase().includes(filter) || module.area === filter);
    try {
      for (const target of chosen) {
        const name = `${module.area}: ${target.name}`;
        const { details, seconds } = await runFuzzTarget(target, { cases, seed, path: values.path });
        const rate = Math.round(details.numRuns / Math.max(seconds, 1e-6));
        rows.push([name, String(details.numRuns), seconds.toFixed(1), String(rate), details.failed ? "FAILED" : "ok"]);
        console.log(`${name}: ${details.numRuns} cases in ${seconds.toFixed(1)} s (${rate}/s)${details.failed ? " FAILED" : ""}`);
        if (details.failed) {
          failed++;
          console.log(failureReport(details));
        }
      }
    } finally {
      if (chosen.length) await module.teardown?.();
    }
  }
  if (!rows.length) throw new Error(`no fuzz target matches "${values.target}"`);
  const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...[["target", "cases", "seconds", "cases/s", ""], ...rows].map((r) => r[i]!.length)));
  console.log("\n" + [["target", "cases", "seconds", "cases/s", ""], ...rows].map((r) => r.map((c, i) => (i ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ")).join("\n"));
  return failed ? 1 : 0;
}

if (import.meta.main) {
  main().then(
    (code) => process.exit(code),
    (error) => {
      console.error(`fuzz: ${(error as Error).message}`);
      process.exit(2);
    },
  );
}
