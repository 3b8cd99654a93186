// Shared by the benchmarks: what a process costs (CPU seconds, resident memory, from /proc) and percentiles.
import { readdirSync, readFileSync } from "node:fs";

/** Linux reports CPU times in clock ticks of 1/100 s (USER_HZ) on every platform we run on. */
export const CLOCK_TICKS_PER_SECOND = 100;

/** User + system CPU time of `pid` so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** User and system CPU time of `pid` so far, in seconds (system: its syscalls, loopback TCP and TLS sends included). */
export function cpuTimes(pid: number): { user: number; system: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return { user: Number(fields[11]) / CLOCK_TICKS_PER_SECOND, system: Number(fields[12]) / CLOCK_TICKS_PER_SECOND };
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

/** Samples the CPU seconds of the processes below `pid` (with `andSelf`, its own too). Forked sessions and FFmpeg
 * come and go and are not always reaped by `pid`: sample often; a process's time after its last sample is lost. */
export function treeCpuTracker(pid: number, andSelf = false): { sample(): void; seconds(): number; processes(): number } {
  const seen = new Map<number, { first: number; last: number }>();
  const sample = (born: boolean) => {
    for (const p of andSelf ? [pid, ...descendants(pid)] : descendants(pid)) {
      try {
        const cpu = cpuSeconds(p);
        const known = seen.get(p);
        if (known) known.last = cpu;
        else seen.set(p, { first: born ? 0 : cpu, last: cpu });
      } catch {}
    }
  };
  sample(false);
  return {
    sample: () => sample(true),
    seconds: () => [...seen.values()].reduce((sum, c) => sum + c.last - c.first, 0),
    processes: () => seen.size,
  };
}

/** The whole machine's CPU time so far (every core, /proc/stat): busy and all, in clock ticks. */
export function machineCpu(): { busy: number; all: number } {
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const ticks = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const all = ticks.reduce((sum, t) => sum + t, 0);
  return { busy: all - ticks[3]! - ticks[4]!, all };
}

/** How many cores were busy on average between two machineCpu() readings. */
export const busyCores = (from: { busy: number; all: number }, to: { busy: number; all: number }, cores: number): number =>
  to.all > from.all ? ((to.busy - from.busy) / (to.all - from.all)) * cores : NaN;

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

/** The middle value (the mean of the two middle ones for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** A child's own CPU seconds (user + system) from its rusage, once it has exited; NaN before. */
export function exitedCpuSeconds(child: Bun.Subprocess): number {
  const usage = child.resourceUsage();
  return usage ? Number(usage.cpuTime.user + usage.cpuTime.system) / 1e6 : NaN;
}
