// One [[printer]] entry of printers.toml: the keys every printer has are read here; the entry is then handed
// to its vendor (bambu/config.ts, flashforge/config.ts), which reads its own keys and lists its listeners.
import { join } from "node:path";
import { BAMBU_VENDOR } from "./bambu/config.ts";
import { isIPv4, isTable, optionalString, requiredString, suggest, unknownKeys, type At } from "./config-fields.ts";
import type { PortName, Ports, PrinterConfig, PrinterType, PrinterVendor, ProxyConfig, ServiceName } from "./config.ts";
import { parseAllowList } from "./core/allow.ts";
import { KNOWN_PRINTERS_FILE } from "./core/printer-identity.ts";
import { FLASHFORGE_VENDOR } from "./flashforge/config.ts";

export const VENDORS: readonly PrinterVendor[] = [BAMBU_VENDOR, FLASHFORGE_VENDOR];

/** A type that is not a vendor's is reported, and the entry read as Bambu's meanwhile. */
export const vendorOf = (type: unknown): PrinterVendor => VENDORS.find((v) => v.type === type) ?? BAMBU_VENDOR;

export const COMMON_PRINTER_KEYS = ["name", "type", "host", "bind", "services", "ports", "printer_ports", "allow"];
/** Every key a [[printer]] may have, of any vendor (suggestions for a misspelt key come from here). */
export const PRINTER_KEYS = [...new Set([...COMMON_PRINTER_KEYS, ...VENDORS.flatMap((v) => v.keys)])];

export function parsePrinter(entry: unknown, index: number, at: At, proxy: ProxyConfig): PrinterConfig | undefined {
  if (!isTable(entry)) {
    at(`[[printer]] #${index + 1}: `, "", "must be a table");
    return undefined;
  }
  const label = typeof entry.name === "string" && entry.name ? `printer "${entry.name}": ` : `[[printer]] #${index + 1}: `;
  const vendor = vendorOf(entry.type ?? "bambu");
  checkKeys(entry, vendor, label, at);

  const givenName = requiredString(entry, "name", label, at);
  const name = givenName ?? `#${index + 1}`;
  if (givenName && !/^[A-Za-z0-9_.-]+$/.test(name)) at(label, "name", `is "${name}"; use letters, digits, "-", "_" or "." (it appears in URLs)`);
  const type = (optionalString(entry, "type", label, at) ?? "bambu") as PrinterType;
  if (type !== "bambu" && type !== "flashforge") at(label, "type", `is "${type}"; expected "bambu" or "flashforge"`);
  const host = requiredString(entry, "host", label, at) ?? "";
  const fields = vendor.parse(entry, label, at);

  const bind = optionalString(entry, "bind", label, at) ?? "0.0.0.0";
  if (!isIPv4(bind)) at(label, "bind", `is "${bind}"; expected an IPv4 address of this host, or "0.0.0.0"`);
  const services = parseServices(entry, vendor, type, label, at);
  const ports = portTable(entry, "ports", vendor, label, at);
  const printerPorts = portTable(entry, "printer_ports", vendor, label, at);
  // A printer's own list replaces [proxy] allow for its listeners (it may be wider or narrower).
  const allow = entry.allow === undefined ? proxy.allow : parseAllowList(entry.allow, (what) => at(label, "allow", what)) ?? [];
  const knownPrintersFile = join(proxy.stateDir, KNOWN_PRINTERS_FILE);
  return { name, type, host, bind, services, ports, printerPorts, allow, knownPrintersFile, ...fields };
}

/** A key of another vendor says whose it is; any other unknown key gets the nearest known one as a hint. */
function checkKeys(entry: Record<string, unknown>, vendor: PrinterVendor, label: string, at: At): void {
  const own = [...COMMON_PRINTER_KEYS, ...vendor.keys];
  unknownKeys(entry, own, (key) => {
    const owner = VENDORS.find((v) => v.keys.includes(key));
    const foreign = owner && (Object.hasOwn(vendor.foreignKeyHints ?? {}, key) ? vendor.foreignKeyHints![key]! : `applies to ${owner.label} printers only`);
    at(label, key, foreign ?? `is unknown${suggest(key, PRINTER_KEYS)}`);
  });
}

function parseServices(entry: Record<string, unknown>, vendor: PrinterVendor, type: string, label: string, at: At): ServiceName[] {
  const allServices: readonly string[] = vendor.services;
  if (entry.services === undefined) return allServices.slice() as ServiceName[];
  if (!Array.isArray(entry.services) || entry.services.some((s) => typeof s !== "string")) {
    at(label, "services", `must be a list of strings from ${allServices.join(", ")}`);
    return allServices.slice() as ServiceName[];
  }
  for (const s of entry.services as string[]) {
    if (!allServices.includes(s)) at(label, "services", `has unknown service "${s}"${suggest(s, allServices)}; a ${type} printer has ${allServices.join(", ")}`);
  }
  return (entry.services as string[]).filter((s) => allServices.includes(s)) as ServiceName[];
}

function portTable(entry: Record<string, unknown>, key: string, vendor: PrinterVendor, label: string, at: At): Ports {
  const defaults = vendor.ports;
  const result = Object.assign({}, ...VENDORS.map((v) => v.ports), defaults) as Ports;
  const value = entry[key];
  if (value === undefined) return result;
  if (!isTable(value)) {
    at(label, key, `must be an inline table, e.g. ${key} = { ${Object.keys(defaults)[0]} = 1${Object.values(defaults)[0]} }`);
    return result;
  }
  for (const [name, port] of Object.entries(value)) {
    if (!Object.hasOwn(defaults, name)) {
      at(label, `${key}.${name}`, `is not a port of this printer${suggest(name, Object.keys(defaults))}; known: ${Object.keys(defaults).join(", ")}`);
      continue;
    }
    const zeroAllowed = vendor.portsThatMayBeOff.includes(name);
    if (typeof port !== "number" || !Number.isInteger(port) || port < (zeroAllowed ? 0 : 1) || port > 65535) {
      at(label, `${key}.${name}`, `is ${JSON.stringify(port)}; expected a port number from ${zeroAllowed ? 0 : 1} to 65535`);
      continue;
    }
    result[name as PortName] = port;
  }
  return result;
}
