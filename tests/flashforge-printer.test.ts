// A FlashForge printers.toml entry starts all four services from the FACTORIES registry.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { flashforgeServices } from "../lib/flashforge/printer.ts";
import type { Service } from "../lib/core/service.ts";
import { setupLogging } from "../lib/log.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { consoleClient, flashforgeContext } from "./flashforge-helpers.ts";

const SIM_HOST = "127.0.7.13";
const PROXY_HOST = "127.0.7.12";

let sim: SimFlashforge;
let services: Service[] = [];
let ctx: ReturnType<typeof flashforgeContext>;

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  sim = await startSimulatedFlashforge({ host: SIM_HOST });
  ctx = flashforgeContext(sim, PROXY_HOST);
  services = flashforgeServices(ctx);
  await Promise.all(services.map((s) => s.start()));
});

afterAll(async () => {
  await Promise.allSettled(services.map((s) => s.stop()));
  await sim?.stop();
});

test("a flashforge entry runs tcp, http, discovery and camera, and the console learns the model", async () => {
  expect(services.map((s) => s.name).sort()).toEqual(["camera", "discovery", "http", "tcp"]);
  for (const s of services) expect(s.status().state).toBe("listening");
  const client = await consoleClient(PROXY_HOST, 8899);
  try {
    client.send("~M115");
    expect(await client.readText()).toContain(`Machine Name: ${sim.identity.name}`);
    expect(ctx.hub.info.firmware).toBe(sim.identity.firmware);
    expect(ctx.hub.info.productName).toBe("Flashforge Adventurer 5M");
  } finally {
    client.close();
  }
  const res = await fetch(`http://${PROXY_HOST}:8898/detail`, {
    method: "POST", body: JSON.stringify({ serialNumber: sim.identity.serial, checkCode: sim.identity.checkCode }),
  });
  expect(((await res.json()) as { code: number }).code).toBe(0);
});
