// What every command module exports (`export const command: Command`), and the exit codes they return.
// cli.ts imports the commands; the commands import this file, never cli.ts.
import type { ParseArgsConfig } from "node:util";

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
