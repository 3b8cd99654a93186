// Shared by the benchmarks: what a process costs (CPU seconds, resident memory, from /proc) and percentiles.
import { readdirSync, readFileSync } from "node:fs";

/** Linux reports CPU times in clock ticks of 1/100 s (USER_HZ) on every platform we run on. */
export const CLOCK_TICKS_PER_SECOND = 100;

/** User + system CPU time of `pid` so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** `pid`'s own CPU seconds plus its reaped children's (cutime + cstime): a forking server's finished sessions. */
function cpuWithReapedSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS_PER_SECOND;
}

/** Every live process below `pid` (FFmpeg, vsftpd's sessions), from each of its threads' children lists. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const task of tasks) {
    try {
      for (const child of readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number)) out.push(child, ...descendants(child));
    } catch {}
  }
  return out;
}

/** CPU seconds of `pid` and everything below it, live or already reaped; a process that just ended counts 0. */
export function treeCpuSeconds(pid: number): number {
  let total = 0;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      total += cpuWithReapedSeconds(p);
    } catch {}
  }
  return total;
}

/** Microseconds of CPU per unit of work, e.g. per report per subscriber. */
export const microsecondsPer = (cpuSeconds: number, units: number): number => (units > 0 ? (cpuSeconds * 1e6) / units : NaN);

/** Resident memory of `pid` now and at its peak (VmHWM), in MiB. */
export function memoryMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}

/** Nearest-rank percentile (`fraction` 0.5 = p50, 0.99 = p99) of values sorted ascending; NaN when empty. */
export function percentile(sorted: readonly number[], fraction: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))]!;
}
