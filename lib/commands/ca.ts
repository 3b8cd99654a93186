// `pandaproxy ca`: print the local CA certificate and how to make Bambu Studio / Orca trust it.
import { defaultStateDir } from "../config.ts";
import { EXIT_OK, EXIT_USAGE, type Command } from "./command.ts";
import { ensureCa } from "../tls.ts";
import { loadOrReport, resolveConfigPath } from "./load.ts";
import { join } from "node:path";

export const command: Command = {
  summary: "print the local CA certificate and how to make slicers trust it",
  usage: "Usage: pandaproxy ca [--config FILE] [--pem]\n\nWith --pem only the certificate is printed (for scripts).",
  options: { pem: { type: "boolean" } },
  async run(values) {
    let stateDir = defaultStateDir();
    if (values.config || resolveConfigPath(undefined)) {
      const config = loadOrReport(values.config as string | undefined, "ca");
      if (!config) return EXIT_USAGE;
      stateDir = config.proxy.stateDir;
    }
    const ca = ensureCa(stateDir);
    if (values.pem) {
      process.stdout.write(ca.cert);
      return EXIT_OK;
    }
    console.log(`The local CA is ${join(stateDir, "ca.crt")}:\n`);
    process.stdout.write(ca.cert);
    console.log(
      [
        "",
        "Bambu Studio and Orca Slicer trust only the certificates in their bundled printer.cer. To let them talk",
        "to pandaproxy over TLS, append the certificate above to that file and restart the slicer:",
        "  Windows: C:\\Program Files\\Bambu Studio\\resources\\cert\\printer.cer",
        "  macOS:   /Applications/BambuStudio.app/Contents/Resources/cert/printer.cer",
        "  Linux:   <install dir>/resources/cert/printer.cer",
        "  e.g.     pandaproxy ca --pem >> printer.cer",
        "Slicer updates replace the file: append it again after each update.",
        "Home Assistant's Bambu integration: tick \"Disable SSL verification\", or trust this CA.",
      ].join("\n"),
    );
    return EXIT_OK;
  },
};
