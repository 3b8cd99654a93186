// What the fuzz targets (tests/fuzz/*.fuzz.ts) found in the codecs, each pinned by the smallest input that
// showed it, so the fix stays even if a later fuzz run would not happen upon the same bytes.
import { describe, expect, test } from "bun:test";
import { createReportState, MAX_REPORT_DEPTH } from "../lib/bambu/mqtt-state.ts";
import { createLineSplitter, createReplyAssembler, MAX_COMMAND_LINE, type FtpReply } from "../lib/bambu/ftp-codec.ts";
import { parseTransport } from "../lib/rtsp/message.ts";
import { createKeyFrameKeeper } from "../lib/rtsp/h264.ts";
import { bambuTelemetry } from "../lib/bambu/telemetry.ts";
import { flashforgeTelemetry } from "../lib/flashforge/telemetry.ts";
import { createClientInput } from "../lib/flashforge/tcp-client-input.ts";
import { MAX_COMMAND_LINE_BYTES } from "../lib/flashforge/tcp-codec.ts";
import { startRelay } from "../lib/rtsp/relay.ts";
import { connect, createServer } from "node:net";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import { authorizationFor, parseAuthParams } from "../lib/rtsp/auth.ts";
import { createRtspParser, RtspParseError } from "../lib/rtsp/message.ts";

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

describe("H.264 key-frame keeper", () => {
  const rtp = (seq: number, ts: number, marker: boolean, payload: Buffer) => {
    const header = Buffer.alloc(12);
    header[0] = 0x80;
    header[1] = (marker ? 0x80 : 0) | 96;
    header.writeUInt16BE(seq, 2);
    header.writeUInt32BE(ts, 4);
    return Buffer.concat([header, payload]);
  };

  test("FU-A pieces of a NAL unit whose end never comes are not kept past the access-unit limit", () => {
    const keeper = createKeyFrameKeeper(4_096);
    const piece = Buffer.alloc(1_400, 0x55);
    keeper.push(rtp(1, 0, false, Buffer.concat([Buffer.from([0x7c, 0x80 | 5]), piece])));
    for (let seq = 2; seq < 200; seq++) keeper.push(rtp(seq, 0, false, Buffer.concat([Buffer.from([0x7c, 5]), piece])));
    expect(keeper.buffered).toBeLessThanOrEqual(4_096);
  });

  test("a key frame whose SPS and PPS come from elsewhere (the SDP, an earlier unit) is still kept only within the limit", () => {
    const keeper = createKeyFrameKeeper(4_096);
    const sps = Buffer.concat([Buffer.from([0x67]), Buffer.alloc(3_000, 1)]);
    keeper.setSdp(`a=fmtp:96 packetization-mode=1;sprop-parameter-sets=${sps.toString("base64")},aM4=`);
    keeper.push(rtp(1, 0, true, Buffer.concat([Buffer.from([0x65]), Buffer.alloc(3_000, 2)])));
    expect(keeper.latest()).toBeUndefined();
    expect(keeper.keyFrames).toBe(0);
  });

  test("an FU-A start while an earlier NAL unit's pieces still wait for their end: that unit is no key frame (a slice would be missing)", () => {
    const keeper = createKeyFrameKeeper();
    keeper.push(rtp(1, 0, false, Buffer.from([0x67, 1])));
    keeper.push(rtp(2, 0, false, Buffer.from([0x68, 2])));
    keeper.push(rtp(3, 0, false, Buffer.from([0x7c, 0x80 | 5, 0xaa]))); // first slice: its start, never its end
    keeper.push(rtp(4, 0, true, Buffer.from([0x7c, 0xc0 | 5, 0xbb]))); // second slice, whole in one FU-A
    expect(keeper.keyFrames).toBe(0);
  });

  test("an RTP packet without payload (padding only, or none) still counts in the sequence: the next unit is not taken for broken", () => {
    const keeper = createKeyFrameKeeper();
    keeper.push(rtp(0, 0, true, Buffer.from([0x09, 0xf0])));
    keeper.push(rtp(1, 0, false, Buffer.alloc(0)));
    const padded = rtp(2, 0, false, Buffer.from([0, 0, 3]));
    padded[0]! |= 0x20;
    keeper.push(padded);
    keeper.push(rtp(3, 9, false, Buffer.from([0x67, 1])));
    keeper.push(rtp(4, 9, false, Buffer.from([0x68, 2])));
    keeper.push(rtp(5, 9, true, Buffer.from([0x65, 3])));
    expect(keeper.keyFrames).toBe(1);
    expect([...keeper.latest()!.annexB]).toEqual([0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3]);
  });
});

describe("telemetry", () => {
  test("a Bambu gcode_state naming an Object.prototype key is no state of ours: unknown", () => {
    for (const state of ["constructor", "__proto__", "toString", "hasOwnProperty"]) {
      expect(bambuTelemetry(JSON.parse(`{"print":{"gcode_state":"${state}"}}`), 0).state).toBe("unknown");
    }
  });

  test("a FlashForge MachineStatus naming an Object.prototype key is no state of ours: unknown", () => {
    for (const state of ["constructor", "__proto__", "toString"]) {
      expect(flashforgeTelemetry({ M119: `CMD M119 Received.\r\nMachineStatus: ${state}\r\nok` }).state).toBe("unknown");
    }
  });

  test("FlashForge byte and layer counts too long for a number give no progress and no layers (not NaN or Infinity)", () => {
    const huge = "9".repeat(400);
    const t = flashforgeTelemetry({ M119: "MachineStatus: BUILDING_FROM_SD", M27: `CMD M27 Received.\r\nSD printing byte ${huge}/${huge}\r\nLayer: 3/${huge}\r\nok` });
    expect(t.progress).toBeUndefined();
    expect(t.layer).toBeUndefined();
    expect(t.totalLayers).toBeUndefined();
  });
});

describe("FlashForge client input", () => {
  test("a command line of the longest length, cut between its CR and LF, is the same command as when it arrives whole", () => {
    const line = `~M23 ${"a".repeat(MAX_COMMAND_LINE_BYTES - 5)}`;
    const whole = createClientInput().push(Buffer.from(`${line}\r\n`));
    expect(whole.map((i) => i.kind)).toEqual(["command"]);
    const input = createClientInput();
    const split = [...input.push(Buffer.from(`${line}\r`)), ...input.push(Buffer.from("\n"))];
    expect(split).toEqual(whole);
  });
});

describe("RTSP push: the media server's challenges", () => {
  const answer = (challenges: string[]) => authorizationFor(challenges, "pandaproxy", "secret", "ANNOUNCE", "rtsp://127.0.0.1:8554/x");

  test("a realm with a quote in it (unquoted in the challenge) is not quoted again into a header that parses differently", () => {
    const value = answer(['Digest nonce=MD5, realm=a"b']);
    if (value !== undefined) expect(parseAuthParams(value.slice(7)).realm).toBe('a"b');
  });

  test("a bare LF inside a challenge's realm does not start a new header in our request", () => {
    // The codec refuses the line (lib/rtsp/message.ts); were it passed on, the answer still would not echo it.
    expect(() => createRtspParser().push(Buffer.from('RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Digest realm="x\nInjected: 1", nonce="n1"\r\n\r\n'))).toThrow(RtspParseError);
    expect(answer(['Digest realm="x\nInjected: 1", nonce="n1"']) ?? "").not.toMatch(/[\r\n]/);
  });
});

describe("RTSP push relay over sockets (127.0.57.20 media server, 127.0.57.21 relay)", () => {
  test("a media server's unreadable bytes are logged with their control characters escaped: no CR or LF of theirs in our log", async () => {
    setupLogging("info", { quiet: true });
    const media = createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", () => socket.end("a\r\nInjected line\rRTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"));
    });
    await new Promise<void>((resolve) => media.listen(57_556, "127.0.57.20", resolve));
    const relay = await startRelay({
      log: serviceLogger("p1s", "export rtsp"), host: "127.0.57.20", port: 57_556, listenHost: "127.0.57.21", user: "u", password: () => "p", peer: "media server",
    });
    const logs = captureLogs();
    try {
      const pusher = connect({ host: "127.0.57.21", port: Number(new URL(relay.url("/")).port) });
      pusher.on("error", () => {});
      pusher.write(`OPTIONS ${relay.url("/x")} RTSP/1.0\r\nCSeq: 1\r\n\r\n`);
      await new Promise((resolve) => pusher.once("close", resolve));
    } finally {
      logs.stop();
      await relay.close();
      media.close();
    }
    const unreadable = logs.lines.filter((l) => l.includes("unreadable"));
    expect(unreadable.length).toBe(1);
    expect(unreadable[0]).toContain("[p1s/export rtsp]");
    expect(unreadable[0]).not.toMatch(/[\r\n]/);
  });
});
