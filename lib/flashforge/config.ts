// The FlashForge part of a [[printer]] entry in printers.toml: its keys, services, ports and listeners.
// printer-config.ts reads the keys every printer has and hands the entry here (PrinterVendor: config.ts).
import type { PrinterConfig, PrinterVendor, VendorFields } from "../config.ts";
import { optionalString, readCodes, requiredString, type At } from "../config-fields.ts";

export const FLASHFORGE_SERVICES = ["tcp", "http", "discovery", "camera"] as const;
export const FLASHFORGE_PORTS = { tcp: 8899, http: 8898, discovery: 48899, camera: 8080 } as const;

/** The [[printer]] keys a FlashForge entry has besides the common ones ("access_code" is taken for the check code). */
export const FLASHFORGE_KEYS = ["serial", "check_code", "access_code", "access_code_file", "viewer_access_code", "model"] as const;

/** What a FlashForge entry adds to the common keys. */
export interface FlashForgeFields {
  serial: string;
  /** The check code (shown in the printer's network settings). */
  accessCode: string;
  viewerAccessCode?: string;
  /** A free label, e.g. "Adventurer 5M"; FlashForge models are not checked. */
  model?: string;
}

// PrinterConfig is one flat shape for every vendor; in a FlashForge entry the Bambu-only fields hold these
// values, which no FlashForge service reads.
const BAMBU_ONLY_FIELDS = { camera: "none", ftpSessions: 1, ssdpTargets: ["255.255.255.255"], ssdpListen: true } as const;

function parseFlashForge(entry: Record<string, unknown>, label: string, at: At): VendorFields {
  const serial = requiredString(entry, "serial", label, at) ?? "";
  const codes = readCodes(entry, { key: "check_code", alias: "access_code", where: "the 8 characters shown on the printer" }, label, at);
  const model = optionalString(entry, "model", label, at);
  const fields: FlashForgeFields = { serial, ...codes, model };
  return { ...fields, ...BAMBU_ONLY_FIELDS, ssdpTargets: [...BAMBU_ONLY_FIELDS.ssdpTargets] };
}

/** TCP 8899, HTTP 8898 and the camera on TCP; discovery on UDP. */
function flashforgeListeners(p: PrinterConfig, add: (service: string, port: number, protocol?: "tcp" | "udp") => void): void {
  for (const s of p.services) {
    if (s === "discovery") add(s, p.ports.discovery, "udp");
    else add(s, p.ports[s as "tcp" | "http" | "camera"]);
  }
}

export const FLASHFORGE_VENDOR: PrinterVendor = {
  type: "flashforge",
  label: "FlashForge",
  services: FLASHFORGE_SERVICES,
  ports: FLASHFORGE_PORTS,
  portsThatMayBeOff: [],
  keys: FLASHFORGE_KEYS,
  parse: parseFlashForge,
  listeners: flashforgeListeners,
};
