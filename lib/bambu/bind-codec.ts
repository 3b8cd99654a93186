// The slicer's bind/detect frames on TCP 3000/3002: `A5 A5`, u16 LE total length (header + JSON + trailer),
// JSON, `A7 A7`. Pure functions of bytes; bambu/bind.ts and sim/bind.ts do the networking.
// Source: ../shared/PROTOCOLS.md (Bambuddy bind_server.py, from a firmware capture; maziggy/bambuddy#445).

export const BIND_FRAME_START = Buffer.from([0xa5, 0xa5]);
export const BIND_FRAME_END = Buffer.from([0xa7, 0xa7]);
/** Start marker + u16 length. */
export const BIND_HEADER_BYTES = 4;
export const BIND_TRAILER_BYTES = 2;
export const BIND_MIN_FRAME_BYTES = BIND_HEADER_BYTES + 2 + BIND_TRAILER_BYTES; // "{}" at least
/** A detect request is ~60 bytes and a reply ~250; anything much larger is not a slicer. */
export const BIND_MAX_FRAME_BYTES = 4096;

export type BindDecode =
  | { kind: "frame"; message: unknown; bytes: number }
  | { kind: "incomplete" }
  | { kind: "invalid"; reason: string };

export function encodeBindFrame(message: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(message), "utf8");
  const total = BIND_HEADER_BYTES + json.length + BIND_TRAILER_BYTES;
  if (total > 0xffff) throw new Error(`bind frame of ${total} bytes does not fit the u16 length`);
  const header = Buffer.alloc(BIND_HEADER_BYTES);
  BIND_FRAME_START.copy(header, 0);
  header.writeUInt16LE(total, 2);
  return Buffer.concat([header, json, BIND_FRAME_END]);
}

/** Decodes the first frame in `buffer`, saying as early as possible when the bytes cannot be a frame. */
export function decodeBindFrame(buffer: Buffer, maxBytes = BIND_MAX_FRAME_BYTES): BindDecode {
  const startBytes = Math.min(buffer.length, 2);
  if (!buffer.subarray(0, startBytes).equals(BIND_FRAME_START.subarray(0, startBytes))) {
    return { kind: "invalid", reason: `does not start with A5 A5 (got ${buffer.subarray(0, startBytes).toString("hex")})` };
  }
  if (buffer.length < BIND_HEADER_BYTES) return { kind: "incomplete" };
  const total = buffer.readUInt16LE(2);
  if (total < BIND_MIN_FRAME_BYTES) return { kind: "invalid", reason: `length ${total} is shorter than any frame` };
  if (total > maxBytes) return { kind: "invalid", reason: `length ${total} is over the ${maxBytes}-byte limit` };
  if (buffer.length < total) return { kind: "incomplete" };
  if (!buffer.subarray(total - BIND_TRAILER_BYTES, total).equals(BIND_FRAME_END)) {
    return { kind: "invalid", reason: "does not end with A7 A7" };
  }
  const json = buffer.subarray(BIND_HEADER_BYTES, total - BIND_TRAILER_BYTES).toString("utf8");
  try {
    return { kind: "frame", message: JSON.parse(json), bytes: total };
  } catch {
    return { kind: "invalid", reason: "payload is not JSON" };
  }
}

/** What a printer says about itself in a detect reply. */
export interface DetectIdentity {
  serial: string;
  /** Model code: "C12", "BL-P001", … */
  modelCode: string;
  name: string;
  firmware: string;
}

export interface DetectReply {
  login: {
    bind: "free";
    command: "detect";
    connect: "lan";
    dev_cap: 1;
    id: string;
    model: string;
    name: string;
    sequence_id: number;
    version: string;
  };
}

/** `{"login":{"command":"detect",…}}`: the only request a printer answers on these ports. */
export function isDetectRequest(message: unknown): boolean {
  if (typeof message !== "object" || message === null) return false;
  const login = (message as { login?: unknown }).login;
  return typeof login === "object" && login !== null && (login as { command?: unknown }).command === "detect";
}

/** Keys in the order the firmware sends them; `sequence_id` is the printer's own integer, never an echo. */
export function detectReply(identity: DetectIdentity, sequenceId: number): DetectReply {
  return {
    login: {
      bind: "free",
      command: "detect",
      connect: "lan",
      dev_cap: 1,
      id: identity.serial,
      model: identity.modelCode,
      name: identity.name,
      sequence_id: sequenceId,
      version: identity.firmware,
    },
  };
}

/** A slicer's request, as Bambu Studio sends it. */
export function detectRequest(sequenceId = "20000"): { login: { command: "detect"; sequence_id: string } } {
  return { login: { command: "detect", sequence_id: sequenceId } };
}
