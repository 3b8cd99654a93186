// Camera detection by probing, against the simulated printers: a P1S and an X1C side by side in one process,
// each configured with a serial whose prefix says nothing, so only the probes can tell.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { parseConfig, type PrinterConfig } from "../lib/config.ts";
import { setupLogging } from "../lib/log.ts";
import { detectCamera, probeChamber, probeRtsp } from "../lib/bambu/detect.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { testStateDir } from "./support.ts";

const P1S_HOST = "127.0.6.15";
const X1C_HOST = "127.0.6.16";
const PROBE_MS = 3_000;
/** The serial both simulators present, as the configs below say (the probes check the certificate's name). */
const SERIAL = "ZZZ00A000000001";
const STATE = testStateDir();

function unknownModel(sim: SimPrinter): PrinterConfig {
  const { host, ports, accessCode } = sim.identity;
  return parseConfig(
    `[proxy]\nstate_dir = "${STATE}"\n[[printer]]\nname = "p"\nhost = "${host}"\nserial = "${SERIAL}"\naccess_code = "${accessCode}"\n` +
      `printer_ports = { chamber = ${ports.chamber}, rtsp = ${ports.rtsp} }`,
  ).printers[0]!;
}

describe("camera detection against simulated printers", () => {
  let p1s: SimPrinter;
  let x1c: SimPrinter;
  beforeAll(async () => {
    setupLogging("error", { quiet: true });
    p1s = await startSimulatedBambu({ host: P1S_HOST, model: "P1S", serial: SERIAL, services: ["chamber"], cameraFps: 5, cameraWidth: 320, cameraHeight: 180 });
    x1c = await startSimulatedBambu({ host: X1C_HOST, model: "X1C", serial: SERIAL, services: ["rtsp"] });
  });
  afterAll(async () => {
    await Promise.all([p1s?.stop(), x1c?.stop()]);
  });

  test("the P1S's port 6000 answers the login with chamber frames; it has no RTSP", async () => {
    expect(await probeChamber(unknownModel(p1s), PROBE_MS)).toBe("chamber");
    expect(await probeRtsp(unknownModel(p1s), PROBE_MS)).toBe(false);
  });

  test("the X1C's port 322 answers OPTIONS as RTSP", async () => {
    expect(await probeRtsp(unknownModel(x1c), PROBE_MS)).toBe(true);
  });

  test("side by side, each is detected with its own camera", async () => {
    const [a, b] = await Promise.all([
      detectCamera(unknownModel(p1s), undefined, { timeoutMs: PROBE_MS }),
      detectCamera(unknownModel(x1c), undefined, { timeoutMs: PROBE_MS }),
    ]);
    expect([a, b]).toEqual(["chamber", "rtsp"]);
  });

  test("probing releases the chamber camera's viewer slots (two in a row, then a third, all served)", async () => {
    for (let i = 0; i < 3; i++) expect(await probeChamber(unknownModel(p1s), PROBE_MS)).toBe("chamber");
  });
});
