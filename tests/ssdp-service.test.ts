import { serviceContext } from "./support.ts";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { type Service, type ServiceContext } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { createSsdpService, primaryIPv4 } from "../lib/bambu/ssdp.ts";
import { FIRMWARE_PLACEHOLDER } from "../lib/bambu/bind.ts";
import { announcementOf, encodeSearch, parseSsdp, type SsdpMessage } from "../lib/bambu/ssdp-message.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { announcementSourcePort } from "../lib/sim/ssdp.ts";

const PROXY = "127.0.6.1";
const SLICER = "127.0.6.50";
const SSDP_PORT = 46021;
const INTERVAL_MS = 100;

function context(lines: string): ServiceContext {
  return serviceContext(
    `name = "p1s-left"\nhost = "127.0.6.10"\naccess_code = "12345678"\n` +
      `ports = { ssdp = ${SSDP_PORT} }\nprinter_ports = { ssdp = ${SSDP_PORT} }\n${lines}`,
  );
}

interface Heard {
  message: SsdpMessage;
  text: string;
  from: { address: string; port: number };
}

/** A slicer's socket: everything that arrives on address:port. */
async function slicerSocket(address: string, port: number): Promise<{ socket: UdpSocket; heard: Heard[]; close(): void }> {
  const socket = createSocket({ type: "udp4", reuseAddr: true });
  const heard: Heard[] = [];
  socket.on("message", (datagram: Buffer, from) => {
    const message = parseSsdp(datagram);
    if (message) heard.push({ message, text: datagram.toString(), from: { address: from.address, port: from.port } });
  });
  await new Promise<void>((r) => socket.bind(port, address, () => r()));
  return { socket, heard, close: () => socket.close() };
}

async function until(check: () => boolean, what: string, limitMs = 3_000): Promise<void> {
  for (let waited = 0; !check(); waited += 20) {
    if (waited > limitMs) throw new Error(`gave up waiting for ${what}`);
    await Bun.sleep(20);
  }
}

describe("SSDP announcer", () => {
  let slicer: Awaited<ReturnType<typeof slicerSocket>>;
  let ctx: ServiceContext;
  let ssdp: Service;

  beforeAll(async () => {
    setupLogging("debug", { quiet: true });
    slicer = await slicerSocket(SLICER, SSDP_PORT);
    ctx = context(`serial = "01P00A000000001"\nbind = "${PROXY}"\nssdp_targets = ["${SLICER}"]`);
    ssdp = createSsdpService(ctx, { intervalMs: INTERVAL_MS });
    await ssdp.start();
  });
  afterAll(async () => {
    await ssdp?.stop();
    slicer?.close();
  });

  test("announces the printer with the proxy's address, its serial, model code, name and a version, repeatedly", async () => {
    await until(() => slicer.heard.length >= 3, "three announcements");
    const first = slicer.heard[0]!;
    expect(first.from.address).toBe(PROXY);
    expect(first.text).toStartWith("NOTIFY * HTTP/1.1\r\nHost: 239.255.255.250:1990\r\n");
    expect(first.message.headers.nt).toBe("urn:bambulab-com:device:3dprinter:1");
    expect(first.message.headers.nts).toBe("ssdp:alive");
    expect(announcementOf(first.message)).toMatchObject({
      location: PROXY, serial: "01P00A000000001", modelCode: "C12", name: "p1s-left", version: FIRMWARE_PLACEHOLDER,
      connect: "lan", bind: "free", inf: "",
    });
    expect(first.text).toContain("\r\nDevInf.bambu.com:\r\n");
  });

  test("DevVersion follows the firmware MQTT reports", async () => {
    ctx.hub.update({ firmware: "01.08.02.00" });
    const from = slicer.heard.length;
    await until(() => slicer.heard.slice(from).some((h) => announcementOf(h.message)?.version === "01.08.02.00"), "the new version");
  });

  for (const target of ["urn:bambulab-com:device:3dprinter:1", "ssdp:all"]) {
    test(`M-SEARCH for ${target} is answered with 200 OK, ST and the proxy's address`, async () => {
      const searcher = await slicerSocket("127.0.6.51", 0);
      try {
        searcher.socket.send(encodeSearch(target), SSDP_PORT, PROXY);
        await until(() => searcher.heard.length > 0, "the M-SEARCH answer");
        const answer = searcher.heard[0]!;
        expect(answer.text).toStartWith("HTTP/1.1 200 OK\r\n");
        expect(answer.message.headers.st).toBe("urn:bambulab-com:device:3dprinter:1");
        expect(announcementOf(answer.message)).toMatchObject({ location: PROXY, serial: "01P00A000000001", modelCode: "C12" });
      } finally {
        searcher.close();
      }
    });
  }

  test("M-SEARCH for other devices gets no answer", async () => {
    const searcher = await slicerSocket("127.0.6.51", 0);
    try {
      searcher.socket.send(encodeSearch("upnp:rootdevice"), SSDP_PORT, PROXY);
      searcher.socket.send(encodeSearch(), SSDP_PORT, PROXY); // answered: proves the first one had its chance
      await until(() => searcher.heard.length > 0, "the Bambu answer");
      await Bun.sleep(100);
      expect(searcher.heard.length).toBe(1);
    } finally {
      searcher.close();
    }
  });

  test("learns model and firmware from the printer's own announcements", async () => {
    const sim: SimPrinter = await startSimulatedBambu({
      host: "127.0.6.10", model: "P1P", serial: "01P00A000000001", firmware: "01.09.01.00", services: ["ssdp"],
      ports: { ssdp: SSDP_PORT }, ssdpTargets: ["127.0.6.60"], ssdpIntervalMs: INTERVAL_MS,
    });
    try {
      await until(() => ctx.hub.info.firmware === "01.09.01.00", "the learned firmware");
      expect(ctx.hub.info.modelCode).toBe("C11");
      const from = slicer.heard.length;
      await until(() => slicer.heard.length > from + 1, "an announcement after learning");
      expect(announcementOf(slicer.heard.at(-1)!.message)).toMatchObject({ version: "01.09.01.00", modelCode: "C11", location: PROXY });
    } finally {
      await sim.stop();
    }
  });
});

describe("SSDP announcer edge cases", () => {
  test('ssdp_listen = false: the printer\'s own announcements are not listened for', async () => {
    const ctx = context(`serial = "01P00A000000002"\nbind = "127.0.6.70"\nssdp_targets = ["127.0.6.71"]\nssdp_listen = false`);
    const ssdp = createSsdpService(ctx, { intervalMs: INTERVAL_MS });
    const sim = await startSimulatedBambu({
      host: "127.0.6.72", model: "P1P", serial: "01P00A000000002", firmware: "01.09.01.00", services: ["ssdp"],
      ports: { ssdp: SSDP_PORT }, ssdpTargets: ["127.0.6.70"], ssdpIntervalMs: INTERVAL_MS,
    });
    try {
      await ssdp.start();
      expect(ssdp.status().details?.listen).toBe("off");
      await Bun.sleep(INTERVAL_MS * 4);
      expect(ctx.hub.info.firmware).toBeUndefined();
    } finally {
      await sim.stop();
      await ssdp.stop();
    }
  });

  test("bind 0.0.0.0 announces this host's primary address", async () => {
    setupLogging("debug", { quiet: true });
    const slicer = await slicerSocket("127.0.6.52", SSDP_PORT);
    const ctx = context(`serial = "00M00A000000001"\nssdp_targets = ["127.0.6.52"]`);
    const ssdp = createSsdpService(ctx, { intervalMs: INTERVAL_MS, listen: false });
    try {
      await ssdp.start();
      await until(() => slicer.heard.length > 0, "an announcement");
      expect(announcementOf(slicer.heard[0]!.message)).toMatchObject({ location: primaryIPv4() ?? "127.0.0.1", modelCode: "BL-P001" });
    } finally {
      await ssdp.stop();
      slicer.close();
    }
  });

  test("an unknown model is not announced until the printer tells us, with a log line meanwhile", async () => {
    setupLogging("debug", { quiet: true });
    const slicer = await slicerSocket("127.0.6.53", SSDP_PORT);
    const ctx = context(`serial = "ZZZ00A000000001"\nbind = "${PROXY}"\nssdp_targets = ["127.0.6.53"]`);
    const ssdp = createSsdpService(ctx, { intervalMs: INTERVAL_MS, listen: false });
    const logs = captureLogs();
    try {
      await ssdp.start();
      await Bun.sleep(INTERVAL_MS * 3);
      expect(slicer.heard.length).toBe(0);
      expect(logs.lines.some((l) => l.includes("[p1s-left/ssdp]") && l.includes("not announcing yet"))).toBe(true);
      ctx.hub.update({ modelCode: "N2S" });
      await until(() => slicer.heard.length > 0, "an announcement");
      expect(announcementOf(slicer.heard[0]!.message)?.modelCode).toBe("N2S");
    } finally {
      logs.stop();
      await ssdp.stop();
      slicer.close();
    }
  });
});

describe("simulated printer announcements", () => {
  for (const [model, code, sourcePort] of [["P1S", "C12", 1900], ["X1C", "BL-P001", 2021]] as const) {
    test(`a simulated ${model} announces itself as the firmware does, from port ${sourcePort}`, async () => {
      const slicer = await slicerSocket("127.0.6.54", SSDP_PORT);
      const sim = await startSimulatedBambu({
        host: "127.0.6.11", model, name: `sim-${model}`, firmware: "01.08.00.00", services: ["ssdp"],
        ports: { ssdp: SSDP_PORT }, ssdpTargets: ["127.0.6.54"], ssdpIntervalMs: INTERVAL_MS,
      });
      try {
        expect(announcementSourcePort(sim.identity)).toBe(sourcePort);
        await until(() => slicer.heard.length >= 2, "two announcements");
        const heard = slicer.heard[0]!;
        expect(heard.from).toEqual({ address: "127.0.6.11", port: sourcePort });
        expect(heard.message.kind).toBe("notify");
        expect(announcementOf(heard.message)).toMatchObject({
          location: "127.0.6.11", serial: sim.identity.serial, modelCode: code, name: `sim-${model}`, version: "01.08.00.00",
          connect: "lan", bind: "free", inf: "wlan0",
        });
      } finally {
        await sim.stop();
        slicer.close();
      }
    });
  }
});
