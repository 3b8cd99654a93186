// The command table: name -> the module that implements it, loaded only when asked for. A module that fails
// to load is a broken build, and is reported with its own error rather than hidden.
import { versionString } from "../version.ts";
import { EXIT_OK, type Command } from "./command.ts";

export type CommandModules = Readonly<Record<string, () => Promise<{ command?: Command }>>>;

const versionCommand: Command = {
  summary: "print the version",
  usage: "pandaproxy version",
  options: {},
  run: async () => (console.log(versionString()), EXIT_OK),
};

// Literal specifiers, so `bun build --compile` sees and bundles every command module.
export const COMMAND_MODULES: CommandModules = {
  run: () => import("./run.ts"),
  check: () => import("./check.ts"),
  demo: () => import("./demo.ts"),
  simulate: () => import("./simulate.ts"),
  ca: () => import("./ca.ts"),
  discover: () => import("./discover.ts"),
  service: () => import("./service.ts"),
  urls: () => import("./urls.ts"),
  trust: () => import("./trust.ts"),
  version: async () => ({ command: versionCommand }),
};

export type LoadedCommand = { name: string; command: Command } | { name: string; error: string };

/** Loads one command; a module that throws while loading, or exports no `command`, comes back as its error. */
export async function loadCommand(name: string, modules: CommandModules = COMMAND_MODULES): Promise<LoadedCommand> {
  const load = Object.hasOwn(modules, name) ? modules[name] : undefined;
  if (!load) return { name, error: `unknown command "${name}"` };
  try {
    const command = (await load()).command;
    return command ? { name, command } : { name, error: `its module exports no "command"` };
  } catch (error) {
    return { name, error: `its module cannot be loaded: ${error instanceof Error ? error.message : String(error)}` };
  }
}

/** Every command in table order, loaded or with its error. */
export async function loadCommands(modules: CommandModules = COMMAND_MODULES): Promise<LoadedCommand[]> {
  const out: LoadedCommand[] = [];
  for (const name of Object.keys(modules)) out.push(await loadCommand(name, modules));
  return out;
}
