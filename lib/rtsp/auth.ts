// RTSP authentication (RFC 2617 as RTSP uses it): the server side checks Basic and Digest in constant time;
// the client side answers a Digest or Basic challenge (our loopback relay logs in to the printer with it).
// Digest nonces expire, and a nonce's count must grow (qop=auth; RFC 7616 3.4) or, from a client that sends no
// count, the nonce is good once: a captured Authorization header cannot be replayed on a new connection. Our
// server checks credentials once per connection, so a long session never meets an expired nonce.
import { createHash, randomBytes } from "node:crypto";
import { sameSecret } from "../core/edge.ts";

/** live555's realm; Bambu printers send exactly this, and clients do not care what it says. */
export const LIVE555_REALM = "LIVE555 Streaming Media";
/** Nonces we remember as issued; older ones get a fresh challenge (clients then simply retry). */
export const MAX_NONCES = 1024;
/** A nonce answers a challenge: clients use it within moments, so it is refused (stale=true) after this. */
export const NONCE_LIFETIME_MS = 60_000;

const md5 = (text: string) => createHash("md5").update(text).digest("hex");

export interface Credential {
  user: string;
  password: string;
  /** Who this is, e.g. "access code", "viewer access code", "publisher". */
  role: string;
}

export interface AuthOptions {
  realm: string;
  credentials: () => Credential[];
  /** live555 (and so the printers) refuse Basic; our own server takes both. */
  allowBasic: boolean;
  /** Tests shorten NONCE_LIFETIME_MS. */
  nonceLifetimeMs?: number;
}

export interface Authenticator {
  /**
   * The WWW-Authenticate header values for a 401, with a fresh nonce. Called right after a check() that failed
   * only because its nonce was expired or replayed, the Digest challenge says stale=true (RFC 7616), so the
   * client retries with the new nonce without asking anyone for a password.
   */
  challenge(): string[];
  /** The credential that signed this request, or undefined (then answer 401 with `challenge()`). */
  check(method: string, authorization: string | undefined): Credential | undefined;
}

/** `Digest realm="x", nonce="y", uri="z"` -> { realm: "x", nonce: "y", uri: "z" }. */
export function parseAuthParams(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([a-zA-Z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out[m[1]!.toLowerCase()] = m[2] ?? m[3] ?? "";
  return out;
}

interface IssuedNonce {
  at: number;
  /** The highest nonce count a valid request carried; -1 while unused. */
  count: number;
}

export function createAuthenticator(options: AuthOptions): Authenticator {
  const lifetimeMs = options.nonceLifetimeMs ?? NONCE_LIFETIME_MS;
  // Insertion order is issue order, so the oldest is the first key.
  const issued = new Map<string, IssuedNonce>();
  let lastWasStale = false;
  const newNonce = () => {
    const nonce = randomBytes(16).toString("hex");
    issued.set(nonce, { at: Date.now(), count: -1 });
    if (issued.size > MAX_NONCES) issued.delete(issued.keys().next().value!);
    return nonce;
  };
  /** Whether a correctly signed request may use this nonce (and count) now; records the use. */
  const useNonce = (nonce: string, qop: string | undefined, nc: string | undefined): boolean => {
    const entry = issued.get(nonce);
    if (!entry || Date.now() - entry.at > lifetimeMs) return false;
    // Without qop there is no count: the nonce signs one login.
    const count = qop ? (/^[0-9a-fA-F]{1,8}$/.test(nc ?? "") ? parseInt(nc!, 16) : -1) : 0;
    if (count < 0 || count <= entry.count) return false;
    entry.count = count;
    return true;
  };
  return {
    challenge() {
      const stale = lastWasStale ? ", stale=true" : "";
      lastWasStale = false;
      const digest = `Digest realm="${options.realm}", nonce="${newNonce()}", qop="auth"${stale}`;
      return options.allowBasic ? [digest, `Basic realm="${options.realm}"`] : [digest];
    },
    check(method, authorization) {
      lastWasStale = false;
      if (!authorization) return undefined;
      const space = authorization.indexOf(" ");
      const scheme = authorization.slice(0, space < 0 ? undefined : space).toLowerCase();
      const rest = space < 0 ? "" : authorization.slice(space + 1).trim();
      const credentials = options.credentials();
      if (scheme === "basic") {
        if (!options.allowBasic) return undefined;
        const decoded = Buffer.from(rest, "base64").toString("utf8");
        const colon = decoded.indexOf(":");
        if (colon < 0) return undefined;
        const user = decoded.slice(0, colon);
        const password = decoded.slice(colon + 1);
        let found: Credential | undefined;
        for (const c of credentials) if (sameSecret(user, c.user) && sameSecret(password, c.password) && !found) found = c;
        return found;
      }
      if (scheme !== "digest") return undefined;
      const p = parseAuthParams(rest);
      if (!p.username || !p.nonce || !p.uri || !p.response) return undefined;
      if (p.realm !== undefined && p.realm !== options.realm) return undefined;
      let found: Credential | undefined;
      for (const c of credentials) {
        if (!sameSecret(p.username, c.user)) continue;
        const expected = digestResponse({ user: c.user, password: c.password, realm: options.realm, nonce: p.nonce, method, uri: p.uri, qop: p.qop, nc: p.nc, cnonce: p.cnonce });
        if (sameSecret(p.response.toLowerCase(), expected) && !found) found = c;
      }
      if (found && !useNonce(p.nonce, p.qop, p.nc)) {
        lastWasStale = true;
        return undefined;
      }
      return found;
    },
  };
}

export function digestResponse(a: { user: string; password: string; realm: string; nonce: string; method: string; uri: string; qop?: string; nc?: string; cnonce?: string }): string {
  const ha1 = md5(`${a.user}:${a.realm}:${a.password}`);
  const ha2 = md5(`${a.method}:${a.uri}`);
  return a.qop ? md5(`${ha1}:${a.nonce}:${a.nc ?? ""}:${a.cnonce ?? ""}:${a.qop}:${ha2}`) : md5(`${ha1}:${a.nonce}:${ha2}`);
}

/** Digest fields the answer quotes back as they came; a quote, a backslash or a control character would not survive it. */
const ECHOED_FIELDS = ["realm", "nonce", "opaque"];
const UNQUOTABLE = /["\\\x00-\x1f\x7f]/;

/**
 * The client side: an Authorization header answering `challenges` (Digest preferred), or undefined. A Digest
 * challenge whose echoed fields could not be quoted again unchanged (a bare LF would even start a new header
 * line) is not answered.
 */
export function authorizationFor(challenges: string[], user: string, password: string, method: string, uri: string): string | undefined {
  const p = challenges
    .filter((c) => /^digest\s/i.test(c))
    .map((c) => parseAuthParams(c.slice(7)))
    .find((fields) => ECHOED_FIELDS.every((name) => !UNQUOTABLE.test(fields[name] ?? "")));
  if (p) {
    if (!p.realm || !p.nonce) return undefined;
    const qop = p.qop?.split(",").map((q) => q.trim()).includes("auth") ? "auth" : undefined;
    const nc = "00000001";
    const cnonce = qop ? randomBytes(8).toString("hex") : undefined;
    const response = digestResponse({ user, password, realm: p.realm, nonce: p.nonce, method, uri, qop, nc, cnonce });
    let value = `Digest username="${user}", realm="${p.realm}", nonce="${p.nonce}", uri="${uri}", response="${response}"`;
    if (p.opaque) value += `, opaque="${p.opaque}"`;
    if (qop) value += `, qop=${qop}, nc=${nc}, cnonce="${cnonce}"`;
    return value;
  }
  if (challenges.some((c) => /^basic/i.test(c))) return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
  return undefined;
}
