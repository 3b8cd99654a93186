// The readers every printers.toml parser uses (config.ts, bambu/config.ts, flashforge/config.ts): each takes
// a TOML table and a key and reports a wrong value through `at`, naming the key and what is expected.
import { readFileSync } from "node:fs";

/** Reports one problem: `where` is e.g. 'printer "x1c": ', `key` the key ("" for none), `what` what is wrong. */
export type At = (where: string, key: string, what: string) => void;

export function parseHostPort(text: string, fail: (what: string) => void): { host: string; port: number } | undefined {
  const m = /^(.*):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || port < 1 || port > 65535) {
    fail(`is "${text}"; expected "HOST:PORT", e.g. "0.0.0.0:8080", or "" to disable`);
    return undefined;
  }
  return { host: m[1], port };
}

export function isIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

export function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

export function table(value: unknown, name: string, at: At): Record<string, unknown> {
  if (value === undefined) return {};
  if (!isTable(value)) {
    at("", "", `${name} must be a table`);
    return {};
  }
  return value;
}

export function requiredString(t: Record<string, unknown>, key: string, where: string, at: At): string | undefined {
  if (t[key] === undefined || t[key] === "") {
    at(where, key, "is missing");
    return undefined;
  }
  return optionalString(t, key, where, at);
}

export function optionalString(t: Record<string, unknown>, key: string, where: string, at: At): string | undefined {
  const value = t[key];
  if (value === undefined) return undefined;
  if (typeof value !== "string") {
    at(where, key, `must be a string (in quotes), not ${JSON.stringify(value)}`);
    return undefined;
  }
  return value;
}

export function optionalBoolean(t: Record<string, unknown>, key: string, where: string, at: At): boolean | undefined {
  const value = t[key];
  if (value === undefined) return undefined;
  if (typeof value !== "boolean") {
    at(where, key, `must be true or false (no quotes), not ${JSON.stringify(value)}`);
    return undefined;
  }
  return value;
}

export function optionalInteger(t: Record<string, unknown>, key: string, where: string, at: At): number | undefined {
  const value = t[key];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value)) {
    at(where, key, `must be a whole number, not ${JSON.stringify(value)}`);
    return undefined;
  }
  return value;
}

export function unknownKeys(t: Record<string, unknown>, known: readonly string[], report: (key: string, hint: string) => void): void {
  for (const key of Object.keys(t)) if (!known.includes(key)) report(key, suggest(key, known));
}

/**
 * ' (did you mean "x"?)' for the nearest known word, when one is close enough: a small edit distance to the whole
 * word ("acces_code"), to its beginning ("acess" -> "access_code"), or one word containing the other ("code").
 */
export interface CodeRules {
  /** The key that holds the code: "access_code" (Bambu) or "check_code" (FlashForge). */
  key: string;
  /** Another key accepted for it (FlashForge also takes "access_code"). */
  alias?: string;
  /** Where the user finds the code, for the "is missing" line: "the 8 characters shown on the printer…". */
  where: string;
  /** A problem with the code's form, when there is one. */
  check?: (code: string) => string | undefined;
}

/** The access code (from its key or `access_code_file`) and `viewer_access_code`, which must differ from it. */
export function readCodes(entry: Record<string, unknown>, rules: CodeRules, label: string, at: At): { accessCode: string; viewerAccessCode?: string } {
  const accessCode = readAccessCode(entry, rules, label, at);
  const viewerAccessCode = optionalString(entry, "viewer_access_code", label, at);
  if (viewerAccessCode !== undefined && viewerAccessCode === accessCode) at(label, "viewer_access_code", "must differ from the access code");
  return { accessCode, viewerAccessCode };
}

function readAccessCode(entry: Record<string, unknown>, rules: CodeRules, label: string, at: At): string {
  const { key } = rules;
  let code = optionalString(entry, key, label, at) ?? (rules.alias ? optionalString(entry, rules.alias, label, at) : undefined);
  const codeFile = optionalString(entry, "access_code_file", label, at);
  if (code !== undefined && codeFile !== undefined) at(label, "access_code_file", `and "${key}" are both set; keep one`);
  if (code === undefined && codeFile !== undefined) {
    try {
      code = readFileSync(codeFile, "utf8").trim();
    } catch (error) {
      at(label, "access_code_file", `names "${codeFile}", which cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
      return "";
    }
  }
  if (code === undefined) {
    at(label, key, `is missing; set "${key}" (${rules.where}) or "access_code_file"`);
    return "";
  }
  const problem = rules.check?.(code);
  if (problem) at(label, key, problem);
  return code;
}

/**
 * ' (did you mean "x"?)' for the nearest known word, when one is close enough: a small edit distance to the whole
 * word ("acces_code"), to its beginning ("acess" -> "access_code"), or one word containing the other ("code").
 */
export function suggest(word: string, known: readonly string[]): string {
  const w = word.toLowerCase();
  // Lower is nearer: a known beginning, a one-letter slip, a containing word, a slip at the beginning, two slips.
  const score = (candidate: string): number => {
    const c = candidate.toLowerCase();
    let best = Infinity;
    const whole = editDistance(w, c);
    if (whole <= Math.max(2, Math.floor(w.length / 3))) best = 2 * whole;
    if (w.length < 3) return best;
    for (let n = Math.max(1, w.length - 1); n <= Math.min(c.length, w.length + 1); n++) {
      const prefix = editDistance(w, c.slice(0, n));
      if (prefix <= (w.length >= 5 ? 2 : 1)) best = Math.min(best, 1 + 2 * prefix);
    }
    const parts = w.split(/[_.-]/).filter((part) => part.length >= 3);
    if (c.includes(w) || w.includes(c) || (parts.length > 1 && parts.every((part) => c.includes(part)))) best = Math.min(best, 2.5);
    return best;
  };
  let best: string | undefined;
  let bestScore = Infinity;
  for (const candidate of known) {
    const s = score(candidate);
    if (s < bestScore) [best, bestScore] = [candidate, s];
  }
  return best !== undefined && bestScore < Infinity ? ` (did you mean "${best}"?)` : "";
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length]!;
}
