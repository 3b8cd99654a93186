// A child process for tests/process-policy.test.ts: `serve()` (what `pandaproxy run` does) with an injected
// short stop deadline; printer "a" has a service whose stop() never resolves (its listener stays open, so
// only the deadline can end the process), printer "b" one that stops at once. Args: STATE_DIR HOST_A HOST_B.
import { parseConfig } from "../lib/config.ts";
import { serve } from "../lib/commands/run.ts";
import { listen, type Listening } from "../lib/core/server.ts";
import type { Service, ServiceContext } from "../lib/core/service.ts";
import { serviceLogger, setupLogging } from "../lib/log.ts";

export const SHORT_STOP_DEADLINE_MS = 300;
const [stateDir, hostA, hostB] = process.argv.slice(2);
const entry = (name: string, bind: string) =>
  `[[printer]]\nname = "${name}"\nhost = "192.168.1.60"\nserial = "01P00A0000000${name}"\naccess_code = "Ab12Cd34"\nbind = "${bind}"\nservices = []\n`;
const config = parseConfig(`[proxy]\nstate_dir = "${stateDir}"\n[web]\nlisten = ""\n${entry("a", hostA!)}${entry("b", hostB!)}`, "stop-deadline.toml");

function echoService(ctx: ServiceContext, name: string, stopsAtAll: boolean): Service {
  let listening: Listening | undefined;
  return {
    name,
    async start() {
      listening = await listen({ log: serviceLogger(ctx.printer.name, name), what: name, host: ctx.printer.bind, port: 0, onClient: (s) => s.pipe(s) });
    },
    stop: () => (stopsAtAll ? listening!.close() : new Promise<void>(() => {})),
    status: () => ({ state: "listening", clients: listening?.clients ?? 0 }),
  };
}

setupLogging("info");
process.exitCode = await serve(config, {
  stopDeadlineMs: SHORT_STOP_DEADLINE_MS,
  servicesOf: (ctx) => [ctx.printer.name === "a" ? echoService(ctx, "stuck", false) : echoService(ctx, "fine", true)],
});
