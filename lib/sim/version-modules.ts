// The `module` list of the simulated printer's `get_version` reply, per model, as far as public sources show it.
// Clients tell the model from it (ha-bambulab's get_printer_type: the "AP0x" board's hw_ver and project_name, or the
// ota module's product_name on newer firmware), so a wrong board makes a real client misname the printer.
import type { BambuModel } from "../bambu/models.ts";
import type { JsonObject } from "../bambu/mqtt-state.ts";

interface MainBoard {
  name: string;
  hwVer: string;
  /** Whether the board's project_name carries the model code (P1/A1 firmware) or is absent (X1). */
  projectName: boolean;
}

/** Sources: X1C — OpenBambuAPI mqtt.md § info.get_version (rv1126, AP05); X1E, P1P, P1S, A1 mini, A1 — the
 * examples in ha-bambulab pybambu/utils.py get_printer_type (ap/AP02; esp32 AP04 C11, C12; AP05 N1, N2S).
 * X1 (as X1C), A2L, P2S, X2D and the H2 family are guesses: no public capture names their board; clients know
 * them by the ota module's product_name, which the simulator always sends. */
const MAIN_BOARDS: Record<string, MainBoard> = {
  X1C: { name: "rv1126", hwVer: "AP05", projectName: false },
  X1: { name: "rv1126", hwVer: "AP05", projectName: false },
  X1E: { name: "ap", hwVer: "AP02", projectName: false },
  P1P: { name: "esp32", hwVer: "AP04", projectName: true },
  P1S: { name: "esp32", hwVer: "AP04", projectName: true },
  "A1 mini": { name: "esp32", hwVer: "AP05", projectName: true },
  A1: { name: "esp32", hwVer: "AP05", projectName: true },
};
const GUESSED_BOARD: MainBoard = { name: "ap", hwVer: "AP06", projectName: false };
const MAIN_BOARD_SW_VER = "00.00.28.55";
const MC_SW_VER = "00.00.26.36";

export function versionModules(model: BambuModel, firmware: string, serial: string): JsonObject[] {
  const product = `Bambu Lab ${model.name}`;
  const board = MAIN_BOARDS[model.name] ?? GUESSED_BOARD;
  const project: JsonObject = board.projectName ? { project_name: model.code } : {};
  return [
    { name: "ota", product_name: product, sw_ver: firmware, hw_ver: "OTA", sn: serial, visible: true },
    { name: board.name, ...project, sw_ver: MAIN_BOARD_SW_VER, hw_ver: board.hwVer, sn: serial, visible: false },
    { name: "mc", sw_ver: MC_SW_VER, hw_ver: "MC07", sn: "0", visible: false },
    { name: "ams/0", product_name: "AMS", sw_ver: "00.00.06.40", hw_ver: "AMS08", sn: "006A000000000000", visible: true },
  ];
}
