// The simulated printers' TLS is their own (lib/sim/printer-tls.ts, from ../shared/PROTOCOLS.md), not the proxy's
// server profile: the H2D-style file tunnel takes only plain-RSA CBC suites, every port only TLS 1.2, and the
// proxy's printer-side suite list reaches each of them. Loopback 127.0.33.20-21.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, type ConnectionOptions } from "node:tls";
import { setupLogging } from "../lib/log.ts";
import { PRINTER_CLIENT_CIPHERS } from "../lib/tls.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";

const P2S = "127.0.33.20";
const P1S = "127.0.33.21";

/** The cipher the simulated printer chose, or the handshake error. */
function handshake(host: string, port: number, options: ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, rejectUnauthorized: false, ...options }, () => {
      resolve(socket.getCipher().standardName);
      socket.destroy();
    });
    socket.setTimeout(5_000, () => socket.destroy(new Error("no handshake in 5 s")));
    socket.once("error", (error) => resolve(`error: ${error.message}`));
  });
}

describe("simulated printers' TLS", () => {
  const sims: SimPrinter[] = [];
  beforeAll(async () => {
    setupLogging("warn", { quiet: true });
    sims.push(await startSimulatedBambu({ host: P2S, model: "P2S", services: ["tunnel"] }));
    sims.push(await startSimulatedBambu({ host: P1S, model: "P1S", services: ["chamber", "mqtt"] }));
  });
  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
  });

  test("the file tunnel port refuses ECDHE-only clients and takes a plain-RSA CBC suite from the proxy's list", async () => {
    expect(await handshake(P2S, 6000, { ciphers: "ECDHE-RSA-AES256-GCM-SHA384", maxVersion: "TLSv1.2" })).toStartWith("error");
    expect(await handshake(P2S, 6000, { ciphers: PRINTER_CLIENT_CIPHERS, maxVersion: "TLSv1.2" })).toMatch(/^TLS_RSA_WITH_AES_(128|256)_CBC_SHA$/);
  });

  for (const [what, port] of [["chamber camera", 6000], ["MQTT", 8883]] as const) {
    test(`the ${what} port takes TLS 1.2 only, and the proxy's suites`, async () => {
      expect(await handshake(P1S, port, { minVersion: "TLSv1.3" })).toStartWith("error");
      expect(await handshake(P1S, port, { ciphers: PRINTER_CLIENT_CIPHERS, maxVersion: "TLSv1.2" })).toStartWith("TLS_");
    });
  }
});
