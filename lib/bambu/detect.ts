// Which camera a Bambu printer has: the chamber camera on TLS 6000 (A1/P1) or RTSPS on 322 (X1/H2/P2).
// Known from `camera = …`, the model (configured or reported) or the serial prefix; otherwise the printer is
// probed. bambu/camera.ts uses detectCamera to pick its service and retries with backoff while it says "none".
import type { TLSSocket } from "node:tls";
import { connectToPrinter } from "../core/printer-socket.ts";
import type { PrinterConfig } from "../config.ts";
import type { PrinterHub } from "../core/service.ts";
import { printerClientTlsOptions } from "../tls.ts";
import { cameraChoice, findModel, type BambuModel, type CameraKind } from "./models.ts";

/** Per probe: TCP connect, TLS handshake and the first answer. */
export const CAMERA_PROBE_TIMEOUT_MS = 5_000;
export const RTSP_PROBE_PATH = "/streaming/live/1";
const CHAMBER_LOGIN_BYTES = 80;
const CHAMBER_FRAME_HEADER_BYTES = 16;

export type CameraDetection = CameraKind | "none";

export interface DetectCameraOptions {
  timeoutMs?: number;
  /** false: answer from configuration and model only, never touch the printer. */
  probe?: boolean;
}

type PrinterFacts = Pick<PrinterConfig, "name" | "camera" | "model" | "serial" | "host" | "accessCode" | "printerPorts" | "printerCa" | "knownPrintersFile">;

/** The model from what the printer reported (hub), e.g. get_version's product name or SSDP's model code. */
function reportedModel(hub: PrinterHub | undefined): BambuModel | undefined {
  const info = hub?.info;
  if (!info) return undefined;
  const product = info.productName?.replace(/^Bambu\s*Lab\s*/i, "");
  return findModel(product) ?? findModel(info.modelCode) ?? findModel(info.model);
}

/** The camera kind without touching the network: `camera = …`, configured model, reported model, serial prefix. */
export function knownCamera(printer: PrinterFacts, hub?: PrinterHub): CameraDetection | undefined {
  return cameraChoice(printer, reportedModel(hub)).camera;
}

/**
 * The printer's camera kind. Without a known model, probes RTSPS (an `OPTIONS` answered with `RTSP/1.0`) and
 * the chamber port (TLS, then the 80-byte login) side by side. "none" means nothing answered (offline, or
 * the camera slots are taken): ask again later.
 */
export async function detectCamera(printer: PrinterFacts, hub?: PrinterHub, options: DetectCameraOptions = {}): Promise<CameraDetection> {
  const known = knownCamera(printer, hub);
  if (known || options.probe === false) return known ?? "none";
  const timeoutMs = options.timeoutMs ?? CAMERA_PROBE_TIMEOUT_MS;
  const [rtsp, chamber] = await Promise.all([probeRtsp(printer, timeoutMs), probeChamber(printer, timeoutMs)]);
  if (rtsp) return "rtsp";
  if (chamber === "chamber") return "chamber";
  // Port 6000 carrying the file tunnel means a P2S/H2/X2D, whose camera is RTSPS (perhaps with liveview off).
  if (chamber === "tunnel") return "rtsp";
  return "none";
}

/** A TLS connection to one of the printer's ports, or undefined if it does not complete in time. */
function connectPrinter(printer: PrinterFacts, port: number, timeoutMs: number): Promise<TLSSocket | undefined> {
  return new Promise((resolve) => {
    const socket = connectToPrinter({ ...printerClientTlsOptions(printer), port });
    const timer = setTimeout(() => done(undefined), timeoutMs);
    const done = (result: TLSSocket | undefined) => {
      clearTimeout(timer);
      socket.off("error", onError);
      // Bun 1.4 does not close the TCP connection when a TLS socket is destroyed mid-handshake; a reset does.
      if (!result) socket.resetAndDestroy();
      else socket.on("error", () => undefined);
      resolve(result);
    };
    const onError = () => done(undefined);
    socket.once("secureConnect", () => done(socket));
    socket.once("error", onError);
  });
}

/** Collects what the printer sends until `enough` says stop, it closes, or the time is up. */
function readAnswer(socket: TLSSocket, timeoutMs: number, enough: (received: Buffer) => boolean): Promise<{ received: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.destroy();
      resolve({ received, closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (enough(received)) finish(false);
    };
    socket.on("data", onData);
    socket.once("close", () => finish(true));
  });
}

/** True when the printer's RTSPS port answers an OPTIONS request as an RTSP server. */
export async function probeRtsp(printer: PrinterFacts, timeoutMs = CAMERA_PROBE_TIMEOUT_MS): Promise<boolean> {
  const port = printer.printerPorts.rtsp;
  const socket = await connectPrinter(printer, port, timeoutMs);
  if (!socket) return false;
  socket.write(`OPTIONS rtsps://${printer.host}:${port}${RTSP_PROBE_PATH} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: pandaproxy\r\n\r\n`);
  const { received } = await readAnswer(socket, timeoutMs, (r) => r.length >= 8);
  return received.subarray(0, 8).toString("latin1") === "RTSP/1.0";
}

/** The chamber camera's login (../shared/PROTOCOLS.md): u32 0x40, u32 0x3000, 8 zero bytes, user, code. */
function chamberLogin(accessCode: string): Buffer {
  const login = Buffer.alloc(CHAMBER_LOGIN_BYTES);
  login.writeUInt32LE(0x40, 0);
  login.writeUInt32LE(0x3000, 4);
  login.write("bblp", 16, 32, "ascii");
  login.write(accessCode, 48, 32, "ascii");
  return login;
}

function isChamberFrameHeader(bytes: Buffer): boolean {
  return bytes.length >= CHAMBER_FRAME_HEADER_BYTES && bytes.readUInt32LE(0) > 0 && bytes.readUInt32LE(4) === 0 && bytes.readUInt32LE(8) === 1 && bytes.readUInt32LE(12) === 0;
}

/**
 * What the printer's port 6000 is: "chamber" (frames after the login, or TLS accepted and then silence or a
 * close, which is how the camera answers a wrong code or an idle moment), "tunnel" (the file tunnel answers
 * the camera login with a short ack) or "unreachable" (no TLS connection: offline, or every viewer slot taken).
 */
export async function probeChamber(printer: PrinterFacts, timeoutMs = CAMERA_PROBE_TIMEOUT_MS): Promise<"chamber" | "tunnel" | "unreachable"> {
  const socket = await connectPrinter(printer, printer.printerPorts.chamber, timeoutMs);
  if (!socket) return "unreachable";
  socket.write(chamberLogin(printer.accessCode));
  const { received } = await readAnswer(socket, timeoutMs, (r) => r.length >= CHAMBER_FRAME_HEADER_BYTES);
  if (received.length === 0 || isChamberFrameHeader(received)) return "chamber";
  return "tunnel";
}
