// A FlashForge printer's telemetry from the status replies that pass through the TCP console (tcp.ts): ~M119
// (machine status, current file), ~M27 (progress, layers; also our keepalive) and ~M105 (temperatures). The proxy
// asks the printer only ~M27 itself, so the rest is as fresh as the clients' own polling. Reply layouts:
// tests/golden/flashforge-m119-reply.txt, -m27- (Parallel-7/flashforge-api-docs legacy-api.md).
import type { PrinterState, PrinterTelemetry, Temperature } from "../core/telemetry.ts";
import { replyFields } from "./tcp-codec.ts";

/** `MachineStatus` in ~M119, as the printer words it. */
const STATES: Record<string, PrinterState> = {
  READY: "idle", BUILDING_FROM_SD: "printing", BUILDING_COMPLETED: "finished", PAUSED: "paused",
};
/** The status replies kept, by command code. */
const STATUS_CODES = new Set(["M119", "M27", "M105"]);
/** "T0:25.0/0.0 T1:0.0/0.0 B:24.0/0.0"; some firmware writes "T0:25 /0". */
const TEMPERATURE = /\b(T\d|B):\s*(-?[\d.]+)\s*\/\s*(-?[\d.]+)/g;
const HEATERS: Record<string, string> = { T0: "nozzle", T1: "second nozzle", B: "bed" };

export interface FlashforgeStatus {
  /** A reply from the printer to `code` ("M119"); replies other than status ones are ignored. */
  heard(code: string, text: string): void;
  /** undefined until a ~M119 reply was heard. */
  telemetry(): PrinterTelemetry | undefined;
}

const fraction = (value: string | undefined): [number, number] | undefined => {
  const m = /^(\d+)\s*\/\s*(\d+)$/.exec(value?.trim() ?? "");
  const pair: [number, number] | undefined = m ? [Number(m[1]), Number(m[2])] : undefined;
  // 400 digits are a number only as Infinity
  return pair && pair.every(Number.isFinite) ? pair : undefined;
};

function temperaturesOf(m105: string): Temperature[] {
  const out: Temperature[] = [];
  for (const [, heater, current, target] of m105.matchAll(TEMPERATURE)) {
    const name = HEATERS[heater!];
    const celsius = Number(current);
    const targetCelsius = Number(target);
    // Single-nozzle printers still report T1 as 0/0.
    if (!name || !Number.isFinite(celsius) || !Number.isFinite(targetCelsius) || (heater === "T1" && celsius === 0 && targetCelsius === 0)) continue;
    out.push({ name, celsius, targetCelsius });
  }
  return out;
}

/** The telemetry in the last ~M119, ~M27 and ~M105 replies' texts. */
export function flashforgeTelemetry(replies: { M119: string; M27?: string; M105?: string }): PrinterTelemetry {
  const status = replyFields(replies.M119);
  const job = replyFields(replies.M27 ?? "");
  const telemetry: PrinterTelemetry = {
    // Own keys only: a MachineStatus of "constructor" is no state.
    state: Object.hasOwn(STATES, status.MachineStatus ?? "") ? STATES[status.MachineStatus!]! : "unknown",
    temperatures: temperaturesOf(replies.M105 ?? ""),
    fans: [],
    trays: [],
    errors: [],
  };
  if (status.CurrentFile) telemetry.job = status.CurrentFile;
  const bytes = fraction(/SD printing byte (\d+\s*\/\s*\d+)/.exec(replies.M27 ?? "")?.[1]);
  if (bytes && bytes[1] > 0) telemetry.progress = Math.min(1, bytes[0] / bytes[1]);
  const layers = fraction(job.Layer);
  if (layers && layers[1] > 0) [telemetry.layer, telemetry.totalLayers] = layers;
  return telemetry;
}

export function createFlashforgeStatus(): FlashforgeStatus {
  const replies: Partial<Record<string, string>> = {};
  return {
    heard(code, text) {
      if (STATUS_CODES.has(code)) replies[code] = text;
    },
    telemetry: () => (replies.M119 === undefined ? undefined : flashforgeTelemetry({ M119: replies.M119, M27: replies.M27, M105: replies.M105 })),
  };
}
