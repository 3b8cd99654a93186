// The one frame-rate meter every camera uses: values per second over a sliding window (the status page's "fps").
// Bounded: it keeps at most MAX_RATE_SAMPLES arrival times however fast values come.

export const FRAME_RATE_WINDOW_MS = 5_000;
/** More arrivals than this inside one window are not remembered (a camera sends tens per second). */
export const MAX_RATE_SAMPLES = 4_096;

export interface RateMeter {
  /** One value arrived now. */
  tick(): void;
  /** Values per second over the last window. */
  rate(): number;
}

export interface RateMeterOptions {
  windowMs?: number;
  /** A monotonic clock in milliseconds (tests pass their own). */
  now?: () => number;
}

export function createRateMeter(options: RateMeterOptions = {}): RateMeter {
  const windowMs = options.windowMs ?? FRAME_RATE_WINDOW_MS;
  const now = options.now ?? (() => performance.now());
  let times: number[] = [];
  let head = 0;

  const forgetBefore = (at: number) => {
    while (head < times.length && times[head]! < at - windowMs) head++;
    if (head > 1024 && head * 2 > times.length) {
      times = times.slice(head);
      head = 0;
    }
  };

  return {
    tick() {
      const at = now();
      times.push(at);
      forgetBefore(at);
      if (times.length - head > MAX_RATE_SAMPLES) head++;
    },
    rate() {
      forgetBefore(now());
      return (times.length - head) / (windowMs / 1000);
    },
  };
}
