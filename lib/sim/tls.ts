// Certificates for simulated printers: an in-memory "BBL CA" and a leaf per serial (CN = serial), as real
// printers present. Made once per process and cached, so many simulated printers start quickly.
import { makeCa, makeLeaf, type KeyPair } from "../tls.ts";

let bblCa: KeyPair | undefined;
const leaves = new Map<string, KeyPair & { ca: string }>();

export function simulatedCa(): KeyPair {
  bblCa ??= makeCa("BBL CA", "BBL Technologies Co., Ltd");
  return bblCa;
}

export interface SimulatedTlsOptions {
  /** Another number gives another key, as a printer replaced or reset would present (default 0). */
  generation?: number;
  /** The leaf's CN (default: the serial, as real printers' certificates are issued). */
  commonName?: string;
}

/** key + cert (leaf then CA) for a simulated printer's TLS servers. */
export function simulatedPrinterTls(serial: string, options: SimulatedTlsOptions = {}): KeyPair & { ca: string } {
  const commonName = options.commonName ?? serial;
  const cacheKey = `${serial} ${commonName} ${options.generation ?? 0}`;
  let leaf = leaves.get(cacheKey);
  if (!leaf) {
    const ca = simulatedCa();
    const made = makeLeaf(ca, commonName, { dns: ["localhost"], ips: ["127.0.0.1"] });
    leaf = { key: made.key, cert: made.cert + ca.cert, ca: ca.cert };
    leaves.set(cacheKey, leaf);
  }
  return leaf;
}
