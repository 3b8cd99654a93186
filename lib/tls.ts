// Certificates and TLS profiles. A local CA (10 years) is made once in state_dir; each printer gets a leaf
// signed by it (CN = serial, SAN = DNS:<serial> first, then the printer's bind address and this host's names
// and addresses), renewed when it nears expiry or its SAN no longer fits. Slicers connect by IP and check the
// name against the serial; RFC 6125 verifiers ignore the CN once a SAN has a DNS name, hence DNS:<serial>.
// Every service takes its TLS options from here.
import { createPublicKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { hostname, networkInterfaces } from "node:os";
import { join } from "node:path";
import type { TlsOptions } from "node:tls";
import forge from "node-forge";
import type { PrinterConfig } from "./config.ts";
import type { PrinterConnectionOptions } from "./core/printer-socket.ts";

export const CA_VALID_YEARS = 10;
export const LEAF_VALID_DAYS = 825;
export const RENEW_BEFORE_DAYS = 30;
const DAY_MS = 86_400_000;

/** Bambu Studio and Orca offer plain-RSA AES-GCM suites; printers' ports take ECDHE or plain RSA. */
export const SERVER_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305", "AES256-GCM-SHA384", "AES128-GCM-SHA256",
].join(":");
/** Some printer ports take only plain-RSA CBC suites (H2D 6000), others only ECDHE (H2D 990). */
export const PRINTER_CLIENT_CIPHERS = [
  "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384", "AES256-GCM-SHA384", "AES128-GCM-SHA256", "AES256-SHA256", "AES128-SHA256",
  "AES256-SHA", "AES128-SHA",
].join(":");

export interface KeyPair {
  key: string;
  cert: string;
}

export interface TlsMaterial {
  key: string;
  /** The leaf followed by the CA, so clients that trust the CA can build the chain. */
  cert: string;
  /** The CA certificate (PEM) clients should trust. */
  ca: string;
}

function newRsaKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return {
    privatePem: privateKey.export({ type: "pkcs1", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

function keyPairOf(privatePem: string): { privatePem: string; publicPem: string } {
  const publicKey = createPublicKey(privatePem);
  return { privatePem, publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
}

function publicKeyOf(certPem: string): string {
  return createPublicKey(certPem).export({ type: "spki", format: "pem" }).toString();
}

function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0]! &= 0x7f; // positive
  return bytes.toString("hex");
}

/** Written beside and renamed into place, so a crash never leaves half a file. */
function writeAtomically(path: string, text: string, mode: number): void {
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode });
  chmodSync(temporary, mode);
  renameSync(temporary, path);
}

function writePrivate(path: string, text: string): void {
  writeAtomically(path, text, 0o600);
}

/** A self-signed CA, in memory; with `existingKey`, for that key (a CA whose certificate was lost). */
export function makeCa(commonName: string, organization: string, now = Date.now(), existingKey?: string): KeyPair {
  const { privatePem, publicPem } = existingKey ? keyPairOf(existingKey) : newRsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicPem);
  cert.serialNumber = serialNumber();
  cert.validity.notBefore = new Date(now - DAY_MS);
  cert.validity.notAfter = new Date(now + CA_VALID_YEARS * 365 * DAY_MS);
  const name = [
    { name: "commonName", value: commonName },
    { name: "organizationName", value: organization },
  ];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(privatePem), forge.md.sha256.create());
  return { key: privatePem, cert: forge.pki.certificateToPem(cert) };
}

/** A server leaf signed by `ca`, in memory: CN = `commonName`, SAN = the given names and addresses. */
export function makeLeaf(ca: KeyPair, commonName: string, san: { dns: string[]; ips: string[] }, now = Date.now(), validDays = LEAF_VALID_DAYS): KeyPair {
  const { privatePem, publicPem } = newRsaKey();
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicPem);
  cert.serialNumber = serialNumber();
  cert.validity.notBefore = new Date(now - DAY_MS);
  cert.validity.notAfter = new Date(now + validDays * DAY_MS);
  cert.setSubject([{ name: "commonName", value: commonName }, { name: "organizationName", value: caCert.subject.getField("O")?.value ?? "pandaproxy" }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    { name: "subjectAltName", altNames: [...san.dns.map((value) => ({ type: 2, value })), ...san.ips.map((ip) => ({ type: 7, ip }))] },
    { name: "subjectKeyIdentifier" },
    { name: "authorityKeyIdentifier", keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(ca.key), forge.md.sha256.create());
  return { key: privatePem, cert: forge.pki.certificateToPem(cert) };
}

/**
 * The local CA: made once, reused forever (clients trust it once). The key is written (atomically) before the
 * certificate, and a key without its certificate is completed rather than replaced, so a crash between the
 * two writes never makes a CA that every slicer would have to trust again.
 */
export function ensureCa(stateDir: string): KeyPair {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const keyPath = join(stateDir, "ca.key");
  const certPath = join(stateDir, "ca.crt");
  if (existsSync(keyPath) && existsSync(certPath)) {
    return { key: readFileSync(keyPath, "utf8"), cert: readFileSync(certPath, "utf8") };
  }
  const ca = existsSync(keyPath)
    ? makeCa(`pandaproxy local CA (${hostname()})`, "pandaproxy", Date.now(), readFileSync(keyPath, "utf8"))
    : makeCa(`pandaproxy local CA (${hostname()})`, "pandaproxy");
  writePrivate(keyPath, ca.key);
  writeAtomically(certPath, ca.cert, 0o644);
  return ca;
}

/**
 * Names a printer's leaf must carry: the printer's serial first (what slicers verify), then this host's
 * names, the bind address and every address of this host (what browsers and Home Assistant may verify).
 */
export function wantedSubjectAltNames(bind: string, serial: string): { dns: string[]; ips: string[] } {
  const ips = new Set<string>(["127.0.0.1"]);
  if (bind !== "0.0.0.0") ips.add(bind);
  for (const list of Object.values(networkInterfaces())) {
    for (const iface of list ?? []) if (iface.family === "IPv4") ips.add(iface.address);
  }
  const host = hostname();
  const dns = [...new Set([serial, host, `${host}.local`, "localhost"])];
  return { dns, ips: [...ips] };
}

export function certificateNames(certPem: string): { dns: string[]; ips: string[]; notAfter: Date; commonName: string } {
  const cert = forge.pki.certificateFromPem(certPem);
  const san = cert.getExtension("subjectAltName") as { altNames?: { type: number; value?: string; ip?: string }[] } | null;
  const dns: string[] = [];
  const ips: string[] = [];
  for (const alt of san?.altNames ?? []) {
    if (alt.type === 2 && alt.value) dns.push(alt.value);
    if (alt.type === 7 && alt.ip) ips.push(alt.ip);
  }
  const commonName = String(cert.subject.getField("CN")?.value ?? "");
  return { dns, ips, notAfter: cert.validity.notAfter, commonName };
}

function leafIsCurrent(leaf: KeyPair, serial: string, wanted: { dns: string[]; ips: string[] }, now: number): boolean {
  try {
    if (keyPairOf(leaf.key).publicPem !== publicKeyOf(leaf.cert)) return false; // a crash between the two writes
    const names = certificateNames(leaf.cert);
    if (names.commonName !== serial || names.dns[0] !== serial) return false;
    if (names.notAfter.getTime() - now < RENEW_BEFORE_DAYS * DAY_MS) return false;
    return wanted.ips.every((ip) => names.ips.includes(ip)) && wanted.dns.every((d) => names.dns.includes(d));
  } catch {
    return false;
  }
}

/** The printer's leaf certificate, made or renewed as needed. `now` is injectable for renewal tests. */
export function ensurePrinterCertificate(stateDir: string, printer: Pick<PrinterConfig, "name" | "serial" | "bind">, ca: KeyPair, now = Date.now()): KeyPair {
  const dir = join(stateDir, "printers");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyPath = join(dir, `${printer.name}.key`);
  const certPath = join(dir, `${printer.name}.crt`);
  const wanted = wantedSubjectAltNames(printer.bind, printer.serial);
  if (existsSync(keyPath) && existsSync(certPath)) {
    const existing = { key: readFileSync(keyPath, "utf8"), cert: readFileSync(certPath, "utf8") };
    if (leafIsCurrent(existing, printer.serial, wanted, now)) return existing;
  }
  const leaf = makeLeaf(ca, printer.serial, wanted, now);
  writePrivate(keyPath, leaf.key);
  writeFileSync(certPath, leaf.cert, { mode: 0o644 });
  return leaf;
}

/** TLS material for one printer: its own tls_cert/tls_key when configured, else our CA's leaf. */
export function printerTlsMaterial(stateDir: string, printer: PrinterConfig): TlsMaterial {
  const ca = ensureCa(stateDir);
  if (printer.tlsCert && printer.tlsKey) {
    return { key: readFileSync(printer.tlsKey, "utf8"), cert: readFileSync(printer.tlsCert, "utf8"), ca: ca.cert };
  }
  const leaf = ensurePrinterCertificate(stateDir, printer, ca);
  return { key: leaf.key, cert: leaf.cert + ca.cert, ca: ca.cert };
}

/** Options for every TLS server we run. FTPS (and anything with resumed data channels) pins TLS 1.2. */
export function serverTlsOptions(material: Pick<TlsMaterial, "key" | "cert">, options: { tls12Only?: boolean } = {}): TlsOptions {
  return {
    key: material.key,
    cert: material.cert,
    ciphers: SERVER_CIPHERS,
    minVersion: "TLSv1.2",
    maxVersion: options.tls12Only ? "TLSv1.2" : "TLSv1.3",
    honorCipherOrder: true,
  };
}

/**
 * Options for connecting to a printer (pass them to connectToPrinter): TLS 1.2, ECDHE and plain-RSA suites.
 * Without printer_ca the certificate is pinned on first use and must be issued to the serial
 * (core/printer-identity.ts); with printer_ca the chain is verified instead.
 */
export function printerClientTlsOptions(printer: Pick<PrinterConfig, "name" | "host" | "serial" | "printerCa" | "knownPrintersFile">): PrinterConnectionOptions {
  const verify = Boolean(printer.printerCa);
  return {
    identity: verify ? undefined : { name: printer.name, serial: printer.serial, host: printer.host, knownPrintersFile: printer.knownPrintersFile },
    host: printer.host,
    ciphers: PRINTER_CLIENT_CIPHERS,
    minVersion: "TLSv1.2",
    maxVersion: "TLSv1.2",
    rejectUnauthorized: verify,
    ca: verify ? readFileSync(printer.printerCa!, "utf8") : undefined,
    // Printers present certificates named by serial and are addressed by IP: the chain is what we check.
    checkServerIdentity: () => undefined,
  };
}
