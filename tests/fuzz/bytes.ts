// Arbitraries shared by the fuzz modules: byte strings, and one byte stream cut into the chunks a socket might
// deliver it in (decoders must not care where TCP or TLS split the bytes).
import fc from "fast-check";

export const bytes = (maxLength = 256, minLength = 0): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ minLength, maxLength }).map((b) => Buffer.from(b));

/** Cut points for a stream of any length: fractions, so one arbitrary serves every length. */
export const cuts = (maxChunks = 8): fc.Arbitrary<number[]> => fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: maxChunks });

/** `stream` cut at `fractions` of its length (sorted, duplicates give no empty chunks). */
export function chunked(stream: Buffer, fractions: number[]): Buffer[] {
  const points = [...new Set(fractions.map((f) => Math.floor(f * stream.length)))].filter((p) => p > 0 && p < stream.length).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of [...points, stream.length]) {
    if (p > at) out.push(stream.subarray(at, p));
    at = p;
  }
  return out;
}

/** Text made mostly of the characters that matter to line and header parsers. */
export const wireText = (maxLength = 80): fc.Arbitrary<string> =>
  fc
    .array(
      fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom("a", "Z", "0", "9", " ", ":", "/", ".", ",", "|", "-", "\r", "\n", "\r\n", "\t", "\"", "$", "%", "\u0000") },
        { weight: 2, arbitrary: fc.string({ maxLength: 4, unit: "grapheme" }) },
        { weight: 1, arbitrary: fc.string({ maxLength: 2, unit: "binary" }) },
      ),
      { maxLength },
    )
    .map((parts) => parts.join(""));
