// Logging for the whole process: LogTape with one line-per-record sink on stderr.
// Every line names the printer, the service and the peer when they are known; registered secrets
// (access codes) are replaced before anything is written, whatever the caller put in the message.
import { configureSync, getLogger, resetSync, type Logger, type LogLevel, type LogRecord, type Sink } from "@logtape/logtape";

export type { Logger } from "@logtape/logtape";
export type Level = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly Level[] = ["debug", "info", "warn", "error"];

const ROOT = "pandaproxy";
const REDACTED = "********";
const secrets = new Set<string>();

/** Access codes and passwords: never written to a log, whoever logs them. */
export function registerSecret(secret: string | undefined): void {
  // Very short strings would redact ordinary words; access codes are 8 characters.
  if (secret && secret.length >= 4) secrets.add(secret);
}

export function redact(text: string): string {
  let out = text;
  for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  return out;
}

function renderValue(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.message;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

export function formatRecord(record: LogRecord): string {
  const message = record.message.map((part, i) => (i % 2 === 0 ? String(part) : renderValue(part))).join("");
  const { printer, service, peer } = record.properties as { printer?: string; service?: string; peer?: string };
  const where = [printer, service].filter(Boolean).join("/");
  const time = new Date(record.timestamp).toISOString();
  const level = (record.level === "warning" ? "WARN" : record.level.toUpperCase()).padEnd(5);
  const line = `${time} ${level} ${where ? `[${where}] ` : ""}${peer ? `${peer} ` : ""}${message}`;
  return redact(line);
}

/** Lines go to stderr; tests can capture them with `captureLogs`. */
let extraSink: ((line: string) => void) | undefined;

const stderrSink: Sink = (record) => {
  const line = formatRecord(record);
  extraSink?.(line);
  if (!quiet) process.stderr.write(line + "\n");
};

let quiet = false;

/** printers.toml says "warn"; LogTape calls it "warning" (and throws on "warn"). */
const toLogTapeLevel = (level: Level): LogLevel => (level === "warn" ? "warning" : level);

export function setupLogging(level: Level, options: { quiet?: boolean } = {}): void {
  quiet = options.quiet ?? false;
  resetSync();
  configureSync({
    sinks: { stderr: stderrSink },
    loggers: [
      { category: [ROOT], lowestLevel: toLogTapeLevel(level), sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** A new level (a reload), keeping where lines go. */
export function changeLogLevel(level: Level): void {
  setupLogging(level, { quiet });
}

/** Collects formatted lines (tests use it to prove what is and is not logged). */
export function captureLogs(): { lines: string[]; stop(): void } {
  const lines: string[] = [];
  const previous = extraSink;
  extraSink = (line) => {
    lines.push(line);
    previous?.(line);
  };
  return { lines, stop: () => void (extraSink = previous) };
}

/** A logger for one printer's service; add the peer with `.with({ peer })`. */
export function serviceLogger(printer: string, service: string): Logger {
  return getLogger([ROOT, printer, service]).with({ printer, service });
}

export function processLogger(area = "main"): Logger {
  return getLogger([ROOT, area]);
}
