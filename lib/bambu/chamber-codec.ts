// The chamber camera's wire format (A1/P1, TLS port 6000), as pure functions of bytes: the 80-byte viewer login,
// the 16-byte frame header, JPEG sanity, and a parser that cuts a byte stream into frames.
// Sources: Doridian/OpenBambuAPI video.md; greghesp/ha-bambulab pybambu bambu_client.py (../shared/PROTOCOLS.md).
import { sameSecret } from "../core/edge.ts";

export const LOGIN_SIZE = 80;
export const FRAME_HEADER_SIZE = 16;
const LOGIN_MAGIC_1 = 0x40;
const LOGIN_MAGIC_2 = 0x3000;
const NAME_FIELD = 32;
/** Larger than any camera frame; a bigger length means we lost the frame boundaries. */
export const MAX_FRAME_BYTES = 10 * 1024 * 1024;

export interface ChamberLogin {
  username: string;
  accessCode: string;
}

function field(text: string): Buffer {
  const out = Buffer.alloc(NAME_FIELD);
  out.write(text.slice(0, NAME_FIELD), "latin1");
  return out;
}

export function encodeLogin(login: ChamberLogin): Buffer {
  const out = Buffer.alloc(LOGIN_SIZE);
  out.writeUInt32LE(LOGIN_MAGIC_1, 0);
  out.writeUInt32LE(LOGIN_MAGIC_2, 4);
  field(login.username).copy(out, 16);
  field(login.accessCode).copy(out, 48);
  return out;
}

/** The login, or why these 80 bytes are not one. */
export function decodeLogin(bytes: Buffer): ChamberLogin | { error: string } {
  if (bytes.length !== LOGIN_SIZE) return { error: `login is ${bytes.length} bytes, expected ${LOGIN_SIZE}` };
  if (bytes.readUInt32LE(0) !== LOGIN_MAGIC_1 || bytes.readUInt32LE(4) !== LOGIN_MAGIC_2) {
    return { error: "not a chamber camera login (wrong packet type)" };
  }
  const text = (start: number) => {
    const raw = bytes.subarray(start, start + NAME_FIELD);
    const end = raw.indexOf(0);
    return raw.subarray(0, end < 0 ? NAME_FIELD : end).toString("latin1");
  };
  return { username: text(16), accessCode: text(48) };
}

/** Constant-time check of a login's user and code against the codes we accept. */
export function loginMatches(login: ChamberLogin, accessCodes: readonly (string | undefined)[]): boolean {
  const userOk = sameSecret(login.username, "bblp");
  let codeOk = false;
  for (const code of accessCodes) {
    if (code === undefined) continue;
    // Every candidate is compared, so the time does not tell which one matched.
    if (sameSecret(login.accessCode, code.slice(0, NAME_FIELD))) codeOk = true;
  }
  return userOk && codeOk;
}

export function encodeFrameHeader(jpegLength: number): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_SIZE);
  out.writeUInt32LE(jpegLength, 0);
  out.writeUInt32LE(0, 4);
  out.writeUInt32LE(1, 8);
  out.writeUInt32LE(0, 12);
  return out;
}

export function frameLength(header: Buffer): number {
  return header.readUInt32LE(0);
}

/** Why a JPEG is not a plausible camera frame, or undefined when it is. */
export function jpegProblem(jpeg: Buffer): string | undefined {
  if (jpeg.length < 4) return `${jpeg.length} bytes is too short for a JPEG`;
  if (jpeg[0] !== 0xff || jpeg[1] !== 0xd8) return "does not start with a JPEG SOI marker (FF D8)";
  if (jpeg[jpeg.length - 2] !== 0xff || jpeg[jpeg.length - 1] !== 0xd9) return "does not end with a JPEG EOI marker (FF D9)";
  return undefined;
}

export interface ParsedFrame {
  /** The printer's 16 header bytes, exactly as received. */
  header: Buffer;
  jpeg: Buffer;
}

export type ParseEvent =
  | { kind: "frame"; frame: ParsedFrame }
  /** A complete frame whose body is not a JPEG: dropped, the stream is still in step. */
  | { kind: "bad-frame"; reason: string }
  /** A header that cannot be right: the frame boundaries are lost. */
  | { kind: "out-of-sync"; reason: string };

/** Cuts a chamber byte stream into frames; chunks may split anywhere. */
export function createFrameParser(onEvent: (event: ParseEvent) => void): { push(chunk: Buffer): void; readonly buffered: number } {
  let chunks: Buffer[] = [];
  let have = 0;
  let header: Buffer | undefined;
  let wanted = FRAME_HEADER_SIZE;
  let broken = false;

  const take = (length: number): Buffer => {
    const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, have);
    const out = all.subarray(0, length);
    const rest = all.subarray(length);
    chunks = rest.length ? [rest] : [];
    have = rest.length;
    return out;
  };

  return {
    push(chunk) {
      if (broken) return;
      chunks.push(chunk);
      have += chunk.length;
      while (have >= wanted) {
        if (!header) {
          header = Buffer.from(take(FRAME_HEADER_SIZE));
          const length = frameLength(header);
          if (length === 0 || length > MAX_FRAME_BYTES) {
            broken = true;
            onEvent({ kind: "out-of-sync", reason: `frame header announces ${length} bytes (allowed 1..${MAX_FRAME_BYTES})` });
            return;
          }
          wanted = length;
        } else {
          const jpeg = take(wanted);
          const frameHeader = header;
          header = undefined;
          wanted = FRAME_HEADER_SIZE;
          const problem = jpegProblem(jpeg);
          if (problem) onEvent({ kind: "bad-frame", reason: `frame of ${jpeg.length} bytes ${problem}` });
          else onEvent({ kind: "frame", frame: { header: frameHeader, jpeg } });
        }
      }
    },
    get buffered() {
      return have;
    },
  };
}
