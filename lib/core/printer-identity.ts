// The printer's identity, checked as SSH checks a host: on the first TLS connection the printer's public key
// (SHA-256 of its SPKI) is pinned in <state_dir>/known_printers, and its certificate must be issued to the
// configured serial (Bambu printers' certificates are). A later connection with another key, or a name that is
// not the serial, is refused before we send a byte, so the access code never goes to whoever answers there.
import { createHash, X509Certificate } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

/** The file's name in state_dir. */
export const KNOWN_PRINTERS_FILE = "known_printers";

export interface PrinterIdentity {
  /** The [[printer]] name: the key in known_printers and the argument of `pandaproxy trust`. */
  name: string;
  serial: string;
  host: string;
  /** <state_dir>/known_printers */
  knownPrintersFile: string;
}

export interface KnownPrinter {
  serial: string;
  /** "SHA256:<base64>", as ssh-keygen -l prints fingerprints. */
  fingerprint: string;
  pinnedAt: string;
}

/** The printer presented a certificate we must not trust: a person has to look (retrying will not help). */
export class PrinterIdentityRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PrinterIdentityRefused";
  }
}

/** One line per printer: `<name> <serial> SHA256:<base64> <pinned at>`; `#` lines are comments. */
export function readKnownPrinters(path: string): Map<string, KnownPrinter> {
  const known = new Map<string, KnownPrinter>();
  if (!existsSync(path)) return known;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const [name, serial, fingerprint, pinnedAt] = line.trim().split(/\s+/);
    if (!name || name.startsWith("#") || !serial || !fingerprint?.startsWith("SHA256:")) continue;
    known.set(name, { serial, fingerprint, pinnedAt: pinnedAt ?? "" });
  }
  return known;
}

function writeKnownPrinters(path: string, known: Map<string, KnownPrinter>): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const lines = ["# printers whose certificate pandaproxy has pinned; `pandaproxy trust NAME` forgets one"];
  for (const [name, p] of known) lines.push(`${name} ${p.serial} ${p.fingerprint} ${p.pinnedAt}`);
  // Written beside and renamed into place, so a crash never leaves half a file.
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, `${lines.join("\n")}\n`, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  // `pandaproxy trust` run as root must leave the file readable by the service's own user.
  if (process.getuid?.() === 0) {
    const owner = statSync(dirname(path));
    chownSync(temporary, owner.uid, owner.gid);
  }
  renameSync(temporary, path);
}

export function pinPrinter(path: string, name: string, entry: KnownPrinter): void {
  const known = readKnownPrinters(path);
  known.set(name, entry);
  writeKnownPrinters(path, known);
}

/** Forgets a printer's pin, so the next connection pins whatever certificate it presents; false if none. */
export function forgetPrinter(path: string, name: string): KnownPrinter | undefined {
  const known = readKnownPrinters(path);
  const entry = known.get(name);
  if (!entry) return undefined;
  known.delete(name);
  writeKnownPrinters(path, known);
  return entry;
}

export function fingerprintOf(certificateDer: Buffer): string {
  const spki = new X509Certificate(certificateDer).publicKey.export({ type: "spki", format: "der" });
  return `SHA256:${createHash("sha256").update(spki).digest("base64").replace(/=+$/, "")}`;
}

export function commonNameOf(certificateDer: Buffer): string {
  const subject = new X509Certificate(certificateDer).subject;
  return /(?:^|\n)CN=([^\n]*)/.exec(subject)?.[1] ?? "";
}

export type IdentityVerdict =
  | { kind: "known" }
  | { kind: "pinned"; fingerprint: string }
  | { kind: "refused"; reason: string };

/**
 * Checks the certificate a printer presented (DER) against its pin, pinning it when there is none yet.
 * `refused` carries the log line: what changed and what to do.
 */
export function checkPrinterIdentity(identity: PrinterIdentity, certificateDer: Buffer | undefined, now = new Date()): IdentityVerdict {
  const trust = `run \`pandaproxy trust ${identity.name}\` if you replaced the printer or reset it; otherwise another device answers at ${identity.host}`;
  if (!certificateDer?.length) return { kind: "refused", reason: `printer identity: the printer at ${identity.host} presented no certificate; refusing to send the access code` };
  let fingerprint: string;
  let commonName: string;
  try {
    fingerprint = fingerprintOf(certificateDer);
    commonName = commonNameOf(certificateDer);
  } catch (error) {
    return { kind: "refused", reason: `printer identity: unreadable certificate from ${identity.host} (${(error as Error).message}); refusing to send the access code` };
  }
  if (commonName !== identity.serial) {
    return {
      kind: "refused",
      reason: `printer identity: the certificate at ${identity.host} is issued to "${commonName}", not to this printer's serial ${identity.serial}; refusing to send the access code. Check \`serial\` and \`host\` in the config`,
    };
  }
  // A pin made for another serial belongs to the printer this entry used to name: the config was edited.
  const known = readKnownPrinters(identity.knownPrintersFile).get(identity.name);
  if (!known || known.serial !== identity.serial) {
    try {
      pinPrinter(identity.knownPrintersFile, identity.name, { serial: identity.serial, fingerprint, pinnedAt: now.toISOString() });
    } catch (error) {
      return { kind: "refused", reason: `printer identity: cannot pin the printer's certificate in ${identity.knownPrintersFile} (${(error as Error).message}); state_dir must be writable` };
    }
    return { kind: "pinned", fingerprint };
  }
  if (known.fingerprint !== fingerprint) {
    return {
      kind: "refused",
      reason: `printer identity changed: the printer at ${identity.host} now presents key ${fingerprint}, not ${known.fingerprint} pinned ${known.pinnedAt} in ${identity.knownPrintersFile}; refusing to send the access code. ${trust}`,
    };
  }
  return { kind: "known" };
}
