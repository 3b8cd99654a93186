// The simulated printer's own HMS error: AMS 1 slot 1 (the slot it prints from) runs out of filament a while into
// each print, as a real spool does. A real printer then pauses, lists the HMS entry in `print.hms` and sets
// `print_error`; once the user has loaded filament and resumed, both are empty again. Here the "user" resumes
// after `forMs`, or sooner with a `resume` command. Codes and their texts: docs/protocol-notes.md § HMS.

/** HMS_0700_2000_0002_0001, "AMS A Slot 1 filament has run out" (AMS 0, slot 0, severity 2). */
export const RUNOUT_HMS = { attr: 0x07002000, code: 0x00020001 } as const;
/** print_error 0700_8011, "AMS filament ran out" (the pause it causes). */
export const RUNOUT_PRINT_ERROR = 0x07008011;
/** How long the printer stays paused when `forMs` is not given. */
export const SIM_RUNOUT_FOR_MS = 30_000;

export interface FilamentRunout {
  /** A print began: its clock starts again and it may run out once. */
  printStarted(): void;
  /** Each tick, with the print's state: "raise" when the filament runs out now, "clear" when it is loaded again. */
  step(gcodeState: string): "raise" | "clear" | undefined;
  /** Resumed or stopped by a command: the error goes; whether there was one. */
  clear(): boolean;
  /** `hms` and `print_error` as reports carry them now. */
  fields(): { hms: { attr: number; code: number }[]; print_error: number };
}

/** `afterMs` undefined: the filament never runs out. */
export function createFilamentRunout(options: { afterMs?: number; forMs?: number; now?: () => number }): FilamentRunout {
  const now = options.now ?? Date.now;
  const forMs = options.forMs ?? SIM_RUNOUT_FOR_MS;
  let startedAt = now();
  let ranOutAt: number | undefined;
  let ranOutThisPrint = false;
  return {
    printStarted() {
      startedAt = now();
      ranOutAt = undefined;
      ranOutThisPrint = false;
    },
    step(gcodeState) {
      if (ranOutAt !== undefined) {
        if (now() - ranOutAt < forMs) return undefined;
        ranOutAt = undefined;
        return "clear";
      }
      if (options.afterMs === undefined || ranOutThisPrint || gcodeState !== "RUNNING" || now() - startedAt < options.afterMs) return undefined;
      ranOutAt = now();
      ranOutThisPrint = true;
      return "raise";
    },
    clear() {
      const was = ranOutAt !== undefined;
      ranOutAt = undefined;
      return was;
    },
    fields: () => (ranOutAt === undefined ? { hms: [], print_error: 0 } : { hms: [{ ...RUNOUT_HMS }], print_error: RUNOUT_PRINT_ERROR }),
  };
}
