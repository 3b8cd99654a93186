// FlashForge UDP discovery: the codec, and the proxy answering probes as the printer from its own address.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createFlashforgeDiscovery } from "../lib/flashforge/discovery.ts";
import { decodeDiscoveryReply, encodeDiscoveryReply, rewriteDiscoveryReply, DISCOVERY_REPLY_BYTES } from "../lib/flashforge/discovery-codec.ts";
import type { Service } from "../lib/core/service.ts";
import { setupLogging } from "../lib/log.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { SIM_PRODUCT_ID, SIM_VENDOR_ID } from "../lib/sim/flashforge/discovery.ts";
import { discoveryProbe, flashforgeContext } from "./flashforge-helpers.ts";

const SIM_HOST = "127.0.7.6";
const PROXY_HOST = "127.0.7.5";
const LONELY_PROXY_HOST = "127.0.7.10";
const CLIENT_HOST = "127.0.7.50";

const probe = (to: string) => discoveryProbe(to, 48899, CLIENT_HOST);

describe("discovery codec", () => {
  test("a 276-byte reply round-trips; a rewrite changes name, serial and ports and keeps the rest", () => {
    const original = encodeDiscoveryReply({
      name: "Adventurer 5M", serial: "SNMOMC9900728", commandPort: 8899, httpPort: 8898, vendorId: 0x2b71, productId: 0x24, productType: 7, status: 1,
    });
    expect(original.length).toBe(DISCOVERY_REPLY_BYTES);
    expect(decodeDiscoveryReply(original).serial).toBe("SNMOMC9900728");
    const rewritten = decodeDiscoveryReply(rewriteDiscoveryReply(original, { name: "shop-5m", serial: "SNX", commandPort: 18899, httpPort: 18898 }));
    expect(rewritten).toEqual({ name: "shop-5m", serial: "SNX", commandPort: 18899, httpPort: 18898, vendorId: 0x2b71, productId: 0x24, productType: 7, status: 1 });
  });
});

describe("FlashForge discovery proxy", () => {
  let sim: SimFlashforge;
  let proxy: Service;
  let lonely: Service;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSimulatedFlashforge({ host: SIM_HOST, name: "Adventurer 5M" });
    proxy = createFlashforgeDiscovery(flashforgeContext(sim, PROXY_HOST));
    await proxy.start();
    const ctx = flashforgeContext(sim, LONELY_PROXY_HOST);
    ctx.printer.host = "127.0.7.11"; // nothing answers there
    lonely = createFlashforgeDiscovery(ctx);
    await lonely.start();
  });

  afterAll(async () => {
    await lonely?.stop();
    await proxy?.stop();
    await sim?.stop();
  });

  test("the simulated printer answers from its own address", async () => {
    const { reply, from } = await probe(SIM_HOST);
    expect(from).toBe(SIM_HOST);
    expect(decodeDiscoveryReply(reply).name).toBe("Adventurer 5M");
  });

  test("the proxy answers from its address with the configured name and serial, the printer's other fields kept", async () => {
    const { reply, from } = await probe(PROXY_HOST);
    expect(from).toBe(PROXY_HOST);
    expect(reply.length).toBe(DISCOVERY_REPLY_BYTES);
    const fields = decodeDiscoveryReply(reply);
    expect(fields.name).toBe("ff5m");
    expect(fields.serial).toBe(sim.identity.serial);
    expect(fields.commandPort).toBe(8899);
    expect(fields.httpPort).toBe(8898);
    expect(fields.vendorId).toBe(SIM_VENDOR_ID);
    expect(fields.productId).toBe(SIM_PRODUCT_ID);
  });

  test("the printer is asked once and its reply reused for the next probes", async () => {
    const before = sim.discovery.probes;
    for (let i = 0; i < 3; i++) expect((await probe(PROXY_HOST)).from).toBe(PROXY_HOST);
    expect(sim.discovery.probes).toBe(before);
  });

  test("with the printer silent, the proxy still answers, from printers.toml", async () => {
    const { reply, from } = await probe(LONELY_PROXY_HOST);
    expect(from).toBe(LONELY_PROXY_HOST);
    expect(decodeDiscoveryReply(reply).serial).toBe(sim.identity.serial);
  });
});
