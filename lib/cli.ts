// Command-line entry: `pandaproxy [COMMAND] [OPTIONS]`. Each command lives in lib/commands/<name>.ts with its
// own help text; this file only finds the command, parses its options with node:util parseArgs and runs it.
import { parseArgs } from "node:util";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./commands/command.ts";
import { COMMAND_MODULES, loadCommand, loadCommands, type CommandModules } from "./commands/registry.ts";
import { versionString } from "./version.ts";

export const COMMON_OPTIONS = {
  config: { type: "string", short: "c" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

async function mainHelp(modules: CommandModules): Promise<string> {
  const lines = (await loadCommands(modules)).map((c) => `  ${c.name.padEnd(10)} ${"command" in c ? c.command.summary : `(broken in this build: ${c.error})`}`);
  return [
    `${versionString()}: one connection to each printer service, shared by every client on the LAN`,
    "",
    "Usage: pandaproxy [COMMAND] [OPTIONS]        (no command: run)",
    "",
    "Commands:",
    ...lines,
    "",
    "Options: --config FILE, --verbose, --help, --version",
    "Run `pandaproxy COMMAND --help` for a command's options.",
  ].join("\n");
}

/** `modules` is the command table (tests pass their own). */
export async function main(argv: string[], modules: CommandModules = COMMAND_MODULES): Promise<number> {
  if (argv[0] === "--version" || argv[0] === "-V") {
    console.log(versionString());
    return EXIT_OK;
  }
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    const topic = argv[0] === "help" ? argv[1] : undefined;
    if (!topic) {
      console.log(await mainHelp(modules));
      return argv.length === 0 ? EXIT_USAGE : EXIT_OK;
    }
    argv = [topic, "--help"];
  }
  const named = argv[0] !== undefined && !argv[0].startsWith("-");
  const name = named ? argv[0]! : "run";
  if (!Object.hasOwn(modules, name)) {
    console.error(`pandaproxy: unknown command "${name}"\n\n${await mainHelp(modules)}`);
    return EXIT_USAGE;
  }
  const loaded = await loadCommand(name, modules);
  if (!("command" in loaded)) {
    console.error(`pandaproxy: the "${name}" command is broken in this build: ${loaded.error}`);
    return EXIT_FAILURE;
  }
  const command = loaded.command;
  let parsed;
  try {
    parsed = parseArgs({ args: named ? argv.slice(1) : argv, options: { ...COMMON_OPTIONS, ...command.options }, allowPositionals: true, strict: true });
  } catch (error) {
    console.error(`pandaproxy ${name}: ${(error as Error).message}\n\n${command.usage}`);
    return EXIT_USAGE;
  }
  if (parsed.values.help) {
    console.log(command.usage);
    return EXIT_OK;
  }
  return command.run(parsed.values as Record<string, string | boolean | undefined>, parsed.positionals);
}
