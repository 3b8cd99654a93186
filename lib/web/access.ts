// Who may see what on the web page. A printer's own access code (or its viewer access code) opens that printer,
// as the printer's own services do: user "bblp" for a Bambu printer, the printer's serial number for a FlashForge
// (its HTTP API pairs serialNumber with checkCode). The [web] username/password opens every printer and /metrics.
// A printer's camera token opens only its camera URLs (camera.mjpeg, snapshot.jpg, live.mp4); the metrics token only /metrics.
import { sameSecret } from "../core/edge.ts";
import type { PrinterConfig, WebConfig } from "../config.ts";

/** The user name Bambu printers expect with their access code (MQTT, FTPS, RTSPS); the web takes the same. */
export const BAMBU_USER = "bblp";

/** What a request asks for. */
export type WebRoute =
  | { kind: "page" }
  | { kind: "api" }
  | { kind: "metrics" }
  | { kind: "camera"; printer: string };

export interface Credentials {
  basic?: { user: string; password: string };
  bearer?: string;
  /** `?token=`, read on camera URLs only. */
  token?: string;
}

/** What a request's credentials open. */
export interface Access {
  /** Every printer ([web] open, or the admin login). */
  allPrinters: boolean;
  /** The printers opened by name (all of them when allPrinters). */
  printers: ReadonlySet<string>;
  metrics: boolean;
}

export interface Secrets {
  web: Pick<WebConfig, "username" | "password" | "open">;
  printers: readonly Pick<PrinterConfig, "name" | "type" | "serial" | "accessCode" | "viewerAccessCode">[];
  /** A configured printer's camera token (undefined: not available). */
  cameraToken(printer: string): string | undefined;
  metricsToken: string | undefined;
}

export const NOTHING: Access = { allPrinters: false, printers: new Set(), metrics: false };

/** The user name that goes with a printer's codes on the web page. */
export const webUserOf = (p: Pick<PrinterConfig, "type" | "serial">) => (p.type === "flashforge" ? p.serial : BAMBU_USER);

export function credentialsOf(request: Request, url: URL, route: WebRoute | undefined): Credentials {
  const credentials: Credentials = {};
  const header = request.headers.get("authorization") ?? "";
  const space = header.indexOf(" ");
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (space > 0 && scheme === "basic") {
    const decoded = Buffer.from(value, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    // A header that is not "user:password" is still an attempt: it counts as a failed login.
    credentials.basic = colon < 0 ? { user: "", password: decoded } : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  } else if (space > 0 && scheme === "bearer" && route?.kind === "metrics") {
    credentials.bearer = value;
  }
  if (route?.kind === "camera") {
    const token = url.searchParams.get("token");
    if (token !== null) credentials.token = token;
  }
  return credentials;
}

export const offersCredentials = (c: Credentials) => c.basic !== undefined || c.bearer !== undefined || c.token !== undefined;

/** Everything the credentials open, whatever was asked for. Every secret is compared with sameSecret. */
export function accessOf(credentials: Credentials, secrets: Secrets, route: WebRoute | undefined): Access {
  const everyPrinter = new Set(secrets.printers.map((p) => p.name));
  if (secrets.web.open) return { allPrinters: true, printers: everyPrinter, metrics: true };
  const { basic, bearer, token } = credentials;
  const login = basic ? `${basic.user}:${basic.password}` : undefined;
  const admin = secrets.web.username !== undefined && secrets.web.password !== undefined && sameSecret(login, `${secrets.web.username}:${secrets.web.password}`);
  if (admin) return { allPrinters: true, printers: everyPrinter, metrics: true };

  const printers = new Set<string>();
  if (login !== undefined) {
    for (const p of secrets.printers) {
      const user = webUserOf(p);
      // Both compared every time, so the time taken does not tell which code is set.
      const byCode = sameSecret(login, `${user}:${p.accessCode}`);
      const byViewerCode = sameSecret(login, `${user}:${p.viewerAccessCode}`);
      if ((byCode && p.accessCode !== "") || (byViewerCode && p.viewerAccessCode)) printers.add(p.name);
    }
  }
  if (token !== undefined && route?.kind === "camera" && everyPrinter.has(route.printer)) {
    if (sameSecret(token, secrets.cameraToken(route.printer))) printers.add(route.printer);
  }
  const metrics = bearer !== undefined && sameSecret(bearer, secrets.metricsToken);
  return { allPrinters: false, printers, metrics };
}

/** Whether `access` is enough for `route` (a camera token is read on camera URLs only, so it never opens the page). */
export function opens(access: Access, route: WebRoute): boolean {
  switch (route.kind) {
    case "metrics":
      return access.metrics;
    case "camera":
      return access.allPrinters || access.printers.has(route.printer);
    case "page":
    case "api":
      return access.allPrinters || access.printers.size > 0;
  }
}

export const opensAnything = (access: Access) => access.allPrinters || access.printers.size > 0 || access.metrics;
