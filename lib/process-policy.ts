// What the running proxy does with an error nobody caught: one log line (the stack at debug only), and the
// process goes on serving every other printer. When the error was thrown in a client's callback (a timer
// or an event of its socket) that client is closed; Bun does not say whose promise an unhandled rejection
// was, so those are logged without a client (docs/protocol-notes.md).
import { currentClient, endClientAfterError, errorText } from "./core/client-context.ts";
import { processLogger } from "./log.ts";

export function installProcessPolicy(): () => void {
  const log = processLogger("main");
  const report = (what: string, error: unknown) => {
    const client = currentClient();
    if (client && !client.socket.destroyed) {
      endClientAfterError(client, error, what);
      return;
    }
    // A closed client's context can outlive it in work it started (a shared upstream): name it as such.
    const where = client ? client.log : log;
    where.error(`${what}${client ? " in work started by this client (already closed)" : ""}, the proxy goes on: ${errorText(error)}`);
    if (error instanceof Error && error.stack) where.debug(error.stack);
  };
  const onException = (error: Error) => report("uncaught exception", error);
  const onRejection = (reason: unknown) => report("unhandled promise rejection", reason);
  process.on("uncaughtException", onException);
  process.on("unhandledRejection", onRejection);
  return () => {
    process.off("uncaughtException", onException);
    process.off("unhandledRejection", onRejection);
  };
}
