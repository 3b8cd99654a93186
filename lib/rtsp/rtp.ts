// RTP and SDP helpers for the RTSP stream: where an RTP packet's payload starts, whether an H.264 payload starts a
// key frame (RFC 6184), an SDP split into its session part and media sections, and one track's outgoing numbering
// (our SSRC; seq and timestamps that run on across producer restarts). No sockets.
import { randomBytes } from "node:crypto";

const DEFAULT_CLOCK_RATE = 90_000;
/** RTP clock ticks (90 kHz) inserted between the last packet of one producer and the first of the next. */
const REPUBLISH_GAP_TICKS = 3_000;

/** Where a reader's numbering starts on one track: the RTP-Info `seq` and `rtptime` of its first packet. */
export interface RtpStart {
  seq: number;
  rtptime: number;
}

export interface StreamTrack {
  /** The media section of the SDP, with our own `a=control:trackN`. */
  media: string;
  control: string;
  h264: boolean;
  /** RTP clock rate from a=rtpmap (90000 for video). */
  clockRate: number;
}

/** Does this H.264 RTP payload (RFC 6184) start a key frame: SPS, an IDR slice, or an aggregate holding one? */
export function startsKeyFrame(payload: Buffer, previousEndedFrame: boolean): boolean {
  if (payload.length < 2) return false;
  const type = payload[0]! & 0x1f;
  if (type === 7) return true;
  if (type === 5) return previousEndedFrame;
  if (type === 24) {
    for (let at = 1; at + 2 < payload.length;) {
      const size = payload.readUInt16BE(at);
      const nal = payload[at + 2]! & 0x1f;
      if (nal === 7 || nal === 5) return true;
      at += 2 + size;
    }
    return false;
  }
  if (type === 28) return previousEndedFrame && (payload[1]! & 0x80) !== 0 && (payload[1]! & 0x1f) === 5;
  return false;
}

/** RTP payload offset (after CSRCs and the extension header), or -1 for a malformed packet. */
export function rtpPayloadOffset(packet: Buffer): number {
  if (packet.length < 12 || packet[0]! >> 6 !== 2) return -1;
  let at = 12 + (packet[0]! & 0x0f) * 4;
  if (packet[0]! & 0x10) {
    if (packet.length < at + 4) return -1;
    at += 4 + packet.readUInt16BE(at + 2) * 4;
  }
  return at <= packet.length ? at : -1;
}

/** Splits an SDP into its session part and media sections. */
export function splitSdp(sdp: string): { session: string[]; media: string[][] } {
  const lines = sdp.split(/\r?\n/).filter((l) => l.length > 0);
  const session: string[] = [];
  const media: string[][] = [];
  for (const line of lines) {
    if (line.startsWith("m=")) media.push([line]);
    else if (media.length) media[media.length - 1]!.push(line);
    else session.push(line);
  }
  return { session, media };
}

/** The producer's SDP as readers get it: session lines without control and range, each media section with our control. */
export function readerSdp(sdp: string): { sessionLines: string[]; tracks: StreamTrack[] } {
  const parts = splitSdp(sdp);
  const sessionLines = parts.session.filter((l) => !l.startsWith("a=control:") && !l.startsWith("a=range:"));
  const tracks = parts.media.map((lines, i) => {
    const control = `track${i + 1}`;
    const kept = lines.filter((l) => !l.startsWith("a=control:"));
    const rate = lines.map((l) => /^a=rtpmap:\d+ [^/]+\/(\d+)/i.exec(l)?.[1]).find(Boolean);
    return {
      media: [...kept, `a=control:${control}`].join("\r\n"),
      control,
      h264: lines.some((l) => /^a=rtpmap:\d+ H264\//i.test(l)),
      clockRate: rate ? Number(rate) : DEFAULT_CLOCK_RATE,
    };
  });
  return { sessionLines, tracks };
}

/** One track's outgoing numbering: our SSRC, and offsets that make seq and timestamps run on across producers. */
export interface TrackNumbering {
  ssrc: number;
  seqOffset: number;
  tsOffset: number;
  firstOfPublisher: boolean;
  /** -1 before the first packet. */
  lastOutSeq: number;
  lastOutTs: number;
  /** performance.now() when lastOutTs went out, to estimate the RTP clock now. */
  lastOutAt: number;
  /** The last packet ended a frame (its marker bit): the next one may start a key frame. */
  endedFrame: boolean;
}

export const createTrackNumbering = (): TrackNumbering => ({
  ssrc: randomBytes(4).readUInt32BE(0), seqOffset: 0, tsOffset: 0, firstOfPublisher: true, lastOutSeq: -1, lastOutTs: 0,
  lastOutAt: 0, endedFrame: true,
});

/** Rewrites an RTP packet's seq, timestamp and SSRC in place onto the track's numbering (`at`: performance.now()). */
export function renumber(s: TrackNumbering, packet: Buffer, at: number): void {
  const seq = packet.readUInt16BE(2);
  const ts = packet.readUInt32BE(4);
  if (s.firstOfPublisher) {
    s.firstOfPublisher = false;
    const nextSeq = s.lastOutSeq < 0 ? randomBytes(2).readUInt16BE(0) : s.lastOutSeq + 1;
    s.seqOffset = (nextSeq - seq) & 0xffff;
    const nextTs = s.lastOutSeq < 0 ? randomBytes(4).readUInt32BE(0) : s.lastOutTs + REPUBLISH_GAP_TICKS;
    s.tsOffset = (nextTs - ts) >>> 0;
    s.endedFrame = true;
  }
  const outSeq = (seq + s.seqOffset) & 0xffff;
  const outTs = (ts + s.tsOffset) >>> 0;
  packet.writeUInt16BE(outSeq, 2);
  packet.writeUInt32BE(outTs, 4);
  packet.writeUInt32BE(s.ssrc, 8);
  s.lastOutSeq = outSeq;
  s.lastOutTs = outTs;
  s.lastOutAt = at;
}

/** A sender report rewritten in place to our SSRC; its timestamp on our line, or undefined for anything else. */
export function senderReportTs(s: TrackNumbering, packet: Buffer): number | undefined {
  if (packet.length < 28 || packet[1] !== 200 || s.lastOutSeq < 0) return undefined;
  packet.writeUInt32BE(s.ssrc, 4);
  return (packet.readUInt32BE(16) + s.tsOffset) >>> 0;
}

/** The next packet on the track and its RTP clock now (`at`: performance.now()): what a live555 reader gets next. */
export function nextStart(s: TrackNumbering, clockRate: number, at: number): RtpStart {
  if (s.lastOutSeq < 0) return { seq: randomBytes(2).readUInt16BE(0), rtptime: randomBytes(4).readUInt32BE(0) };
  const elapsed = Math.max(0, at - s.lastOutAt);
  return { seq: (s.lastOutSeq + 1) & 0xffff, rtptime: (s.lastOutTs + Math.round((elapsed / 1000) * clockRate)) >>> 0 };
}
