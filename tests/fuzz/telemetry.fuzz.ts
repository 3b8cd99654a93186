// Fuzz targets for the telemetry readers: a Bambu printer's JSON reports (lib/bambu/telemetry.ts, any shape,
// including random device.extruder.info and hms entries) and a FlashForge printer's ~M119, ~M27 and ~M105 reply
// texts (lib/flashforge/telemetry.ts). Invariant: never a throw, and telemetry in core/telemetry.ts's words
// only: a known state, numbers finite (or absent) and in range, strings where strings belong.
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { PrinterTelemetry } from "../../lib/core/telemetry.ts";
import { bambuTelemetry } from "../../lib/bambu/telemetry.ts";
import type { JsonObject } from "../../lib/bambu/mqtt-state.ts";
import { createFlashforgeStatus, flashforgeTelemetry } from "../../lib/flashforge/telemetry.ts";
import { wireText } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const fail = (why: string): never => {
  throw new Error(why);
};

const STATES = new Set(["idle", "preparing", "printing", "paused", "finished", "failed", "unknown"]);
const SPEED_PROFILES = new Set(["silent", "standard", "sport", "ludicrous"]);

/** Everything a reader of PrinterTelemetry (the status page, /metrics) may rely on. */
function checkTelemetry(t: PrinterTelemetry): void {
  const finite = (what: string, n: unknown, min = -Infinity, max = Infinity) => {
    if (typeof n !== "number" || !Number.isFinite(n) || n < min || n > max) fail(`${what} is ${String(n)}`);
  };
  const optional = (what: string, n: unknown, min?: number, max?: number) => n === undefined || finite(what, n, min, max);
  const text = (what: string, s: unknown) => s === undefined || typeof s === "string" || fail(`${what} is a ${typeof s}`);
  if (typeof t.state !== "string" || !STATES.has(t.state)) fail(`state ${String(t.state)}`);
  text("job", t.job);
  optional("progress", t.progress, 0, 1);
  optional("layer", t.layer);
  optional("totalLayers", t.totalLayers);
  optional("remainingSeconds", t.remainingSeconds, 0);
  if (t.finishesAt !== undefined && (typeof t.finishesAt !== "string" || Number.isNaN(Date.parse(t.finishesAt)))) fail(`finishesAt ${String(t.finishesAt)}`);
  if (t.speedProfile !== undefined && !SPEED_PROFILES.has(t.speedProfile)) fail(`speed profile ${String(t.speedProfile)}`);
  for (const temperature of t.temperatures) {
    text("temperature name", temperature.name);
    finite(`${temperature.name} temperature`, temperature.celsius);
    optional(`${temperature.name} target`, temperature.targetCelsius);
  }
  for (const fan of t.fans) finite(`${fan.name} fan`, fan.percent, 0, 100);
  for (const tray of t.trays) {
    text("slot", tray.slot);
    text("material", tray.material);
    if (tray.colour !== undefined && !/^#[0-9a-f]{6}$/.test(tray.colour)) fail(`colour ${tray.colour}`);
    optional(`${tray.slot} remaining`, tray.remainPercent, 0);
    if (typeof tray.active !== "boolean") fail("active is no boolean");
  }
  for (const error of t.errors) {
    text("error code", error.code);
    text("error text", error.text);
  }
  JSON.stringify(t); // /api/printers sends it as is
}

// --- Bambu ----------------------------------------------------------------------------------------------------

const golden = (name: string) => JSON.parse(readFileSync(join(import.meta.dir, "..", "golden", name), "utf8")) as JsonObject;
const CAPTURES = ["mqtt-push-status-report.json", "mqtt-push-status-x1c.json", "mqtt-push-status-h2d-extruder.json"].map(golden);

/** The values that trip readers up: names of Object.prototype's keys, numbers as strings, huge and negative numbers. */
const oddScalar = fc.oneof(
  fc.constantFrom("constructor", "__proto__", "toString", "hasOwnProperty", "valueOf", "", " ", "1e400", "-1e400", "NaN", "Infinity", "0x10", "1e21",
    "RUNNING", "PAUSE", "254", "255", "-1", "FFFFFF", "ggg", "4", "1.5", null, true, false),
  fc.double(),
  fc.integer(),
  fc.constantFrom(1e300, -1e300, 2 ** 32, 2 ** 53, -0, 0x10000 * 0x10000 - 1, 0x10000 * 0x10000, Number.MAX_VALUE, Number.MIN_VALUE),
  fc.string({ maxLength: 12 }),
);
const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: oddScalar },
  { weight: 1, arbitrary: fc.array(oddScalar, { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.dictionary(fc.constantFrom("id", "temp", "attr", "code", "tray", "tray_type", "tray_color", "remain", "info", "extruder"), oddScalar, { maxKeys: 4 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
);
const FIELDS = ["gcode_state", "mc_percent", "mc_remaining_time", "spd_lvl", "nozzle_temper", "nozzle_target_temper", "bed_temper", "bed_target_temper",
  "chamber_temper", "cooling_fan_speed", "big_fan1_speed", "big_fan2_speed", "heatbreak_fan_speed", "subtask_name", "gcode_file", "layer_num",
  "total_layer_num", "print_error", "hms", "ams", "vt_tray", "device"];

const extruderInfo = fc.array(
  fc.oneof(fc.record({ id: fc.oneof(fc.constantFrom(0, 1, "0", "1"), oddScalar), temp: fc.oneof(fc.nat(), oddScalar) }, { requiredKeys: [] }), oddValue),
  { maxLength: 4 },
);
const hms = fc.array(fc.oneof(fc.record({ attr: fc.oneof(fc.nat(), oddScalar), code: fc.oneof(fc.nat(), oddScalar) }, { requiredKeys: [] }), oddValue), { maxLength: 4 });
const ams = fc.record({
  tray_now: oddScalar,
  ams: fc.array(fc.record({ id: oddScalar, tray: fc.array(fc.dictionary(fc.constantFrom("id", "tray_type", "tray_color", "remain"), oddScalar), { maxLength: 4 }) }, { requiredKeys: [] }), { maxLength: 3 }),
}, { requiredKeys: [] });

/** A capture with fields replaced, added or shaped anew; as JSON text through JSON.parse, as the state gets it. */
const bambuReport = fc
  .tuple(
    fc.constantFrom(...CAPTURES),
    fc.array(fc.tuple(fc.constantFrom(...FIELDS), oddValue), { maxLength: 6 }),
    fc.option(extruderInfo, { nil: undefined }),
    fc.option(hms, { nil: undefined }),
    fc.option(ams, { nil: undefined }),
  )
  .map(([capture, replaced, info, hmsList, amsSection]) => {
    const print = { ...((capture.print ?? {}) as JsonObject) } as Record<string, unknown>;
    for (const [field, value] of replaced) print[field] = value;
    if (info) print.device = { extruder: { info } };
    if (hmsList) print.hms = hmsList;
    if (amsSection) print.ams = amsSection;
    return JSON.stringify({ print });
  });

const bambuReports: FuzzTarget = {
  name: "Bambu report -> telemetry",
  property: () =>
    fc.property(
      fc.oneof(
        { weight: 6, arbitrary: bambuReport },
        { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify({ print: v })) },
        { weight: 1, arbitrary: fc.constantFrom('{"print":{"gcode_state":"constructor"}}', '{"print":{"__proto__":{"gcode_state":"RUNNING"}}}', '{"print":{"spd_lvl":"constructor"}}') },
      ),
      fc.oneof(fc.constant(Date.UTC(2026, 11, 1)), fc.integer({ min: -8.64e15, max: 8.64e15 })),
      (text, now) => checkTelemetry(bambuTelemetry(JSON.parse(text) as JsonObject, now)),
    ),
};

// --- FlashForge -----------------------------------------------------------------------------------------------

const number = fc.oneof(fc.nat(), fc.constantFrom("9".repeat(400), "0", "00", "-1", "1.5", "1e3", "", " "), fc.string({ maxLength: 4 }));
const m119 = fc
  .tuple(fc.constantFrom("READY", "BUILDING_FROM_SD", "BUILDING_COMPLETED", "PAUSED", "BUSY", "constructor", "__proto__", "toString", ""), wireText(20), fc.boolean())
  .map(([status, file, crlf]) => [`CMD M119 Received.`, "Endstop: X-max: 110 Y-max: 110 Z-min: 0", `MachineStatus: ${status}`, "MoveMode: READY", `CurrentFile: ${file}`, "ok"].join(crlf ? "\r\n" : "\n"));
const m27 = fc
  .tuple(number, number, number, number)
  .map(([done, total, layer, layers]) => `CMD M27 Received.\r\nSD printing byte ${done}/${total}\r\nLayer: ${layer}/${layers}\r\nok`);
const m105 = fc
  .array(fc.tuple(fc.constantFrom("T0", "T1", "B", "T2", "X"), number, number), { maxLength: 4 })
  .map((heaters) => `CMD M105 Received.\r\n${heaters.map(([h, c, t]) => `${h}:${c}/${t}`).join(" ")}\r\nok`);

const flashforgeReplies: FuzzTarget = {
  name: "FlashForge status replies -> telemetry",
  property: () =>
    fc.property(
      fc.oneof(m119, wireText(200)),
      fc.option(fc.oneof(m27, wireText(200)), { nil: undefined }),
      fc.option(fc.oneof(m105, wireText(200)), { nil: undefined }),
      fc.array(fc.tuple(fc.constantFrom("M119", "M27", "M105", "M115", "constructor", "__proto__"), wireText(60)), { maxLength: 4 }),
      (M119, M27, M105, heard) => {
        checkTelemetry(flashforgeTelemetry({ M119, M27, M105 }));
        const status = createFlashforgeStatus();
        for (const [code, text] of heard) status.heard(code, text);
        const t = status.telemetry();
        if (t) checkTelemetry(t);
      },
    ),
};

export const targets: FuzzTarget[] = [bambuReports, flashforgeReplies];
