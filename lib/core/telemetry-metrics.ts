// Every printer's telemetry (telemetry.ts) as Prometheus gauges, in base units (celsius, seconds, ratios). The
// label sets follow the printer (its nozzles, its trays), so the families are read whole at each scrape.
import type { Metrics, Sample } from "./metrics.ts";
import type { PrinterState, PrinterTelemetry, Temperature } from "./telemetry.ts";

export const PRINTER_STATES: readonly PrinterState[] = ["idle", "preparing", "printing", "paused", "finished", "failed", "unknown"];
const PREFIX = "pandaproxy_printer_";

export interface TelemetrySource {
  printer: string;
  telemetry: PrinterTelemetry | undefined;
}

/** The nozzle label: "main" on a one-nozzle printer, "left"/"right" on a two-nozzle one. */
const nozzleOf = (t: Temperature) => (t.name === "nozzle" ? "main" : t.name.replace(/\s*nozzle$/, ""));
const isNozzle = (t: Temperature) => /nozzle$/.test(t.name);

type Reader = (printer: string, t: PrinterTelemetry) => Sample[];
const one = (printer: string, value: number | undefined): Sample[] => (value === undefined ? [] : [{ labels: { printer }, value }]);
const temperatureOf = (t: PrinterTelemetry, name: string) => t.temperatures.find((x) => x.name === name);

const FAMILIES: [name: string, help: string, read: Reader][] = [
  ["state", "1 for the state the printer is in (label state), 0 for the others", (printer, t) =>
    PRINTER_STATES.map((state) => ({ labels: { printer, state }, value: t.state === state ? 1 : 0 }))],
  ["nozzle_temperature_celsius", "Nozzle temperature", (printer, t) =>
    t.temperatures.filter(isNozzle).map((x) => ({ labels: { printer, nozzle: nozzleOf(x) }, value: x.celsius }))],
  ["nozzle_target_temperature_celsius", "Nozzle target temperature", (printer, t) =>
    t.temperatures.filter((x) => isNozzle(x) && x.targetCelsius !== undefined).map((x) => ({ labels: { printer, nozzle: nozzleOf(x) }, value: x.targetCelsius! }))],
  ["bed_temperature_celsius", "Bed temperature", (printer, t) => one(printer, temperatureOf(t, "bed")?.celsius)],
  ["bed_target_temperature_celsius", "Bed target temperature", (printer, t) => one(printer, temperatureOf(t, "bed")?.targetCelsius)],
  ["chamber_temperature_celsius", "Chamber temperature", (printer, t) => one(printer, temperatureOf(t, "chamber")?.celsius)],
  ["progress_ratio", "Progress of the current or last print, 0 to 1", (printer, t) => one(printer, t.progress)],
  ["remaining_seconds", "Time the printer expects the print to take still", (printer, t) => one(printer, t.remainingSeconds)],
  ["layer", "Layer being printed", (printer, t) => one(printer, t.layer)],
  ["layer_count", "Layers of the current or last print", (printer, t) => one(printer, t.totalLayers)],
  ["fan_speed_ratio", "Fan speed, 0 to 1", (printer, t) => t.fans.map((f) => ({ labels: { printer, fan: f.name }, value: f.percent / 100 }))],
  ["filament_remain_ratio", "Filament left on the spool of an AMS slot (RFID spools), 0 to 1", (printer, t) =>
    t.trays.filter((x) => x.remainPercent !== undefined).map((x) => ({ labels: { printer, slot: x.slot, material: x.material ?? "" }, value: x.remainPercent! / 100 }))],
  ["errors", "Active HMS and print errors", (printer, t) => one(printer, t.errors.length)],
];

/** Registers the families; returns their removal. */
export function registerTelemetryGauges(metrics: Metrics, sources: () => TelemetrySource[]): () => void {
  // One scrape reads every family in the same tick: build the printers' telemetry once for all of them.
  let read: TelemetrySource[] | undefined;
  const current = () => {
    if (!read) {
      read = sources();
      queueMicrotask(() => (read = undefined));
    }
    return read;
  };
  const removals = FAMILIES.map(([name, help, family]) =>
    metrics.gauges(PREFIX + name, help, () => current().flatMap((s) => (s.telemetry ? family(s.printer, s.telemetry) : []))),
  );
  return () => removals.forEach((remove) => remove());
}
