// The camera entity's pictures. Home Assistant's MQTT camera shows the image last published on its topic (it takes
// no URL), so with `camera_interval` the exporter publishes one snapshot (web/snapshot.ts: the cached frame when it
// is fresh, else the camera is run for a moment) every so many seconds. Each snapshot may hold the printer's camera
// briefly, which is why it is off by default.
import type { PrinterHub } from "../core/service.ts";
import { SNAPSHOT_WAIT_MS, takeSnapshot } from "../web/snapshot.ts";

export interface CameraStills {
  stop(): void;
}

export function startCameraStills(hub: PrinterHub, intervalMs: number, publish: (jpeg: Buffer) => void): CameraStills {
  let stopped = false;
  let busy = false;
  const timer = setInterval(async () => {
    const feed = hub.camera;
    // One snapshot at a time: a camera slower than the interval is asked again only once it answered.
    if (!feed || busy || stopped) return;
    busy = true;
    try {
      const { frame } = await takeSnapshot(feed, Math.min(intervalMs, SNAPSHOT_WAIT_MS));
      if (frame && !stopped) publish(frame.jpeg);
    } finally {
      busy = false;
    }
  }, intervalMs);
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
