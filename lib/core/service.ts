// What every service and every printer looks like to the supervisor, the web page and each other.
// A service file exports a factory `(ctx: ServiceContext) => Service`; bambu/printer.ts and
// flashforge/printer.ts pick the factories a printer entry asks for (lib/printer-services.ts).
import type { Logger } from "../log.ts";
import type { Metrics } from "./metrics.ts";
import type { Stream } from "./stream.ts";
import type { PrinterTelemetry } from "./telemetry.ts";
import type { UpstreamProblem } from "./upstream.ts";

export interface ServiceStatus {
  /** "listening", "stopped", "error: …" */
  state: string;
  /** Clients connected to this service now. */
  clients: number;
  /** Upstream (printer side) state, when the service has one. */
  upstream?: string;
  /** Anything else worth showing: frame rate, queue length, … */
  details?: Record<string, string | number | boolean | undefined>;
}

export interface Service {
  /** "mqtt", "chamber", "ftp", … */
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): ServiceStatus;
}

/** A camera's JPEG larger than this is no picture: the stream lost its frame boundaries (drop what is buffered, or reconnect). */
export const MAX_CAMERA_JPEG_BYTES = 8 * 1024 * 1024;

/** One JPEG picture from the printer's camera, with when it arrived. */
export interface CameraFrame {
  jpeg: Buffer;
  /** The bytes the printer sent right before this JPEG, when its camera protocol frames pictures; kept as they came. */
  header?: Buffer;
  receivedAt: number;
}

/** The camera as the web page sees it, however the printer delivers its pictures. */
export interface CameraFeed {
  /** Where the pictures come from, in the word the printer's service uses for it; the status page and logs show it. */
  source: string;
  /** The producer is the printer's camera; each viewer is a latest-value consumer. */
  frames: Stream<CameraFrame>;
  /** Ask the upstream to run (a web viewer arrived); call the returned function when done. */
  claim(): () => void;
  /** "connected", "connecting", "backoff", "idle", … */
  state(): string;
  /** Frames per second over the last few seconds. */
  frameRate(): number;
  /** Why no frames come now, when the upstream knows (see upstreamProblem in core/upstream.ts). */
  problem?(): UpstreamProblem | undefined;
  /**
   * Cameras that send video rather than pictures (RTSP): one JPEG decoded from the latest key frame, without a
   * decoder running all the time; undefined when none came within `waitMs` or `giveUp` said to stop waiting.
   */
  keyFrameJpeg?(waitMs: number, giveUp?: () => boolean): Promise<CameraFrame | undefined>;
  /** Date.now() of the camera's newest frame when `frames` does not carry every one (RTSP video). */
  lastFrameAt?(): number | undefined;
}

/**
 * What a printer's services learn and share: model and firmware (from MQTT, SSDP, the printer's own info).
 * A vendor adds its own facts by declaration merging (bambu/models.ts: the model code, the camera kind).
 */
export interface PrinterInfo {
  model?: string;
  productName?: string;
  firmware?: string;
}

export interface PrinterHub {
  readonly info: PrinterInfo;
  update(info: Partial<PrinterInfo>): void;
  onInfo(listener: (info: PrinterInfo) => void): () => void;
  camera?: CameraFeed;
  setCamera(feed: CameraFeed | undefined): void;
  /** What the printer is doing now, from the service that hears its reports; undefined until it has. */
  telemetry(): PrinterTelemetry | undefined;
  setTelemetry(read: (() => PrinterTelemetry | undefined) | undefined): void;
}

export function createPrinterHub(initial: PrinterInfo = {}): PrinterHub {
  const listeners = new Set<(info: PrinterInfo) => void>();
  let readTelemetry: (() => PrinterTelemetry | undefined) | undefined;
  const hub: PrinterHub = {
    info: { ...initial },
    update(info) {
      let changed = false;
      for (const [k, v] of Object.entries(info)) {
        if (v !== undefined && (hub.info as Record<string, unknown>)[k] !== v) {
          (hub.info as Record<string, unknown>)[k] = v;
          changed = true;
        }
      }
      if (changed) for (const l of listeners) l(hub.info);
    },
    onInfo(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    camera: undefined,
    setCamera(feed) {
      hub.camera = feed;
    },
    telemetry: () => readTelemetry?.(),
    setTelemetry(read) {
      readTelemetry = read;
    },
  };
  return hub;
}

/**
 * What a service factory is given. core/ knows the protocol-free parts; lib/printer-services.ts adds the
 * printer entry, the proxy settings and the TLS material (declaration merging), so core/ imports no config.
 */
export interface ServiceContext {
  /** The printer's logger; add `{ service }` via serviceLogger(printer.name, "mqtt"). */
  log: Logger;
  metrics: Metrics;
  hub: PrinterHub;
}
