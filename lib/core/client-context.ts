// Which client a piece of work belongs to. listen() runs each client's handler, and every event its socket
// emits, inside that client's context, so an error thrown in one client's callback ends that client alone
// (the process policy reads the context in its uncaughtException handler; Bun keeps it there for timers,
// see docs/protocol-notes.md).
import { AsyncLocalStorage } from "node:async_hooks";
import type { Socket } from "node:net";
import type { Logger } from "../log.ts";

export interface ClientContext {
  /** The service's logger with the client's peer. */
  log: Logger;
  socket: Socket;
}

const storage = new AsyncLocalStorage<ClientContext>();

/** The client whose callback is running now, if any. */
export function currentClient(): ClientContext | undefined {
  return storage.getStore();
}

/** Work done on the printer's behalf (a shared upstream) that must not be charged to the client that started it. */
export function outsideClient<T>(work: () => T): T {
  return storage.exit(work);
}

/** One line naming the client and what went wrong (the stack at debug only); then the client is closed. */
export function endClientAfterError(client: ClientContext, error: unknown, what?: string): void {
  client.log.error(`closing: ${what ? `${what}: ` : ""}${errorText(error)}`);
  const stack = error instanceof Error ? error.stack : undefined;
  if (stack) client.log.debug(stack);
  client.socket.destroy();
}

export function errorText(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return typeof error === "string" ? error : String(error);
}

/**
 * Runs `handler` for this client and makes every event its socket emits run in the client's context. A
 * listener that throws synchronously (Bun would report that with no context at all) ends only this client.
 */
export function runForClient(client: ClientContext, handler: () => void): void {
  const { socket } = client;
  const emit = socket.emit;
  socket.emit = function (this: Socket, ...args: Parameters<Socket["emit"]>) {
    try {
      return storage.run(client, () => emit.apply(this, args));
    } catch (error) {
      endClientAfterError(client, error, `error in its "${String(args[0])}" handler`);
      return true;
    }
  } as Socket["emit"];
  try {
    storage.run(client, handler);
  } catch (error) {
    endClientAfterError(client, error);
  }
}
