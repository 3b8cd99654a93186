// Fuzz targets for what a FlashForge client sends to TCP 8899 (lib/flashforge/tcp-client-input.ts): command lines,
// and after "~M28 <size> <name>" that many raw bytes of a file. Invariants: the same commands, upload bytes and
// verdict wherever TCP cut the stream; nothing longer than a command line is taken for one; never a throw.
import fc from "fast-check";
import { deepStrictEqual } from "node:assert";
import { createClientInput, type ClientInput } from "../../lib/flashforge/tcp-client-input.ts";
import { MAX_COMMAND_LINE_BYTES } from "../../lib/flashforge/tcp-codec.ts";
import { bytes, chunked, cuts, wireText } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const fail = (why: string): never => {
  throw new Error(why);
};

type Seen = { kind: "command"; line: string; code: string; args: string; wire: number[]; uploadSize?: number } | { kind: "invalid" };

/**
 * Pushes chunks as the client's socket delivers them, up to the first invalid item (the client is closed there).
 * The printer takes nothing of an upload before the stream ends (as when its ~M28 reply is slow), so the verdict
 * on a second ~M28 does not depend on timing.
 */
function read(chunks: Buffer[]): { items: Seen[]; upload: number[] } {
  const input = createClientInput();
  const items: Seen[] = [];
  for (const chunk of chunks) {
    const got: ClientInput[] = input.push(chunk);
    for (const item of got) {
      if (item.kind === "invalid") {
        if (typeof item.why !== "string" || !item.why) fail("an invalid item without a reason");
        items.push({ kind: "invalid" });
        break;
      }
      const { line, code, args, wire } = item.command;
      if (wire.length > MAX_COMMAND_LINE_BYTES + 2) fail(`a command of ${wire.length} bytes`);
      items.push({ kind: "command", line, code, args, wire: [...wire], ...(item.uploadSize !== undefined ? { uploadSize: item.uploadSize } : {}) });
    }
    if (items.at(-1)?.kind === "invalid") break;
    input.flow();
    void input.uploadProgress;
  }
  const upload: number[] = [];
  for (let chunk = input.takeChunk(); chunk; chunk = input.takeChunk()) upload.push(...chunk);
  if (input.buffered !== 0) fail(`${input.buffered} upload bytes left after every chunk was taken`);
  input.uploadTaken();
  return { items, upload };
}

const commandLine = fc
  .tuple(fc.constantFrom("~M115", "~M119", "~M27", "~M105", "~M601 S1", "~M602", "~G28 X Y", "~M29", "M104 S200", "~M23 0:/user/a.gx", "~M144"), fc.constantFrom("\r\n", "\n"))
  .map(([line, end]) => ({ text: line + end, line }));
const upload = fc
  .tuple(bytes(3_000), fc.constantFrom("0:/user/part.gx", "0:/user/a b.3mf"))
  .map(([file, name]) => ({ header: `~M28 ${file.length} ${name}\r\n`, file }));

const validStreams: FuzzTarget = {
  name: "FlashForge client commands and an upload, cut anywhere",
  property: () =>
    fc.property(fc.array(commandLine, { maxLength: 6 }), fc.option(upload, { nil: undefined }), fc.array(commandLine, { maxLength: 4 }), cuts(12),
      (before, file, after, at) => {
        const stream = Buffer.concat([
          ...before.map((c) => Buffer.from(c.text)),
          ...(file ? [Buffer.from(file.header), file.file] : []),
          ...after.map((c) => Buffer.from(c.text)),
        ]);
        const whole = read([stream]);
        const split = read(chunked(stream, at));
        deepStrictEqual(split, whole);
        if (whole.items.some((i) => i.kind === "invalid")) fail("a well-formed stream was refused");
        const lines = whole.items.map((i) => (i.kind === "command" ? i.line : ""));
        deepStrictEqual(lines, [...before.map((c) => c.line), ...(file ? [file.header.trimEnd()] : []), ...after.map((c) => c.line)]);
        if (file && !Buffer.from(whole.upload).equals(file.file)) fail("the upload's bytes changed on the way");
      }),
};

const clientText = fc.oneof(
  wireText(300).map((t) => Buffer.from(t, "latin1")),
  bytes(600),
  fc.tuple(fc.constantFrom("~M28 ", "~M28 10 ", "~M28 99999999999 x", "~M28 -1 x", "~M28 1e3 x", `~M28 ${"9".repeat(400)} x`, "~M115", "~G", "M"), wireText(20), fc.constantFrom("\r\n", "\n", ""))
    .map(([head, rest, end]) => Buffer.from(head + rest + end, "latin1")),
  fc.integer({ min: MAX_COMMAND_LINE_BYTES - 8, max: MAX_COMMAND_LINE_BYTES + 2 }).map((n) => Buffer.from(`~M23 ${"a".repeat(n - 5)}\r\n`)),
);

const randomStreams: FuzzTarget = {
  name: "FlashForge client random bytes",
  property: () =>
    fc.property(fc.array(clientText, { minLength: 1, maxLength: 5 }), cuts(12), (parts, at) => {
      const stream = Buffer.concat(parts);
      const whole = read([stream]);
      const split = read(chunked(stream, at));
      // The same commands and bytes up to the same refusal, however the stream was cut.
      deepStrictEqual(split, whole);
    }),
};

export const targets: FuzzTarget[] = [validStreams, randomStreams];
