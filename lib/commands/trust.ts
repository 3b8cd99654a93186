// `pandaproxy trust NAME`: forget a printer's pinned certificate (after the printer was replaced or reset), so
// the next connection pins the one it presents now. Shows that certificate's key, to compare with the printer.
import { connect as tlsConnect } from "node:tls";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type Command } from "./command.ts";
import type { PrinterConfig } from "../config.ts";
import { commonNameOf, fingerprintOf, forgetPrinter } from "../core/printer-identity.ts";
import { printerClientTlsOptions } from "../tls.ts";
import { loadOrReport } from "./load.ts";

/** How long we wait for the printer to show its certificate. */
export const TRUST_PROBE_TIMEOUT_MS = 5_000;

/** The certificate the printer presents on its MQTT port now (no byte is sent after the handshake). */
function presentedCertificate(printer: PrinterConfig): Promise<Buffer | string> {
  return new Promise((resolve) => {
    const { identity: _unchecked, ...options } = printerClientTlsOptions(printer);
    const socket = tlsConnect({ ...options, port: printer.printerPorts.mqtt });
    const done = (result: Buffer | string) => {
      clearTimeout(timer);
      socket.resetAndDestroy();
      resolve(result);
    };
    const timer = setTimeout(() => done(`no TLS handshake within ${TRUST_PROBE_TIMEOUT_MS / 1000} s`), TRUST_PROBE_TIMEOUT_MS);
    socket.once("secureConnect", () => done(socket.getPeerCertificate()?.raw ?? "no certificate"));
    socket.once("error", (error) => done(error.message));
  });
}

export const command: Command = {
  summary: "accept a printer's new certificate (after replacing or resetting it)",
  usage: [
    "Usage: pandaproxy trust NAME [--config FILE]",
    "",
    "Forgets the certificate pinned for printer NAME (in <state_dir>/known_printers), so pandaproxy pins the",
    "one the printer presents on its next connection. Run it only when you know why the certificate changed:",
    "the printer was replaced, reset or updated. It prints the key the printer presents now.",
  ].join("\n"),
  options: {},
  async run(values, positionals) {
    const name = positionals[0];
    if (!name || positionals.length > 1) {
      console.error(`pandaproxy trust: name one printer\n\n${command.usage}`);
      return EXIT_USAGE;
    }
    const config = loadOrReport(values.config as string | undefined, "trust");
    if (!config) return EXIT_USAGE;
    const printer = config.printers.find((p) => p.name === name);
    if (!printer) {
      console.error(`pandaproxy trust: no printer "${name}" in ${config.file}; printers: ${config.printers.map((p) => p.name).join(", ")}`);
      return EXIT_USAGE;
    }
    if (printer.type !== "bambu") {
      console.error(`pandaproxy trust: "${name}" is a ${printer.type} printer; only Bambu printers' certificates are pinned`);
      return EXIT_USAGE;
    }
    if (printer.printerCa) console.log(`note: "${name}" has printer_ca set, so its chain is verified against that CA and no pin is used`);
    let forgotten;
    try {
      forgotten = forgetPrinter(printer.knownPrintersFile, name);
    } catch (error) {
      console.error(`pandaproxy trust: cannot update ${printer.knownPrintersFile}: ${(error as Error).message} (run it as the user pandaproxy runs as, or root)`);
      return EXIT_FAILURE;
    }
    console.log(forgotten
      ? `Forgot the certificate pinned for "${name}" on ${forgotten.pinnedAt} (key ${forgotten.fingerprint}).`
      : `No certificate was pinned for "${name}" in ${printer.knownPrintersFile}.`);
    const presented = await presentedCertificate(printer);
    if (typeof presented === "string") {
      console.log(`Could not reach the printer at ${printer.host}:${printer.printerPorts.mqtt} (${presented}); its certificate is pinned at the next connection.`);
      return EXIT_OK;
    }
    let key: string;
    let issuedTo: string;
    try {
      key = fingerprintOf(presented);
      issuedTo = commonNameOf(presented);
    } catch (error) {
      console.log(`The printer at ${printer.host} presents a certificate we cannot read (${(error as Error).message}).`);
      return EXIT_OK;
    }
    console.log(`The printer at ${printer.host} presents key ${key}, issued to "${issuedTo}".`);
    if (issuedTo !== printer.serial) console.log(`That is not this printer's serial ${printer.serial}: pandaproxy will keep refusing it; check \`serial\` and \`host\`.`);
    else console.log("pandaproxy pins it at its next connection to the printer (within a minute).");
    return EXIT_OK;
  },
};
