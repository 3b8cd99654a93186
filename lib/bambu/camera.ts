// The "camera" service of a Bambu printer entry: the chamber camera (A1/P1, TLS 6000) or the RTSPS camera
// (X1/H2/P2, 322), chosen by `camera = …`, the model, the serial prefix or, failing those, by probing the
// printer. On P2S/H2/X2D port 6000 carries Bambu Studio's file tunnel instead, relayed opaquely.
import type { Service, ServiceContext, ServiceStatus } from "../core/service.ts";
import { createChamberService } from "./chamber.ts";
import { detectCamera } from "./detect.ts";
import { cameraChoice, cameraPorts, type CameraKind } from "./models.ts";
import { createRtspService } from "./rtsp.ts";
import { createTunnelService } from "./tunnel.ts";

export const DETECT_RETRY_MIN_MS = 5_000;
export const DETECT_RETRY_MAX_MS = 300_000;

function serviceFor(kind: CameraKind, ctx: ServiceContext): Service {
  return kind === "chamber" ? createChamberService(ctx) : createRtspService(ctx);
}

export function createCameraServices(ctx: ServiceContext): Service[] {
  const choice = cameraChoice(ctx.printer);
  if (choice.camera === undefined) return [createDetectingCamera(ctx)];
  ctx.hub.update({ camera: choice.camera });
  // The listeners printers.toml reserves for this entry (bambu/config.ts), so the two never disagree.
  const ports = cameraPorts(choice);
  const services: Service[] = [];
  if (ports.port6000 === "chamber") services.push(createChamberService(ctx));
  if (ports.rtsp) services.push(createRtspService(ctx));
  if (ports.port6000 === "tunnel") services.push(createTunnelService(ctx));
  return services;
}

/** Unknown model: probe 6000 and 322 until one answers (with backoff), then run that camera. */
function createDetectingCamera(ctx: ServiceContext): Service {
  const log = ctx.log;
  let inner: Service | undefined;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let attempts = 0;
  let lastProblem = "";

  const attempt = async () => {
    timer = undefined;
    if (stopped) return;
    attempts++;
    let kind: "chamber" | "rtsp" | "none";
    try {
      kind = await detectCamera(ctx.printer, ctx.hub);
    } catch (error) {
      kind = "none";
      lastProblem = (error as Error).message;
    }
    if (stopped) return;
    if (kind === "none") {
      const delay = Math.min(DETECT_RETRY_MAX_MS, DETECT_RETRY_MIN_MS * 2 ** Math.min(attempts - 1, 6));
      log.warn(`camera: neither the chamber camera (${ctx.printer.printerPorts.chamber}) nor RTSPS (${ctx.printer.printerPorts.rtsp}) answered${lastProblem ? ` (${lastProblem})` : ""}; probing again in ${Math.round(delay / 1000)} s (set camera = "chamber" or "rtsp" to skip detection)`);
      timer = setTimeout(() => void attempt(), delay);
      return;
    }
    log.info(`camera: detected the ${kind === "chamber" ? "chamber camera (port 6000)" : "RTSPS camera (port 322)"}`);
    ctx.hub.update({ camera: kind });
    inner = serviceFor(kind, ctx);
    try {
      await inner.start();
    } catch (error) {
      log.error(`camera: ${(error as Error).message}`);
    }
  };

  return {
    name: "camera",
    async start() {
      stopped = false;
      void attempt();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await inner?.stop();
    },
    status(): ServiceStatus {
      if (inner) return inner.status();
      return { state: attempts === 0 ? "detecting" : "detecting (no camera answered yet)", clients: 0 };
    },
  };
}
