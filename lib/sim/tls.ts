// Certificates for simulated printers: an in-memory "BBL CA" and a leaf per serial (CN = serial), as real
// printers present. Made once per process and cached, so many simulated printers start quickly.
import { makeCa, makeLeaf, type KeyPair } from "../tls.ts";

let bblCa: KeyPair | undefined;
const leaves = new Map<string, KeyPair & { ca: string }>();

export function simulatedCa(): KeyPair {
  bblCa ??= makeCa("BBL CA", "BBL Technologies Co., Ltd");
  return bblCa;
}

/** key + cert (leaf then CA) for a simulated printer's TLS servers. */
export function simulatedPrinterTls(serial: string): KeyPair & { ca: string } {
  let leaf = leaves.get(serial);
  if (!leaf) {
    const ca = simulatedCa();
    const made = makeLeaf(ca, serial, { dns: ["localhost"], ips: ["127.0.0.1"] });
    leaf = { key: made.key, cert: made.cert + ca.cert, ca: ca.cert };
    leaves.set(serial, leaf);
  }
  return leaf;
}
