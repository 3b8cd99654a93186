// `pandaproxy [run] --config FILE`: serve every printer in the file until SIGINT/SIGTERM; SIGHUP reloads.
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type Command } from "./command.ts";
import { processLogger, setupLogging } from "../log.ts";
import { installProcessPolicy } from "../process-policy.ts";
import type { Config } from "../config.ts";
import { startSupervisor, STOP_DEADLINE_MS, type SupervisorOptions } from "../supervisor.ts";
import { versionString } from "../version.ts";
import { loadOrReport, resolveConfigPath } from "./load.ts";

export const command: Command = {
  summary: "serve the printers in the configuration (the default command)",
  usage: [
    "Usage: pandaproxy [run] --config FILE [--verbose]",
    "",
    "Serves every [[printer]] in FILE until SIGINT or SIGTERM. SIGHUP reloads FILE: changed printers restart,",
    "a file with errors is reported and the running configuration kept.",
  ].join("\n"),
  options: {},
  async run(values) {
    const config = loadOrReport(values.config as string | undefined, "run");
    if (!config) return EXIT_USAGE;
    setupLogging(values.verbose ? "debug" : config.proxy.logLevel);
    return serve(config, { configFile: resolveConfigPath(values.config as string | undefined), watchSignals: true, verbose: Boolean(values.verbose) });
  },
};

/**
 * Serves until SIGINT or SIGTERM. A stop that passes its deadline exits the process, naming what did not stop:
 * a service stuck in stop() would otherwise keep it alive (and systemd waiting) for good.
 */
export async function serve(config: Config, options: SupervisorOptions): Promise<number> {
  installProcessPolicy();
  const log = processLogger();
  log.info(`${versionString()} starting with ${config.file}`);
  // SIGHUP's default action ends the process: hold a reload asked for while we start, run it once started.
  let reloadAsked = false;
  const earlyHup = () => {
    reloadAsked = true;
  };
  process.on("SIGHUP", earlyHup);
  let supervisor;
  try {
    supervisor = await startSupervisor(config, options);
  } catch (error) {
    log.error(`cannot start: ${(error as Error).message}`);
    return EXIT_FAILURE;
  } finally {
    process.off("SIGHUP", earlyHup);
  }
  if (reloadAsked) void supervisor.reload();
  await waitForStopSignal();
  log.info("stopping");
  const { late } = await supervisor.stop();
  if (late.length) {
    const seconds = (options.stopDeadlineMs ?? STOP_DEADLINE_MS) / 1000;
    log.error(`${late.join(", ") || "something"} did not stop within ${seconds} s; exiting anyway`);
    process.exit(EXIT_FAILURE);
  }
  log.info("stopped");
  return EXIT_OK;
}

export function waitForStopSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off("SIGINT", done);
      process.off("SIGTERM", done);
      resolve();
    };
    process.on("SIGINT", done);
    process.on("SIGTERM", done);
  });
}
