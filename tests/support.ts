// Shared by tests and benchmarks: the ServiceContext one printer entry gives a service, built from the
// [[printer]] lines as a user would write them, with in-memory test certificates (no state directory).
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig, type Config } from "../lib/config.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import { createPrinterHub, type ServiceContext } from "../lib/core/service.ts";
import { serviceLogger } from "../lib/log.ts";
import { makeCa, makeLeaf, type KeyPair } from "../lib/tls.ts";

let testCa: KeyPair | undefined;
let stateRoot: string | undefined;
let contexts = 0;

/** A fresh state directory (for files a test or service writes), removed when the process exits. */
export function testStateDir(): string {
  if (!stateRoot) {
    const root = mkdtempSync(join(tmpdir(), "pp-test-state-"));
    process.once("exit", () => rmSync(root, { recursive: true, force: true }));
    stateRoot = root;
  }
  const dir = join(stateRoot, String(++contexts));
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The CA every test proxy certificate is signed by (made once per process). */
export function testProxyCa(): KeyPair {
  testCa ??= makeCa("pandaproxy test CA", "pandaproxy tests");
  return testCa;
}

/**
 * `printerLines` is the body of one [[printer]] entry, e.g. 'name = "p1s"\nhost = "127.0.4.1"\n…'.
 * `configLines` may add [proxy]/[web] sections before it; without a state_dir each context gets its own.
 */
export function serviceContext(printerLines: string, configLines = ""): ServiceContext & { config: Config } {
  const proxySection = /state_dir\s*=/.test(configLines) ? "" : `[proxy]\nstate_dir = "${testStateDir()}"\n`;
  const config = parseConfig(`${proxySection}${configLines}\n[[printer]]\n${printerLines}\n`, "test printers.toml");
  const printer = config.printers[0]!;
  const ca = testProxyCa();
  const ips = printer.bind === "0.0.0.0" ? ["127.0.0.1"] : [printer.bind];
  const leaf = makeLeaf(ca, printer.serial, { dns: [printer.serial, "localhost"], ips }); // named as lib/tls.ts names them
  return {
    config,
    printer,
    proxy: config.proxy,
    tls: { key: leaf.key, cert: leaf.cert + ca.cert, ca: ca.cert },
    log: serviceLogger(printer.name, "printer"),
    metrics: createMetrics(),
    hub: createPrinterHub({ model: printer.model }),
  };
}
