// A Bambu printer's telemetry from the merged MQTT state (mqtt-state.ts `sections`): the `print` section's
// gcode_state, progress, temperatures (both nozzles of an H2D), fans, AMS trays and HMS list, turned into core/telemetry.ts's words.
// Field meanings: ../shared/PROTOCOLS.md "push_status"; tests/golden/mqtt-push-status-report.json is a capture.
import type { FilamentTray, PrinterError, PrinterState, PrinterTelemetry, Temperature } from "../core/telemetry.ts";
import { isObject, type Json, type JsonObject } from "./mqtt-state.ts";

const STATES: Record<string, PrinterState> = {
  IDLE: "idle", PREPARE: "preparing", SLICING: "preparing", RUNNING: "printing", PAUSE: "paused", FINISH: "finished", FAILED: "failed",
};
/** `spd_lvl`, as Bambu Studio names the four speed profiles. */
const SPEED_PROFILES: Record<number, string> = { 1: "silent", 2: "standard", 3: "sport", 4: "ludicrous" };
/** Fans report a gear of 0 to 15 as a string. */
const FAN_FULL_GEAR = 15;
const FANS: [field: string, name: string][] = [
  ["cooling_fan_speed", "part cooling"], ["big_fan1_speed", "auxiliary"], ["big_fan2_speed", "chamber"], ["heatbreak_fan_speed", "hotend"],
];
/** `tray_now` of an AMS slot is ams id * 4 + tray id; these values mean no AMS slot. */
const TRAYS_PER_AMS = 4;
const EXTERNAL_SPOOL_ID = "254";
const NO_TRAY = "255";
/** `remain` is -1 when the printer cannot tell (a spool without RFID). */
const UNKNOWN_REMAIN = 0;

/**
 * A few HMS texts. Most are from Bambu Lab's public HMS wiki (wiki.bambulab.com, "HMS error code" pages), as
 * compiled in github.com/AndrewLemons/bambu-js src/utilities/hms.ts; the AMS runout the simulator raises is as
 * greghesp/ha-bambulab pybambu/hms_error_text/hms_P1S_en.json (`device_hms`, from Bambu's own tables) words it.
 * Codes without a text here are shown by code only.
 */
const HMS_TEXTS: Record<string, string> = {
  HMS_0300_1A00_0002_0002: "The nozzle is clogged with filament.",
  HMS_0300_1700_0002_0002: "The nozzle fan is slow; it may be stuck and need cleaning.",
  HMS_0C00_0300_0002_0010: "Foreign objects detected on the heatbed: check and clean it.",
  HMS_0500_0100_0003_0004: "Not enough space on the MicroSD card.",
  HMS_1200_1300_0002_0002: "The AMS1 slot 4 motor is overloaded: the filament may be tangled or stuck.",
  HMS_0700_2000_0002_0001: "AMS A Slot 1 filament has run out. Please insert a new filament.",
};
/** `print_error` texts: ha-bambulab's hms_P1S_en.json (`device_error`). */
const PRINT_ERROR_TEXTS: Record<string, string> = {
  "0700_8011": "AMS filament ran out. Please insert a new filament into the same AMS slot.",
};
/**
 * Two-nozzle printers (H2D) report each extruder in `device.extruder.info[]`: `temp` packs the target in its high
 * 16 bits and the current temperature in its low 16 (greghesp/ha-bambulab pybambu/models.py); id 0 is the right
 * nozzle, 1 the left (bambulab/BambuStudio DeviceManager.hpp MAIN_NOZZLE_ID / DEPUTY_NOZZLE_ID).
 */
const NOZZLES_BY_ID: [id: number, name: string][] = [[1, "left nozzle"], [0, "right nozzle"]];
const PACKED_HALF = 0x10000;

const num = (value: Json | undefined): number | undefined => {
  const n = typeof value === "number" ? value : typeof value === "string" && value.trim() !== "" ? Number(value) : NaN;
  return Number.isFinite(n) ? n : undefined;
};
const str = (value: Json | undefined): string | undefined => (typeof value === "string" && value !== "" ? value : undefined);
const hex = (value: number, digits: number) => (value >>> 0).toString(16).toUpperCase().padStart(digits, "0");
const groups = (digits: string) => digits.match(/.{4}/g)!.join("_");

/** An HMS entry `{ attr, code }` as the wiki writes it: HMS_AAAA_AAAA_CCCC_CCCC. */
export function hmsCode(attr: number, code: number): string {
  return `HMS_${groups(hex(attr, 8) + hex(code, 8))}`;
}

function errorsOf(print: JsonObject): PrinterError[] {
  const out: PrinterError[] = [];
  for (const entry of Array.isArray(print.hms) ? print.hms : []) {
    if (!isObject(entry)) continue;
    const attr = num(entry.attr);
    const code = num(entry.code);
    if (attr === undefined || code === undefined) continue;
    const name = hmsCode(attr, code);
    out.push(HMS_TEXTS[name] ? { code: name, text: HMS_TEXTS[name] } : { code: name });
  }
  const printError = num(print.print_error);
  if (printError) {
    const code = groups(hex(printError, 8));
    out.push(PRINT_ERROR_TEXTS[code] ? { code, text: PRINT_ERROR_TEXTS[code] } : { code });
  }
  return out;
}

function temperature(name: string, current: Json | undefined, target?: Json): Temperature | undefined {
  const celsius = num(current);
  if (celsius === undefined) return undefined;
  const targetCelsius = num(target);
  return targetCelsius === undefined ? { name, celsius } : { name, celsius, targetCelsius };
}

/** Both nozzles of a two-nozzle printer, left first; undefined unless the report has both. */
function nozzlesOf(print: JsonObject): Temperature[] | undefined {
  const device = isObject(print.device) ? print.device : undefined;
  const extruder = device && isObject(device.extruder) ? device.extruder : undefined;
  const info = extruder && Array.isArray(extruder.info) ? extruder.info.filter(isObject) : [];
  const found = NOZZLES_BY_ID.flatMap(([id, name]) => {
    const packed = num(info.find((entry) => num(entry.id) === id)?.temp);
    if (packed === undefined || !Number.isInteger(packed) || packed < 0 || packed >= PACKED_HALF * PACKED_HALF) return [];
    return [{ name, celsius: packed % PACKED_HALF, targetCelsius: Math.floor(packed / PACKED_HALF) }];
  });
  return found.length === NOZZLES_BY_ID.length ? found : undefined;
}

function tray(section: JsonObject, slot: string, active: boolean): FilamentTray | undefined {
  const material = str(section.tray_type);
  if (!material) return undefined;
  const colour = str(section.tray_color);
  const remain = num(section.remain);
  return {
    slot, material, active,
    ...(colour && /^[0-9a-f]{6}/i.test(colour) ? { colour: `#${colour.slice(0, 6).toLowerCase()}` } : {}),
    ...(remain !== undefined && remain >= UNKNOWN_REMAIN ? { remainPercent: remain } : {}),
  };
}

function traysOf(print: JsonObject): FilamentTray[] {
  const ams = isObject(print.ams) ? print.ams : {};
  const now = str(ams.tray_now) ?? NO_TRAY;
  const out: FilamentTray[] = [];
  for (const unit of Array.isArray(ams.ams) ? ams.ams : []) {
    if (!isObject(unit)) continue;
    const unitId = num(unit.id) ?? 0;
    for (const entry of Array.isArray(unit.tray) ? unit.tray : []) {
      if (!isObject(entry)) continue;
      const trayId = num(entry.id) ?? 0;
      const found = tray(entry, `AMS ${unitId + 1} slot ${trayId + 1}`, now === String(unitId * TRAYS_PER_AMS + trayId));
      if (found) out.push(found);
    }
  }
  const external = isObject(print.vt_tray) ? tray(print.vt_tray, "external spool", now === EXTERNAL_SPOOL_ID) : undefined;
  if (external) out.push(external);
  return out;
}

/** The telemetry in the merged state's sections; `now` (ms) dates the finish time. */
export function bambuTelemetry(sections: Readonly<JsonObject>, now: number): PrinterTelemetry {
  const print = isObject(sections.print) ? sections.print : undefined;
  if (!print) return { state: "unknown", temperatures: [], fans: [], trays: [], errors: [] };
  const gcodeState = str(print.gcode_state) ?? "";
  // Own keys only: a gcode_state of "constructor" is no state.
  const state = Object.hasOwn(STATES, gcodeState) ? STATES[gcodeState]! : "unknown";
  const active = state === "printing" || state === "paused" || state === "preparing";
  const percent = num(print.mc_percent);
  const minutes = num(print.mc_remaining_time);
  const speed = num(print.spd_lvl);
  const telemetry: PrinterTelemetry = {
    state,
    temperatures: [
      ...(nozzlesOf(print) ?? [temperature("nozzle", print.nozzle_temper, print.nozzle_target_temper)]),
      temperature("bed", print.bed_temper, print.bed_target_temper),
      temperature("chamber", print.chamber_temper),
    ].filter((t): t is Temperature => t !== undefined),
    fans: FANS.flatMap(([field, name]) => {
      const gear = num(print[field]);
      return gear === undefined ? [] : [{ name, percent: Math.round((Math.max(0, Math.min(gear, FAN_FULL_GEAR)) / FAN_FULL_GEAR) * 100) }];
    }),
    trays: traysOf(print),
    errors: errorsOf(print),
  };
  const job = str(print.subtask_name) ?? str(print.gcode_file);
  if (job) telemetry.job = job;
  if (percent !== undefined) telemetry.progress = Math.max(0, Math.min(100, percent)) / 100;
  const layer = num(print.layer_num);
  const totalLayers = num(print.total_layer_num);
  if (layer !== undefined) telemetry.layer = layer;
  if (totalLayers) telemetry.totalLayers = totalLayers;
  if (minutes !== undefined && Number.isFinite(minutes * 60)) telemetry.remainingSeconds = Math.max(0, minutes) * 60;
  const finish = new Date(now + (minutes ?? 0) * 60_000);
  // A nonsense estimate (1e300 minutes) has no date.
  if (active && minutes && Number.isFinite(finish.getTime())) telemetry.finishesAt = finish.toISOString();
  if (speed !== undefined && Object.hasOwn(SPEED_PROFILES, speed)) telemetry.speedProfile = SPEED_PROFILES[speed];
  return telemetry;
}
