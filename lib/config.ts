// printers.toml -> validated, typed Config. Every problem is collected (not just the first) and each message
// names the file, the printer and the key, says what is wrong and what is expected.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import { BAMBU_MODELS, findModel, modelOf } from "./bambu/models.ts";
import { DEFAULT_ALLOW, parseAllowList } from "./core/allow.ts";
import { KNOWN_PRINTERS_FILE } from "./core/printer-identity.ts";
import { LOG_LEVELS, type Level } from "./log.ts";

export type PrinterType = "bambu" | "flashforge";
export type CameraMode = "auto" | "chamber" | "rtsp" | "none";

export const BAMBU_SERVICES = ["camera", "mqtt", "ftp", "bind", "ssdp"] as const;
export const FLASHFORGE_SERVICES = ["tcp", "http", "discovery", "camera"] as const;
export type ServiceName = (typeof BAMBU_SERVICES)[number] | (typeof FLASHFORGE_SERVICES)[number];

/** The ports clients use, as the printers use them. `rtsp_plain` 0 means "no plain RTSP listener". */
export const BAMBU_PORTS = {
  chamber: 6000, // chamber camera (A1/P1) or the file tunnel (P2S/H2/X2D)
  rtsp: 322,
  rtsp_plain: 0,
  mqtt: 8883,
  ftp: 990,
  bind: 3000,
  bind_tls: 3002,
  ssdp: 2021,
} as const;
export const FLASHFORGE_PORTS = { tcp: 8899, http: 8898, discovery: 48899, camera: 8080 } as const;
export type PortName = keyof typeof BAMBU_PORTS | keyof typeof FLASHFORGE_PORTS;
/** Every port name has a value; only the printer type's own names can be set in printers.toml. */
export type Ports = Record<PortName, number>;

export interface PortRange {
  first: number;
  last: number;
}

export interface PrinterConfig {
  name: string;
  type: PrinterType;
  /** The printer's address on the LAN. */
  host: string;
  serial: string;
  /** Bambu access code, or FlashForge check code. */
  accessCode: string;
  viewerAccessCode?: string;
  /** This printer's listen address on the proxy host. */
  bind: string;
  services: ServiceName[];
  camera: CameraMode;
  /** e.g. "P1S", "X1C"; undefined when not configured (detected later). */
  model?: string;
  /** Ports the proxy listens on for this printer. */
  ports: Ports;
  /** Ports of the printer itself (defaults: the real ones); a simulator or a port-forward may differ. */
  printerPorts: Ports;
  ftpDataPorts?: PortRange;
  /** How many FTP sessions the printer itself is given at once. */
  ftpSessions: number;
  ssdpTargets: string[];
  /** Listen for the printer's own SSDP announcements to learn its model and firmware. */
  ssdpListen: boolean;
  tlsCert?: string;
  tlsKey?: string;
  /** Verify the printer's certificate against this CA file (off by default: the certificate is pinned). */
  printerCa?: string;
  /** Who may connect to this printer's listeners: its own `allow`, else [proxy] allow (lib/core/allow.ts). */
  allow: string[];
  /** Where the printer's certificate is pinned: <state_dir>/known_printers (lib/core/printer-identity.ts). */
  knownPrintersFile: string;
}

export interface ProxyConfig {
  stateDir: string;
  logLevel: Level;
  ffmpeg: string;
  /** Who may connect to the web page, and to printers without their own `allow`. */
  allow: string[];
}

export interface WebConfig {
  /** undefined: the web server is disabled. */
  listen?: { host: string; port: number };
  username?: string;
  password?: string;
  /** true: everything on the web page is served without credentials (a warning is logged at start). */
  open?: boolean;
  /** Where the per-printer camera tokens and the /metrics token are kept: <state_dir>/tokens (undefined: no tokens). */
  tokensDir?: string;
  /** Who may use the web page: [proxy] allow (undefined: DEFAULT_ALLOW in lib/core/allow.ts). */
  allow?: string[];
}

export interface Config {
  file: string;
  proxy: ProxyConfig;
  web: WebConfig;
  printers: PrinterConfig[];
}

export class ConfigErrors extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigErrors";
  }
}

export function defaultStateDir(): string {
  // systemd sets STATE_DIRECTORY for units with StateDirectory= (the unit `pandaproxy service install` writes).
  const fromSystemd = process.env.STATE_DIRECTORY?.split(":")[0];
  if (fromSystemd) return fromSystemd;
  return process.getuid?.() === 0 ? "/var/lib/pandaproxy" : join(homedir(), ".local/state/pandaproxy");
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigErrors([`${file}: cannot read the file (${(error as Error).message})`]);
  }
  return parseConfig(text, file);
}

export const TOP_KEYS = ["proxy", "web", "printer"];
export const PROXY_KEYS = ["state_dir", "log_level", "ffmpeg", "allow"];
export const WEB_KEYS = ["listen", "username", "password", "open"];
export const PRINTER_KEYS = [
  "name", "type", "host", "serial", "access_code", "access_code_file", "check_code", "bind", "services", "camera",
  "model", "viewer_access_code", "ports", "printer_ports", "ftp_data_ports", "ftp_sessions", "ssdp_targets", "ssdp_listen",
  "tls_cert", "tls_key", "printer_ca", "allow",
];

export function parseConfig(text: string, file = "printers.toml"): Config {
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(text) as Record<string, unknown>;
  } catch (error) {
    const where = error instanceof TomlError ? ` (line ${error.line}, column ${error.column})` : "";
    const first = (error as Error).message.split("\n")[0];
    throw new ConfigErrors([`${file}${where}: not valid TOML: ${first}`]);
  }
  const problems: string[] = [];
  const at = (where: string, key: string, what: string) => problems.push(`${file}: ${where}${key ? `key "${key}" ` : ""}${what}`);

  unknownKeys(raw, TOP_KEYS, (key, hint) => at("", key, `is not a known section${hint}`));

  const proxyRaw = table(raw.proxy, "[proxy]", at);
  unknownKeys(proxyRaw, PROXY_KEYS, (key, hint) => at("[proxy] ", key, `is unknown${hint}`));
  const logLevel = optionalString(proxyRaw, "log_level", "[proxy] ", at) ?? "info";
  if (!LOG_LEVELS.includes(logLevel as Level)) at("[proxy] ", "log_level", `is "${logLevel}"; expected one of ${LOG_LEVELS.join(", ")}`);
  const proxy: ProxyConfig = {
    stateDir: optionalString(proxyRaw, "state_dir", "[proxy] ", at) ?? defaultStateDir(),
    logLevel: logLevel as Level,
    ffmpeg: optionalString(proxyRaw, "ffmpeg", "[proxy] ", at) ?? "ffmpeg",
    allow: proxyRaw.allow === undefined ? [...DEFAULT_ALLOW] : parseAllowList(proxyRaw.allow, (what) => at("[proxy] ", "allow", what)) ?? [],
  };

  const webRaw = table(raw.web, "[web]", at);
  unknownKeys(webRaw, WEB_KEYS, (key, hint) => at("[web] ", key, `is unknown${hint}`));
  const listenText = optionalString(webRaw, "listen", "[web] ", at) ?? "0.0.0.0:8080";
  const web: WebConfig = {
    listen: listenText === "" ? undefined : parseHostPort(listenText, (what) => at("[web] ", "listen", what)),
    username: optionalString(webRaw, "username", "[web] ", at),
    password: optionalString(webRaw, "password", "[web] ", at),
    open: optionalBoolean(webRaw, "open", "[web] ", at) ?? false,
    tokensDir: join(proxy.stateDir, "tokens"),
    allow: proxy.allow,
  };
  if ((web.username === undefined) !== (web.password === undefined)) at("[web] ", "", "username and password must be set together");

  const printerList = raw.printer === undefined ? [] : raw.printer;
  if (!Array.isArray(printerList)) at("", "printer", "must be an array of tables: write each printer as [[printer]]");
  const printers: PrinterConfig[] = [];
  const names = new Set<string>();
  (Array.isArray(printerList) ? printerList : []).forEach((entry, index) => {
    const printer = parsePrinter(entry, index, file, at, proxy);
    if (!printer) return;
    if (names.has(printer.name)) at(`printer "${printer.name}": `, "name", "is used by two printers; names must be unique");
    names.add(printer.name);
    printers.push(printer);
  });
  if (Array.isArray(printerList) && printerList.length === 0) at("", "", "no [[printer]] entries: add at least one printer (see config.example.toml)");

  problems.push(...listenerConflicts(printers).map((c) => `${file}: ${c}`));
  if (web.listen) {
    const { host, port } = web.listen;
    for (const l of printers.flatMap(listenersOf)) {
      if (l.protocol !== "tcp" || l.port !== port || (l.host !== host && l.host !== "0.0.0.0" && host !== "0.0.0.0")) continue;
      at("[web] ", "listen", `is "${listenText}", where printer "${l.printer}" (${l.service}) listens too; move the web page to another port or address`);
    }
  }
  if (problems.length) throw new ConfigErrors(problems);
  return { file, proxy, web, printers };
}

type At = (where: string, key: string, what: string) => void;

function parsePrinter(entry: unknown, index: number, file: string, at: At, proxy: ProxyConfig): PrinterConfig | undefined {
  if (!isTable(entry)) {
    at(`[[printer]] #${index + 1}: `, "", "must be a table");
    return undefined;
  }
  const label = typeof entry.name === "string" && entry.name ? `printer "${entry.name}": ` : `[[printer]] #${index + 1}: `;
  unknownKeys(entry, PRINTER_KEYS, (key, hint) => at(label, key, `is unknown${hint}`));

  const givenName = requiredString(entry, "name", label, at);
  const name = givenName ?? `#${index + 1}`;
  if (givenName && !/^[A-Za-z0-9_.-]+$/.test(name)) at(label, "name", `is "${name}"; use letters, digits, "-", "_" or "." (it appears in URLs)`);
  const type = (optionalString(entry, "type", label, at) ?? "bambu") as PrinterType;
  if (type !== "bambu" && type !== "flashforge") at(label, "type", `is "${type}"; expected "bambu" or "flashforge"`);
  const isBambu = type !== "flashforge";
  const host = requiredString(entry, "host", label, at) ?? "";
  const serial = requiredString(entry, "serial", label, at) ?? "";

  const accessCode = readAccessCode(entry, isBambu, label, file, at);
  const viewerAccessCode = optionalString(entry, "viewer_access_code", label, at);
  if (viewerAccessCode !== undefined && viewerAccessCode === accessCode) at(label, "viewer_access_code", "must differ from the access code");

  const bind = optionalString(entry, "bind", label, at) ?? "0.0.0.0";
  if (!isIPv4(bind)) at(label, "bind", `is "${bind}"; expected an IPv4 address of this host, or "0.0.0.0"`);

  const allServices: readonly string[] = isBambu ? BAMBU_SERVICES : FLASHFORGE_SERVICES;
  let services = allServices.slice() as ServiceName[];
  if (entry.services !== undefined) {
    if (!Array.isArray(entry.services) || entry.services.some((s) => typeof s !== "string")) {
      at(label, "services", `must be a list of strings from ${allServices.join(", ")}`);
    } else {
      for (const s of entry.services as string[]) {
        if (!allServices.includes(s)) at(label, "services", `has unknown service "${s}"${suggest(s, allServices)}; a ${type} printer has ${allServices.join(", ")}`);
      }
      services = (entry.services as string[]).filter((s) => allServices.includes(s)) as ServiceName[];
    }
  }

  const camera = (optionalString(entry, "camera", label, at) ?? "auto") as CameraMode;
  if (!["auto", "chamber", "rtsp", "none"].includes(camera)) at(label, "camera", `is "${camera}"; expected "auto", "chamber", "rtsp" or "none"`);
  if (!isBambu && entry.camera !== undefined) at(label, "camera", "applies to Bambu printers only");
  const model = optionalString(entry, "model", label, at);
  if (isBambu && model !== undefined && !findModel(model)) {
    at(label, "model", `is "${model}"; not a Bambu model pandaproxy knows (${BAMBU_MODELS.map((m) => m.name).join(", ")}); leave it out to detect the model`);
  }

  const defaults: Record<string, number> = isBambu ? { ...BAMBU_PORTS } : { ...FLASHFORGE_PORTS };
  const ports = portTable(entry, "ports", defaults, label, at);
  const printerPorts = portTable(entry, "printer_ports", defaults, label, at);

  let ftpDataPorts: PortRange | undefined;
  const rangeText = optionalString(entry, "ftp_data_ports", label, at);
  if (rangeText !== undefined) {
    const m = /^(\d+)-(\d+)$/.exec(rangeText);
    const first = m ? Number(m[1]) : NaN;
    const last = m ? Number(m[2]) : NaN;
    if (!m || first < 1 || last > 65535 || first > last) at(label, "ftp_data_ports", `is "${rangeText}"; expected "FIRST-LAST", e.g. "50000-50100"`);
    else ftpDataPorts = { first, last };
  }
  const ftpSessions = optionalInteger(entry, "ftp_sessions", label, at) ?? 1;
  if (ftpSessions < 1 || ftpSessions > 16) at(label, "ftp_sessions", `is ${ftpSessions}; expected 1 to 16`);

  let ssdpTargets = ["255.255.255.255"];
  if (entry.ssdp_targets !== undefined) {
    if (!Array.isArray(entry.ssdp_targets) || entry.ssdp_targets.some((t) => typeof t !== "string" || !isIPv4(t))) {
      at(label, "ssdp_targets", 'must be a list of IPv4 addresses, e.g. ["255.255.255.255"]');
    } else ssdpTargets = entry.ssdp_targets as string[];
  }
  const ssdpListen = optionalBoolean(entry, "ssdp_listen", label, at) ?? true;
  const tlsCert = optionalString(entry, "tls_cert", label, at);
  const tlsKey = optionalString(entry, "tls_key", label, at);
  if ((tlsCert === undefined) !== (tlsKey === undefined)) at(label, "", "tls_cert and tls_key must be set together");
  const printerCa = optionalString(entry, "printer_ca", label, at);
  // A printer's own list replaces [proxy] allow for its listeners (it may be wider or narrower).
  const allow = entry.allow === undefined ? proxy.allow : parseAllowList(entry.allow, (what) => at(label, "allow", what)) ?? [];
  const knownPrintersFile = join(proxy.stateDir, KNOWN_PRINTERS_FILE);

  return {
    name, type, host, serial, accessCode, viewerAccessCode, bind, services, camera: isBambu ? camera : "none", model,
    ports, printerPorts, ftpDataPorts, ftpSessions, ssdpTargets, ssdpListen, tlsCert, tlsKey, printerCa,
    allow, knownPrintersFile,
  };
}

function readAccessCode(entry: Record<string, unknown>, isBambu: boolean, label: string, file: string, at: At): string {
  const key = isBambu ? "access_code" : "check_code";
  if (isBambu && entry.check_code !== undefined) at(label, "check_code", 'is for FlashForge printers; Bambu printers use "access_code"');
  let code = optionalString(entry, key, label, at) ?? (isBambu ? undefined : optionalString(entry, "access_code", label, at));
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
    at(label, key, `is missing; set "${key}" (the 8 characters shown on the printer${isBambu ? "'s LAN settings" : ""}) or "access_code_file"`);
    return "";
  }
  if (isBambu && !/^[A-Za-z0-9]{8}$/.test(code)) at(label, key, "must be the 8 letters or digits shown on the printer's screen");
  return code;
}

function portTable(entry: Record<string, unknown>, key: string, defaults: Record<string, number>, label: string, at: At): Ports {
  const result: Ports = { ...BAMBU_PORTS, ...FLASHFORGE_PORTS, ...defaults };
  const value = entry[key];
  if (value === undefined) return result;
  if (!isTable(value)) {
    at(label, key, `must be an inline table, e.g. ${key} = { ${Object.keys(defaults)[0]} = 1${Object.values(defaults)[0]} }`);
    return result;
  }
  for (const [name, port] of Object.entries(value)) {
    if (!(name in defaults)) {
      at(label, `${key}.${name}`, `is not a port of this printer${suggest(name, Object.keys(defaults))}; known: ${Object.keys(defaults).join(", ")}`);
      continue;
    }
    const zeroAllowed = name === "rtsp_plain";
    if (typeof port !== "number" || !Number.isInteger(port) || port < (zeroAllowed ? 0 : 1) || port > 65535) {
      at(label, `${key}.${name}`, `is ${JSON.stringify(port)}; expected a port number from ${zeroAllowed ? 0 : 1} to 65535`);
      continue;
    }
    result[name as PortName] = port;
  }
  return result;
}

export interface Listener {
  printer: string;
  service: string;
  protocol: "tcp" | "udp";
  host: string;
  port: number;
}

/** Every socket a printer entry listens on (camera "auto" reserves both camera ports). */
export function listenersOf(p: PrinterConfig): Listener[] {
  const out: Listener[] = [];
  const add = (service: string, port: number, protocol: "tcp" | "udp" = "tcp") => {
    if (port > 0) out.push({ printer: p.name, service, protocol, host: p.bind, port });
  };
  if (p.type === "flashforge") {
    for (const s of p.services) {
      if (s === "discovery") add(s, p.ports.discovery, "udp");
      else add(s, p.ports[s as "tcp" | "http" | "camera"]);
    }
    return out;
  }
  for (const s of p.services) {
    if (s === "camera") {
      // As bambu/camera.ts decides: the model (or serial prefix) settles "auto"; port 6000 of a file-tunnel
      // model is the tunnel whatever the camera; an unknown model reserves both camera ports.
      const model = modelOf(p);
      const kind = p.camera === "auto" ? model?.camera : p.camera;
      if (model?.fileTunnel) add("tunnel", p.ports.chamber);
      else if (kind === undefined || kind === "chamber") add("chamber", p.ports.chamber);
      if (kind === undefined || kind === "rtsp") {
        add("rtsp", p.ports.rtsp);
        add("rtsp_plain", p.ports.rtsp_plain);
      }
    } else if (s === "mqtt") add(s, p.ports.mqtt);
    else if (s === "ftp") add(s, p.ports.ftp);
    else if (s === "bind") {
      add("bind", p.ports.bind);
      add("bind_tls", p.ports.bind_tls);
    }
    // SSDP sends from an ephemeral port; it listens on 2021 with SO_REUSEADDR, so it takes no exclusive port.
  }
  return out;
}

/** One line per pair of printers that want the same address and port (or per printer that uses a port twice). */
export function listenerConflicts(printers: PrinterConfig[]): string[] {
  const all = printers.flatMap(listenersOf);
  const groups = new Map<string, { a: string; b: string; host: string; ports: string[]; services: string[] }>();
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i]!, b = all[j]!;
      if (a.protocol !== b.protocol || a.port !== b.port) continue;
      if (a.host !== b.host && a.host !== "0.0.0.0" && b.host !== "0.0.0.0") continue;
      const host = a.host === "0.0.0.0" ? b.host : a.host;
      const key = JSON.stringify([a.printer, b.printer, host]);
      let group = groups.get(key);
      if (!group) groups.set(key, (group = { a: a.printer, b: b.printer, host, ports: [], services: [] }));
      group.ports.push(`${a.port}${a.protocol === "udp" ? "/udp" : ""}`);
      group.services.push(a.service === b.service ? a.service : `${a.service}/${b.service}`);
    }
  }
  return [...groups.values()].map((g) => {
    const ports = `${g.ports.length === 1 ? "port" : "ports"} ${g.ports.join(", ")} (${g.services.join(", ")})`;
    return g.a === g.b
      ? `printer "${g.a}": uses ${g.host} ${ports} for two services; move one with "ports"`
      : `printer "${g.a}" and printer "${g.b}" both listen on ${g.host} ${ports}: ` +
          `give each printer its own "bind" address (an IP alias of this host) or move one with "ports"`;
  });
}

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

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function table(value: unknown, name: string, at: At): Record<string, unknown> {
  if (value === undefined) return {};
  if (!isTable(value)) {
    at("", "", `${name} must be a table`);
    return {};
  }
  return value;
}

function requiredString(t: Record<string, unknown>, key: string, where: string, at: At): string | undefined {
  if (t[key] === undefined || t[key] === "") {
    at(where, key, "is missing");
    return undefined;
  }
  return optionalString(t, key, where, at);
}

function optionalString(t: Record<string, unknown>, key: string, where: string, at: At): string | undefined {
  const value = t[key];
  if (value === undefined) return undefined;
  if (typeof value !== "string") {
    at(where, key, `must be a string (in quotes), not ${JSON.stringify(value)}`);
    return undefined;
  }
  return value;
}

function optionalBoolean(t: Record<string, unknown>, key: string, where: string, at: At): boolean | undefined {
  const value = t[key];
  if (value === undefined) return undefined;
  if (typeof value !== "boolean") {
    at(where, key, `must be true or false (no quotes), not ${JSON.stringify(value)}`);
    return undefined;
  }
  return value;
}

function optionalInteger(t: Record<string, unknown>, key: string, where: string, at: At): number | undefined {
  const value = t[key];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value)) {
    at(where, key, `must be a whole number, not ${JSON.stringify(value)}`);
    return undefined;
  }
  return value;
}

function unknownKeys(t: Record<string, unknown>, known: readonly string[], report: (key: string, hint: string) => void): void {
  for (const key of Object.keys(t)) if (!known.includes(key)) report(key, suggest(key, known));
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
