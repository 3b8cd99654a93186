// A printer's telemetry without a socket: a Bambu printer's from its merged MQTT state (the golden report, OpenBambuAPI's
// push_status of an idle printer, then deltas as the firmware sends them while printing; an H2D's two nozzles from the
// golden extruder block of ha-bambulab's models.py), a FlashForge's from its
// ~M119/~M27/~M105 replies (the golden replies, then a print).
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { bambuTelemetry, hmsCode } from "../lib/bambu/telemetry.ts";
import { createFlashforgeStatus, flashforgeTelemetry } from "../lib/flashforge/telemetry.ts";
import { createReportState, type JsonObject } from "../lib/bambu/mqtt-state.ts";

const GOLDEN = JSON.parse(readFileSync(join(import.meta.dir, "golden/mqtt-push-status-report.json"), "utf8")) as JsonObject;
const NOW = Date.parse("2026-01-01T12:00:00Z");
const printing = (fields: JsonObject): JsonObject => ({ print: { command: "push_status", msg: 1, sequence_id: "7", ...fields } });

function stateAfter(...deltas: JsonObject[]) {
  const state = createReportState();
  state.apply({ print: { ...(GOLDEN.print as JsonObject), msg: 0 } });
  for (const delta of deltas) state.apply(delta);
  return state.sections;
}

describe("Bambu telemetry", () => {
  test("an idle printer (the golden capture): state in words, temperatures with targets, fans, speed profile", () => {
    const t = bambuTelemetry(stateAfter(), NOW);
    expect(t.state).toBe("idle");
    expect(t.job).toBeUndefined();
    expect(t.progress).toBe(0);
    expect(t.remainingSeconds).toBe(0);
    expect(t.finishesAt).toBeUndefined();
    expect(t.temperatures).toEqual([
      { name: "nozzle", celsius: 25, targetCelsius: 25 },
      { name: "bed", celsius: 25, targetCelsius: 25 },
      { name: "chamber", celsius: 24 },
    ]);
    expect(t.fans.map((f) => f.name)).toEqual(["part cooling", "auxiliary", "chamber", "hotend"]);
    expect(t.fans.every((f) => f.percent === 0)).toBe(true);
    expect(t.speedProfile).toBe("standard");
    expect(t.trays).toEqual([]);
    expect(t.errors).toEqual([]);
  });

  test("a print advancing: job, progress, layer n of m, time remaining and finish time", () => {
    const start = printing({ gcode_state: "RUNNING", subtask_name: "benchy", mc_percent: 10, layer_num: 12, total_layer_num: 120, mc_remaining_time: 42 });
    const t = bambuTelemetry(stateAfter(start), NOW);
    expect(t).toMatchObject({ state: "printing", job: "benchy", progress: 0.1, layer: 12, totalLayers: 120, remainingSeconds: 42 * 60 });
    expect(t.finishesAt).toBe("2026-01-01T12:42:00.000Z");
    const later = bambuTelemetry(stateAfter(start, printing({ mc_percent: 55, layer_num: 66, mc_remaining_time: 20 })), NOW);
    expect(later).toMatchObject({ state: "printing", job: "benchy", progress: 0.55, layer: 66, remainingSeconds: 1200 });
    expect(bambuTelemetry(stateAfter(start, printing({ gcode_state: "PAUSE" })), NOW).state).toBe("paused");
    expect(bambuTelemetry(stateAfter(start, printing({ gcode_state: "FINISH", mc_remaining_time: 0 })), NOW)).toMatchObject({ state: "finished" });
    expect(bambuTelemetry(stateAfter(printing({ gcode_state: "PREPARE" })), NOW).state).toBe("preparing");
    expect(bambuTelemetry(stateAfter(printing({ gcode_state: "FAILED" })), NOW).state).toBe("failed");
    expect(bambuTelemetry(stateAfter(printing({ spd_lvl: 4, cooling_fan_speed: "15", big_fan1_speed: "5" })), NOW)).toMatchObject({
      speedProfile: "ludicrous",
      fans: [{ name: "part cooling", percent: 100 }, { name: "auxiliary", percent: 33 }, { name: "chamber", percent: 0 }, { name: "hotend", percent: 0 }],
    });
  });

  test("AMS trays: colour, material, remaining, the slot in use; the external spool; empty slots left out", () => {
    const ams = printing({
      ams: {
        tray_now: "1",
        ams: [{ id: "0", tray: [
          { id: "0", tray_type: "PLA", tray_color: "FFFFFFFF", remain: 82 },
          { id: "1", tray_type: "PETG", tray_color: "F95D73FF", remain: -1 },
          { id: "2" },
        ] }],
      },
      vt_tray: { id: "254", tray_type: "TPU", tray_color: "00AE42FF", remain: 0 },
    });
    expect(bambuTelemetry(stateAfter(ams), NOW).trays).toEqual([
      { slot: "AMS 1 slot 1", material: "PLA", colour: "#ffffff", remainPercent: 82, active: false },
      { slot: "AMS 1 slot 2", material: "PETG", colour: "#f95d73", active: true },
      { slot: "external spool", material: "TPU", colour: "#00ae42", remainPercent: 0, active: false },
    ]);
  });

  test("HMS entries by the wiki's code, with a text where the public table has one; the print error's code", () => {
    expect(hmsCode(0x03001a00, 0x00020002)).toBe("HMS_0300_1A00_0002_0002");
    const t = bambuTelemetry(stateAfter(printing({
      hms: [{ attr: 0x03001a00, code: 0x00020002 }, { attr: 0x07000100, code: 0x00010001 }, { attr: "x" }],
      print_error: 0x0300400c,
    })), NOW);
    expect(t.errors).toEqual([
      { code: "HMS_0300_1A00_0002_0002", text: "The nozzle is clogged with filament." },
      { code: "HMS_0700_0100_0001_0001" },
      { code: "0300_400C" },
    ]);
  });

  test("an H2D's two nozzles (the golden extruder block): left and right, each with its target, unpacked from `temp`", () => {
    const h2d = JSON.parse(readFileSync(join(import.meta.dir, "golden/mqtt-push-status-h2d-extruder.json"), "utf8")) as JsonObject;
    const t = bambuTelemetry(stateAfter(h2d), NOW);
    expect(t.temperatures).toEqual([
      { name: "left nozzle", celsius: 159, targetCelsius: 88 },
      { name: "right nozzle", celsius: 220, targetCelsius: 220 },
      { name: "bed", celsius: 25, targetCelsius: 25 },
      { name: "chamber", celsius: 24 },
    ]);
    // A later delta replaces the array whole, as the merged state keeps arrays.
    const later = printing({ device: { extruder: { info: [{ id: 0, temp: (220 << 16) + 219 }, { id: 1, temp: (160 << 16) + 100 }], state: 2 } } });
    expect(bambuTelemetry(stateAfter(h2d, later), NOW).temperatures.slice(0, 2)).toEqual([
      { name: "left nozzle", celsius: 100, targetCelsius: 160 },
      { name: "right nozzle", celsius: 219, targetCelsius: 220 },
    ]);
    // One extruder (a single-nozzle printer on newer firmware), or an entry without a usable temp: the flat fields.
    for (const info of [[{ id: 0, temp: 14418140 }], [{ id: 0, temp: 14418140 }, { id: 1, temp: "hot" }], [{ id: 0, temp: -1 }, { id: 1, temp: 2 ** 32 }]]) {
      expect(bambuTelemetry(stateAfter(printing({ device: { extruder: { info } } })), NOW).temperatures[0]).toEqual({ name: "nozzle", celsius: 25, targetCelsius: 25 });
    }
  });

  test("the AMS runout the simulator raises: the HMS entry and the print error, each with the printer's words", () => {
    const t = bambuTelemetry(stateAfter(printing({ gcode_state: "PAUSE", hms: [{ attr: 0x07002000, code: 0x00020001 }], print_error: 0x07008011 })), NOW);
    expect(t.state).toBe("paused");
    expect(t.errors).toEqual([
      { code: "HMS_0700_2000_0002_0001", text: "AMS A Slot 1 filament has run out. Please insert a new filament." },
      { code: "0700_8011", text: "AMS filament ran out. Please insert a new filament into the same AMS slot." },
    ]);
    expect(bambuTelemetry(stateAfter(printing({ hms: [{ attr: 0x07002000, code: 0x00020001 }] }), printing({ hms: [], print_error: 0 })), NOW).errors).toEqual([]);
  });

  test("before any report, or with fields of the wrong type, nothing is made up", () => {
    expect(bambuTelemetry({}, NOW)).toEqual({ state: "unknown", temperatures: [], fans: [], trays: [], errors: [] });
    const t = bambuTelemetry({ print: { gcode_state: "SOMETHING_NEW", nozzle_temper: "hot", mc_percent: [1], ams: { ams: [7, null] }, hms: "none" } }, NOW);
    expect(t).toEqual({ state: "unknown", temperatures: [], fans: [], trays: [], errors: [] });
  });
});

describe("FlashForge telemetry", () => {
  const golden = (name: string) => readFileSync(join(import.meta.dir, `golden/flashforge-${name}-reply.txt`), "utf8");

  test("an idle printer (the golden M119 and M27 replies)", () => {
    expect(flashforgeTelemetry({ M119: golden("m119"), M27: golden("m27") })).toEqual({ state: "idle", progress: 0, temperatures: [], fans: [], trays: [], errors: [] });
  });

  test("a print: state, file, progress, layers, temperatures with targets (the second nozzle's 0/0 left out)", () => {
    const t = flashforgeTelemetry({
      M119: golden("m119").replace("MachineStatus: READY", "MachineStatus: BUILDING_FROM_SD").replace("CurrentFile: ", "CurrentFile: cube.gx"),
      M27: "CMD M27 Received.\nSD printing byte 42/100\nLayer: 12/80\nok\n",
      M105: "CMD M105 Received.\nT0:209.6/210.0 T1:0.0/0.0 B:59 /60\nok\n",
    });
    expect(t).toEqual({
      state: "printing", job: "cube.gx", progress: 0.42, layer: 12, totalLayers: 80, fans: [], trays: [], errors: [],
      temperatures: [{ name: "nozzle", celsius: 209.6, targetCelsius: 210 }, { name: "bed", celsius: 59, targetCelsius: 60 }],
    });
  });

  test("only status replies are kept; nothing until the printer has answered ~M119", () => {
    const status = createFlashforgeStatus();
    status.heard("M27", golden("m27"));
    expect(status.telemetry()).toBeUndefined();
    status.heard("M119", golden("m119").replace("READY", "PAUSED"));
    status.heard("M115", "Machine Type: not a status reply");
    expect(status.telemetry()).toMatchObject({ state: "paused", progress: 0 });
    status.heard("M119", "garbage");
    expect(status.telemetry()!.state).toBe("unknown");
  });
});

describe("telemetry from anything a printer may send", () => {
  const FIELDS = ["gcode_state", "mc_percent", "layer_num", "total_layer_num", "mc_remaining_time", "nozzle_temper", "bed_target_temper",
    "spd_lvl", "cooling_fan_speed", "ams", "vt_tray", "hms", "print_error", "subtask_name", "device"];
  const finiteNumbers = (value: unknown): boolean =>
    typeof value === "number" ? Number.isFinite(value) : typeof value === "object" && value !== null ? Object.values(value).every(finiteNumbers) : true;

  test("a Bambu print section of any shape gives telemetry with finite numbers, never an exception", () => {
    const value = fc.oneof(fc.string({ maxLength: 12 }), fc.double(), fc.integer(), fc.boolean(), fc.constant(null), fc.constantFrom("255", "254", "1e400", "-1"), fc.array(fc.integer(), { maxLength: 3 }));
    const print = fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(value, fc.record({ ams: fc.array(fc.record({ id: value, tray: fc.array(fc.dictionary(fc.constantFrom("id", "tray_type", "tray_color", "remain"), value)) })), tray_now: value })));
    fc.assert(fc.property(print, (section) => finiteNumbers(bambuTelemetry({ print: section as JsonObject }, NOW))), { numRuns: 2_000, seed: 16 });
  });

  test("FlashForge replies of any text give telemetry with finite numbers, never an exception", () => {
    const reply = fc.oneof(fc.string(), fc.constantFrom("SD printing byte 99999999999999999999/0\nLayer: 5/0", "T0:1e400/-0 B:./.", "MachineStatus: __proto__"));
    fc.assert(fc.property(reply, reply, reply, (M119, M27, M105) => finiteNumbers(flashforgeTelemetry({ M119, M27, M105 }))), { numRuns: 2_000, seed: 16 });
  });
});
