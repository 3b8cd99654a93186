import { describe, expect, test } from "bun:test";
import {
  createFrameParser, decodeLogin, encodeFrameHeader, encodeLogin, FRAME_HEADER_SIZE, jpegProblem, LOGIN_SIZE, loginMatches,
  MAX_FRAME_BYTES, type ParseEvent,
} from "../lib/bambu/chamber-codec.ts";
import { readJpegStamp, stampJpeg } from "../lib/sim/jpeg-picture.ts";

const jpegOf = (text: string) => Buffer.concat([Buffer.from([0xff, 0xd8]), Buffer.from(text), Buffer.from([0xff, 0xd9])]);

describe("chamber camera codec", () => {
  test("the login is 80 bytes: u32 0x40, u32 0x3000, 8 zero bytes, user and code NUL-padded to 32", () => {
    const login = encodeLogin({ username: "bblp", accessCode: "12345678" });
    expect(login.length).toBe(LOGIN_SIZE);
    expect(login.subarray(0, 16).toString("hex")).toBe("40000000003000000000000000000000");
    expect(login.subarray(16, 48)).toEqual(Buffer.concat([Buffer.from("bblp"), Buffer.alloc(28)]));
    expect(login.subarray(48, 80)).toEqual(Buffer.concat([Buffer.from("12345678"), Buffer.alloc(24)]));
    expect(decodeLogin(login)).toEqual({ username: "bblp", accessCode: "12345678" });
  });

  test("a packet of another type is not a login", () => {
    const other = encodeLogin({ username: "bblp", accessCode: "12345678" });
    other.writeUInt32LE(0x41, 0);
    expect(decodeLogin(other)).toEqual({ error: expect.stringContaining("not a chamber camera login") });
  });

  test("only bblp with one of the accepted codes matches", () => {
    const codes = ["12345678", "87654321"];
    expect(loginMatches({ username: "bblp", accessCode: "12345678" }, codes)).toBe(true);
    expect(loginMatches({ username: "bblp", accessCode: "87654321" }, [...codes, undefined])).toBe(true);
    expect(loginMatches({ username: "bblp", accessCode: "1234567" }, codes)).toBe(false);
    expect(loginMatches({ username: "bblp", accessCode: "123456789" }, codes)).toBe(false);
    expect(loginMatches({ username: "root", accessCode: "12345678" }, codes)).toBe(false);
    expect(loginMatches({ username: "bblp", accessCode: "" }, ["", undefined])).toBe(false);
  });

  test("the frame header is u32 LE length, 0, 1, 0", () => {
    expect(encodeFrameHeader(0x01020304).toString("hex")).toBe("04030201000000000100000000000000");
  });

  test("JPEG sanity: SOI at the start, EOI at the end", () => {
    expect(jpegProblem(jpegOf("x"))).toBeUndefined();
    expect(jpegProblem(Buffer.from("hello world"))).toContain("FF D8");
    expect(jpegProblem(Buffer.from([0xff, 0xd8, 1, 2, 3]))).toContain("FF D9");
  });

  test("the parser cuts frames out of chunks split anywhere", () => {
    const stream = Buffer.concat(["one", "two", "three"].flatMap((t) => [encodeFrameHeader(jpegOf(t).length), jpegOf(t)]));
    for (const size of [1, 3, 16, 17, 1000]) {
      const events: ParseEvent[] = [];
      const parser = createFrameParser((e) => events.push(e));
      for (let i = 0; i < stream.length; i += size) parser.push(stream.subarray(i, i + size));
      expect(events.map((e) => (e.kind === "frame" ? e.frame.jpeg.toString("latin1").slice(2, -2) : e.kind))).toEqual(["one", "two", "three"]);
      expect(events.every((e) => e.kind !== "frame" || e.frame.header.length === FRAME_HEADER_SIZE)).toBe(true);
      expect(parser.buffered).toBe(0);
    }
  });

  test("a body that is not a JPEG is a bad frame; a zero or huge length means the stream is out of sync", () => {
    const events: ParseEvent[] = [];
    const parser = createFrameParser((e) => events.push(e));
    parser.push(Buffer.concat([encodeFrameHeader(5), Buffer.from("hello"), encodeFrameHeader(MAX_FRAME_BYTES + 1), jpegOf("late")]));
    expect(events.map((e) => e.kind)).toEqual(["bad-frame", "out-of-sync"]);
    parser.push(Buffer.concat([encodeFrameHeader(jpegOf("after").length), jpegOf("after")]));
    expect(events.length).toBe(2);
    const zero: ParseEvent[] = [];
    createFrameParser((e) => zero.push(e)).push(encodeFrameHeader(0));
    expect(zero).toEqual([{ kind: "out-of-sync", reason: expect.stringContaining("announces 0 bytes") }]);
  });

  test("a stamp in a JPEG comment survives and leaves a valid JPEG", () => {
    const stamped = stampJpeg(jpegOf("picture"), "pandaproxy-sim 7 123.5");
    expect(readJpegStamp(stamped)).toBe("pandaproxy-sim 7 123.5");
    expect(jpegProblem(stamped)).toBeUndefined();
    expect(readJpegStamp(jpegOf("plain"))).toBeUndefined();
  });
});
