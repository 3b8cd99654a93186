// Who may connect: `allow` lists of CIDR ranges (IPv4 and IPv6), checked on every listener before a byte is
// read. The default admits the addresses a LAN, a VPN or an overlay network uses and refuses public ones, so a
// proxy that is port-forwarded by mistake stays closed. Refusals are logged once per address per minute.
import type { Logger } from "../log.ts";

/** Loopback, private, link-local, shared (100.64/10: Tailscale, CGNAT), IPv6 loopback, ULA, link-local. */
export const DEFAULT_ALLOW = [
  "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
  "::1/128", "fc00::/7", "fe80::/10",
] as const;
/** A refused address is logged at most once in this long. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;
/** Addresses remembered for that; past this, refusals are counted and summed up in one line a minute. */
export const MAX_REMEMBERED_REFUSALS = 1_024;

interface Range {
  family: 4 | 6;
  base: bigint;
  bits: number;
}

export interface AllowList {
  /** The ranges as written, for messages and docs. */
  readonly ranges: readonly string[];
  allows(address: string | undefined): boolean;
  /** allows(), and a refusal logged on `log` (which names printer and service) at most once a minute. */
  admit(address: string | undefined, log: Logger, what: string, port?: number): boolean;
}

function parseIPv4(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return undefined;
    value = (value << 8n) | BigInt(Number(part));
  }
  return value;
}

function parseIPv6(text: string): bigint | undefined {
  let head = text;
  let tailWords: number[] = [];
  // An embedded IPv4 address at the end: ::ffff:192.168.1.5
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const value = parseIPv4(v4[2]!);
    if (value === undefined) return undefined;
    head = `${v4[1]}0:0`;
    tailWords = [Number(value >> 16n), Number(value & 0xffffn)];
  }
  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const words = (part: string) => (part === "" ? [] : part.split(":"));
  const left = words(halves[0]!);
  const right = halves.length === 2 ? words(halves[1]!) : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...right];
  let value = 0n;
  for (const word of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(word)) return undefined;
    value = (value << 16n) | BigInt(parseInt(word, 16));
  }
  if (tailWords.length) value = (value & ~0xffffffffn) | (BigInt(tailWords[0]!) << 16n) | BigInt(tailWords[1]!);
  return value;
}

const MAPPED_PREFIX = 0xffffn << 32n;

/** An address as a family and number; IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as the IPv4 address. */
export function parseAddress(text: string): { family: 4 | 6; value: bigint } | undefined {
  const bare = text.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const v4 = parseIPv4(bare);
  if (v4 !== undefined) return { family: 4, value: v4 };
  if (!bare.includes(":")) return undefined;
  const v6 = parseIPv6(bare);
  if (v6 === undefined) return undefined;
  if (v6 >> 32n === 0xffffn) return { family: 4, value: v6 & 0xffffffffn };
  return { family: 6, value: v6 };
}

/** "192.168.1.0/24", "fd00::/8" or a single address; an error says what is wrong. */
export function parseRange(text: string): Range | { error: string } {
  const [addressText, bitsText, extra] = text.trim().split("/");
  if (extra !== undefined) return { error: `"${text}" has two "/"` };
  const address = parseAddress(addressText ?? "");
  if (!address) return { error: `"${text}" is not an IPv4 or IPv6 address or range (e.g. "192.168.1.0/24", "fd00::/8")` };
  const width = address.family === 4 ? 32 : 128;
  // A mapped address written with a prefix counts its bits over IPv6.
  const mappedBits = address.family === 4 && addressText!.includes(":") ? 96 : 0;
  let bits = width;
  if (bitsText !== undefined) {
    if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) - mappedBits < 0 || Number(bitsText) - mappedBits > width) {
      return { error: `"${text}": the prefix length must be 0 to ${width + mappedBits}` };
    }
    bits = Number(bitsText) - mappedBits;
  }
  const hostBits = BigInt(width - bits);
  const base = (address.value >> hostBits) << hostBits;
  if (base !== address.value) return { error: `"${text}" has bits set past its /${bits + mappedBits}; write the network address (e.g. "192.168.1.0/24")` };
  return { family: address.family, base, bits };
}

function inRange(range: Range, address: { family: 4 | 6; value: bigint }): boolean {
  if (range.family !== address.family) return false;
  const hostBits = BigInt((range.family === 4 ? 32 : 128) - range.bits);
  return address.value >> hostBits === range.base >> hostBits;
}

/** Builds a list from ranges already checked by parseAllowList (config.ts); a bad one throws. */
export function createAllowList(texts: readonly string[] = DEFAULT_ALLOW): AllowList {
  const ranges = texts.map((text) => {
    const range = parseRange(text);
    if ("error" in range) throw new Error(`allow: ${range.error}`);
    return range;
  });
  const lastLogged = new Map<string, number>();
  let unlogged = 0;
  let unloggedSince = 0;
  const allows = (address: string | undefined) => {
    const parsed = address === undefined ? undefined : parseAddress(address);
    return parsed !== undefined && ranges.some((range) => inRange(range, parsed));
  };
  const shouldLog = (address: string, now: number) => {
    const last = lastLogged.get(address);
    if (last !== undefined && now - last < REFUSAL_LOG_INTERVAL_MS) return false;
    if (last === undefined && lastLogged.size >= MAX_REMEMBERED_REFUSALS) {
      for (const [known, at] of lastLogged) if (now - at >= REFUSAL_LOG_INTERVAL_MS) lastLogged.delete(known);
      if (lastLogged.size >= MAX_REMEMBERED_REFUSALS) return false;
    }
    lastLogged.set(address, now);
    return true;
  };
  return {
    ranges: texts,
    allows,
    admit(address, log, what, port) {
      if (allows(address)) return true;
      const now = Date.now();
      const shown = address?.replace(/^::ffff:/, "") ?? "?";
      if (shouldLog(shown, now)) {
        log.with({ peer: port === undefined ? shown : `${shown}:${port}` })
          .warn(`refused ${what} connection from ${shown}: not in allow (${texts.join(", ")}); add its range to \`allow\` to let it in (further refusals of this address are not logged for ${REFUSAL_LOG_INTERVAL_MS / 1000} s)`);
      } else {
        unlogged++;
        if (now - unloggedSince >= REFUSAL_LOG_INTERVAL_MS) {
          if (unloggedSince) log.warn(`refused ${unlogged} more ${what} connections from addresses not in allow in the last minute`);
          unlogged = 0;
          unloggedSince = now;
        }
      }
      return false;
    },
  };
}

/** Config checking: the list or every problem with it, each naming the range. */
export function parseAllowList(value: unknown, fail: (what: string) => void): string[] | undefined {
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
    fail('must be a list of addresses or ranges, e.g. ["192.168.1.0/24", "fd00::/8"]');
    return undefined;
  }
  let ok = true;
  for (const text of value as string[]) {
    const range = parseRange(text);
    if ("error" in range) {
      fail(`has ${range.error}`);
      ok = false;
    }
  }
  return ok ? (value as string[]) : undefined;
}
