// Bambu models: the code printers announce (SSDP DevModel, bind `model`), serial prefixes and camera kind.
// Source: ../shared/PROTOCOLS.md (BambuStudio resources/printers/*.json, community tables).
export type CameraKind = "chamber" | "rtsp";

export interface BambuModel {
  /** What users write in `model = "…"`. */
  name: string;
  code: string;
  aliases: string[];
  serialPrefixes: string[];
  camera: CameraKind;
  /** Port 6000 carries Bambu Studio's file tunnel instead of a camera. */
  fileTunnel: boolean;
}

export const BAMBU_MODELS: readonly BambuModel[] = [
  { name: "X1C", code: "BL-P001", aliases: ["3DPrinter-X1-Carbon", "X1 Carbon"], serialPrefixes: ["00M"], camera: "rtsp", fileTunnel: false },
  { name: "X1", code: "BL-P002", aliases: ["3DPrinter-X1"], serialPrefixes: ["00W"], camera: "rtsp", fileTunnel: false },
  { name: "X1E", code: "C13", aliases: [], serialPrefixes: ["03W"], camera: "rtsp", fileTunnel: false },
  { name: "P1P", code: "C11", aliases: [], serialPrefixes: ["01S"], camera: "chamber", fileTunnel: false },
  { name: "P1S", code: "C12", aliases: [], serialPrefixes: ["01P"], camera: "chamber", fileTunnel: false },
  { name: "A1 mini", code: "N1", aliases: ["A1MINI", "A1-mini"], serialPrefixes: ["030"], camera: "chamber", fileTunnel: false },
  { name: "A1", code: "N2S", aliases: [], serialPrefixes: ["039"], camera: "chamber", fileTunnel: false },
  { name: "A2L", code: "N9", aliases: [], serialPrefixes: ["26A"], camera: "chamber", fileTunnel: false },
  { name: "P2S", code: "N7", aliases: [], serialPrefixes: ["22E"], camera: "rtsp", fileTunnel: true },
  { name: "X2D", code: "N6", aliases: [], serialPrefixes: ["20P"], camera: "rtsp", fileTunnel: true },
  { name: "H2D", code: "O1D", aliases: [], serialPrefixes: ["094"], camera: "rtsp", fileTunnel: true },
  { name: "H2D Pro", code: "O1E", aliases: ["H2DPRO"], serialPrefixes: ["239"], camera: "rtsp", fileTunnel: true },
  { name: "H2S", code: "O1S", aliases: [], serialPrefixes: ["093"], camera: "rtsp", fileTunnel: true },
  { name: "H2C", code: "O1C2", aliases: [], serialPrefixes: ["31B"], camera: "rtsp", fileTunnel: true },
];

const squash = (s: string) => s.toUpperCase().replace(/[\s_-]/g, "");

/** By configured name ("P1S"), model code ("C12") or alias; case and spaces do not matter. */
export function findModel(nameOrCode: string | undefined): BambuModel | undefined {
  if (!nameOrCode) return undefined;
  const wanted = squash(nameOrCode);
  return BAMBU_MODELS.find((m) => [m.name, m.code, ...m.aliases].some((n) => squash(n) === wanted));
}

export function modelFromSerial(serial: string): BambuModel | undefined {
  return BAMBU_MODELS.find((m) => m.serialPrefixes.some((p) => serial.toUpperCase().startsWith(p)));
}

/** The configured model wins; then the serial prefix. */
export function modelOf(printer: { model?: string; serial: string }): BambuModel | undefined {
  return findModel(printer.model) ?? modelFromSerial(printer.serial);
}

/** What `camera = …` in printers.toml may say. */
export type CameraMode = "auto" | CameraKind | "none";

/**
 * The one camera decision: `camera = …` wins, then the model (configured, else the one the printer reported,
 * else by serial prefix); `undefined` means the model is unknown and the camera must be probed. `fileTunnel`:
 * port 6000 carries Bambu Studio's file tunnel (P2S/H2/X2D), whatever the camera.
 */
export function cameraChoice(
  printer: { camera: CameraMode; model?: string; serial: string },
  reported?: BambuModel,
): { camera: CameraKind | "none" | undefined; fileTunnel: boolean } {
  const model = findModel(printer.model) ?? reported ?? modelFromSerial(printer.serial);
  return { camera: printer.camera === "auto" ? model?.camera : printer.camera, fileTunnel: model?.fileTunnel ?? false };
}

/** Who listens on the camera ports: 6000 (chamber camera or file tunnel) and 322 (RTSPS); a camera still to be probed may be either. */
export function cameraPorts(choice: ReturnType<typeof cameraChoice>): { port6000?: "chamber" | "tunnel"; rtsp: boolean } {
  const maybe = (kind: CameraKind) => choice.camera === undefined || choice.camera === kind;
  return { port6000: choice.fileTunnel ? "tunnel" : maybe("chamber") ? "chamber" : undefined, rtsp: maybe("rtsp") };
}

// What Bambu services learn and share about the printer, beside core/'s model and firmware.
declare module "../core/service.ts" {
  interface PrinterInfo {
    /** The model code Bambu uses in SSDP and bind: "C12", "BL-P001", … */
    modelCode?: string;
    /** The camera kind, once configuration, the model or a probe has told. */
    camera?: CameraKind | "none";
  }
}
