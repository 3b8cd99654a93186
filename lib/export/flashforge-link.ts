// One FlashForge printer as the exporter reads it: a client of pandaproxy's own TCP console (8899) that polls the
// printer's status as FlashPrint does (~M601 S1 once, then ~M119, ~M105 and ~M27 every POLL_MS). The console
// answers it like any client and keeps the PrinterHub's telemetry (flashforge/telemetry.ts) current, which the
// exporter publishes; the printer still sees the proxy's one connection. Replies are read and dropped here.
import { connect, type Socket } from "node:net";
import type { PrinterConfig } from "../config.ts";
import { endAndDestroy, idleDeadline } from "../core/edge.ts";
import type { Logger } from "../log.ts";

/** FlashPrint and ff-5mp-api poll about every 5 s; the console closes a client silent for much longer. */
export const POLL_MS = 5_000;
export const RECONNECT_MS = 5_000;
/** The console answers every poll: a link that hears nothing for this long is stuck, and is made again. */
export const SILENT_LINK_MS = 4 * POLL_MS;
const STATUS_COMMANDS = "~M119\r\n~M105\r\n~M27\r\n";

export interface FlashforgeLink {
  stop(): Promise<void>;
}

const localHost = (bind: string) => (bind === "0.0.0.0" ? "127.0.0.1" : bind);

export function startFlashforgeLink(printer: PrinterConfig, log: Logger): FlashforgeLink {
  let socket: Socket | undefined;
  let stopped = false;
  let poll: ReturnType<typeof setInterval> | undefined;
  let retry: ReturnType<typeof setTimeout> | undefined;
  const open = () => {
    const s = connect({ host: localHost(printer.bind), port: printer.ports.tcp });
    socket = s;
    const silence = idleDeadline(SILENT_LINK_MS, () => {
      log.warn(`local console link to ${localHost(printer.bind)}:${printer.ports.tcp}: no answer for ${SILENT_LINK_MS / 1000} s; reconnecting`);
      s.destroy();
    });
    s.on("connect", () => {
      s.write(`~M601 S1\r\n${STATUS_COMMANDS}`);
      poll = setInterval(() => s.write(STATUS_COMMANDS), POLL_MS);
    });
    s.on("data", () => silence.touch());
    s.on("error", (error) => log.warn(`local console link to ${localHost(printer.bind)}:${printer.ports.tcp}: ${error.message}; retrying`));
    s.on("close", () => {
      silence.clear();
      clearInterval(poll);
      if (!stopped) retry = setTimeout(open, RECONNECT_MS);
    });
  };
  open();
  return {
    async stop() {
      stopped = true;
      clearTimeout(retry);
      clearInterval(poll);
      if (socket) endAndDestroy(socket, "~M602\r\n");
    },
  };
}
