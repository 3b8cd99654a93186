// What a printer is doing, in the same shape for every vendor: the status page, /api/printers and /metrics read
// it; each vendor's telemetry module builds it from what that printer reports (bambu/telemetry.ts).

/** The printer's state in words; "unknown" until the printer has reported. */
export type PrinterState = "idle" | "preparing" | "printing" | "paused" | "finished" | "failed" | "unknown";

export interface Temperature {
  /** "nozzle" (or "left nozzle" and "right nozzle" on a two-nozzle printer), "bed", "chamber". */
  name: string;
  celsius: number;
  targetCelsius?: number;
}

export interface Fan {
  /** "part cooling", "auxiliary", "chamber", "hotend". */
  name: string;
  percent: number;
}

/** One filament slot (an AMS tray, or the external spool). */
export interface FilamentTray {
  /** "AMS 1 slot 2", "external spool". */
  slot: string;
  material?: string;
  /** "#rrggbb". */
  colour?: string;
  /** Percent of the spool left, when the printer knows it (RFID spools). */
  remainPercent?: number;
  /** The slot the printer feeds from now. */
  active: boolean;
}

export interface PrinterError {
  /** As the vendor's tables write it, e.g. "HMS_0300_1A00_0002_0002". */
  code: string;
  /** The vendor's description, where a public table gives one. */
  text?: string;
}

export interface PrinterTelemetry {
  state: PrinterState;
  /** The job's name as the slicer sent it. */
  job?: string;
  /** 0 to 1. */
  progress?: number;
  layer?: number;
  totalLayers?: number;
  remainingSeconds?: number;
  /** ISO 8601; only while a print runs. */
  finishesAt?: string;
  temperatures: Temperature[];
  fans: Fan[];
  /** "silent", "standard", "sport", "ludicrous". */
  speedProfile?: string;
  trays: FilamentTray[];
  errors: PrinterError[];
}
