// The Bambu part of a [[printer]] entry in printers.toml: its keys, services, ports and listeners.
// printer-config.ts reads the keys every printer has and hands the entry here (PrinterVendor: config.ts).
import type { PortRange, PrinterConfig, PrinterVendor, VendorFields } from "../config.ts";
import {
  isIPv4, optionalBoolean, optionalInteger, optionalString, readCodes, requiredString, type At,
} from "../config-fields.ts";
import { BAMBU_MODELS, cameraChoice, cameraPorts, findModel, type CameraMode } from "./models.ts";

export const BAMBU_SERVICES = ["camera", "mqtt", "ftp", "bind", "ssdp"] as const;

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

/** The [[printer]] keys only a Bambu entry has (besides the common ones in config.ts). */
export const BAMBU_KEYS = [
  "serial", "access_code", "access_code_file", "camera", "model", "viewer_access_code", "ftp_data_ports", "ftp_sessions",
  "ssdp_targets", "ssdp_listen", "tls_cert", "tls_key", "printer_ca", "camera_wait",
  "mqtt_session_max_age",
] as const;

/** `camera_wait` bounds, in seconds: camera viewers are kept this long while the printer is unreachable. */
const CAMERA_WAIT_MAX_S = 24 * 3600;
/** `mqtt_session_max_age` bounds, in seconds: each renewal costs a reconnect, so not more often than every 10 s. */
const MQTT_SESSION_MAX_AGE_MIN_S = 10;
const MQTT_SESSION_MAX_AGE_MAX_S = 7 * 24 * 3600;

export type { CameraMode };

const CAMERA_MODES: readonly CameraMode[] = ["auto", "chamber", "rtsp", "none"];

/** What a Bambu entry adds to the common keys. */
export interface BambuFields {
  serial: string;
  /** Bambu access code, or FlashForge check code. */
  accessCode: string;
  viewerAccessCode?: string;
  camera: CameraMode;
  /** e.g. "P1S", "X1C"; undefined when not configured (detected later). */
  model?: string;
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
  /** `camera_wait`: how long chamber viewers wait without frames for an unreachable printer (default: chamber.ts). */
  cameraWaitMs?: number;
  /** `mqtt_session_max_age`: renew the printer's MQTT session at this age (firmware that degrades long sessions). */
  mqttSessionMaxAgeMs?: number;
}

function parseBambu(entry: Record<string, unknown>, label: string, at: At): VendorFields {
  const serial = requiredString(entry, "serial", label, at) ?? "";
  const codes = readCodes(entry, {
    key: "access_code",
    where: "the 8 characters shown on the printer's LAN settings",
    check: (code) => (/^[A-Za-z0-9]{8}$/.test(code) ? undefined : "must be the 8 letters or digits shown on the printer's screen"),
  }, label, at);
  const camera = (optionalString(entry, "camera", label, at) ?? "auto") as CameraMode;
  if (!CAMERA_MODES.includes(camera)) at(label, "camera", `is "${camera}"; expected "auto", "chamber", "rtsp" or "none"`);
  const model = optionalString(entry, "model", label, at);
  if (model !== undefined && !findModel(model)) {
    at(label, "model", `is "${model}"; not a Bambu model pandaproxy knows (${BAMBU_MODELS.map((m) => m.name).join(", ")}); leave it out to detect the model`);
  }
  const ftpDataPorts = parseFtpDataPorts(entry, label, at);
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
  const cameraWait = optionalInteger(entry, "camera_wait", label, at);
  if (cameraWait !== undefined && (cameraWait < 1 || cameraWait > CAMERA_WAIT_MAX_S)) at(label, "camera_wait", `is ${cameraWait}; expected seconds, 1 to ${CAMERA_WAIT_MAX_S}`);
  const cameraWaitMs = cameraWait === undefined ? undefined : cameraWait * 1000;
  const maxAge = optionalInteger(entry, "mqtt_session_max_age", label, at);
  if (maxAge !== undefined && (maxAge < MQTT_SESSION_MAX_AGE_MIN_S || maxAge > MQTT_SESSION_MAX_AGE_MAX_S)) {
    at(label, "mqtt_session_max_age", `is ${maxAge}; expected seconds, ${MQTT_SESSION_MAX_AGE_MIN_S} to ${MQTT_SESSION_MAX_AGE_MAX_S}`);
  }
  const mqttSessionMaxAgeMs = maxAge === undefined ? undefined : maxAge * 1000;
  return { serial, ...codes, camera, model, ftpDataPorts, ftpSessions, ssdpTargets, ssdpListen, tlsCert, tlsKey, printerCa, cameraWaitMs, mqttSessionMaxAgeMs };
}

function parseFtpDataPorts(entry: Record<string, unknown>, label: string, at: At): PortRange | undefined {
  const rangeText = optionalString(entry, "ftp_data_ports", label, at);
  if (rangeText === undefined) return undefined;
  const m = /^(\d+)-(\d+)$/.exec(rangeText);
  const first = m ? Number(m[1]) : NaN;
  const last = m ? Number(m[2]) : NaN;
  if (!m || first < 1 || last > 65535 || first > last) {
    at(label, "ftp_data_ports", `is "${rangeText}"; expected "FIRST-LAST", e.g. "50000-50100"`);
    return undefined;
  }
  return { first, last };
}

/** The sockets a Bambu entry listens on; the camera ports as bambu/camera.ts will use them (models.ts decides). */
function bambuListeners(p: PrinterConfig, add: (service: string, port: number, protocol?: "tcp" | "udp") => void): void {
  for (const s of p.services) {
    if (s === "camera") {
      const ports = cameraPorts(cameraChoice(p));
      if (ports.port6000) add(ports.port6000, p.ports.chamber);
      if (ports.rtsp) {
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
}

export const BAMBU_VENDOR: PrinterVendor = {
  type: "bambu",
  label: "Bambu",
  services: BAMBU_SERVICES,
  ports: BAMBU_PORTS,
  portsThatMayBeOff: ["rtsp_plain"],
  keys: BAMBU_KEYS,
  foreignKeyHints: { check_code: 'is for FlashForge printers; Bambu printers use "access_code"' },
  parse: parseBambu,
  listeners: bambuListeners,
};
