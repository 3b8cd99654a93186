// The simulated Adventurer 5M tells clients it is a 5M, not a 5M Pro: the product id in its discovery reply and
// in its HTTP /detail (0x0023 is the 5M, 0x0024 the 5M Pro, as issue 15 records it).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { decodeDiscoveryReply } from "../lib/flashforge/discovery-codec.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { discoveryProbe } from "./flashforge-helpers.ts";

const SIM_HOST = "127.0.41.20";
const CLIENT_HOST = "127.0.41.21";
const ADVENTURER_5M_PRODUCT_ID = 0x0023;

const probe = async (to: string, port: number) => (await discoveryProbe(to, port, CLIENT_HOST)).reply;

describe("simulated Adventurer 5M identity", () => {
  let sim: SimFlashforge;
  beforeAll(async () => {
    sim = await startSimulatedFlashforge({ host: SIM_HOST, name: "Adventurer 5M" });
  });
  afterAll(async () => {
    await sim?.stop();
  });

  test("discovery and /detail carry the 5M's product id 0x0023", async () => {
    const reply = decodeDiscoveryReply(await probe(SIM_HOST, sim.identity.ports.discovery));
    expect(reply.productId).toBe(ADVENTURER_5M_PRODUCT_ID);
    const response = await fetch(`http://${SIM_HOST}:${sim.identity.ports.http}/detail`, {
      method: "POST",
      body: JSON.stringify({ serialNumber: sim.identity.serial, checkCode: sim.identity.checkCode }),
    });
    expect(((await response.json()) as { detail: { pid: number } }).detail.pid).toBe(ADVENTURER_5M_PRODUCT_ID);
  });
});
