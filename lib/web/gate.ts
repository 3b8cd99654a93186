// The web server's door: every request for the page, /api, /metrics or a camera passes here first. It reads the
// credentials, answers 401 (none or wrong), 403 (right, but not for this), or 429 (too many failed logins from
// this address), logs failed logins without what was typed, and says what the credentials open.
import type { PrinterConfig, WebConfig } from "../config.ts";
import { processLogger, serviceLogger, type Logger } from "../log.ts";
import { accessOf, credentialsOf, offersCredentials, opens, opensAnything, webUserOf, type Access, type WebRoute } from "./access.ts";
import { createLoginLimit, type LoginLimitOptions } from "./login-limit.ts";
import { cameraToken, metricsToken } from "./tokens.ts";

export const REALM = "pandaproxy";

export interface Gate {
  /** What the request may see, or the answer that refuses it. */
  admit(request: Request, url: URL, route: WebRoute, peer: { address: string; label: string }): Access | Response;
}

const refusal = (status: number, body: string, headers: Record<string, string> = {}) =>
  new Response(body + "\n", { status, headers: { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store", ...headers } });

const unauthorized = (body: string) => refusal(401, body, { "WWW-Authenticate": `Basic realm="${REALM}"` });

export function createGate(options: {
  web: WebConfig;
  printers: () => readonly Pick<PrinterConfig, "name" | "type" | "serial" | "accessCode" | "viewerAccessCode">[];
  loginLimit?: LoginLimitOptions;
}): Gate {
  const { web } = options;
  const log = processLogger("web");
  const limit = createLoginLimit(options.loginLimit);
  const cameraTokens = new Map<string, string | undefined>();
  const { tokensDir } = web;
  const tokenOf = (printer: string) => {
    if (tokensDir === undefined) return undefined;
    if (!cameraTokens.has(printer)) {
      try {
        cameraTokens.set(printer, cameraToken(tokensDir, printer));
      } catch (error) {
        serviceLogger(printer, "web").error(`the camera token is not available, so ?token= URLs are refused: ${(error as Error).message}`);
        cameraTokens.set(printer, undefined);
      }
    }
    return cameraTokens.get(printer);
  };
  // Made now, not at the first request: a state_dir that cannot hold them is reported at start.
  const metrics = web.open || tokensDir === undefined ? undefined : metricsToken(tokensDir);
  if (!web.open && tokensDir !== undefined) for (const p of options.printers()) cameraTokens.set(p.name, cameraToken(tokensDir, p.name));

  const knownUsers = () => new Set([...options.printers().map(webUserOf), ...(web.username !== undefined ? [web.username] : [])]);

  return {
    admit(request, url, route, peer) {
      const printers = options.printers();
      if (web.open) return accessOf({}, { web, printers, cameraToken: () => undefined, metricsToken: undefined }, route);
      const routeLog: Logger = (route.kind === "camera" && printers.some((p) => p.name === route.printer) ? serviceLogger(route.printer, "web") : log).with({ peer: peer.label });
      const locked = limit.lockedFor(peer.address);
      if (locked > 0) {
        const seconds = Math.ceil(locked / 1000);
        return refusal(429, `too many failed logins from ${peer.address}; try again in ${seconds} s`, { "Retry-After": String(seconds) });
      }
      const credentials = credentialsOf(request, url, route);
      const access = accessOf(credentials, { web, printers, cameraToken: tokenOf, metricsToken: metrics }, route);
      if (opens(access, route)) return access;
      if (!offersCredentials(credentials)) return unauthorized("credentials required: a printer's access code (user \"bblp\"), or the [web] username and password");
      if (opensAnything(access)) {
        const what = route.kind === "camera" ? `printer "${route.printer}"` : route.kind === "metrics" ? "/metrics" : "this page";
        return refusal(403, `these credentials do not open ${what}`);
      }
      const user = credentials.basic?.user;
      const offered = credentials.token !== undefined ? "a wrong camera token" : credentials.bearer !== undefined ? "a wrong metrics token" :
        user !== undefined && knownUsers().has(user) ? `a wrong password for user "${user}"` : "an unknown user name";
      routeLog.warn(`web login refused: ${offered}`);
      if (limit.failed(peer.address)) {
        routeLog.warn(`too many failed web logins from ${peer.address}: its requests are answered 429 for ${Math.ceil(limit.lockedFor(peer.address) / 1000)} s`);
      }
      return unauthorized("wrong credentials");
    },
  };
}
