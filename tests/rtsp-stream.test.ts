// The stream fan-out without sockets: key-frame start, slow readers dropping to the next key frame while the
// others get everything, and RTP numbering that runs on across a publisher restart.
import { describe, expect, test } from "bun:test";
import { serviceLogger } from "../lib/log.ts";
import { createStream, MAX_READER_BACKLOG_BYTES, type StreamReader } from "../lib/rtsp/stream.ts";

const SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0IAKeKQ,aM4G4g==\r\na=control:streamid=0\r\n";

/** An RTP packet: `nal` is the first payload byte (0x67 SPS, 0x65 IDR, 0x41 P slice); each is a whole frame. */
function rtp(seq: number, ts: number, nal: number): Buffer {
  const packet = Buffer.alloc(20);
  packet[0] = 0x80;
  packet[1] = 0x80 | 96; // marker: each packet ends a frame
  packet.writeUInt16BE(seq & 0xffff, 2);
  packet.writeUInt32BE(ts >>> 0, 4);
  packet.writeUInt32BE(0x1234, 8);
  packet[12] = nal;
  return packet;
}

function fakeReader(label: string): StreamReader & { got: Buffer[]; slow: boolean } {
  const reader = {
    label, channels: [[0, 1] as [number, number]], got: [] as Buffer[], slow: false,
    backlog: () => (reader.slow ? MAX_READER_BACKLOG_BYTES + 1 : 0),
    write: (bytes: Buffer) => void reader.got.push(Buffer.from(bytes)),
  };
  return reader;
}

const nalOf = (framed: Buffer) => framed[4 + 12]!;
const seqOf = (framed: Buffer) => framed.readUInt16BE(4 + 2);

describe("RTSP stream fan-out", () => {
  test("SDP for readers keeps SPS/PPS and uses our track controls", () => {
    const stream = createStream("/streaming/live/1", serviceLogger("t", "rtsp"));
    expect(stream.sdp()).toBeUndefined();
    stream.publish(SDP);
    const sdp = stream.sdp()!;
    expect(sdp).toContain("sprop-parameter-sets=Z0IAKeKQ,aM4G4g==");
    expect(sdp).toContain("a=control:track1");
    expect(sdp).not.toContain("streamid=0");
  });

  test("a new reader starts at the next key frame", () => {
    const stream = createStream("/s", serviceLogger("t", "rtsp"));
    stream.publish(SDP);
    const reader = fakeReader("a");
    stream.addReader(reader);
    stream.ingest(0, rtp(1, 0, 0x41), false);
    stream.ingest(0, rtp(2, 3000, 0x41), false);
    stream.ingest(0, rtp(3, 6000, 0x67), false);
    stream.ingest(0, rtp(4, 6000, 0x65), false);
    stream.ingest(0, rtp(5, 9000, 0x41), false);
    expect(reader.got.map(nalOf)).toEqual([0x67, 0x65, 0x41]);
  });

  test("a slow reader drops up to the next key frame; the others get every packet", () => {
    const stream = createStream("/s", serviceLogger("t", "rtsp"));
    stream.publish(SDP);
    const fast = fakeReader("fast");
    const slow = fakeReader("slow");
    stream.addReader(fast);
    const slowHandle = stream.addReader(slow);
    let seq = 0;
    const frame = (nal: number) => stream.ingest(0, rtp(++seq, seq * 3000, nal), false);
    frame(0x67);
    frame(0x41);
    slow.slow = true;
    frame(0x41);
    frame(0x41);
    slow.slow = false;
    frame(0x41); // still waiting for a key frame
    frame(0x67);
    frame(0x41);
    expect(fast.got.map(seqOf)).toHaveLength(7);
    expect(slow.got.map(nalOf)).toEqual([0x67, 0x41, 0x67, 0x41]);
    expect(slowHandle.dropped).toBe(3);
  });

  test("RTP numbering runs on across a publisher restart, so readers can stay", () => {
    const stream = createStream("/s", serviceLogger("t", "rtsp"));
    stream.publish(SDP);
    const reader = fakeReader("a");
    stream.addReader(reader);
    stream.ingest(0, rtp(100, 1000, 0x67), false);
    stream.ingest(0, rtp(101, 4000, 0x41), false);
    stream.unpublish();
    stream.publish(SDP);
    stream.ingest(0, rtp(5, 777, 0x67), false);
    const seqs = reader.got.map(seqOf);
    expect((seqs[2]! - seqs[1]!) & 0xffff).toBe(1);
    const ssrcs = new Set(reader.got.map((b) => b.readUInt32BE(4 + 8)));
    expect(ssrcs.size).toBe(1);
    const ts = reader.got.map((b) => b.readUInt32BE(4 + 4));
    expect((ts[2]! - ts[1]!) >>> 0).toBe(3000);
  });

  test("a reader's first packet carries the seq and rtptime its RTP-Info announced; sender reports follow the shift", () => {
    const stream = createStream("/s", serviceLogger("t", "rtsp"));
    stream.publish(SDP);
    stream.ingest(0, rtp(10, 90_000, 0x67), false);
    stream.ingest(0, rtp(11, 93_000, 0x41), false);
    const reader = fakeReader("late");
    const handle = stream.addReader(reader);
    const start = handle.rtpInfo[0]!;
    stream.ingest(0, rtp(12, 96_000, 0x41), false); // not a key frame: skipped
    stream.ingest(0, rtp(13, 99_000, 0x67), false);
    stream.ingest(0, rtp(14, 102_000, 0x41), false);
    expect(reader.got.map(seqOf)).toEqual([start.seq, (start.seq + 1) & 0xffff]);
    const ts = reader.got.map((b) => b.readUInt32BE(4 + 4));
    expect(ts[0]).toBe(start.rtptime);
    expect((ts[1]! - ts[0]!) >>> 0).toBe(3_000);
    // A sender report for RTP time 102000 reaches the reader on its RTCP channel with the reader's rtptime.
    const report = Buffer.alloc(28);
    report[0] = 0x80;
    report[1] = 200;
    report.writeUInt16BE(6, 2);
    report.writeUInt32BE(102_000, 16);
    stream.ingest(0, report, true);
    const sr = reader.got[2]!;
    expect(sr[1]).toBe(1);
    expect(sr.readUInt32BE(4 + 16)).toBe(ts[1]!);
  });

  test("a reader whose write throws is ended alone; the readers after it keep receiving", () => {
    const stream = createStream("/s", serviceLogger("t", "rtsp"));
    stream.publish(SDP);
    const ended: string[] = [];
    const broken: StreamReader = {
      label: "broken", channels: [[0, 1]], backlog: () => 0, ended: (why) => ended.push(why),
      write: () => {
        throw new Error("socket gone");
      },
    };
    const before = fakeReader("before");
    const after = fakeReader("after");
    stream.addReader(before);
    stream.addReader(broken);
    stream.addReader(after);
    stream.ingest(0, rtp(1, 0, 0x67), false);
    stream.ingest(0, rtp(2, 3000, 0x41), false);
    expect(before.got).toHaveLength(2);
    expect(after.got).toHaveLength(2);
    expect(ended).toEqual(["write failed: socket gone"]);
    expect(stream.readers).toBe(2);
  });
});
