// Command-line entry: `pandaproxy [COMMAND] [OPTIONS]`. Each command lives in lib/commands/<name>.ts with its
// own help text; this file only finds the command, parses its options with node:util parseArgs and runs it.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { versionString } from "./version.ts";

export interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig["options"]>;
  /** Returns the process exit code (long-running commands resolve when they stop). */
  run(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<number>;
}

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export const COMMON_OPTIONS = {
  config: { type: "string", short: "c" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

const COMMANDS: Record<string, () => Promise<Command>> = {
  run: async () => (await import("./commands/run.ts")).command,
  check: async () => (await import("./commands/check.ts")).command,
  demo: async () => (await import("./commands/demo.ts")).command,
  simulate: async () => (await import("./commands/simulate.ts")).command,
  ca: async () => (await import("./commands/ca.ts")).command,
  discover: async () => (await import("./commands/discover.ts")).command,
  service: async () => (await import("./commands/service.ts")).command,
  urls: async () => (await import("./commands/urls.ts")).command,
  trust: async () => (await import("./commands/trust.ts")).command,
  version: async () => ({
    summary: "print the version",
    usage: "pandaproxy version",
    options: {},
    run: async () => (console.log(versionString()), EXIT_OK),
  }),
};

async function available(): Promise<[string, Command][]> {
  const out: [string, Command][] = [];
  for (const [name, load] of Object.entries(COMMANDS)) {
    try {
      out.push([name, await load()]);
    } catch {
      // a command whose module is not part of this build is simply not listed
    }
  }
  return out;
}

async function mainHelp(): Promise<string> {
  const lines = (await available()).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
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

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === "--version" || argv[0] === "-V") {
    console.log(versionString());
    return EXIT_OK;
  }
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    const topic = argv[0] === "help" ? argv[1] : undefined;
    if (!topic) {
      console.log(await mainHelp());
      return argv.length === 0 ? EXIT_USAGE : EXIT_OK;
    }
    argv = [topic, "--help"];
  }
  const named = argv[0] !== undefined && !argv[0].startsWith("-");
  const name = named ? argv[0]! : "run";
  const load = COMMANDS[name];
  if (!load) {
    console.error(`pandaproxy: unknown command "${name}"\n\n${await mainHelp()}`);
    return EXIT_USAGE;
  }
  let command: Command;
  try {
    command = await load();
  } catch {
    console.error(`pandaproxy: the "${name}" command is not part of this build`);
    return EXIT_USAGE;
  }
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
