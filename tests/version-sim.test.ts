// The simulated printers' get_version names the main board real firmware reports, so clients recognise the model.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { npmClient, startSim } from "./mqtt-helpers.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import { versionModules } from "../lib/sim/version-modules.ts";
import { findModel } from "../lib/bambu/models.ts";

const SIM_HOST = "127.0.41.10";
const golden = JSON.parse(readFileSync(join(import.meta.dir, "golden", "mqtt-get-version-x1c.json"), "utf8"));

type Module = Record<string, unknown>;

/** ha-bambulab pybambu/utils.py get_printer_type: the ota product_name, else the "AP0x" board and its project. */
function haPrinterType(modules: Module[]): string | undefined {
  const byProduct = modules.find((m) => typeof m.product_name === "string" && /^Bambu Lab (A1|A1 mini|P1S|P1P|P2S|H2\w*)$/.test(m.product_name));
  if (byProduct) return String(byProduct.product_name).slice("Bambu Lab ".length);
  const board = modules.find((m) => String(m.hw_ver ?? "").startsWith("AP0"));
  if (!board) return undefined;
  const project = board.project_name ?? "";
  if (board.hw_ver === "AP02") return "X1E";
  if (project === "N1") return "A1 mini";
  if (board.hw_ver === "AP04") return project === "C11" ? "P1P" : project === "C12" ? "P1S" : undefined;
  if (board.hw_ver === "AP05") return project === "N2S" ? "A1" : project === "" ? "X1C" : undefined;
  return undefined;
}

describe("simulated get_version", () => {
  let sim: SimPrinter;
  beforeAll(async () => {
    ({ sim } = await startSim(SIM_HOST, { model: "X1C" }));
  });
  afterAll(async () => {
    await sim?.stop();
  });

  test("an X1C reports the rv1126 board, hw AP05, with the fields the public capture has", async () => {
    const c = await npmClient(SIM_HOST);
    try {
      await c.client.subscribeAsync(`device/${sim.identity.serial}/report`);
      await c.client.publishAsync(`device/${sim.identity.serial}/request`, JSON.stringify({ info: { sequence_id: "9", command: "get_version" } }));
      const reply = await c.next((j) => j.info?.sequence_id === "9");
      const real = golden.info.module.find((m: Module) => m.name === "rv1126");
      const simulated = reply.info.module.find((m: Module) => m.name === "rv1126");
      expect(simulated).toBeDefined();
      expect(simulated.hw_ver).toBe(real.hw_ver);
      for (const key of Object.keys(real)) expect(typeof simulated[key]).toBe(typeof real[key]);
      expect(haPrinterType(reply.info.module)).toBe("X1C");
    } finally {
      await c.end();
    }
  });

  test("Home Assistant's rule names every model a public source documents", () => {
    for (const name of ["X1C", "X1E", "P1P", "P1S", "A1 mini", "A1"]) {
      const modules = versionModules(findModel(name)!, "01.08.00.00", "SERIAL");
      // Older P1/A1 firmware had no product_name: the board alone must name the model too.
      const boardOnly = modules.map(({ product_name: _, ...rest }) => rest);
      expect([name, haPrinterType(modules), haPrinterType(boardOnly)]).toEqual([name, name, name]);
    }
  });
});
