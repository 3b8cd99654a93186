// How long the FlashForge reply reader blocks the event loop on a huge file list (a printer's ~M661 answer) fed
// in 64 KB chunks. Walked from the start and copied whole on every chunk, a million entries took 2.3-7.9 s; read
// incrementally it should stay far below a second. Prints milliseconds per list size; run on demand.
import { FILE_ENTRY_MAGIC, createReplyReader, encodeFileList, textReply } from "../lib/flashforge/tcp-codec.ts";

const CHUNK = 64 * 1024;
const ROUNDS = 5;

function fileList(entries: number): Buffer {
  const list = Buffer.alloc(8 + entries * 8);
  encodeFileList([]).copy(list);
  list.writeUInt32BE(entries, 4);
  for (let i = 0; i < entries; i++) FILE_ENTRY_MAGIC.copy(list, 8 + i * 8);
  return Buffer.concat([textReply("M661", []), list]);
}

for (const entries of [10_000, 100_000, 1_000_000]) {
  const stream = fileList(entries);
  const times: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const reader = createReplyReader();
    reader.expect("M661");
    const started = performance.now();
    let replies = 0;
    for (let at = 0; at < stream.length; at += CHUNK) {
      reader.push(stream.subarray(at, at + CHUNK));
      for (let step = reader.next(); step.kind === "reply"; step = reader.next()) replies++;
    }
    times.push(performance.now() - started);
    if (replies !== 1) throw new Error(`expected one reply, got ${replies}`);
  }
  times.sort((a, b) => a - b);
  console.log(`file list of ${entries} entries (${(stream.length / 1e6).toFixed(1)} MB): median ${times[ROUNDS >> 1]!.toFixed(1)} ms, worst ${times.at(-1)!.toFixed(1)} ms`);
}
