// A reconnecting connection to one printer service. On demand (opened while someone holds a claim, closed after
// a linger with none) or always on; exponential backoff between attempts; a refused login waits the longest
// backoff instead of retrying in a tight loop. While someone waits (a claim, or an always-on link, whose clients
// reconnect at any time) a retry is never further away than WAITING_RETRY_MAX_MS, so a printer that comes back is
// found soon. State changes are events the status page shows.
import { outsideClient } from "./client-context.ts";
import type { Logger } from "../log.ts";
import { PrinterIdentityRefused } from "./printer-identity.ts";

export const DEFAULT_LINGER_MS = 30_000;
export const BACKOFF_MIN_MS = 1_000;
export const BACKOFF_MAX_MS = 60_000;
/** The longest backoff while someone waits for the printer (not after a refused login: that one waits BACKOFF_MAX_MS). */
export const WAITING_RETRY_MAX_MS = 10_000;

export type UpstreamState = "idle" | "connecting" | "connected" | "backoff" | "stopped";

/** What `connect` resolves to: the live connection, and a promise that settles when it ends. */
export interface Link<C> {
  connection: C;
  closed: Promise<unknown>;
  close(): void;
}

/** Throw this from `connect` when the far side refused our credentials: we wait BACKOFF_MAX_MS, loudly. */
export class LoginRefused extends Error {
  /** What the user should look at, for the log line. */
  readonly check: string;
  constructor(message: string, check = "access_code") {
    super(message);
    this.name = "LoginRefused";
    this.check = check;
  }
}

export interface UpstreamOptions<C> {
  log: Logger;
  /** What this upstream is, for log lines: "chamber camera at 192.168.1.5:6000". */
  describe: string;
  connect(): Promise<Link<C>>;
  /** true: connect while claimed, close after `lingerMs` without claims. false: always connected once started. */
  onDemand: boolean;
  lingerMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  waitingRetryMaxMs?: number;
}

export interface UpstreamEvents<C> {
  state: (state: UpstreamState) => void;
  connected: (connection: C) => void;
  disconnected: (reason: unknown) => void;
}

export interface Upstream<C> {
  /** Ask for the connection; call the returned function when done with it. */
  claim(): () => void;
  start(): void;
  stop(): Promise<void>;
  /** Drop the current connection and reconnect (e.g. the stream went out of sync). */
  reconnect(reason: string): void;
  current(): C | undefined;
  on<E extends keyof UpstreamEvents<C>>(event: E, listener: UpstreamEvents<C>[E]): () => void;
  readonly state: UpstreamState;
  readonly claims: number;
  readonly connects: number;
  readonly lastError: string | undefined;
  /** The printer refused our credentials on the last attempt (the retry waits the longest backoff). */
  readonly loginRefused: boolean;
  /** What the user should look at for that refusal (LoginRefused.check: "access_code", …). */
  readonly loginCheck: string | undefined;
  /** We refused the printer's certificate on the last attempt (core/printer-identity.ts; same long backoff). */
  readonly identityRefused: boolean;
}

export interface UpstreamProblem {
  reason: string;
  /** Waiting will not help soon: the login was refused (or the certificate), and the retry is a long backoff away. */
  lasting: boolean;
}

/** What keeps an upstream from delivering now: set only while it waits to retry after a failure. */
export function upstreamProblem(upstream: Pick<Upstream<unknown>, "state" | "lastError" | "loginRefused"> & { identityRefused?: boolean; loginCheck?: string }): UpstreamProblem | undefined {
  if (upstream.state !== "backoff" || !upstream.lastError) return undefined;
  if (upstream.identityRefused) return { reason: upstream.lastError, lasting: true };
  if (!upstream.loginRefused) return { reason: upstream.lastError, lasting: false };
  const check = upstream.loginCheck ?? "access_code";
  return check === "access_code"
    ? { reason: `the printer refused the access code (${upstream.lastError}); check access_code`, lasting: true }
    : { reason: `${upstream.lastError}; check ${check}`, lasting: true };
}

/** For a service's status: a printer whose certificate we refused reads as an error (red on the status page). */
export function upstreamRefusal(upstream: Parameters<typeof upstreamProblem>[0]): string | undefined {
  return upstream.identityRefused && upstream.state === "backoff" && upstream.lastError ? `error: ${upstream.lastError}` : undefined;
}

export function createUpstream<C>(options: UpstreamOptions<C>): Upstream<C> {
  const lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS;
  const backoffMin = options.backoffMinMs ?? BACKOFF_MIN_MS;
  const backoffMax = options.backoffMaxMs ?? BACKOFF_MAX_MS;
  const waitingRetryMax = Math.min(backoffMax, options.waitingRetryMaxMs ?? WAITING_RETRY_MAX_MS);
  const listeners: { [E in keyof UpstreamEvents<C>]: Set<UpstreamEvents<C>[E]> } = {
    state: new Set(), connected: new Set(), disconnected: new Set(),
  };
  let state: UpstreamState = "idle";
  let started = false;
  let claims = 0;
  let link: Link<C> | undefined;
  let attempt = 0;
  let connects = 0;
  let lastError: string | undefined;
  /** The printer refused our credentials last time: no viewer may cut that backoff short. */
  let refused = false;
  let refusedCheck: string | undefined;
  /** We refused the printer's certificate last time: likewise, a person must act. */
  let untrusted = false;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let lingerTimer: ReturnType<typeof setTimeout> | undefined;
  let generation = 0;

  const emit = <E extends keyof UpstreamEvents<C>>(event: E, ...args: Parameters<UpstreamEvents<C>[E]>) => {
    for (const l of listeners[event]) (l as (...a: unknown[]) => void)(...args);
  };
  const setState = (next: UpstreamState) => {
    if (next === state) return;
    state = next;
    emit("state", next);
  };
  const wanted = () => started && (!options.onDemand || claims > 0 || lingerTimer !== undefined);

  const open = async () => {
    if (!wanted() || link || state === "connecting") return;
    const myGeneration = ++generation;
    setState("connecting");
    try {
      const next = await options.connect();
      if (myGeneration !== generation || !wanted()) {
        next.close();
        return;
      }
      link = next;
      attempt = 0;
      refused = false;
      refusedCheck = undefined;
      untrusted = false;
      connects++;
      lastError = undefined;
      setState("connected");
      options.log.info(`connected to ${options.describe}`);
      emit("connected", next.connection);
      next.closed.then(
        (reason) => closed(next, reason),
        (error) => closed(next, error),
      );
    } catch (error) {
      if (myGeneration !== generation) return;
      lastError = (error as Error).message;
      scheduleRetry(error);
    }
  };

  const closed = (which: Link<C>, reason: unknown) => {
    if (link !== which) return;
    link = undefined;
    const why = reason instanceof Error ? reason.message : reason ? String(reason) : "closed";
    if (reason instanceof Error) lastError = why;
    emit("disconnected", reason);
    if (!wanted()) {
      setState(started ? "idle" : "stopped");
      return;
    }
    options.log.warn(`lost ${options.describe} (${why}); reconnecting`);
    scheduleRetry(reason, true);
  };

  const scheduleRetry = (error: unknown, firstIsQuick = false) => {
    if (!wanted()) {
      setState(started ? "idle" : "stopped");
      return;
    }
    refused = error instanceof LoginRefused;
    refusedCheck = refused ? (error as LoginRefused).check : undefined;
    untrusted = error instanceof PrinterIdentityRefused;
    const longest = claims > 0 || !options.onDemand ? waitingRetryMax : backoffMax;
    const delay = refused || untrusted ? backoffMax : firstIsQuick && attempt === 0 ? backoffMin / 2 : Math.min(longest, backoffMin * 2 ** attempt);
    attempt++;
    const message = (error as Error)?.message ?? String(error);
    if (refused) options.log.error(`${options.describe} refused the login: ${message}; check ${(error as LoginRefused).check}. Retrying in ${Math.round(delay / 1000)} s`);
    else if (untrusted) options.log.error(`not connecting to ${options.describe}: ${message}. Retrying in ${Math.round(delay / 1000)} s`);
    else if (!firstIsQuick) options.log.warn(`cannot reach ${options.describe}: ${message}; retrying in ${Math.round(delay / 1000)} s`);
    setState("backoff");
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void open();
    }, delay);
  };

  const closeNow = () => {
    generation++;
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = undefined;
    const current = link;
    link = undefined;
    if (current) {
      current.close();
      emit("disconnected", "closed by proxy");
    }
    setState(started ? "idle" : "stopped");
  };

  return {
    claim() {
      claims++;
      if (lingerTimer) {
        clearTimeout(lingerTimer);
        lingerTimer = undefined;
      }
      if (state === "backoff" && attempt > 0 && claims === 1 && retryTimer && !refused && !untrusted) {
        // A fresh viewer should not wait out a long backoff left from an earlier failure.
        clearTimeout(retryTimer);
        retryTimer = undefined;
        setState("idle");
      }
      // A pending retry is the backoff at work: the claim is served when it fires. The link is the printer's,
      // shared by every client: it must not run in the context of the client whose claim opened it.
      if (!retryTimer) outsideClient(() => void open());
      let released = false;
      return () => {
        if (released) return;
        released = true;
        claims--;
        if (claims === 0 && options.onDemand && started) {
          lingerTimer = outsideClient(() => setTimeout(() => {
            lingerTimer = undefined;
            if (claims === 0) {
              if (link) options.log.info(`no clients for ${Math.round(lingerMs / 1000)} s: closing ${options.describe}`);
              closeNow();
            }
          }, lingerMs));
        }
      };
    },
    start() {
      started = true;
      setState("idle");
      void open();
    },
    async stop() {
      started = false;
      if (lingerTimer) clearTimeout(lingerTimer);
      lingerTimer = undefined;
      closeNow();
    },
    reconnect(reason) {
      if (!link) return;
      options.log.warn(`reconnecting ${options.describe}: ${reason}`);
      const current = link;
      link = undefined;
      current.close();
      emit("disconnected", reason);
      scheduleRetry(new Error(reason), true);
    },
    current: () => link?.connection,
    on(event, listener) {
      listeners[event].add(listener);
      return () => listeners[event].delete(listener);
    },
    get state() {
      return state;
    },
    get claims() {
      return claims;
    },
    get connects() {
      return connects;
    },
    get lastError() {
      return lastError;
    },
    get loginRefused() {
      return refused;
    },
    get loginCheck() {
      return refusedCheck;
    },
    get identityRefused() {
      return untrusted;
    },
  };
}
