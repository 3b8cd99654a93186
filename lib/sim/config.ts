// sim.toml -> the simulated printers `pandaproxy simulate` starts. Same style as printers.toml: every problem
// is reported with the file, the printer and the key.
import { readFileSync } from "node:fs";
import { parse as parseToml } from "smol-toml";
import { ConfigErrors, isIPv4, suggest, type Ports } from "../config.ts";
import { findModel } from "../bambu/models.ts";
import type { SimOptions } from "./types.ts";

/** One [[printer]] of sim.toml: who the printer is, plus the simulator's knobs (SimOptions). */
export interface SimEntry extends SimOptions {
  type: "bambu" | "flashforge";
  name?: string;
  model?: string;
  serial?: string;
  /** Bambu access code or FlashForge check code. */
  accessCode?: string;
  host: string;
  ports: Partial<Ports>;
  services?: string[];
  /** `power_off_every` / `power_off_for`: the printer switches off this often, for this long (start.ts). */
  powerOffEveryMs?: number;
  powerOffForMs?: number;
}

const KEYS: Record<string, "string" | "number" | "seconds" | "boolean" | "strings" | "ports"> = {
  type: "string", name: "string", model: "string", serial: "string", access_code: "string", check_code: "string",
  host: "string", ports: "ports", services: "strings", mqtt_max_clients: "number", ftp_max_sessions: "number",
  ftp_root: "string", camera_fps: "number", camera_width: "number", camera_height: "number",
  camera_max_viewers: "number", ssdp_targets: "strings", mqtt_command_budget: "number", mqtt_session_decay: "seconds",
  liveview_off: "boolean", power_off_every: "seconds", power_off_for: "seconds", hms_after: "seconds", hms_for: "seconds",
};
const KIND_WORDS = {
  string: "a string", number: "a positive whole number", seconds: "a positive whole number of seconds", boolean: "true or false",
  strings: "a list of strings", ports: "an inline table of port numbers",
} as const;

const camel = (key: string) => key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

export function parseSimConfig(text: string, file = "sim.toml"): SimEntry[] {
  const problems: string[] = [];
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(text) as Record<string, unknown>;
  } catch (error) {
    throw new ConfigErrors([`${file}: not valid TOML: ${(error as Error).message.split("\n")[0]}`]);
  }
  for (const key of Object.keys(raw)) if (key !== "printer") problems.push(`${file}: "${key}" is not known; write each simulated printer as [[printer]]`);
  const list = Array.isArray(raw.printer) ? raw.printer : [];
  if (list.length === 0) problems.push(`${file}: no [[printer]] entries`);
  const entries: SimEntry[] = [];
  list.forEach((item: Record<string, unknown>, index: number) => {
    const label = `${file}: printer ${typeof item.name === "string" ? `"${item.name}"` : `#${index + 1}`}: `;
    const entry: Record<string, unknown> = { type: "bambu", ports: {} };
    for (const [key, value] of Object.entries(item)) {
      const kind = KEYS[key];
      if (!kind) {
        problems.push(`${label}key "${key}" is unknown${suggest(key, Object.keys(KEYS))}`);
        continue;
      }
      const ok =
        kind === "string" ? typeof value === "string"
        : kind === "number" || kind === "seconds" ? typeof value === "number" && Number.isInteger(value) && value > 0
        : kind === "boolean" ? typeof value === "boolean"
        : kind === "strings" ? Array.isArray(value) && value.every((v) => typeof v === "string")
        : typeof value === "object" && value !== null && Object.values(value).every((p) => Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536);
      if (!ok) {
        problems.push(`${label}key "${key}" must be ${KIND_WORDS[kind]}`);
        continue;
      }
      if (kind === "seconds") entry[`${camel(key)}Ms`] = (value as number) * 1000;
      else entry[key === "check_code" ? "accessCode" : camel(key)] = value;
    }
    if (entry.type !== "bambu" && entry.type !== "flashforge") problems.push(`${label}key "type" must be "bambu" or "flashforge"`);
    if (typeof entry.host !== "string" || !isIPv4(entry.host)) problems.push(`${label}key "host" must be an IPv4 address to listen on, e.g. "127.0.0.11"`);
    if (entry.type === "bambu" && entry.model !== undefined && !findModel(entry.model as string)) {
      problems.push(`${label}key "model" is "${entry.model}"; not a known Bambu model (P1S, P1P, A1, A1 mini, X1C, X1, X1E, P2S, H2D, …)`);
    }
    if (entry.hmsForMs !== undefined && entry.hmsAfterMs === undefined) {
      problems.push(`${label}key "hms_for" needs "hms_after" (the filament runs out N seconds into each print, for M seconds)`);
    }
    if ((entry.powerOffEveryMs === undefined) !== (entry.powerOffForMs === undefined)) {
      problems.push(`${label}keys "power_off_every" and "power_off_for" go together (switch off every N seconds, for M seconds)`);
    }
    entries.push(entry as unknown as SimEntry);
  });
  if (problems.length) throw new ConfigErrors(problems);
  return entries;
}

export function loadSimConfig(file: string): SimEntry[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigErrors([`${file}: cannot read the file (${(error as Error).message})`]);
  }
  return parseSimConfig(text, file);
}
