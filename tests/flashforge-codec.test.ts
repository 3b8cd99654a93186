// The FlashForge TCP codec: command lines, and where each printer reply ends (binary parts included).
import { describe, expect, test } from "bun:test";
import {
  FILE_ENTRY_MAGIC, createReplyReader, decodeFileList, encodeFileList, encodeThumbnail, findOkLineEnd, measureBinary, parseCommand, textReply,
} from "../lib/flashforge/tcp-codec.ts";

const feed = (reader: ReturnType<typeof createReplyReader>, bytes: Buffer, step: number) => {
  const steps: string[] = [];
  const replies: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += step) {
    reader.push(bytes.subarray(at, at + step));
    for (;;) {
      const s = reader.next();
      steps.push(s.kind);
      if (s.kind === "reply") replies.push(s.reply.bytes);
      else break;
    }
  }
  return { steps, replies };
};

describe("command lines", () => {
  test("G/M commands with or without ~ are accepted; garbage is not", () => {
    expect(parseCommand("~M601 S1\r")).toEqual({ line: "~M601 S1", code: "M601", args: "S1", wire: Buffer.from("~M601 S1\r\n") });
    expect(parseCommand("M23 0:/user/My Part.gx")).toMatchObject({ line: "M23 0:/user/My Part.gx", code: "M23", args: "0:/user/My Part.gx" });
    expect(parseCommand("~g28")?.code).toBe("G28");
    expect(parseCommand("")).toBeUndefined();
    expect(parseCommand("GET / HTTP/1.1")).toBeUndefined();
    expect(parseCommand("\x16\x03\x01")).toBeUndefined();
    expect(parseCommand(`~M115 ${"x".repeat(2000)}`)).toBeUndefined();
  });
});

describe("reply reader", () => {
  test("a text reply ends at its ok line, in any chunking", () => {
    const reply = textReply("M115", ["Machine Type: Flashforge Adventurer 5M", "Firmware: v3.1.3", "ok-ish line is not the end"]);
    for (const step of [1, 3, reply.length]) {
      const reader = createReplyReader();
      reader.expect("M115");
      const { replies } = feed(reader, reply, step);
      expect(replies).toEqual([reply]);
    }
    expect(findOkLineEnd(Buffer.from("CMD M27 Received.\nok\n"))).toBe(21);
  });

  test("a thumbnail and a file list after ok are part of the reply; the next reply starts after them", () => {
    const thumb = Buffer.concat([textReply("M662", []), encodeThumbnail(Buffer.alloc(70_000, 0x89))]);
    const list = Buffer.concat([textReply("M661", []), encodeFileList(["/data/a.gcode", "/data/b c.3mf"])]);
    const next = textReply("M105", ["T0:20.0/0.0 B:20.0/0.0"]);
    for (const step of [1, 5, 4096]) {
      const reader = createReplyReader();
      reader.expect("M662");
      expect(feed(reader, thumb, step).replies).toEqual([thumb]);
      reader.expect("M661");
      expect(feed(reader, list, step).replies).toEqual([list]);
      reader.expect("M105");
      expect(feed(reader, next, step).replies).toEqual([next]);
    }
    expect(decodeFileList(encodeFileList(["/data/a.gcode"]))).toEqual(["/data/a.gcode"]);
  });

  test("after ok a binary part may never come: the reader waits, then the text alone is the reply", () => {
    const reader = createReplyReader();
    reader.expect("M662");
    const text = textReply("M662", []);
    const { steps } = feed(reader, text, text.length);
    expect(steps.at(-1)).toBe("waiting-binary");
    expect(reader.endWithoutBinary()?.bytes).toEqual(text);
  });

  test("a damaged file list is an error, not a hang", () => {
    const bad = Buffer.concat([encodeFileList(["/data/a.gcode"]).subarray(0, 8), Buffer.from("nonsense-bytes")]);
    expect(measureBinary("fileList", bad).state).toBe("invalid");
  });

  test("a file list of a million entries in 64 KB chunks is read whole, as one reply (speed: bench/flashforge-replies.ts)", () => {
    // encodeFileList of a million names would leave millions of small buffers for the collector to sweep meanwhile.
    const entries = 1_000_000;
    const list = Buffer.alloc(8 + entries * 8);
    encodeFileList([]).copy(list);
    list.writeUInt32BE(entries, 4);
    for (let i = 0; i < entries; i++) FILE_ENTRY_MAGIC.copy(list, 8 + i * 8);
    const stream = Buffer.concat([textReply("M661", []), list]);
    const reader = createReplyReader();
    reader.expect("M661");
    const { replies } = feed(reader, stream, 64 * 1024);
    expect(replies.length).toBe(1);
    expect(replies[0]!.equals(stream)).toBe(true);
  });
});
