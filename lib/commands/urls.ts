// `pandaproxy urls --config FILE`: every URL a client needs, with its credentials, ready to paste into Home
// Assistant, Frigate, OctoPrint or a browser. It prints secrets on purpose, to stdout for the user; nothing here
// goes to the log.
import { networkInterfaces } from "node:os";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type Command } from "./command.ts";
import { listenersOf, type Config, type PrinterConfig } from "../config.ts";
import { CAMERA_PATH } from "../bambu/rtsp.ts";
import { BAMBU_USER, webUserOf } from "../web/access.ts";
import { cameraToken, metricsToken, metricsTokenPath } from "../web/tokens.ts";
import { loadOrReport } from "./load.ts";

export interface ClientUrl {
  /** What it is for, e.g. "MQTT", "snapshot". */
  label: string;
  url: string;
  /** A short hint: which tool takes it, or which header goes with it. */
  note?: string;
}

export interface PrinterUrls {
  printer: PrinterConfig;
  urls: ClientUrl[];
}

export interface WebUrls {
  /** The page with the admin login, when [web] username/password is set (or plain, when the page is open). */
  page?: string;
  metrics: ClientUrl;
}

/** "0.0.0.0" means every address of this host: a client needs a real one, so the first LAN IPv4 address is used. */
export function reachableHost(host: string): string {
  if (host !== "0.0.0.0") return host;
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "127.0.0.1";
}

const login = (user: string, password: string) => `${encodeURIComponent(user)}:${encodeURIComponent(password)}@`;
const hostPort = (host: string, port: number) => `${reachableHost(host)}:${port}`;

function webBase(config: Config): string | undefined {
  const listen = config.web.listen;
  return listen ? `http://${hostPort(listen.host, listen.port)}` : undefined;
}

/** A printer's web camera lives on the web page when a camera service runs for it. */
function hasWebCamera(p: PrinterConfig): boolean {
  return p.services.includes("camera") && (p.type === "flashforge" || p.camera !== "none");
}

/** Every client URL of one printer. Reads (or makes) its camera token unless the web page is off or open. */
export function printerUrls(config: Config, p: PrinterConfig): PrinterUrls {
  const urls: ClientUrl[] = [];
  const at = (port: number) => hostPort(p.bind, port);
  const listeners = new Set(listenersOf(p).map((l) => l.service));
  if (p.type === "flashforge") {
    if (p.services.includes("http")) urls.push({ label: "HTTP API", url: `http://${at(p.ports.http)}/`, note: `serialNumber ${p.serial}, checkCode ${p.accessCode}` });
    if (p.services.includes("tcp")) urls.push({ label: "G-code", url: `tcp://${at(p.ports.tcp)}`, note: "FlashPrint, Orca-FlashForge" });
    if (p.services.includes("camera")) urls.push({ label: "camera", url: `http://${at(p.ports.camera)}/?action=stream`, note: "as the printer serves it" });
  } else {
    const code = p.accessCode;
    if (p.services.includes("mqtt")) urls.push({ label: "MQTT", url: `mqtts://${login(BAMBU_USER, code)}${at(p.ports.mqtt)}`, note: `topics device/${p.serial}/report and /request` });
    if (p.services.includes("ftp")) urls.push({ label: "FTPS", url: `ftps://${login(BAMBU_USER, code)}${at(p.ports.ftp)}/`, note: "implicit TLS" });
    // An NVR only watches: it gets the viewer access code when there is one.
    const watch = p.viewerAccessCode ?? code;
    if (listeners.has("rtsp")) urls.push({ label: "RTSPS", url: `rtsps://${login(BAMBU_USER, watch)}${at(p.ports.rtsp)}${CAMERA_PATH}`, note: "Frigate, go2rtc, VLC" });
    if (listeners.has("rtsp_plain")) urls.push({ label: "RTSP", url: `rtsp://${login(BAMBU_USER, watch)}${at(p.ports.rtsp_plain)}${CAMERA_PATH}`, note: "players without RTSPS" });
  }
  const base = webBase(config);
  if (base) {
    const path = `${base}/printers/${encodeURIComponent(p.name)}`;
    if (hasWebCamera(p)) {
      const query = config.web.open ? "" : `?token=${encodeURIComponent(cameraToken(config.web.tokensDir!, p.name))}`;
      urls.push({ label: "MJPEG", url: `${path}/camera.mjpeg${query}`, note: "Home Assistant MJPEG camera, OctoPrint webcam stream" });
      urls.push({ label: "snapshot", url: `${path}/snapshot.jpg${query}`, note: "Home Assistant still image, OctoPrint snapshot" });
    }
    urls.push({ label: "web page", url: config.web.open ? `${base}/` : `${base.replace("://", `://${login(webUserOf(p), p.accessCode)}`)}/`, note: "the printers with this code" });
  }
  return { printer: p, urls };
}

/** The page with every printer and /metrics; undefined when the web page is off. */
export function webUrls(config: Config): WebUrls | undefined {
  const base = webBase(config);
  if (!base) return undefined;
  const { username, password, open } = config.web;
  const page = open ? `${base}/` : username !== undefined && password !== undefined ? `${base.replace("://", `://${login(username, password)}`)}/` : undefined;
  const metrics: ClientUrl = open
    ? { label: "metrics", url: `${base}/metrics` }
    : { label: "metrics", url: `${base}/metrics`, note: `Authorization: Bearer ${metricsToken(config.web.tokensDir!)}; the token's file: ${metricsTokenPath(config.web.tokensDir!)}` };
  return { page, metrics };
}

const line = (u: ClientUrl) => `    ${(u.label + ":").padEnd(11)} ${u.url}${u.note ? `    (${u.note})` : ""}`;

/** The text `pandaproxy urls` prints (the demo prints it too). */
export function formatUrls(config: Config): string {
  const out: string[] = [];
  const web = webUrls(config);
  if (web) {
    out.push(web.page ? `  Web page, every printer: ${web.page}` : `  Web page: log in with a printer's code below (no [web] username/password is set)`);
    if (config.web.open) out.push(`  ([web] open = true: the web page needs no credentials)`);
    out.push(line(web.metrics).replace(/^ {4}/, "  "));
  } else {
    out.push(`  The web page is off ([web] listen = "").`);
  }
  for (const p of config.printers) {
    const { urls } = printerUrls(config, p);
    out.push(``, `  ${p.name} (${p.type === "flashforge" ? "FlashForge" : `Bambu ${p.model ?? ""}`.trim()}, serial ${p.serial}):`, ...urls.map(line));
  }
  return out.join("\n");
}

export const command: Command = {
  summary: "print every client URL of every printer, with credentials (MQTT, FTPS, RTSPS, MJPEG, snapshot, web)",
  usage: [
    "Usage: pandaproxy urls --config FILE",
    "",
    "Prints the URLs clients use (Home Assistant, Frigate, OctoPrint, a browser), with the access codes and camera",
    "tokens in them: treat the output as a secret. Camera tokens and the metrics token are read from (or made in)",
    "<state_dir>/tokens, so run it as the user pandaproxy runs as (e.g. sudo -u pandaproxy), or as root.",
  ].join("\n"),
  options: {},
  async run(values) {
    const config = loadOrReport(values.config as string | undefined, "urls");
    if (!config) return EXIT_USAGE;
    let text: string;
    try {
      text = formatUrls(config);
    } catch (error) {
      console.error(`pandaproxy urls: ${(error as Error).message}`);
      return EXIT_FAILURE;
    }
    console.log(`Client URLs for ${config.file} (they contain access codes and tokens: keep them private)\n\n${text}\n`);
    return EXIT_OK;
  },
};
