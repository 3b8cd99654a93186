// The RTP and SDP helpers (lib/rtsp/rtp.ts): where a payload starts, which payloads start a key frame, the
// producer's SDP as readers get it, and a track's outgoing numbering across producer restarts. No sockets.
import { describe, expect, test } from "bun:test";
import {
  createTrackNumbering, nextStart, readerSdp, renumber, rtpPayloadOffset, senderReportTs, splitSdp, startsKeyFrame,
} from "../lib/rtsp/rtp.ts";

describe("H.264 key frame detection", () => {
  test("SPS, IDR at a frame start, STAP-A holding an SPS, FU-A start of an IDR", () => {
    expect(startsKeyFrame(Buffer.from([0x67, 0x42]), false)).toBe(true);
    expect(startsKeyFrame(Buffer.from([0x65, 0x88]), true)).toBe(true);
    expect(startsKeyFrame(Buffer.from([0x65, 0x88]), false)).toBe(false);
    expect(startsKeyFrame(Buffer.from([0x41, 0x9a]), true)).toBe(false);
    expect(startsKeyFrame(Buffer.from([0x18, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]), false)).toBe(true);
    expect(startsKeyFrame(Buffer.from([0x7c, 0x85, 1]), true)).toBe(true);
    expect(startsKeyFrame(Buffer.from([0x7c, 0x05, 1]), true)).toBe(false);
    expect(startsKeyFrame(Buffer.from([0x7c, 0x81, 1]), true)).toBe(false);
  });

  test("a payload shorter than two bytes, or a STAP-A holding neither SPS nor IDR, starts nothing", () => {
    expect(startsKeyFrame(Buffer.from([0x67]), true)).toBe(false);
    expect(startsKeyFrame(Buffer.from([0x18, 0, 2, 0x41, 0x9a, 0, 2, 0x68, 0xce]), true)).toBe(false);
  });
});

/** An RTP header: `csrcs` CSRC entries, and an extension header of `extensionWords` 32-bit words when given. */
function rtpHeader(csrcs: number, extensionWords?: number): Buffer {
  const extension = extensionWords === undefined ? 0 : 4 + extensionWords * 4;
  const packet = Buffer.alloc(12 + csrcs * 4 + extension + 2);
  packet[0] = 0x80 | (extensionWords === undefined ? 0 : 0x10) | csrcs;
  if (extensionWords !== undefined) packet.writeUInt16BE(extensionWords, 12 + csrcs * 4 + 2);
  return packet;
}

describe("RTP payload offset", () => {
  test("after the fixed header, the CSRCs and the extension header", () => {
    expect(rtpPayloadOffset(rtpHeader(0))).toBe(12);
    expect(rtpPayloadOffset(rtpHeader(2))).toBe(20);
    expect(rtpPayloadOffset(rtpHeader(1, 3))).toBe(12 + 4 + 4 + 12);
  });

  test("-1 for a packet too short, of another RTP version, or whose extension runs past its end", () => {
    expect(rtpPayloadOffset(Buffer.alloc(11, 0x80))).toBe(-1);
    const v1 = rtpHeader(0);
    v1[0] = 0x40;
    expect(rtpPayloadOffset(v1)).toBe(-1);
    const truncated = rtpHeader(0, 1).subarray(0, 14);
    expect(rtpPayloadOffset(truncated)).toBe(-1);
    const overlong = rtpHeader(0, 1);
    overlong.writeUInt16BE(100, 14);
    expect(rtpPayloadOffset(overlong)).toBe(-1);
  });
});

const SDP = [
  "v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=x", "a=control:*", "a=range:npt=0-", "t=0 0",
  "m=video 0 RTP/AVP 96", "a=rtpmap:96 H264/90000", "a=control:streamid=0",
  "m=audio 0 RTP/AVP 97", "a=rtpmap:97 MPEG4-GENERIC/48000/2", "a=control:streamid=1",
].join("\r\n") + "\r\n";

describe("SDP", () => {
  test("split into the session part and one section per m= line, with either line ending", () => {
    const { session, media } = splitSdp(SDP.replaceAll("\r\n", "\n"));
    expect(session[0]).toBe("v=0");
    expect(media.map((m) => m[0])).toEqual(["m=video 0 RTP/AVP 96", "m=audio 0 RTP/AVP 97"]);
    expect(media[1]).toContain("a=control:streamid=1");
  });

  test("readers get the session without control and range, each track with our control, codec and clock rate", () => {
    const { sessionLines, tracks } = readerSdp(SDP);
    expect(sessionLines).toEqual(["v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=x", "t=0 0"]);
    expect(tracks.map((t) => [t.control, t.h264, t.clockRate])).toEqual([["track1", true, 90_000], ["track2", false, 48_000]]);
    expect(tracks[0]!.media).toBe("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1");
  });

  test("a track without a clock rate in its rtpmap runs at 90 kHz", () => {
    expect(readerSdp("v=0\r\nm=video 0 RTP/AVP 26\r\n").tracks[0]!.clockRate).toBe(90_000);
  });
});

describe("a track's outgoing numbering", () => {
  const packet = (seq: number, ts: number) => {
    const p = Buffer.alloc(14);
    p[0] = 0x80;
    p.writeUInt16BE(seq, 2);
    p.writeUInt32BE(ts, 4);
    return p;
  };

  test("seq, timestamp and SSRC run on across a producer restart; a reader joining gets the next seq", () => {
    const s = createTrackNumbering();
    const first = packet(100, 5_000);
    renumber(s, first, 0);
    renumber(s, packet(101, 8_000), 0);
    const before = { seq: s.lastOutSeq, ts: s.lastOutTs };
    s.firstOfPublisher = true; // a new producer, with its own numbering
    const next = packet(7, 1);
    renumber(s, next, 0);
    expect(next.readUInt16BE(2)).toBe((before.seq + 1) & 0xffff);
    expect(next.readUInt32BE(4)).toBe((before.ts + 3_000) >>> 0);
    expect(next.readUInt32BE(8)).toBe(first.readUInt32BE(8));
    expect(nextStart(s, 90_000, 0)).toEqual({ seq: (s.lastOutSeq + 1) & 0xffff, rtptime: s.lastOutTs });
    expect(nextStart(s, 90_000, 1_000).rtptime).toBe((s.lastOutTs + 90_000) >>> 0);
  });

  test("sender reports only, and only once packets went out, are rewritten to our SSRC and timestamp line", () => {
    const s = createTrackNumbering();
    const report = Buffer.alloc(28);
    report[1] = 200;
    expect(senderReportTs(s, report)).toBeUndefined();
    renumber(s, packet(1, 1_000), 0);
    report.writeUInt32BE(1_000, 16);
    expect(senderReportTs(s, report)).toBe(s.lastOutTs);
    expect(report.readUInt32BE(4)).toBe(s.ssrc);
    const receiverReport = Buffer.alloc(28);
    receiverReport[1] = 201;
    expect(senderReportTs(s, receiverReport)).toBeUndefined();
  });
});
