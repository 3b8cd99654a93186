import { describe, expect, test } from "bun:test";
import {
  BIND_MAX_FRAME_BYTES, decodeBindFrame, detectReply, detectRequest, encodeBindFrame, isDetectRequest,
} from "../lib/bambu/bind-codec.ts";

describe("bind frame codec", () => {
  test("a detect request is A5 A5, u16 LE total length, JSON, A7 A7", () => {
    const frame = encodeBindFrame(detectRequest());
    const json = '{"login":{"command":"detect","sequence_id":"20000"}}';
    expect(frame.subarray(0, 2).toString("hex")).toBe("a5a5");
    expect(frame.readUInt16LE(2)).toBe(4 + json.length + 2);
    expect(frame.length).toBe(4 + json.length + 2);
    expect(frame.subarray(4, 4 + json.length).toString()).toBe(json);
    expect(frame.subarray(-2).toString("hex")).toBe("a7a7");
  });

  test("decoding gives the message back and how many bytes it took", () => {
    const frame = encodeBindFrame(detectRequest("7"));
    const decoded = decodeBindFrame(Buffer.concat([frame, Buffer.from("extra")]));
    expect(decoded).toEqual({ kind: "frame", message: { login: { command: "detect", sequence_id: "7" } }, bytes: frame.length });
    expect(isDetectRequest((decoded as { message: unknown }).message)).toBe(true);
  });

  test("a frame arriving in pieces is incomplete until its last byte", () => {
    const frame = encodeBindFrame(detectRequest());
    for (let cut = 1; cut < frame.length; cut++) expect(decodeBindFrame(frame.subarray(0, cut)).kind).toBe("incomplete");
    expect(decodeBindFrame(frame).kind).toBe("frame");
  });

  test("garbage, oversize lengths, a wrong trailer and non-JSON are invalid at once", () => {
    expect(decodeBindFrame(Buffer.from("GET / HTTP/1.1\r\n"))).toMatchObject({ kind: "invalid" });
    expect(decodeBindFrame(Buffer.from([0xa5, 0x00]))).toMatchObject({ kind: "invalid" });
    const oversize = Buffer.from([0xa5, 0xa5, 0, 0]);
    oversize.writeUInt16LE(BIND_MAX_FRAME_BYTES + 1, 2);
    expect(decodeBindFrame(oversize)).toMatchObject({ kind: "invalid", reason: expect.stringContaining("limit") });
    expect(decodeBindFrame(Buffer.from([0xa5, 0xa5, 3, 0]))).toMatchObject({ kind: "invalid" });
    const badTrailer = encodeBindFrame({ a: 1 });
    badTrailer[badTrailer.length - 1] = 0;
    expect(decodeBindFrame(badTrailer)).toMatchObject({ kind: "invalid", reason: expect.stringContaining("A7 A7") });
    const notJson = Buffer.concat([Buffer.from([0xa5, 0xa5, 9, 0]), Buffer.from("{x}"), Buffer.from([0xa7, 0xa7])]);
    expect(decodeBindFrame(notJson)).toMatchObject({ kind: "invalid", reason: "payload is not JSON" });
  });

  test("the reply carries the firmware's fields and our own integer sequence_id", () => {
    const reply = detectReply({ serial: "01P00A000000001", modelCode: "C12", name: "p1s", firmware: "01.08.00.00" }, 3021);
    expect(JSON.stringify(reply)).toBe(
      '{"login":{"bind":"free","command":"detect","connect":"lan","dev_cap":1,"id":"01P00A000000001","model":"C12",' +
        '"name":"p1s","sequence_id":3021,"version":"01.08.00.00"}}',
    );
  });

  test("only login/detect is a detect request", () => {
    expect(isDetectRequest({ login: { command: "bind" } })).toBe(false);
    expect(isDetectRequest({ print: { command: "detect" } })).toBe(false);
    expect(isDetectRequest(null)).toBe(false);
    expect(isDetectRequest("detect")).toBe(false);
  });
});
