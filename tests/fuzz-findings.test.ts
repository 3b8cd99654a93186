// What the fuzz targets (tests/fuzz/*.fuzz.ts) found in the codecs, each pinned by the smallest input that
// showed it, so the fix stays even if a later fuzz run would not happen upon the same bytes.
import { describe, expect, test } from "bun:test";
import { createReportState, MAX_REPORT_DEPTH } from "../lib/bambu/mqtt-state.ts";
import { createLineSplitter, createReplyAssembler, MAX_COMMAND_LINE, type FtpReply } from "../lib/bambu/ftp-codec.ts";
import { parseTransport } from "../lib/rtsp/message.ts";

describe("merged MQTT state", () => {
  test("a report with a __proto__ key does not change Object.prototype", () => {
    const state = createReportState();
    state.apply(JSON.parse('{"print":{"nozzle_temper":20}}'));
    state.apply(JSON.parse('{"print":{"__proto__":{"polluted":"print"}}}'));
    state.apply(JSON.parse('{"__proto__":{"polluted":"top"}}'));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(state.sections.print)).toBe(Object.prototype);
    expect(state.sections.print).toEqual({ nozzle_temper: 20 });
  });

  test("a report nested deeper than any printer's is not kept, and nothing throws", () => {
    const depth = 20_000; // 120 KB of JSON: well inside the printer session's packet limit
    const deep = JSON.parse(`{"print":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`);
    const state = createReportState();
    state.apply(JSON.parse('{"print":{"nozzle_temper":20}}'));
    expect(state.apply(deep)).toContain(`deeper than ${MAX_REPORT_DEPTH} levels`);
    expect(state.apply(deep)).toContain("print");
    expect(state.sections.print).toEqual({ nozzle_temper: 20 });
  });
});

describe("FTP control lines", () => {
  const split = (chunks: Buffer[]) => {
    const lines: string[] = [];
    let tooLong = 0;
    const push = createLineSplitter((line) => lines.push(line), () => tooLong++);
    for (const chunk of chunks) push(chunk);
    return { lines, tooLong };
  };

  test("a line over the limit is refused even when it arrives whole with its line end; nothing after it is read", () => {
    const stream = Buffer.from(`USER bblp\r\nSTOR ${"x".repeat(MAX_COMMAND_LINE)}\r\nNOOP\r\n`);
    expect(split([stream])).toEqual({ lines: ["USER bblp"], tooLong: 1 });
    // Cut in the middle of the long line: the same verdict, and its tail is not taken for a command.
    expect(split([stream.subarray(0, 5_000), stream.subarray(5_000)])).toEqual({ lines: ["USER bblp"], tooLong: 1 });
  });

  test("a reply code must start with 1-5: `090-` does not open a reply that swallows the next ones", () => {
    const replies: FtpReply[] = [];
    const assemble = createReplyAssembler((reply) => replies.push(reply));
    for (const line of ["090-noise", "230 Login successful."]) assemble(line);
    expect(replies).toEqual([{ code: 230, lines: ["230 Login successful."] }]);
  });
});

describe("RTSP Transport header", () => {
  test("interleaved channels outside one byte and client ports outside 1-65535 are no pair", () => {
    expect(parseTransport("RTP/AVP/TCP;unicast;interleaved=255")[0]!.interleaved).toBeUndefined(); // would be 255-256
    expect(parseTransport("RTP/AVP/TCP;unicast;interleaved=300-301")[0]!.interleaved).toBeUndefined();
    expect(parseTransport("RTP/AVP;unicast;client_port=70000-70001")[0]!.clientPort).toBeUndefined();
    expect(parseTransport("RTP/AVP;unicast;client_port=0-1")[0]!.clientPort).toBeUndefined();
    expect(parseTransport("RTP/AVP/TCP;unicast;interleaved=254-255")[0]!.interleaved).toEqual([254, 255]);
    expect(parseTransport("RTP/AVP;unicast;client_port=65534-65535")[0]!.clientPort).toEqual([65534, 65535]);
  });
});
