// Whether the printer's RTSPS camera is on. X2D, H2 and P2S ship with it off: their reports say
// `ipcam.rtsp_url: "disable"` until "LAN Mode Liveview" is switched on (OpenBambuAPI PR #68; ha-bambulab PR #1971).
// The MQTT service learns it from reports; the RTSP service then leaves FFmpeg down and says why.
import type { PrinterHub } from "../core/service.ts";
import { isObject, type JsonObject } from "./mqtt-state.ts";

export const LIVEVIEW_OFF = "camera off on the printer: turn on LAN Mode Liveview";
/** What the firmware writes in `ipcam.rtsp_url` while the camera is off. */
const RTSP_URL_OFF = "disable";

declare module "../core/service.ts" {
  interface PrinterInfo {
    /** The printer's RTSPS camera, as its reports last said; undefined until one did. */
    liveview?: "on" | "off";
  }
}

/** The camera's state a report tells, or undefined when it says nothing of it (most deltas). */
export function liveviewOf(report: JsonObject): "on" | "off" | undefined {
  const print = report.print;
  if (!isObject(print) || !isObject(print.ipcam) || typeof print.ipcam.rtsp_url !== "string") return undefined;
  return print.ipcam.rtsp_url === RTSP_URL_OFF ? "off" : "on";
}

export function learnLiveview(hub: PrinterHub, report: JsonObject): void {
  const liveview = liveviewOf(report);
  if (liveview) hub.update({ liveview });
}
