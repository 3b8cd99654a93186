import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { parseConfig } from "../lib/config.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { configName } from "../lib/commands/discover.ts";

const LISTEN = "127.0.6.70";
const SSDP_PORT = 46121;
const BUN = "node_modules/.bin/bun";

async function discover(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const child = Bun.spawn([BUN, "main.ts", "discover", ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { code, out, err };
}

describe("pandaproxy discover", () => {
  const sims: SimPrinter[] = [];
  beforeAll(async () => {
    for (const [host, model, name] of [["127.0.6.11", "P1S", "Workshop P1S"], ["127.0.6.12", "X1C", "x1c"]] as const) {
      sims.push(await startSimulatedBambu({
        host, model, name, firmware: "01.08.00.00", services: ["ssdp"],
        ports: { ssdp: SSDP_PORT }, ssdpTargets: [LISTEN], ssdpIntervalMs: 500,
      }));
    }
  });
  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
  });

  test("finds the simulated printers and prints a [[printer]] block for each that printers.toml accepts", async () => {
    const { code, out } = await discover("--seconds", "2", "--listen", `${LISTEN}:${SSDP_PORT}`);
    expect(code).toBe(0);
    expect(out).toContain(`found "Workshop P1S" P1S (C12), serial ${sims[0]!.identity.serial}, at 127.0.6.11, firmware 01.08.00.00`);
    expect(out).toContain(`found "x1c" X1C (BL-P001), serial ${sims[1]!.identity.serial}, at 127.0.6.12`);
    expect(out).toContain("2 printers found");
    const blocks = out.slice(out.indexOf("[[printer]]"));
    expect(blocks).toContain('name = "workshop-p1s"');
    expect(blocks).toContain('host = "127.0.6.11"');
    expect(blocks).toContain('model = "X1C"');
    // Left for the user: the access code, and with several printers a bind address each.
    let bindAddress = 200;
    const filled = blocks.replaceAll('access_code = ""', 'access_code = "12345678"').replace(/bind = ""/g, () => `bind = "127.0.6.${bindAddress++}"`);
    const config = parseConfig(filled);
    expect(config.printers.map((p) => [p.name, p.host, p.serial, p.model])).toEqual([
      ["workshop-p1s", "127.0.6.11", sims[0]!.identity.serial, "P1S"],
      ["x1c", "127.0.6.12", sims[1]!.identity.serial, "X1C"],
    ]);
    // Left as is, the block does not validate: nobody runs with an empty access code by accident.
    expect(() => parseConfig(blocks)).toThrow(/access_code/);
    expect(() => parseConfig(blocks.replaceAll('access_code = ""', 'access_code = "12345678"'))).toThrow(/bind/);
  });

  test("no printer in time exits 1 with a hint", async () => {
    const { code, out } = await discover("--seconds", "1", "--listen", `127.0.6.71:${SSDP_PORT}`);
    expect(code).toBe(1);
    expect(out).toContain("No printer announced itself");
  });

  test("bad options exit 2 with the usage", async () => {
    for (const args of [["--seconds", "soon"], ["--listen", "here"]]) {
      const { code, err } = await discover(...args);
      expect(code).toBe(2);
      expect(err).toContain("Usage: pandaproxy discover");
    }
  });

  test("config names are unique and valid", () => {
    const taken = new Set<string>();
    expect(configName("Bob the Builder!", "X", taken)).toBe("bob-the-builder");
    expect(configName("Bob the Builder", "X", taken)).toBe("bob-the-builder-2");
    expect(configName("  ", "00M09A350100123", taken)).toBe("00m09a350100123");
  });
});
