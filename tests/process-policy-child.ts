// A child process for tests/process-policy.test.ts: two printers' listeners (core/server.ts listen(), the
// path every service's clients take) under the run command's process policy, with a handler that fails on
// demand: "timer" throws from a timer, "sync" throws in the data handler, "promise" rejects; anything else
// is echoed. Prints {"a":port,"b":port} on stdout once listening; SIGTERM ends it.
import { listen } from "../lib/core/server.ts";
import { serviceLogger, setupLogging } from "../lib/log.ts";
import { installProcessPolicy } from "../lib/process-policy.ts";

const [hostA, hostB] = process.argv.slice(2);
setupLogging((process.env.LOG_LEVEL as "info" | "debug" | undefined) ?? "info");
if (!process.env.WITHOUT_POLICY) installProcessPolicy();

const serve = (printer: string, host: string) =>
  listen({
    log: serviceLogger(printer, "echo"),
    what: "echo",
    host,
    port: 0,
    onClient(socket) {
      socket.on("data", (chunk: Buffer) => {
        const word = chunk.toString().trim();
        if (word === "timer") setTimeout(() => { throw new Error("boom in a timer"); }, 5);
        else if (word === "sync") throw new Error("boom in a data handler");
        else if (word === "promise") void (async () => { await Bun.sleep(5); throw new Error("boom in a promise"); })();
        else socket.write(`echo ${word}\n`);
      });
    },
  });

const [a, b] = await Promise.all([serve("a", hostA!), serve("b", hostB!)]);
process.stdout.write(JSON.stringify({ a: a.address.port, b: b.address.port }) + "\n");
process.on("SIGTERM", () => void Promise.all([a.close(), b.close()]).then(() => process.exit(0)));
