// `pandaproxy check`: validate printers.toml and list what would run, without starting anything.
import { listenersOf } from "../config.ts";
import { EXIT_OK, EXIT_USAGE, type Command } from "./command.ts";
import { loadOrReport } from "./load.ts";

export const command: Command = {
  summary: "validate the configuration and show the listeners it would open",
  usage: "Usage: pandaproxy check --config FILE\n\nExits 0 when the file is valid, 2 with every problem listed when it is not.",
  options: {},
  async run(values) {
    const config = loadOrReport(values.config as string | undefined, "check");
    if (!config) return EXIT_USAGE;
    console.log(`${config.file}: OK, ${config.printers.length} printer${config.printers.length === 1 ? "" : "s"}`);
    for (const p of config.printers) {
      const listeners = listenersOf(p).map((l) => `${l.service} ${l.protocol} ${l.host}:${l.port}`);
      console.log(`  ${p.name} (${p.type}, ${p.host}): ${listeners.join(", ") || "no listeners"}`);
    }
    console.log(`  web: ${config.web.listen ? `http://${config.web.listen.host}:${config.web.listen.port}/` : "disabled"}`);
    return EXIT_OK;
  },
};
