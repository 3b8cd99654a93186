// `pandaproxy simulate --config sim.toml`: run simulated printers (no proxy) for people building printer tools
// without a printer. Stops on Ctrl-C.
import { ConfigErrors } from "../config.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type Command } from "./command.ts";
import { processLogger, setupLogging } from "../log.ts";
import { loadSimConfig } from "../sim/config.ts";
import { startSimulated, type RunningSim } from "../sim/start.ts";
import { waitForStopSignal } from "./run.ts";

export const command: Command = {
  summary: "run simulated printers (no proxy), as described in a sim.toml",
  usage: [
    "Usage: pandaproxy simulate --config sim.toml [--verbose]",
    "",
    "sim.toml lists simulated printers, each on its own address (any 127.x.y.z works on Linux):",
    "  [[printer]]",
    '  model = "P1S"               # P1S, P1P, A1, A1 mini, X1C, X1, P2S, H2D, … (type = "flashforge" for an Adventurer 5M)',
    '  host = "127.0.0.11"',
    '  access_code = "12345678"     # check_code for FlashForge',
    "  # name, serial, ports = { mqtt = 18883 }, services, mqtt_max_clients, ftp_max_sessions, ftp_root,",
    "  # camera_fps, camera_width, camera_height, camera_max_viewers, ssdp_targets",
    "  # Firmware faults: mqtt_command_budget (replies stop after N requests a session, until a reconnect),",
    "  # mqtt_session_decay (seconds; older sessions are ignored), liveview_off = true (RTSPS camera off),",
    "  # power_off_every and power_off_for (seconds: the printer switches off and on again),",
    "  # hms_after (seconds: AMS 1 slot 1 runs out of filament that long into each print and the printer pauses",
    "  # with an HMS error), hms_for (seconds until it clears; default 30)",
    "Real printer ports below 1024 (990, 322) need root; give other ports with `ports`.",
  ].join("\n"),
  options: {},
  async run(values) {
    const file = values.config as string | undefined;
    if (!file) {
      console.error("pandaproxy simulate: pass --config sim.toml (see `pandaproxy simulate --help`)");
      return EXIT_USAGE;
    }
    let entries;
    try {
      entries = loadSimConfig(file);
    } catch (error) {
      for (const p of error instanceof ConfigErrors ? error.problems : [(error as Error).message]) console.error(`  ${p}`);
      return EXIT_USAGE;
    }
    setupLogging(values.verbose ? "debug" : "info");
    const log = processLogger("simulate");
    const running: RunningSim[] = [];
    try {
      for (const entry of entries) {
        const sim = await startSimulated(entry);
        running.push(sim);
        log.info(`simulated ${sim.model} "${sim.name}" (serial ${sim.serial}) on ${sim.host}`);
      }
    } catch (error) {
      log.error(`cannot start the simulator: ${(error as Error).message}`);
      await Promise.allSettled(running.map((s) => s.stop()));
      return EXIT_FAILURE;
    }
    await waitForStopSignal();
    await Promise.allSettled(running.map((s) => s.stop()));
    return EXIT_OK;
  },
};
