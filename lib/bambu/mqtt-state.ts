// The printer's full state as the proxy keeps it: primed by a full report (`"msg": 0`), updated by every delta
// (objects merged, arrays replaced; sections that only acknowledge a command are not kept), replayed to clients
// one message per top-level section (clients dispatch on the first key). Also the rewriting of report fields
// that carry the printer's address. Source for the merge rules: PROTOCOLS.md "Merged state".

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** Keys of a command acknowledgement; a section with nothing else is an echo, not state. */
const ACK_KEYS = new Set(["command", "result", "reason", "sequence_id", "msg", "param", "err_code"]);
/** Commands whose reply is state worth keeping: the status push and the version list. */
const STATE_COMMANDS = new Set(["push_status", "get_version"]);
/** Printers nest a report a few levels deep; a section far deeper is not a report, and would overflow the merge. */
export const MAX_REPORT_DEPTH = 64;
/** JSON.parse makes `"__proto__"` an own key; assigning it would set a prototype (Object.prototype's, merged). */
const UNSAFE_KEY = "__proto__";

export const isObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * Objects merged recursively, everything else (arrays included) replaced. `adopt`: the delta is the caller's to give
 * (parsed for this and kept nowhere else), so its objects and arrays go into the target as they are, not copied.
 */
export function mergeInto(target: JsonObject, delta: JsonObject, adopt = false): void {
  for (const key in delta) {
    if (key === UNSAFE_KEY) continue;
    const value = delta[key]!;
    const current = target[key];
    if (isObject(value) && isObject(current)) mergeInto(current, value, adopt);
    else target[key] = adopt || typeof value !== "object" || value === null ? value : structuredClone(value);
  }
}

/** Whether `value` nests objects or arrays deeper than `limit` levels (the recursion stops past `limit`). */
export function deeperThan(value: Json, limit: number): boolean {
  return nestsPast(value, 1, limit);
}

function nestsPast(value: Json, depth: number, limit: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (Array.isArray(value)) {
    for (const child of value) if (typeof child === "object" && child !== null && (depth + 1 > limit || nestsPast(child, depth + 1, limit))) return true;
    return false;
  }
  for (const key in value) {
    const child = value[key]!;
    if (typeof child === "object" && child !== null && (depth + 1 > limit || nestsPast(child, depth + 1, limit))) return true;
  }
  return false;
}

/** Whether a report section is state to keep (not the echo of some command). */
export function isStateSection(section: Json | undefined): section is JsonObject {
  if (!isObject(section)) return false;
  const command = section.command;
  if (typeof command === "string") return STATE_COMMANDS.has(command);
  for (const key in section) if (!ACK_KEYS.has(key)) return true;
  return false;
}

export interface ReportState {
  /**
   * Apply one report from the printer; says why a part of it was not kept (for the caller's log), if one was not.
   * `adopt`: the report was parsed for this and is kept nowhere else, so its parts are kept without a copy.
   */
  apply(report: JsonObject, adopt?: boolean): string | undefined;
  /** True once a full report arrived since the session (re)connected. */
  readonly primed: boolean;
  /** The session dropped: the state is no longer current until the next full report. */
  stale(): void;
  /** The full status as the printer would answer `pushall`, one message per section. */
  pushallReply(sequenceId: string): JsonObject[];
  /** The printer's answer to `get_version`, when one was seen. */
  versionReply(sequenceId: string): JsonObject | undefined;
  readonly sections: Readonly<JsonObject>;
}

export function createReportState(): ReportState {
  const state: JsonObject = {};
  let primed = false;
  return {
    apply(report, adopt = false) {
      const print = report.print;
      if (isObject(print) && print.command === "push_status" && print.msg === 0) {
        // A full report replaces what we had: fields the printer no longer sends must not linger.
        state.print = {};
        primed = true;
      }
      const skipped: string[] = [];
      for (const name in report) {
        const section = report[name];
        if (name === UNSAFE_KEY || !isStateSection(section)) continue;
        if (deeperThan(section, MAX_REPORT_DEPTH)) {
          skipped.push(name);
          continue;
        }
        if (name === "info") {
          state.info = adopt ? section : structuredClone(section);
          continue;
        }
        const current = state[name];
        if (isObject(current)) mergeInto(current, section, adopt);
        else state[name] = adopt ? section : structuredClone(section);
      }
      return skipped.length ? `report section ${skipped.join(", ")} nested deeper than ${MAX_REPORT_DEPTH} levels: not kept` : undefined;
    },
    get primed() {
      return primed;
    },
    stale() {
      primed = false;
    },
    pushallReply(sequenceId) {
      const out: JsonObject[] = [];
      for (const [name, section] of Object.entries(state)) {
        if (name === "info" || !isObject(section)) continue;
        const copy: JsonObject = { ...section };
        if (name === "print") Object.assign(copy, { command: "push_status", msg: 0, sequence_id: sequenceId });
        out.push({ [name]: copy });
      }
      return out;
    },
    versionReply(sequenceId) {
      const info = state.info;
      if (!isObject(info)) return undefined;
      return { info: { ...info, command: "get_version", sequence_id: sequenceId, result: "success" } };
    },
    get sections() {
      return state;
    },
  };
}

/** "192.168.1.18" -> 302098624, the little-endian u32 printers put in `net.info[].ip`. */
export function ipv4ToLittleEndian(ip: string): number {
  const parts = ip.split(".").map(Number);
  return ((parts[0] ?? 0) + (parts[1] ?? 0) * 0x100 + (parts[2] ?? 0) * 0x10000 + (parts[3] ?? 0) * 0x1000000) >>> 0;
}

export function littleEndianToIpv4(value: number): string {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff].join(".");
}

const NET_KEY = Buffer.from('"net"');
const RTSP_URL_KEY = Buffer.from('"rtsp_url"');
const UNICODE_ESCAPE = Buffer.from("\\u");

/**
 * Whether a report, as the printer's bytes, may carry an address field (so it is parsed before it goes out). False
 * only when it has neither key carriesAddress looks for: no `"net"`, no `"rtsp_url"`, and no `\u` escape that
 * could spell one. A byte search for the keys, not for the printer's address: rewriteAddresses rewrites every
 * non-zero `net.info[].ip` and every RTSP host, whatever the printer is configured as (a host name, another interface).
 */
export function mayCarryAddress(payload: Buffer): boolean {
  return payload.includes(NET_KEY) || payload.includes(RTSP_URL_KEY) || payload.includes(UNICODE_ESCAPE);
}

/** Whether a report names the printer's address (so it must be rewritten per proxy address). */
export function carriesAddress(report: JsonObject): boolean {
  const print = report.print;
  if (!isObject(print)) return false;
  return (isObject(print.net) && Array.isArray(print.net.info)) || (isObject(print.ipcam) && typeof print.ipcam.rtsp_url === "string");
}

/**
 * A copy of `report` whose address fields point at `proxyIp`: every non-zero `net.info[].ip` and the host of
 * `ipcam.rtsp_url` (its port and path kept; "disable" and empty left alone).
 */
export function rewriteAddresses(report: JsonObject, proxyIp: string): JsonObject {
  const print = report.print;
  if (!isObject(print)) return report;
  const out: JsonObject = { ...report, print: { ...print } };
  const outPrint = out.print as JsonObject;
  if (isObject(print.net) && Array.isArray(print.net.info)) {
    const encoded = ipv4ToLittleEndian(proxyIp);
    outPrint.net = {
      ...print.net,
      info: print.net.info.map((entry) => (isObject(entry) && typeof entry.ip === "number" && entry.ip !== 0 ? { ...entry, ip: encoded } : entry)),
    };
  }
  if (isObject(print.ipcam) && typeof print.ipcam.rtsp_url === "string") {
    outPrint.ipcam = { ...print.ipcam, rtsp_url: rewriteUrlHost(print.ipcam.rtsp_url, proxyIp) };
  }
  return out;
}

function rewriteUrlHost(url: string, host: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^@/]*@)?(\[[^\]]*\]|[^:/]*)(.*)$/i.exec(url);
  if (!m) return url;
  return `${m[1]}${m[2] ?? ""}${host}${m[4]}`;
}
