// Certificates: the local CA and the printers' leaves verify with openssl, carry the right names, keep their
// keys private, renew when they must and only then; the server profile takes Bambu Studio's plain-RSA suites.
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer, type TLSSocket } from "node:tls";
import { parseConfig, type PrinterConfig } from "../lib/config.ts";
import {
  CA_VALID_YEARS, LEAF_VALID_DAYS, RENEW_BEFORE_DAYS, certificateNames, ensureCa, ensurePrinterCertificate, makeCa, makeLeaf,
  printerTlsMaterial, serverTlsOptions,
} from "../lib/tls.ts";

const DAY_MS = 86_400_000;
const dir = mkdtempSync(join(tmpdir(), "pp-tls-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function printer(stateDir: string, name: string, bind: string, extra = ""): PrinterConfig {
  const text = `[proxy]\nstate_dir = "${stateDir}"\n[[printer]]\nname = "${name}"\nhost = "192.168.1.50"\nserial = "01P00A00000${name.length}"\naccess_code = "12345678"\nbind = "${bind}"\n${extra}`;
  return parseConfig(text).printers[0]!;
}

function openssl(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

const mode = (path: string) => statSync(path).mode & 0o777;

describe("the local CA", () => {
  const stateDir = join(dir, "ca");

  test("is made once with private key 0600, valid 10 years, a CA by its constraints", () => {
    const ca = ensureCa(stateDir);
    expect(mode(join(stateDir, "ca.key"))).toBe(0o600);
    expect(mode(stateDir)).toBe(0o700);
    const again = ensureCa(stateDir);
    expect(again.cert).toBe(ca.cert);
    const text = openssl("x509", "-in", join(stateDir, "ca.crt"), "-noout", "-text").out;
    expect(text).toContain("CA:TRUE");
    expect(text).toContain("Certificate Sign");
    const notAfter = certificateNames(ca.cert).notAfter.getTime();
    expect(Math.round((notAfter - Date.now()) / (365 * DAY_MS))).toBe(CA_VALID_YEARS);
    // self-signed: verifies against itself
    expect(openssl("verify", "-CAfile", join(stateDir, "ca.crt"), join(stateDir, "ca.crt")).status).toBe(0);
  });
});

describe("the local CA after a crash between its two writes", () => {
  test("a key without its certificate gets a certificate for the same key, so trust in the key survives", () => {
    const stateDir = join(dir, "ca-crash");
    const first = ensureCa(stateDir);
    rmSync(join(stateDir, "ca.crt"));
    const again = ensureCa(stateDir);
    expect(again.key).toBe(first.key);
    expect(readFileSync(join(stateDir, "ca.crt"), "utf8")).toBe(again.cert);
    const pub = (pem: string) => openssl("x509", "-noout", "-pubkey", "-in", writeTemp(pem)).out;
    expect(pub(again.cert)).toBe(pub(first.cert));
    expect(mode(join(stateDir, "ca.key"))).toBe(0o600);
  });
});

function writeTemp(text: string): string {
  const path = join(dir, `t-${Math.random().toString(36).slice(2)}.pem`);
  writeFileSync(path, text);
  return path;
}

describe("a printer's leaf certificate", () => {
  const stateDir = join(dir, "leaf");
  const p = printer(stateDir, "x1c", "127.0.1.20");

  test("verifies against the CA with openssl, CN = serial, SAN = bind address and this host's names", () => {
    const material = printerTlsMaterial(stateDir, p);
    const leafPath = join(stateDir, "printers", "x1c.crt");
    const verify = openssl("verify", "-CAfile", join(stateDir, "ca.crt"), leafPath);
    expect(verify.out).toContain(": OK");
    expect(verify.status).toBe(0);
    // the served chain is the leaf then the CA
    expect(material.cert.startsWith(readFileSync(leafPath, "utf8"))).toBe(true);
    expect(material.cert.endsWith(material.ca)).toBe(true);

    const subject = openssl("x509", "-in", leafPath, "-noout", "-subject").out;
    expect(subject).toMatch(new RegExp(`CN ?= ?${p.serial}\\b`));
    const san = openssl("x509", "-in", leafPath, "-noout", "-ext", "subjectAltName").out;
    expect(san).toMatch(new RegExp(`Subject Alternative Name:\\s*DNS:${p.serial},`)); // the serial first: slicers verify it
    expect(san).toContain("IP Address:127.0.1.20");
    expect(san).toContain("IP Address:127.0.0.1");
    expect(san).toContain(`DNS:${hostname()}`);
    expect(san).toContain(`DNS:${hostname()}.local`);
    expect(san).toContain("DNS:localhost");
    const purpose = openssl("x509", "-in", leafPath, "-noout", "-ext", "extendedKeyUsage,basicConstraints").out;
    expect(purpose).toContain("TLS Web Server Authentication");
    expect(purpose).toContain("CA:FALSE");
  });

  test("a certificate from another CA does not verify (the check can fail)", () => {
    const other = makeCa("someone else", "elsewhere");
    const leaf = makeLeaf(other, "x", { dns: [], ips: ["127.0.1.20"] });
    writeFileSync(join(dir, "other.crt"), leaf.cert);
    expect(openssl("verify", "-CAfile", join(stateDir, "ca.crt"), join(dir, "other.crt")).status).not.toBe(0);
  });

  test("its key file is mode 0600", () => {
    expect(mode(join(stateDir, "printers", "x1c.key"))).toBe(0o600);
    expect(mode(join(stateDir, "printers"))).toBe(0o700);
  });

  test("is reused while current, renewed within 30 days of expiry", () => {
    const ca = ensureCa(stateDir);
    const t0 = Date.now();
    const first = ensurePrinterCertificate(stateDir, p, ca, t0);
    expect(ensurePrinterCertificate(stateDir, p, ca, t0 + 10 * DAY_MS).cert).toBe(first.cert);
    const justBefore = t0 + (LEAF_VALID_DAYS - RENEW_BEFORE_DAYS - 2) * DAY_MS;
    expect(ensurePrinterCertificate(stateDir, p, ca, justBefore).cert).toBe(first.cert);
    const within = t0 + (LEAF_VALID_DAYS - RENEW_BEFORE_DAYS + 1) * DAY_MS;
    const renewed = ensurePrinterCertificate(stateDir, p, ca, within);
    expect(renewed.cert).not.toBe(first.cert);
    expect(certificateNames(renewed.cert).notAfter.getTime()).toBeGreaterThan(within + (LEAF_VALID_DAYS - 1) * DAY_MS);
    expect(readFileSync(join(stateDir, "printers", "x1c.crt"), "utf8")).toBe(renewed.cert);
    expect(mode(join(stateDir, "printers", "x1c.key"))).toBe(0o600);
  });

  test("is renewed when its SAN no longer fits (new bind address) or the serial changed", () => {
    const ca = ensureCa(stateDir);
    const before = ensurePrinterCertificate(stateDir, p, ca);
    const moved = ensurePrinterCertificate(stateDir, { ...p, bind: "127.0.1.21" }, ca);
    expect(moved.cert).not.toBe(before.cert);
    expect(certificateNames(moved.cert).ips).toContain("127.0.1.21");
    const reserialed = ensurePrinterCertificate(stateDir, { ...p, bind: "127.0.1.21", serial: "NEWSERIAL" }, ca);
    expect(certificateNames(reserialed.cert).commonName).toBe("NEWSERIAL");
  });

  test("a leaf issued before without DNS:<serial> is renewed, with the serial first", () => {
    const ca = ensureCa(stateDir);
    const names = certificateNames(ensurePrinterCertificate(stateDir, p, ca).cert);
    const old = makeLeaf(ca, p.serial, { dns: names.dns.filter((d) => d !== p.serial), ips: names.ips });
    writeFileSync(join(stateDir, "printers", "x1c.crt"), old.cert);
    writeFileSync(join(stateDir, "printers", "x1c.key"), old.key);
    const renewed = ensurePrinterCertificate(stateDir, p, ca);
    expect(renewed.cert).not.toBe(old.cert);
    expect(certificateNames(renewed.cert).dns[0]).toBe(p.serial);
  });

  test("a leaf whose key does not match its certificate (a crash between the writes) is made again", () => {
    const ca = ensureCa(stateDir);
    const current = ensurePrinterCertificate(stateDir, p, ca);
    const stranger = makeLeaf(ca, p.serial, { dns: [], ips: [] });
    writeFileSync(join(stateDir, "printers", "x1c.key"), stranger.key);
    const remade = ensurePrinterCertificate(stateDir, p, ca);
    expect(remade.cert).not.toBe(current.cert);
    expect(remade.key).not.toBe(current.key);
    const check = openssl("x509", "-in", join(stateDir, "printers", "x1c.crt"), "-noout", "-pubkey").out;
    expect(check).toContain(openssl("pkey", "-in", join(stateDir, "printers", "x1c.key"), "-pubout").out.trim());
  });

  test("tls_cert and tls_key win over the local CA", () => {
    const own = makeLeaf(makeCa("own CA", "own"), "mine", { dns: ["printer.example"], ips: [] });
    writeFileSync(join(dir, "own.crt"), own.cert);
    writeFileSync(join(dir, "own.key"), own.key);
    const custom = printer(stateDir, "own", "127.0.1.22", `tls_cert = "${dir}/own.crt"\ntls_key = "${dir}/own.key"\n`);
    const material = printerTlsMaterial(stateDir, custom);
    expect(material.cert).toBe(own.cert);
    expect(material.key).toBe(own.key);
    expect(() => statSync(join(stateDir, "printers", "own.crt"))).toThrow();
  });
});

describe("the server TLS profile", () => {
  const stateDir = join(dir, "profile");
  const p = printer(stateDir, "p1s", "127.0.1.23");

  async function handshake(clientOptions: { ciphers?: string; maxVersion?: "TLSv1.2" | "TLSv1.3" }, tls12Only = false) {
    const material = printerTlsMaterial(stateDir, p);
    const server = createServer(serverTlsOptions(material, { tls12Only }), (socket) => socket.end("hello"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.1.23", resolve));
    const port = (server.address() as { port: number }).port;
    try {
      return await new Promise<{ protocol: string | null; cipher: string; authorized: boolean }>((resolve, reject) => {
        const socket: TLSSocket = connect({ host: "127.0.1.23", port, ca: material.ca, ...clientOptions }, () => {
          resolve({ protocol: socket.getProtocol(), cipher: socket.getCipher().standardName, authorized: socket.authorized });
          socket.destroy();
        });
        socket.on("error", reject);
      });
    } finally {
      server.close();
    }
  }

  test("accepts Bambu Studio's plain-RSA AES-GCM suites over TLS 1.2, and the client verifies the bind address", async () => {
    for (const cipher of ["AES256-GCM-SHA384", "AES128-GCM-SHA256"]) {
      const result = await handshake({ ciphers: cipher, maxVersion: "TLSv1.2" });
      expect(result.protocol).toBe("TLSv1.2");
      expect(result.authorized).toBe(true);
      expect(result.cipher).toContain(cipher.startsWith("AES256") ? "AES_256_GCM" : "AES_128_GCM");
    }
  });

  test("prefers ECDHE, offers TLS 1.3, and tls12Only pins TLS 1.2", async () => {
    expect((await handshake({})).protocol).toBe("TLSv1.3");
    expect((await handshake({ maxVersion: "TLSv1.2" })).cipher).toContain("ECDHE");
    expect((await handshake({}, true)).protocol).toBe("TLSv1.2");
  });

  test("a plain-RSA CBC suite is refused (the server list is deliberate)", async () => {
    await expect(handshake({ ciphers: "AES128-SHA", maxVersion: "TLSv1.2" })).rejects.toThrow();
  });
});
