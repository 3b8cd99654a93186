// Failed web logins, counted per source address: after too many within a window the address is refused (429)
// for a while, so an 8-character access code cannot be guessed over HTTP. Behind a reverse proxy every client
// shares the proxy's address, and so shares its limit.

/** Failed logins an address may make within LOGIN_FAILURE_WINDOW_MS before it is locked out. */
export const LOGIN_FAILURES_ALLOWED = 10;
export const LOGIN_FAILURE_WINDOW_MS = 60_000;
/** How long a locked-out address is answered 429, whatever it sends. */
export const LOGIN_LOCKOUT_MS = 60_000;
/** Addresses remembered at once; past this the oldest is forgotten (a flood from many addresses stays bounded). */
export const MAX_TRACKED_ADDRESSES = 10_000;

export interface LoginLimitOptions {
  failuresAllowed?: number;
  windowMs?: number;
  lockoutMs?: number;
  maxAddresses?: number;
}

export interface LoginLimit {
  /** Milliseconds the address is still locked out for (0: not locked out). */
  lockedFor(address: string): number;
  /** Counts one failed login; true when this failure locked the address out. */
  failed(address: string): boolean;
}

interface Record {
  /** Times of the failures within the window, oldest first. */
  failures: number[];
  lockedUntil: number;
}

export function createLoginLimit(options: LoginLimitOptions = {}, now: () => number = Date.now): LoginLimit {
  const allowed = options.failuresAllowed ?? LOGIN_FAILURES_ALLOWED;
  const windowMs = options.windowMs ?? LOGIN_FAILURE_WINDOW_MS;
  const lockoutMs = options.lockoutMs ?? LOGIN_LOCKOUT_MS;
  const maxAddresses = options.maxAddresses ?? MAX_TRACKED_ADDRESSES;
  const records = new Map<string, Record>();

  return {
    lockedFor(address) {
      const record = records.get(address);
      return record ? Math.max(0, record.lockedUntil - now()) : 0;
    },
    failed(address) {
      const t = now();
      let record = records.get(address);
      if (record) records.delete(address); // re-inserted below: the Map's order is then oldest-touched first
      else record = { failures: [], lockedUntil: 0 };
      record.failures = record.failures.filter((at) => at > t - windowMs);
      record.failures.push(t);
      let lockedNow = false;
      if (record.failures.length >= allowed && record.lockedUntil <= t) {
        record.lockedUntil = t + lockoutMs;
        record.failures = [];
        lockedNow = true;
      }
      records.set(address, record);
      while (records.size > maxAddresses) records.delete(records.keys().next().value!);
      return lockedNow;
    },
  };
}
