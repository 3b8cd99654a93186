// What one simulated Adventurer 5M knows, shared by its TCP, HTTP and camera services: identity, files on the
// printer (with a thumbnail each), temperatures and the job, so both APIs tell the same story.
import { createHash } from "node:crypto";
import { deflateSync } from "node:zlib";

export interface FlashforgeSimPorts {
  tcp: number;
  http: number;
  discovery: number;
  camera: number;
}

export interface FlashforgeSimIdentity {
  name: string;
  serial: string;
  checkCode: string;
  /** The address the simulated printer listens on, e.g. 127.0.7.2. */
  host: string;
  ports: FlashforgeSimPorts;
  machineType: string;
  firmware: string;
  mac: string;
}

export interface SimFile {
  /** "/data/Benchy.gcode" */
  path: string;
  size: number;
  sha256: string;
  /** Which way it arrived: "preloaded", "tcp" (~M28) or "http" (/uploadGcode). */
  via: "preloaded" | "tcp" | "http";
  printNow?: boolean;
}

export interface FlashforgeSimState {
  identity: FlashforgeSimIdentity;
  files: Map<string, SimFile>;
  light: boolean;
  status: "ready" | "printing" | "paused";
  printFile: string;
  /** A PNG preview for a file on the printer (deterministic per name, ~50 KB so it spans many TCP segments). */
  thumbnail(path: string): Buffer | undefined;
  addFile(path: string, bytes: Buffer, via: SimFile["via"], printNow?: boolean): SimFile;
  temperatures(): { nozzle: number; nozzleTarget: number; bed: number; bedTarget: number };
}

export const SIM_PRELOADED_FILES = ["/data/Benchy.gcode", "/data/CalibrationCube.gcode", "/data/Vase.3mf"];
const THUMBNAIL_SIZE = 128;

export function createSimState(identity: FlashforgeSimIdentity): FlashforgeSimState {
  const files = new Map<string, SimFile>();
  const state: FlashforgeSimState = {
    identity,
    files,
    light: true,
    status: "ready",
    printFile: "",
    thumbnail(path) {
      const file = files.get(normalizePath(path));
      return file ? pngOf(file.path) : undefined;
    },
    addFile(path, bytes, via, printNow) {
      const file: SimFile = {
        path: normalizePath(path), size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex"), via, printNow,
      };
      files.set(file.path, file);
      return file;
    },
    temperatures() {
      const wobble = Math.sin(Date.now() / 3000) * 0.4;
      return { nozzle: Math.round((24.6 + wobble) * 10) / 10, nozzleTarget: 0, bed: Math.round((23.1 - wobble) * 10) / 10, bedTarget: 0 };
    },
  };
  for (const path of SIM_PRELOADED_FILES) state.addFile(path, Buffer.from(`; simulated ${path}\nG28\n`), "preloaded");
  return state;
}

/** "0:/user/a.gx", "a.gx" and "/data/a.gx" name the same file. */
export function normalizePath(path: string): string {
  const base = path.replace(/^0:\/user\//, "").replace(/^\/data\//, "");
  return `/data/${base}`;
}

/** A real (uncompressed-deflate) PNG whose colour depends on the name, so two files' thumbnails differ. */
export function pngOf(name: string): Buffer {
  const hash = createHash("sha256").update(name).digest();
  const size = THUMBNAIL_SIZE;
  const raw = Buffer.alloc((size * 3 + 1) * size);
  for (let y = 0; y < size; y++) {
    const row = y * (size * 3 + 1);
    for (let x = 0; x < size; x++) {
      const i = row + 1 + x * 3;
      raw[i] = (hash[0]! + x) & 0xff;
      raw[i + 1] = (hash[1]! + y) & 0xff;
      raw[i + 2] = (hash[2]! + x * y) & 0xff;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // truecolour
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr), pngChunk("IDAT", deflateSync(raw, { level: 0 })), pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])));
  return Buffer.concat([head, data, crc]);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Buffer): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
