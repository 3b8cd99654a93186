// The [export] sections of printers.toml: [export.mqtt], the external MQTT broker pandaproxy publishes every
// printer's state to (lib/export/mqtt.ts), with Home Assistant discovery and commands; [export.rtsp], the media
// server each camera is pushed to (lib/export/rtsp.ts).
import { readFileSync } from "node:fs";
import { isTable, optionalBoolean, optionalInteger, optionalString, table, unknownKeys, type At } from "../config-fields.ts";

export const EXPORT_KEYS = ["mqtt", "rtsp"];
export const RTSP_EXPORT_KEYS = ["url", "username", "password", "password_file", "fps", "width", "skip"];
/** Where [export.rtsp] url names the printer. */
export const PRINTER_PLACEHOLDER = "{printer}";
export const MQTT_EXPORT_KEYS = [
  "url", "ca", "insecure", "username", "password", "password_file", "prefix", "client_id", "reports", "commands",
  "discovery", "discovery_prefix", "skip", "camera_interval",
];
export const DEFAULT_EXPORT_PREFIX = "pandaproxy";
export const DEFAULT_DISCOVERY_PREFIX = "homeassistant";
const WHERE = "[export.mqtt] ";

export interface MqttExportConfig {
  /** mqtt://host:port or mqtts://host:port ("" in printers.toml: no export). */
  url: string;
  /** PEM file of the CA that signed the broker's certificate (mqtts://). */
  ca?: string;
  /** mqtts:// without checking the broker's certificate. */
  insecure: boolean;
  username?: string;
  password?: string;
  prefix: string;
  clientId: string;
  /** Every printer report on <prefix>/<printer>/report, besides the merged state. */
  reports: boolean;
  /** Forward <prefix>/<printer>/request to the printer (as a local client with the printer's access code would). */
  commands: boolean;
  discovery: boolean;
  discoveryPrefix: string;
  /** Printers not exported (the per-printer opt-out). */
  skip: string[];
  /** Seconds between camera snapshots on <prefix>/<printer>/camera; 0: none. */
  cameraIntervalSeconds: number;
}

export interface RtspExportConfig {
  /** rtsp://host[:port]/path with {printer}: where each camera is pushed (ANNOUNCE/RECORD). */
  url: string;
  /** The media server's login (Basic or Digest, answered by our relay: FFmpeg never sees the password). */
  username?: string;
  password?: string;
  /** Chamber and MJPEG cameras: pictures per second of the H.264 pushed; absent: the camera's own rate. */
  fps?: number;
  /** Chamber and MJPEG cameras: width of the H.264 pushed (the height follows); absent: the camera's own. */
  width?: number;
  skip: string[];
}

export interface ExportConfig {
  mqtt?: MqttExportConfig;
  rtsp?: RtspExportConfig;
}

function readPasswordFile(path: string, at: At, where = WHERE): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch (error) {
    at(where, "password_file", `"${path}" cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    return undefined;
  }
}

function topicPrefix(t: Record<string, unknown>, key: string, fallback: string, at: At): string {
  const value = optionalString(t, key, WHERE, at) ?? fallback;
  if (!value || /[#+]/.test(value) || value.startsWith("/") || value.endsWith("/")) {
    at(WHERE, key, `is "${value}"; expected a topic prefix without wildcards or a leading/trailing "/", e.g. "${fallback}"`);
  }
  return value;
}

function skipList(t: Record<string, unknown>, printerNames: readonly string[], where: string, at: At): string[] {
  const skip = Array.isArray(t.skip) ? t.skip : t.skip === undefined ? [] : (at(where, "skip", `must be a list of printer names, e.g. ["p1s"]`), []);
  for (const name of skip) {
    if (typeof name !== "string" || !printerNames.includes(name)) at(where, "skip", `names "${String(name)}", which is no [[printer]] name`);
  }
  return skip.filter((s): s is string => typeof s === "string");
}

function parseRtspExport(t: Record<string, unknown>, printerNames: readonly string[], at: At): RtspExportConfig | undefined {
  const where = "[export.rtsp] ";
  unknownKeys(t, RTSP_EXPORT_KEYS, (key, hint) => at(where, key, `is unknown${hint}`));
  const url = optionalString(t, "url", where, at);
  const shown = url?.replace(/\/\/[^@/]*@/, "//…@");
  if (url === undefined) at(where, "url", `is missing; expected e.g. "rtsp://mediamtx:8554/${PRINTER_PLACEHOLDER}" ("" pushes nothing)`);
  else if (url && /\/\/[^@/]*@/.test(url)) at(where, "url", `is "${shown}" and carries credentials; put them in username and password (or password_file), which FFmpeg never sees`);
  else if (url && !/^rtsp:\/\/[^/\s@]+(:\d+)?\/\S*$/.test(url)) at(where, "url", `is "${url}"; expected rtsp://HOST[:PORT]/PATH, e.g. "rtsp://mediamtx:8554/${PRINTER_PLACEHOLDER}"`);
  else if (url && !url.includes(PRINTER_PLACEHOLDER)) at(where, "url", `is "${url}" without ${PRINTER_PLACEHOLDER}; each printer needs its own path, e.g. "rtsp://mediamtx:8554/${PRINTER_PLACEHOLDER}"`);
  const username = optionalString(t, "username", where, at);
  const password = optionalString(t, "password", where, at);
  const passwordFile = optionalString(t, "password_file", where, at);
  if (password !== undefined && passwordFile !== undefined) at(where, "password_file", "and password are both set; keep one");
  const secret = passwordFile !== undefined ? readPasswordFile(passwordFile, at, where) : password;
  if (secret !== undefined && !username) at(where, "username", "is missing; the password is sent with a username");
  const fps = optionalInteger(t, "fps", where, at);
  if (fps !== undefined && (fps < 1 || fps > 60)) at(where, "fps", `is ${fps}; expected pictures per second from 1 to 60 (leave it out for the camera's own rate)`);
  const width = optionalInteger(t, "width", where, at);
  if (width !== undefined && (width < 16 || width > 4096 || width % 2)) at(where, "width", `is ${width}; expected an even number of pixels from 16 to 4096, e.g. 640`);
  const skip = skipList(t, printerNames, where, at);
  return url ? { url, username, password: secret, fps, width, skip } : undefined;
}

function parseMqttExport(t: Record<string, unknown>, printerNames: readonly string[], at: At): MqttExportConfig | undefined {
  unknownKeys(t, MQTT_EXPORT_KEYS, (key, hint) => at(WHERE, key, `is unknown${hint}`));
  const url = optionalString(t, "url", WHERE, at);
  if (url === undefined) at(WHERE, "url", `is missing; expected e.g. "mqtt://broker.lan:1883" or "mqtts://broker.lan:8883" ("" exports nothing)`);
  else if (url && !/^mqtts?:\/\/[^/\s]+(:\d+)?\/?$/.test(url)) at(WHERE, "url", `is "${url.replace(/\/\/[^@/]*@/, "//…@")}"; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]`);
  if (url && /\/\/[^@/]*@/.test(url)) at(WHERE, "url", "carries credentials; put them in username and password (or password_file)");
  const password = optionalString(t, "password", WHERE, at);
  const passwordFile = optionalString(t, "password_file", WHERE, at);
  if (password !== undefined && passwordFile !== undefined) at(WHERE, "password_file", "and password are both set; keep one");
  const skip = skipList(t, printerNames, WHERE, at);
  const cameraInterval = optionalInteger(t, "camera_interval", WHERE, at) ?? 0;
  if (cameraInterval < 0) at(WHERE, "camera_interval", `is ${cameraInterval}; expected seconds between snapshots, or 0 for none`);
  const ca = optionalString(t, "ca", WHERE, at);
  if (ca !== undefined && url && !url.startsWith("mqtts://")) at(WHERE, "ca", "is set, but url is not mqtts://");
  const exported: MqttExportConfig = {
    url: url ?? "",
    ca,
    insecure: optionalBoolean(t, "insecure", WHERE, at) ?? false,
    username: optionalString(t, "username", WHERE, at),
    password: passwordFile !== undefined ? readPasswordFile(passwordFile, at) : password,
    prefix: topicPrefix(t, "prefix", DEFAULT_EXPORT_PREFIX, at),
    clientId: optionalString(t, "client_id", WHERE, at) ?? `pandaproxy-${process.pid}`,
    reports: optionalBoolean(t, "reports", WHERE, at) ?? false,
    commands: optionalBoolean(t, "commands", WHERE, at) ?? false,
    discovery: optionalBoolean(t, "discovery", WHERE, at) ?? false,
    discoveryPrefix: topicPrefix(t, "discovery_prefix", DEFAULT_DISCOVERY_PREFIX, at),
    skip,
    cameraIntervalSeconds: Math.max(0, cameraInterval),
  };
  // url = "" turns the export off, as [web] listen = "" turns the web page off; the other keys are still checked.
  return url ? exported : undefined;
}

/** The [export] section; `printerNames` checks `skip`. */
export function parseExportConfig(raw: unknown, printerNames: readonly string[], at: At): ExportConfig {
  const t = table(raw, "[export]", at);
  unknownKeys(t, EXPORT_KEYS, (key, hint) => at("[export] ", key, `is unknown${hint}`));
  const result: ExportConfig = {};
  for (const key of ["mqtt", "rtsp"] as const) {
    if (t[key] !== undefined && !isTable(t[key])) at("[export] ", key, `must be a table: write it as [export.${key}]`);
  }
  if (isTable(t.mqtt)) result.mqtt = parseMqttExport(t.mqtt, printerNames, at);
  if (isTable(t.rtsp)) result.rtsp = parseRtspExport(t.rtsp, printerNames, at);
  return result;
}
