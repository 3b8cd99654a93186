// Shared by commands that read printers.toml: find the file, load it, print every problem on failure.
import { existsSync } from "node:fs";
import { ConfigErrors, loadConfig, type Config } from "../config.ts";

export const DEFAULT_CONFIG_PATHS = ["printers.toml", "/etc/pandaproxy/printers.toml"];

export function resolveConfigPath(given: string | undefined): string | undefined {
  if (given) return given;
  return DEFAULT_CONFIG_PATHS.find((p) => existsSync(p));
}

/** The config, or undefined after printing why (callers exit 2). */
export function loadOrReport(given: string | undefined, command: string): Config | undefined {
  const file = resolveConfigPath(given);
  if (!file) {
    console.error(`pandaproxy ${command}: no configuration: pass --config FILE (looked for ${DEFAULT_CONFIG_PATHS.join(", ")}); see config.example.toml`);
    return undefined;
  }
  try {
    return loadConfig(file);
  } catch (error) {
    const problems = error instanceof ConfigErrors ? error.problems : [(error as Error).message];
    console.error(`pandaproxy ${command}: ${problems.length} problem${problems.length === 1 ? "" : "s"} in the configuration:`);
    for (const p of problems) console.error(`  ${p}`);
    return undefined;
  }
}
