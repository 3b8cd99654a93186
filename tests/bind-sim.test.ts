import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { setupLogging } from "../lib/log.ts";
import { decodeBindFrame, detectRequest, encodeBindFrame } from "../lib/bambu/bind-codec.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimBindService } from "../lib/sim/bind.ts";

const SIM = "127.0.6.13";

function exchange(port: number, tls: boolean, ciphers?: string): Promise<{ reply: Buffer; cipher?: string }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let cipher: string | undefined;
    const send = () => socket.write(encodeBindFrame(detectRequest("20000")));
    const socket: Socket = tls
      ? tlsConnect({ host: SIM, port, ciphers, maxVersion: "TLSv1.2", rejectUnauthorized: false }, () => {
          cipher = (socket as TLSSocket).getCipher().standardName;
          send();
        })
      : tcpConnect({ host: SIM, port }, send);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => resolve({ reply: Buffer.concat(chunks), cipher }));
  });
}

describe("simulated printer bind/detect", () => {
  let sim: SimPrinter;
  beforeAll(async () => {
    setupLogging("debug", { quiet: true });
    sim = await startSimulatedBambu({ host: SIM, model: "X1C", name: "bench-x1c", firmware: "01.08.05.00", services: ["bind"] });
  });
  afterAll(async () => {
    await sim?.stop();
  });

  for (const [port, tls] of [[3000, false], [3002, true]] as const) {
    test(`answers a slicer's detect on ${port}${tls ? " over TLS" : ""} with its identity and closes`, async () => {
      const { reply } = await exchange(port, tls, tls ? "AES256-GCM-SHA384" : undefined);
      const decoded = decodeBindFrame(reply);
      expect(decoded.kind === "frame" && decoded.bytes === reply.length).toBe(true);
      expect(decoded.kind === "frame" && (decoded.message as { login: object }).login).toMatchObject({
        bind: "free", command: "detect", connect: "lan", dev_cap: 1, id: sim.identity.serial, model: "BL-P001", name: "bench-x1c",
        version: "01.08.05.00", sequence_id: expect.any(Number),
      });
    });
  }

  test("3002 offers only plain-RSA suites, as the X1C does", async () => {
    expect((await exchange(3002, true, "AES128-GCM-SHA256")).cipher).toBe("TLS_RSA_WITH_AES_128_GCM_SHA256");
    await expect(exchange(3002, true, "ECDHE-RSA-AES128-GCM-SHA256")).rejects.toThrow();
    expect(sim.service<SimBindService>("bind")!.answered).toBeGreaterThanOrEqual(3);
  });
});
