// The whole discovery path as a slicer walks it: hear the proxy's NOTIFY, then detect on its Location.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../lib/config.ts";
import { setupLogging } from "../lib/log.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { decodeBindFrame, detectRequest, encodeBindFrame } from "../lib/bambu/bind-codec.ts";
import { announcementOf, parseSsdp, type BambuAnnouncement } from "../lib/bambu/ssdp-message.ts";

const PRINTER = "127.0.6.14";
const PROXY = "127.0.6.2";
const SLICER = "127.0.6.55";
const SSDP_PORT = 46221;

describe("a slicer finds the proxy and binds to it", () => {
  let sim: SimPrinter;
  let supervisor: Supervisor;
  const stateDir = mkdtempSync(join(tmpdir(), "pp-ssdp-"));
  const heard: BambuAnnouncement[] = [];
  const slicer = createSocket({ type: "udp4", reuseAddr: true });

  beforeAll(async () => {
    setupLogging("error", { quiet: true });
    slicer.on("message", (datagram: Buffer) => {
      const message = parseSsdp(datagram);
      const announcement = message && announcementOf(message);
      if (announcement) heard.push(announcement);
    });
    await new Promise<void>((r) => slicer.bind(SSDP_PORT, SLICER, () => r()));
    sim = await startSimulatedBambu({
      host: PRINTER, model: "P1S", name: "garage", firmware: "01.09.03.00", services: ["ssdp"],
      ports: { ssdp: SSDP_PORT }, ssdpTargets: ["127.0.6.56"], ssdpIntervalMs: 200,
    });
    const config = parseConfig(`
[proxy]
state_dir = "${stateDir}"
[web]
listen = ""
[[printer]]
name = "garage"
host = "${PRINTER}"
serial = "${sim.identity.serial}"
access_code = "12345678"
bind = "${PROXY}"
services = ["bind", "ssdp"]
ssdp_targets = ["${SLICER}"]
ports = { ssdp = ${SSDP_PORT} }
printer_ports = { ssdp = ${SSDP_PORT} }
`);
    supervisor = await startSupervisor(config);
  });
  afterAll(async () => {
    await supervisor?.stop();
    await sim?.stop();
    slicer.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  test("the announcement names the proxy; detect there answers with what the printer announced", async () => {
    for (let waited = 0; heard.length === 0; waited += 20) {
      if (waited > 3_000) throw new Error("no announcement from the proxy");
      await Bun.sleep(20);
    }
    const announcement = heard[0]!;
    expect(announcement).toMatchObject({ location: PROXY, serial: sim.identity.serial, modelCode: "C12", name: "garage", connect: "lan", bind: "free" });
    // The proxy learns the firmware from the printer's own announcements (every 200 ms here).
    const hub = supervisor.printers[0]!.hub;
    for (let waited = 0; hub.info.firmware !== "01.09.03.00"; waited += 20) {
      if (waited > 3_000) throw new Error("the proxy never learned the firmware");
      await Bun.sleep(20);
    }
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const socket = tlsConnect({ host: announcement.location, port: 3002, ciphers: "AES256-GCM-SHA384", maxVersion: "TLSv1.2", rejectUnauthorized: false }, () =>
        socket.write(encodeBindFrame(detectRequest())),
      );
      socket.on("data", (c: Buffer) => chunks.push(c));
      socket.on("error", reject);
      socket.on("close", () => resolve(Buffer.concat(chunks)));
    });
    const decoded = decodeBindFrame(reply);
    expect(decoded.kind === "frame" && (decoded.message as { login: object }).login).toMatchObject({
      id: sim.identity.serial, model: "C12", name: "garage", version: "01.09.03.00",
    });
  });
});
