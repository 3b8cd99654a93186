// Print events from gcode_state transitions (the Bambu firmware's words: IDLE, PREPARE, RUNNING, PAUSE, FINISH,
// FAILED; a FlashForge's telemetry state is put in those words first). Pure: the exporter feeds it each state it
// sees and publishes what comes back.
import type { PrinterState } from "../core/telemetry.ts";
export type PrintEvent = "started" | "finished" | "failed";

const ACTIVE = new Set(["PREPARE", "RUNNING", "PAUSE"]);

/** The event a change from `previous` to `next` means, if any; undefined `previous` (just connected) means none. */
export function printEvent(previous: string | undefined, next: string | undefined): PrintEvent | undefined {
  if (previous === undefined || next === undefined || previous === next) return undefined;
  if (ACTIVE.has(next) && !ACTIVE.has(previous)) return "started";
  if (next === "FINISH" && ACTIVE.has(previous)) return "finished";
  if (next === "FAILED" && ACTIVE.has(previous)) return "failed";
  return undefined;
}

/** The telemetry's state (core/telemetry.ts) as the gcode_state word printEvent reads. */
export const GCODE_STATE_OF: Readonly<Record<PrinterState, string | undefined>> = {
  idle: "IDLE", preparing: "PREPARE", printing: "RUNNING", paused: "PAUSE", finished: "FINISH", failed: "FAILED", unknown: undefined,
};
