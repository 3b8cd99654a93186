// Every listener's policy toward the LAN: after we end a connection it is destroyed within a short deadline
// (a client that keeps its side open must not hold a slot), silent clients are closed, secrets are compared
// in constant time, and a client's commands are taken one at a time with its socket paused meanwhile.
import { createHash, timingSafeEqual } from "node:crypto";
import type { Socket } from "node:net";

/** After our last bytes, how long a client has to close its side before we destroy the socket. */
export const END_DESTROY_MS = 2_000;
/** TCP keepalive probes on every accepted socket: a peer that vanished (power cut, Wi-Fi gone) is noticed. */
export const TCP_KEEPALIVE_MS = 30_000;
/** Commands a client may have waiting (parsed, not yet handled) before it is told so and closed. */
export const MAX_PENDING_COMMANDS = 32;

/**
 * Sends `last` (if any), half-closes, and destroys the socket after `ms` whatever the client does.
 * Use this instead of a bare `socket.end()` everywhere we decide a connection is over.
 */
export function endAndDestroy(socket: Socket, last?: Buffer | string, ms = END_DESTROY_MS): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), ms);
  timer.unref?.();
  socket.once("close", () => clearTimeout(timer));
  if (last !== undefined) socket.end(last);
  else socket.end();
}

/** Constant-time comparison of a secret someone offered with the one we hold, whatever their lengths. */
export function sameSecret(given: Buffer | string | undefined, wanted: Buffer | string | undefined): boolean {
  const digest = (value: Buffer | string) => createHash("sha256").update(value).digest();
  const equal = timingSafeEqual(digest(given ?? ""), digest(wanted ?? ""));
  return equal && given !== undefined && wanted !== undefined && wanted.length > 0;
}

export interface IdleDeadline {
  /** Something happened: start the deadline again. */
  touch(): void;
  clear(): void;
}

/**
 * Calls `onIdle` once after `ms` without `touch()`. The caller says what counts as activity (bytes read, a
 * command answered), since a viewer that only receives is not idle and a client that only pings may be.
 * `ms <= 0` never fires.
 */
export function idleDeadline(ms: number, onIdle: () => void): IdleDeadline {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let cleared = false;
  const arm = () => {
    if (timer) clearTimeout(timer);
    if (cleared || ms <= 0) return;
    timer = setTimeout(() => {
      if (cleared) return;
      cleared = true;
      onIdle();
    }, ms);
  };
  arm();
  return {
    touch: arm,
    clear() {
      cleared = true;
      if (timer) clearTimeout(timer);
    },
  };
}

export interface CommandLane<T> {
  /** Queue one parsed command; false when the client already has `max` waiting (the lane then closes). */
  push(command: T): boolean;
  readonly pending: number;
  /** Drop what is waiting; later pushes are ignored. */
  close(): void;
}

/**
 * A client's commands, handled one at a time in order. While a command is pending the socket is paused, so
 * a client that pipelines a flood fills its own TCP window instead of our memory; past `max` waiting
 * commands (the ones already read before the pause took effect) `onOverflow` is called once.
 * A handler that throws or rejects calls `onError` and the lane closes: one client's bad command ends only
 * that client.
 */
export function commandLane<T>(
  socket: Socket,
  handle: (command: T) => Promise<void> | void,
  hooks: { onOverflow(max: number): void; onError(error: unknown): void; max?: number },
): CommandLane<T> {
  const max = hooks.max ?? MAX_PENDING_COMMANDS;
  const waiting: T[] = [];
  let running = false;
  let closed = false;

  const run = async () => {
    running = true;
    socket.pause();
    while (waiting.length && !closed) {
      const command = waiting.shift()!;
      try {
        await handle(command);
      } catch (error) {
        closed = true;
        waiting.length = 0;
        hooks.onError(error);
      }
    }
    running = false;
    if (!closed && !socket.destroyed) socket.resume();
  };

  return {
    push(command) {
      if (closed) return false;
      if (waiting.length >= max) {
        closed = true;
        waiting.length = 0;
        hooks.onOverflow(max);
        return false;
      }
      waiting.push(command);
      if (!running) void run();
      return true;
    },
    get pending() {
      return waiting.length + (running ? 1 : 0);
    },
    close() {
      closed = true;
      waiting.length = 0;
    },
  };
}
