// The FlashForge TCP 8899 wire format as pure functions of bytes: client command lines, and where one printer reply
// ends. A reply is text ending in an "ok" line; `~M661` (file list) and `~M662` (thumbnail) append binary data
// after the "ok" (Parallel-7/flashforge-api-docs legacy-api.md), framed as:
//   M661: 44 aa aa 44, u32 BE count, then count x (3a 3a a3 a3, u32 BE length, path bytes)
//   M662: 2a 2a a2 a2, u32 BE length, image bytes (PNG on the Adventurer 5M)
// The reader keeps the reply's bytes exactly as they arrived, so a client gets the printer's reply intact.

export const MAX_COMMAND_LINE_BYTES = 1_024;
/** A reply's text part; a printer's longest (M115, M119) is a few hundred bytes. */
export const MAX_REPLY_TEXT_BYTES = 64 * 1024;
/** A thumbnail or a file list; both are far smaller on real printers. */
export const MAX_BINARY_REPLY_BYTES = 32 * 1024 * 1024;

/** The reply reader's buffer: its first size, and above what size it is given back once mostly empty. */
const MIN_STORE_BYTES = 4 * 1024;
const SHRINK_ABOVE_BYTES = 1024 * 1024;

export const FILE_LIST_MAGIC = Buffer.from([0x44, 0xaa, 0xaa, 0x44]);
export const FILE_ENTRY_MAGIC = Buffer.from([0x3a, 0x3a, 0xa3, 0xa3]);
export const THUMBNAIL_MAGIC = Buffer.from([0x2a, 0x2a, 0xa2, 0xa2]);

export interface Command {
  /** The line as the client wrote it, without the line end ("~M115", "M23 0:/user/a.gx"), read as UTF-8. */
  line: string;
  /** The G/M code, upper case, without "~": "M115", "G28". */
  code: string;
  /** Everything after the code. */
  args: string;
  /** What goes to the printer: the client's own bytes and "\r\n", so a file name arrives as the client wrote it. */
  wire: Buffer;
}

const CRLF = Buffer.from("\r\n");

/**
 * Parses one command line (the bytes before "\n"; a string is taken as UTF-8); undefined when it is not a G/M
 * command (garbage, binary, empty). Bytes above 0x7F are kept as they are for the printer, whatever they encode.
 */
export function parseCommand(line: string | Buffer): Command | undefined {
  const bytes = typeof line === "string" ? Buffer.from(line) : line;
  const raw = bytes[bytes.length - 1] === 0x0d ? bytes.subarray(0, bytes.length - 1) : bytes;
  if (raw.length === 0 || raw.length > MAX_COMMAND_LINE_BYTES) return undefined;
  const trimmed = raw.toString("utf8");
  // Printable ASCII and the odd UTF-8 file name; control characters mean the client is not speaking this protocol.
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(trimmed)) return undefined;
  const m = /^~?([GMgm]\d{1,4})(?:\s+([\s\S]*))?$/.exec(trimmed);
  if (!m) return undefined;
  return { line: trimmed, code: m[1]!.toUpperCase(), args: (m[2] ?? "").trim(), wire: Buffer.concat([raw, CRLF]) };
}

export function encodeCommand(line: string): Buffer {
  return Buffer.from(`${line}\r\n`);
}

/** The binary part a reply to this command carries after "ok", if any. */
export type BinaryKind = "fileList" | "thumbnail";

export function binaryKindOf(code: string): BinaryKind | undefined {
  return code === "M661" ? "fileList" : code === "M662" ? "thumbnail" : undefined;
}

/** Byte offset just past a line that reads "ok" (ending "\n" or "\r\n"), searching from `from`; -1 when none. */
export function findOkLineEnd(buffer: Buffer, from = 0): number {
  let at = buffer.indexOf("ok", from);
  while (at !== -1) {
    const lineStart = at === 0 || buffer[at - 1] === 0x0a;
    if (lineStart) {
      if (buffer[at + 2] === 0x0a) return at + 3;
      if (buffer[at + 2] === 0x0d && buffer[at + 3] === 0x0a) return at + 4;
      if (at + 2 >= buffer.length || (buffer[at + 2] === 0x0d && at + 3 >= buffer.length)) return -1; // line not finished yet
    }
    at = buffer.indexOf("ok", at + 1);
  }
  return -1;
}

export type BinaryProgress =
  | { state: "complete"; length: number }
  | { state: "incomplete" }
  | { state: "absent" }
  | { state: "invalid"; why: string };

/**
 * Where a file-list walk stopped for want of bytes, so the next call on the same (grown) data goes on from there
 * instead of walking every entry again: a list of a million entries arriving in 64 KB chunks took 2.3 s of
 * blocked event loop, walked from the start on each chunk.
 */
export interface BinaryScan {
  at: number;
  entry: number;
}

/**
 * How far the binary part at the start of `data` is complete. "absent": it does not start with the magic.
 * `scan`, when given, must come from an earlier call on a prefix of the same data; it is updated.
 */
export function measureBinary(kind: BinaryKind, data: Buffer, scan?: BinaryScan): BinaryProgress {
  const magic = kind === "fileList" ? FILE_LIST_MAGIC : THUMBNAIL_MAGIC;
  const have = Math.min(data.length, 4);
  if (!data.subarray(0, have).equals(magic.subarray(0, have))) return { state: "absent" };
  if (data.length < 8) return { state: "incomplete" };
  const count = data.readUInt32BE(4);
  if (kind === "thumbnail") {
    if (count > MAX_BINARY_REPLY_BYTES) return { state: "invalid", why: `thumbnail of ${count} bytes is too large` };
    return data.length >= 8 + count ? { state: "complete", length: 8 + count } : { state: "incomplete" };
  }
  let at = Math.max(8, scan?.at ?? 8);
  for (let i = scan?.entry ?? 0; i < count; i++) {
    if (data.length < at + 8) {
      if (scan) Object.assign(scan, { at, entry: i });
      return { state: "incomplete" };
    }
    if (!data.subarray(at, at + 4).equals(FILE_ENTRY_MAGIC)) return { state: "invalid", why: `file list entry ${i} has no marker` };
    const length = data.readUInt32BE(at + 4);
    at += 8 + length;
    if (at > MAX_BINARY_REPLY_BYTES) return { state: "invalid", why: "file list is too large" };
  }
  if (scan) Object.assign(scan, { at, entry: count });
  return data.length >= at ? { state: "complete", length: at } : { state: "incomplete" };
}

/** Builds the binary part of an M661 reply (simulator and tests). */
export function encodeFileList(paths: string[]): Buffer {
  const parts = [FILE_LIST_MAGIC, u32(paths.length)];
  for (const p of paths) {
    const bytes = Buffer.from(p);
    parts.push(FILE_ENTRY_MAGIC, u32(bytes.length), bytes);
  }
  return Buffer.concat(parts);
}

/** Reads the paths back out of an M661 binary part. */
export function decodeFileList(data: Buffer): string[] {
  const progress = measureBinary("fileList", data);
  if (progress.state !== "complete") throw new Error(`not a complete file list (${progress.state})`);
  const count = data.readUInt32BE(4);
  const paths: string[] = [];
  let at = 8;
  for (let i = 0; i < count; i++) {
    const length = data.readUInt32BE(at + 4);
    paths.push(data.subarray(at + 8, at + 8 + length).toString());
    at += 8 + length;
  }
  return paths;
}

/** Builds the binary part of an M662 reply. */
export function encodeThumbnail(image: Buffer): Buffer {
  return Buffer.concat([THUMBNAIL_MAGIC, u32(image.length), image]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

export interface Reply {
  /** The reply's bytes exactly as the printer sent them: text, and the binary part when there is one. */
  bytes: Buffer;
  /** The text part. */
  text: string;
  binary?: Buffer;
}

export type ReplyStep =
  | { kind: "reply"; reply: Reply }
  /** The text ended with "ok" and a binary part may follow: wait a little, then call `endWithoutBinary`. */
  | { kind: "waiting-binary" }
  | { kind: "need-more" }
  | { kind: "error"; why: string };

/**
 * Splits the printer's byte stream into replies, one per command sent. Call `expect(code)` when a command goes out,
 * `push(chunk)` with what arrives; `next()` returns the next step. Bytes that arrive with no command outstanding
 * are returned by `takeStray()`.
 */
export function createReplyReader() {
  // The bytes received and not yet handed out, in a buffer that grows by doubling: a 32 MB thumbnail arriving in
  // 64 KB chunks is copied about twice, not once per chunk.
  let store: Buffer = Buffer.alloc(0);
  let length = 0;
  let expecting: BinaryKind | "text" | undefined;
  let textEnd = -1;
  /** How far the search for the "ok" line has looked: it goes on from (just before) there. */
  let searched = 0;
  let scan: BinaryScan = { at: 8, entry: 0 };
  const view = () => store.subarray(0, length);

  const startOver = () => {
    expecting = undefined;
    textEnd = -1;
    searched = 0;
    scan = { at: 8, entry: 0 };
  };

  const consume = (end: number) => {
    store.copy(store, 0, end, length);
    length -= end;
    if (store.length > SHRINK_ABOVE_BYTES && length < store.length / 4) {
      const smaller = Buffer.allocUnsafe(Math.max(MIN_STORE_BYTES, length * 2));
      store.copy(smaller, 0, 0, length);
      store = smaller;
    }
  };

  const finish = (end: number, binary?: Buffer): ReplyStep => {
    const bytes = Buffer.from(view().subarray(0, end));
    const text = bytes.subarray(0, textEnd).toString("utf8");
    consume(end);
    startOver();
    return { kind: "reply", reply: { bytes, text, binary } };
  };

  return {
    expect(code: string) {
      startOver();
      expecting = binaryKindOf(code) ?? "text";
    },
    push(chunk: Buffer) {
      if (length + chunk.length > store.length) {
        const bigger = Buffer.allocUnsafe(Math.max(store.length * 2, length + chunk.length, MIN_STORE_BYTES));
        store.copy(bigger, 0, 0, length);
        store = bigger;
      }
      chunk.copy(store, length);
      length += chunk.length;
    },
    get expecting() {
      return expecting !== undefined;
    },
    next(): ReplyStep {
      if (expecting === undefined) return { kind: "need-more" };
      const buffer = view();
      if (textEnd === -1) {
        // "ok" may have been cut by the chunking: look again from a few bytes back.
        textEnd = findOkLineEnd(buffer, Math.max(0, searched - 4));
        searched = buffer.length;
        if (textEnd === -1) {
          if (buffer.length > MAX_REPLY_TEXT_BYTES) return { kind: "error", why: `reply text exceeds ${MAX_REPLY_TEXT_BYTES} bytes without "ok"` };
          return { kind: "need-more" };
        }
        if (expecting === "text") return finish(textEnd);
      }
      const kind = expecting as BinaryKind;
      const rest = buffer.subarray(textEnd);
      if (rest.length === 0) return { kind: "waiting-binary" };
      const progress = measureBinary(kind, rest, scan);
      if (progress.state === "complete") return finish(textEnd + progress.length, Buffer.from(rest.subarray(0, progress.length)));
      if (progress.state === "absent") return finish(textEnd);
      if (progress.state === "invalid") return { kind: "error", why: progress.why };
      return { kind: "need-more" };
    },
    /** The binary part did not come (e.g. no such file): the reply is the text alone. */
    endWithoutBinary(): Reply | undefined {
      if (expecting === undefined || textEnd === -1 || length > textEnd) return undefined;
      const step = finish(textEnd);
      return step.kind === "reply" ? step.reply : undefined;
    },
    takeStray(): Buffer {
      if (expecting !== undefined) return Buffer.alloc(0);
      const stray = Buffer.from(view());
      consume(length);
      return stray;
    },
    reset() {
      store = Buffer.alloc(0);
      length = 0;
      startOver();
    },
  };
}

export type ReplyReader = ReturnType<typeof createReplyReader>;

/** Reply text of a command answered without the printer ("CMD M601 Received.\r\n…\r\nok\r\n"). */
export function textReply(code: string, lines: string[]): Buffer {
  return Buffer.from([`CMD ${code} Received.`, ...lines, "ok", ""].join("\r\n"));
}

/** Pulls "Key: value" fields out of a reply's text (M115, M119). */
export function replyFields(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^([A-Za-z][A-Za-z ]*?):\s*(.*)$/.exec(line.trim());
    if (m) fields[m[1]!] = m[2]!.trim();
  }
  return fields;
}
