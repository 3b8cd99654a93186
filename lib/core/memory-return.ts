// Memory that bulk transfers leave resident, handed back to the system while they run. Bun gives each socket
// read a fresh buffer (up to 512 KB); even freed at once (ftp-data.ts release), the allocators keep the pages
// resident for a while, so a 200 MB/s FTPS transfer held 15-25 MB more than it needed. Neither a full garbage
// collection nor smaller writes returned them; Bun.shrink() does (a full collection, then the allocators give
// freed pages back), but it stalls the event loop for 2-10 ms and drops compiled code, so it runs only when the
// resident size has grown past an allowance since the transfers began, and at most every MIN_INTERVAL_MS.
// Checked every 1 MB, handed back at most every 100 ms: at 2 MB / 250 ms a transfer at 350 MB/s outran the check
// and now and then grew 16-17 MB before the hand-back landed (bench/ftp.ts).
export const CHECK_EVERY_BYTES = 1024 * 1024;
export const ALLOWANCE_BYTES = 8 * 1024 * 1024;
export const MIN_INTERVAL_MS = 100;
/** After this long without a byte moved, the next transfer measures its own starting size. */
export const QUIET_MS = 2_000;

export interface MemoryReturn {
  /** Bytes a transfer has just moved. */
  moved(bytes: number): void;
  /** How many times memory was handed back. */
  readonly returns: number;
}

export interface MemoryReturnOptions {
  checkEveryBytes?: number;
  allowanceBytes?: number;
  minIntervalMs?: number;
  quietMs?: number;
  residentBytes?: () => number;
  handBack?: () => void;
  now?: () => number;
}

export function createMemoryReturn(options: MemoryReturnOptions = {}): MemoryReturn {
  const checkEvery = options.checkEveryBytes ?? CHECK_EVERY_BYTES;
  const allowance = options.allowanceBytes ?? ALLOWANCE_BYTES;
  const minInterval = options.minIntervalMs ?? MIN_INTERVAL_MS;
  const quiet = options.quietMs ?? QUIET_MS;
  const residentBytes = options.residentBytes ?? (() => process.memoryUsage.rss());
  const handBack = options.handBack ?? (() => Bun.shrink());
  const now = options.now ?? Date.now;
  let sinceCheck = 0;
  let lastMoved = -Infinity;
  let lastReturn = -Infinity;
  // The resident size the transfers started from (or the lowest since): what the allowance is counted from.
  let base = Infinity;
  let returns = 0;
  return {
    moved(bytes) {
      const at = now();
      if (at - lastMoved > quiet) {
        base = residentBytes();
        sinceCheck = 0;
      }
      lastMoved = at;
      sinceCheck += bytes;
      if (sinceCheck < checkEvery) return;
      sinceCheck = 0;
      const resident = residentBytes();
      if (resident < base) base = resident;
      if (resident - base <= allowance || at - lastReturn < minInterval) return;
      handBack();
      returns++;
      lastReturn = at;
      // Bun.shrink runs once our JavaScript has left the stack, so the size is read at the next check: what could
      // not be handed back (more clients, a longer queue) is then the new base, and it is not retried.
      base = Infinity;
    },
    get returns() {
      return returns;
    },
  };
}

/** What FTPS uploads report to: their reads (the client's TLS socket) left 17-25 MB resident per 200 MB. */
export const uploadMemoryReturn: MemoryReturn = createMemoryReturn();
/** Downloads left 9-14 MB (now and then 22-28): each hand-back costs CPU (a full collection, code compiled
 * again; ~+30% proxy CPU per MB), so their allowance is higher and only catches the outliers. At 13 MB (checked
 * every 2 MB, at most every 250 ms) an outlier at 350 MB/s still reached 17 MB before the hand-back landed. */
export const downloadMemoryReturn: MemoryReturn = createMemoryReturn({ allowanceBytes: 11 * 1024 * 1024 });
