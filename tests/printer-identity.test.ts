// The printer's identity is checked as SSH checks a host: its key is pinned on the first connection, a printer
// that comes back with another key (or a certificate not issued to its serial) is refused before the access
// code is sent, and `pandaproxy trust NAME` accepts the new one. Loopback 127.0.28.0/24.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createChamberService } from "../lib/bambu/chamber.ts";
import { createMqttService } from "../lib/bambu/mqtt.ts";
import { parseConfig } from "../lib/config.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import { fingerprintOf, readKnownPrinters } from "../lib/core/printer-identity.ts";
import { createPrinterHub, type Service, type ServiceContext } from "../lib/core/service.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { simulatedCa, simulatedPrinterTls } from "../lib/sim/tls.ts";
import { printerTlsMaterial } from "../lib/tls.ts";
import { watch, waitFor } from "./chamber-fixtures.ts";

const PRINTER = "127.0.28.10";
const PROXY = "127.0.28.20";
const OTHER_PRINTER = "127.0.28.11";
const SERIAL = "01P00A280000001";
const CODE = "28282828";
const ROOT = join(import.meta.dir, "..");
const BUN = process.execPath;

const dir = mkdtempSync(join(tmpdir(), "pp-identity-"));
const stateDir = join(dir, "state");
const configFile = join(dir, "printers.toml");
writeFileSync(configFile, [
  `[proxy]`, `state_dir = "${stateDir}"`, `[web]`, `listen = ""`,
  `[[printer]]`, `name = "p1s"`, `host = "${PRINTER}"`, `serial = "${SERIAL}"`, `access_code = "${CODE}"`, `bind = "${PROXY}"`,
  `model = "P1S"`, `services = ["camera", "mqtt"]`,
].join("\n"));
const config = parseConfig(readFileSync(configFile, "utf8"), configFile);
const printer = config.printers[0]!;
const knownFile = join(stateDir, "known_printers");

function context(service: string): ServiceContext {
  return {
    printer, proxy: config.proxy, tls: printerTlsMaterial(stateDir, printer), log: serviceLogger(printer.name, service),
    metrics: createMetrics(), hub: createPrinterHub({ model: "P1S" }),
  };
}

/** A TLS server on the printer's port that records every byte a client sends after the handshake. */
async function impostor(host: string, port: number, tls: { key: string; cert: string }): Promise<{ server: TlsServer; handshakes: () => number; received: () => Buffer; drop(): void }> {
  let handshakes = 0;
  const chunks: Buffer[] = [];
  const sockets: TLSSocket[] = [];
  const server = createTlsServer({ key: tls.key, cert: tls.cert, minVersion: "TLSv1.2" }, (socket) => {
    handshakes++;
    sockets.push(socket);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return { server, handshakes: () => handshakes, received: () => Buffer.concat(chunks), drop: () => sockets.forEach((s) => s.destroy()) };
}

/** The pin of a PEM chain's leaf. */
const keyOf = (chain: string) => fingerprintOf(new X509Certificate(chain).raw);

const closeServer = (server: TlsServer) => new Promise<void>((resolve) => server.close(() => resolve()));

/** The real command line, as a child process (the simulated printer it probes runs in this one). */
async function trust(name = "p1s"): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = Bun.spawn([BUN, join(ROOT, "main.ts"), "trust", name, "--config", configFile], { stdout: "pipe", stderr: "pipe" });
  const killer = setTimeout(() => child.kill(), 30_000);
  const [stdout, stderr, status] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  clearTimeout(killer);
  return { status, stdout, stderr };
}

let sim: SimPrinter | undefined;
let chamber: Service;
let chamberContext: ServiceContext;
const logs = captureLogs();

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  sim = await startSimulatedBambu({ host: PRINTER, model: "P1S", serial: SERIAL, accessCode: CODE, services: ["chamber"], cameraFps: 10 });
  chamberContext = context("chamber");
  chamber = createChamberService(chamberContext, { lingerMs: 200, backoffMinMs: 100, backoffMaxMs: 300 });
  await chamber.start();
});

afterAll(async () => {
  logs.stop();
  await chamber?.stop();
  await sim?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("printer identity (pinned on first use, like SSH's known_hosts)", () => {
  test("the first connection pins the printer's key in state_dir (0600), and the printer reconnects fine", async () => {
    const first = watch(PROXY, 6000, { accessCode: CODE });
    await first.moreFrames(2, 15_000);
    first.close();
    const pinned = readKnownPrinters(knownFile).get("p1s");
    expect(pinned?.serial).toBe(SERIAL);
    expect(pinned?.fingerprint).toBe(keyOf(simulatedPrinterTls(SERIAL).cert));
    expect(statSync(knownFile).mode & 0o777).toBe(0o600);
    expect(logs.lines.some((l) => l.includes("pinned the printer's certificate") && l.includes(pinned!.fingerprint))).toBe(true);

    // The upstream closes after its linger; the next viewer reconnects to the same printer without a word.
    await waitFor("the printer link closed", () => chamber.status().upstream === "idle", 10_000);
    const second = watch(PROXY, 6000, { accessCode: CODE });
    await second.moreFrames(2, 15_000);
    second.close();
    expect(readKnownPrinters(knownFile).get("p1s")).toEqual(pinned);
  }, 60_000);

  test("a printer that comes back with another key is refused before the access code is sent; `trust` accepts it", async () => {
    await waitFor("the printer link closed", () => chamber.status().upstream === "idle", 10_000);
    await sim!.stop();
    sim = undefined;
    const fake = await impostor(PRINTER, 6000, simulatedPrinterTls(SERIAL, { generation: 1 }));
    const from = logs.lines.length;
    const viewer = watch(PROXY, 6000, { accessCode: CODE });
    try {
      await waitFor("the proxy's handshakes with the new key", () => fake.handshakes() >= 2, 10_000);
      await Bun.sleep(300);
      expect(fake.received().length).toBe(0); // not one byte after the handshake: no login, no access code
      const said = logs.lines.slice(from).join("\n");
      expect(said).toContain("printer identity changed");
      expect(said).toContain("run `pandaproxy trust p1s` if you replaced the printer or reset it");
      expect(said).not.toContain(CODE);
      // The status page shows it as an error (red), with the reason, on the service and the camera line (sampled
      // while the upstream waits between attempts: it retries every 300 ms here).
      let status = "";
      let problem: unknown;
      await waitFor("the refusal on the status page", () => {
        status = chamber.status().upstream ?? "";
        problem = chamberContext.hub.camera?.problem?.();
        return status.startsWith("error: printer identity changed");
      }, 5_000);
      expect(status).toContain("pandaproxy trust p1s");
      expect(problem).toEqual({ reason: status.slice("error: ".length), lasting: true });
    } finally {
      viewer.close();
      await closeServer(fake.server);
    }

    // The printer was reset (say): the real one is back with its new key. `trust` forgets the pin.
    sim = await startSimulatedBambu({ host: PRINTER, model: "P1S", serial: SERIAL, accessCode: CODE, services: ["chamber", "mqtt"], cameraFps: 10, tls: { generation: 1 } });
    const result = await trust();
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const newKey = keyOf(simulatedPrinterTls(SERIAL, { generation: 1 }).cert);
    expect(result.stdout).toContain(`Forgot the certificate pinned for "p1s"`);
    expect(result.stdout).toContain(`presents key ${newKey}, issued to "${SERIAL}"`);
    expect(readKnownPrinters(knownFile).has("p1s")).toBe(false);

    const after = watch(PROXY, 6000, { accessCode: CODE });
    try {
      await after.moreFrames(2, 15_000);
    } finally {
      after.close();
    }
    expect(readKnownPrinters(knownFile).get("p1s")?.fingerprint).toBe(newKey);
  }, 60_000);

  test("a certificate that is not issued to the serial is refused, even with nothing pinned yet (MQTT)", async () => {
    // Another printer (or anything else) answering at the printer's address, before any pin exists.
    const otherState = join(dir, "state-cn");
    const other = parseConfig(readFileSync(configFile, "utf8").replace(stateDir, otherState).replace(PRINTER, OTHER_PRINTER), configFile).printers[0]!;
    const fake = await impostor(OTHER_PRINTER, 8883, simulatedPrinterTls(SERIAL, { commonName: "01S00A280000077" }));
    const from = logs.lines.length;
    const mqtt = createMqttService({ ...context("mqtt"), printer: other });
    await mqtt.start();
    try {
      await waitFor("the proxy's handshake", () => fake.handshakes() >= 1, 10_000);
      await waitFor("the refusal on the status page", () => (mqtt.status().upstream ?? "").startsWith("error:"), 10_000);
      await Bun.sleep(200);
      expect(fake.received().length).toBe(0); // no MQTT CONNECT, so no access code
      const said = logs.lines.slice(from).join("\n");
      expect(said).toContain(`issued to "01S00A280000077", not to this printer's serial ${SERIAL}`);
      expect(said).not.toContain(CODE);
      expect(readKnownPrinters(join(otherState, "known_printers")).size).toBe(0);
    } finally {
      await mqtt.stop();
      await closeServer(fake.server);
    }
  }, 30_000);

  test("`trust` with a name the config does not have says which printers it has", async () => {
    const result = await trust("p1x");
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`no printer "p1x" in ${configFile}; printers: p1s`);
  });

  test("with printer_ca the chain is verified against it and nothing is pinned", async () => {
    const caState = join(dir, "state-ca");
    const caFile = join(dir, "bbl-ca.pem");
    writeFileSync(caFile, simulatedCa().cert);
    const withCa = parseConfig(readFileSync(configFile, "utf8").replace(stateDir, caState) + `\nprinter_ca = "${caFile}"\n`, configFile).printers[0]!;
    const mqtt = createMqttService({ ...context("mqtt"), printer: { ...withCa, host: OTHER_PRINTER } });
    const fake = await impostor(OTHER_PRINTER, 8883, simulatedPrinterTls(SERIAL, { generation: 2 }));
    await mqtt.start();
    try {
      await waitFor("the MQTT login reaching the printer", () => fake.received().length > 0, 10_000);
      expect(readKnownPrinters(join(caState, "known_printers")).size).toBe(0);
    } finally {
      fake.drop(); // the fake never answers the CONNECT: hang up rather than wait out the proxy's deadline
      await mqtt.stop();
      await closeServer(fake.server);
    }
  }, 30_000);
});
