// TLS as the printers offer it, port by port (../shared/PROTOCOLS.md "TLS versions and suites"): the simulator's
// own profiles. The proxy's server profile (lib/tls.ts) is what slicers need from the proxy, not what printers
// offer, so a simulated printer using it would let the proxy's printer-side TLS agree with itself.
import type { TlsOptions } from "node:tls";

export type PrinterTlsPort = "chamber" | "tunnel" | "mqtt";

const ECDHE_AND_RSA_GCM = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256";

const CIPHERS: Record<PrinterTlsPort, string> = {
  // What A1/P1 firmware offers on 6000 is not documented: ECDHE and plain-RSA GCM, as on the other ports.
  chamber: ECDHE_AND_RSA_GCM,
  // H2D 6000 offers only plain-RSA CBC suites (maziggy/bambuddy#620, #1401, #1610).
  tunnel: "AES256-SHA:AES128-SHA",
  // X1C/H2D 8883 take TLS 1.2 only; the suites are not listed.
  mqtt: ECDHE_AND_RSA_GCM,
};

/** Server options for a simulated printer's TLS port: its key and certificate, TLS 1.2 only, the port's suites. */
export function printerTlsOptions(material: { key: string; cert: string }, port: PrinterTlsPort): TlsOptions {
  return { key: material.key, cert: material.cert, ciphers: CIPHERS[port], minVersion: "TLSv1.2", maxVersion: "TLSv1.2" };
}
