// printers.toml -> validated, typed Config. Every problem is collected (not just the first) and each message
// names the file, the printer and the key, says what is wrong and what is expected. This file reads [proxy],
// [web] and the list of printers; printer-config.ts reads each [[printer]]'s common keys and its vendor's
// config.ts (bambu/, flashforge/: a PrinterVendor) its own keys, services, ports and listeners.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import { BAMBU_PORTS, BAMBU_SERVICES, type BambuFields, type CameraMode } from "./bambu/config.ts";
import { isIPv4, optionalBoolean, optionalString, parseHostPort, suggest, table, unknownKeys, type At } from "./config-fields.ts";
import { DEFAULT_ALLOW, parseAllowList } from "./core/allow.ts";
import { FLASHFORGE_PORTS, FLASHFORGE_SERVICES, type FlashForgeFields } from "./flashforge/config.ts";
import { LOG_LEVELS, type Level } from "./log.ts";
import { parseExportConfig, type ExportConfig } from "./export/config.ts";
import { COMMON_PRINTER_KEYS, PRINTER_KEYS, parsePrinter, vendorOf } from "./printer-config.ts";

export { BAMBU_PORTS, BAMBU_SERVICES, FLASHFORGE_PORTS, FLASHFORGE_SERVICES, COMMON_PRINTER_KEYS, PRINTER_KEYS, isIPv4, parseHostPort, suggest };
export type { CameraMode };

export type PrinterType = "bambu" | "flashforge";
export type ServiceName = (typeof BAMBU_SERVICES)[number] | (typeof FLASHFORGE_SERVICES)[number];
export type PortName = keyof typeof BAMBU_PORTS | keyof typeof FLASHFORGE_PORTS;
/** Every port name has a value; only the printer type's own names can be set in printers.toml. */
export type Ports = Record<PortName, number>;

export interface PortRange {
  first: number;
  last: number;
}

/** The keys every [[printer]] has, whatever its vendor. */
export interface CommonPrinterFields {
  name: string;
  type: PrinterType;
  /** The printer's address on the LAN. */
  host: string;
  /** This printer's listen address on the proxy host. */
  bind: string;
  services: ServiceName[];
  /** Ports the proxy listens on for this printer. */
  ports: Ports;
  /** Ports of the printer itself (defaults: the real ones); a simulator or a port-forward may differ. */
  printerPorts: Ports;
  /** Who may connect to this printer's listeners: its own `allow`, else [proxy] allow (lib/core/allow.ts). */
  allow: string[];
  /** Where the printer's certificate is pinned: <state_dir>/known_printers (lib/core/printer-identity.ts). */
  knownPrintersFile: string;
}

/** What a vendor's parser returns: one flat shape, so a service reads `printer.serial` whatever the vendor. */
export type VendorFields = BambuFields & FlashForgeFields;

export interface PrinterConfig extends CommonPrinterFields, VendorFields {}

/** One vendor's share of printers.toml: bambu/config.ts, flashforge/config.ts. */
export interface PrinterVendor {
  type: PrinterType;
  /** As in "applies to Bambu printers only". */
  label: string;
  services: readonly ServiceName[];
  /** Its port names and their defaults. */
  ports: Readonly<Record<string, number>>;
  /** Port names that may be 0, meaning "no such listener". */
  portsThatMayBeOff: readonly string[];
  /** The [[printer]] keys it reads, besides COMMON_PRINTER_KEYS. */
  keys: readonly string[];
  /** What to say about another vendor's key, when more than "applies to … printers only" helps. */
  foreignKeyHints?: Readonly<Record<string, string>>;
  parse(entry: Record<string, unknown>, label: string, at: At): VendorFields;
  /** Calls `add` for every socket the entry listens on (port 0: none). */
  listeners(p: PrinterConfig, add: (service: string, port: number, protocol?: "tcp" | "udp") => void): void;
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
  /** [export.mqtt]: the external broker (lib/export/). */
  export: ExportConfig;
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

export const TOP_KEYS = ["proxy", "web", "printer", "export"];
export const PROXY_KEYS = ["state_dir", "log_level", "ffmpeg", "allow"];
export const WEB_KEYS = ["listen", "username", "password", "open"];
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
    const printer = parsePrinter(entry, index, at, proxy);
    if (!printer) return;
    if (names.has(printer.name)) at(`printer "${printer.name}": `, "name", "is used by two printers; names must be unique");
    names.add(printer.name);
    printers.push(printer);
  });
  if (Array.isArray(printerList) && printerList.length === 0) at("", "", "no [[printer]] entries: add at least one printer (see config.example.toml)");

  const exported = parseExportConfig(raw.export, printers.map((p) => p.name), at);
  problems.push(...listenerConflicts(printers).map((c) => `${file}: ${c}`));
  if (web.listen) {
    const { host, port } = web.listen;
    for (const l of printers.flatMap(listenersOf)) {
      if (l.protocol !== "tcp" || l.port !== port || (l.host !== host && l.host !== "0.0.0.0" && host !== "0.0.0.0")) continue;
      at("[web] ", "listen", `is "${listenText}", where printer "${l.printer}" (${l.service}) listens too; move the web page to another port or address`);
    }
  }
  if (problems.length) throw new ConfigErrors(problems);
  return { file, proxy, web, printers, export: exported };
}

export interface Listener {
  printer: string;
  service: string;
  protocol: "tcp" | "udp";
  host: string;
  port: number;
}

/** Every socket a printer entry listens on, as its vendor lists them (camera "auto" reserves both camera ports). */
export function listenersOf(p: PrinterConfig): Listener[] {
  const out: Listener[] = [];
  vendorOf(p.type).listeners(p, (service, port, protocol = "tcp") => {
    if (port > 0) out.push({ printer: p.name, service, protocol, host: p.bind, port });
  });
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
