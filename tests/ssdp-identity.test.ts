// SSDP and who may speak to it: the printer's own announcements are believed only from the printer's address
// (anyone on the LAN can send one naming its serial and address), and M-SEARCH from outside `allow` gets no
// answer. Loopback 127.0.28.0/24 and 127.0.29.0/24 only.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSocket } from "node:dgram";
import { createSsdpService } from "../lib/bambu/ssdp.ts";
import { encodeNotify, encodeSearch } from "../lib/bambu/ssdp-message.ts";
import type { Service, ServiceContext } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { serviceContext, testStateDir } from "./support.ts";

const PRINTER = "127.0.29.70"; // outside allow: the printer's own announcements count anyway
const PROXY = "127.0.28.71";
const NEIGHBOUR = "127.0.28.72"; // allowed, but not the printer
const OUTSIDER = "127.0.29.5";
const SSDP_PORT = 46028;
const SERIAL = "01P00A280000070";

/** Sends one datagram from `from` to the proxy's SSDP port; resolves with the first answer, if any. */
function sendFrom(from: string, datagram: Buffer, waitMs = 500): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    const done = (answer: Buffer | undefined) => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    const timer = setTimeout(() => done(undefined), waitMs);
    socket.on("message", (answer) => done(answer));
    socket.on("error", () => done(undefined));
    socket.bind(0, from, () => socket.send(datagram, SSDP_PORT, PROXY));
  });
}

const announcement = (version: string, modelCode: string) =>
  encodeNotify({ location: PRINTER, serial: SERIAL, modelCode, name: "p1s", version, signal: "-40", connect: "lan", bind: "free", seclink: "secure", inf: "", cap: "1" });

describe("SSDP: whom the proxy believes and answers", () => {
  let ctx: ServiceContext;
  let ssdp: Service;
  const logs = captureLogs();

  beforeAll(async () => {
    setupLogging("debug", { quiet: true });
    ctx = serviceContext(
      `name = "p1s"\nhost = "${PRINTER}"\nserial = "${SERIAL}"\naccess_code = "12345678"\nbind = "${PROXY}"\nmodel = "P1S"\n` +
        `ports = { ssdp = ${SSDP_PORT} }\nprinter_ports = { ssdp = ${SSDP_PORT} }\nssdp_targets = ["127.0.28.79"]\nallow = ["127.0.28.0/24"]`,
      `[proxy]\nstate_dir = "${testStateDir()}"`,
    );
    ssdp = createSsdpService(ctx, { intervalMs: 60_000 });
    await ssdp.start();
  });
  afterAll(async () => {
    logs.stop();
    await ssdp?.stop();
  });

  test("an announcement for the printer's serial and address from another host is ignored with a debug line", async () => {
    await sendFrom(NEIGHBOUR, announcement("09.09.09.09", "C11"), 300);
    expect(ctx.hub.info.firmware).toBeUndefined();
    expect(logs.lines.some((l) => l.includes("DEBUG") && l.includes(`${NEIGHBOUR}:`) && l.includes(`did not come from the printer's address ${PRINTER}`))).toBe(true);
  });

  test("the printer's own announcement is believed, even from outside allow", async () => {
    await sendFrom(PRINTER, announcement("01.09.01.00", "C12"), 300);
    expect(ctx.hub.info.firmware).toBe("01.09.01.00");
  });

  test("M-SEARCH from outside allow gets no answer (one log line), from inside it does", async () => {
    const search = encodeSearch();
    expect(await sendFrom(OUTSIDER, search)).toBeUndefined();
    expect(await sendFrom(OUTSIDER, search)).toBeUndefined();
    expect(logs.lines.filter((l) => l.includes(`refused SSDP connection from ${OUTSIDER}`))).toHaveLength(1);
    const answer = await sendFrom("127.0.28.5", search);
    expect(answer?.toString()).toContain(`Location: ${PROXY}`);
  });
});
