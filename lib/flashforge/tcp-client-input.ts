// What one client of TCP 8899 sends, as typed values: command lines, and after a "~M28 <size> <name>" the next
// <size> raw bytes as that file, kept here until tcp-scheduler.ts hands them to the printer. Pure: no socket.
import { parseCommand, MAX_COMMAND_LINE_BYTES, type Command } from "./tcp-codec.ts";

export const MAX_UPLOAD_BYTES = 2 * 1024 * 1024 * 1024;
/** Upload bytes buffered from a client before we stop reading it (backpressure). */
export const UPLOAD_BUFFER_BYTES = 1024 * 1024;

export type ClientInput =
  /** `uploadSize`: a ~M28 whose file bytes follow (kept by the reader, taken with `takeChunk`). */
  | { kind: "command"; command: Command; uploadSize?: number }
  /** Not this protocol, or an ~M28 we cannot honour: the client is closed with `why`. */
  | { kind: "invalid"; why: string };

interface Upload {
  size: number;
  /** Bytes still to come from the client. */
  remaining: number;
  chunks: Buffer[];
  buffered: number;
}

export function createClientInput() {
  let pending: Buffer = Buffer.alloc(0);
  let upload: Upload | undefined;
  let paused = false;

  const line = (raw: Buffer): ClientInput => {
    const command = parseCommand(raw);
    if (!command) return { kind: "invalid", why: `sent something that is not a G/M command: ${JSON.stringify(raw.toString("utf8").slice(0, 40))}` };
    if (command.code !== "M28") return { kind: "command", command };
    if (upload) return { kind: "invalid", why: "sent ~M28 before its previous upload was written" };
    const m = /^(\d+)\s+\S/.exec(command.args);
    const size = m ? Number(m[1]) : NaN;
    if (!(size >= 0 && size <= MAX_UPLOAD_BYTES)) return { kind: "invalid", why: `sent ~M28 without a valid size: ${JSON.stringify(command.args.slice(0, 60))}` };
    upload = { size, remaining: size, chunks: [], buffered: 0 };
    return { kind: "command", command, uploadSize: size };
  };

  return {
    /** What `chunk` completes; upload bytes are kept. Nothing is read past an invalid item. */
    push(chunk: Buffer): ClientInput[] {
      let buffer = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      const items: ClientInput[] = [];
      while (buffer.length > 0) {
        if (upload && upload.remaining > 0) {
          const take = Math.min(upload.remaining, buffer.length);
          upload.chunks.push(Buffer.from(buffer.subarray(0, take)));
          upload.buffered += take;
          upload.remaining -= take;
          buffer = buffer.subarray(take);
          continue;
        }
        const nl = buffer.indexOf(0x0a);
        if (nl === -1) {
          // A line of the longest length may wait here with its CR, its LF in the next chunk.
          if (buffer.length > MAX_COMMAND_LINE_BYTES + 1) items.push({ kind: "invalid", why: `sent ${buffer.length} bytes without a line end` });
          break;
        }
        const item = line(buffer.subarray(0, nl));
        buffer = buffer.subarray(nl + 1);
        items.push(item);
        if (item.kind === "invalid") break;
      }
      pending = items.at(-1)?.kind === "invalid" ? Buffer.alloc(0) : buffer;
      return items;
    },
    /** The upload's next bytes for the printer, if any arrived. */
    takeChunk(): Buffer | undefined {
      const chunk = upload?.chunks.shift();
      if (chunk) upload!.buffered -= chunk.length;
      return chunk;
    },
    /** Every byte of the upload came and was taken: the ~M28 is over and another may follow. */
    uploadTaken(): boolean {
      if (!upload || upload.remaining > 0 || upload.chunks.length > 0) return false;
      upload = undefined;
      return true;
    },
    /** Upload bytes read and not yet taken. */
    get buffered(): number {
      return upload?.buffered ?? 0;
    },
    /** "pause" reading the client once UPLOAD_BUFFER_BYTES wait, "resume" once fewer do; undefined: no change. */
    flow(): "pause" | "resume" | undefined {
      const full = (upload?.buffered ?? 0) >= UPLOAD_BUFFER_BYTES;
      if (full === paused) return undefined;
      paused = full;
      return full ? "pause" : "resume";
    },
    /** "100 of 105" bytes of the upload received, for the line that says it was abandoned. */
    get uploadProgress(): string | undefined {
      return upload ? `${upload.size - upload.remaining} of ${upload.size}` : undefined;
    },
  };
}

export type ClientInputReader = ReturnType<typeof createClientInput>;
