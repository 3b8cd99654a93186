// One published stream (e.g. /streaming/live/1): the producer's (FFmpeg's) SDP and RTP, fanned out to many
// readers through the stream core (core/stream.ts), each reader a consumer with the skip-to-key-frame policy: a new
// reader starts at the next H.264 key frame (SPS/PPS are in the SDP), a reader whose socket is backed up drops
// packets up to the next key frame instead of delaying others.
// RTP sequence numbers, timestamps and SSRC are rewritten to run on across publisher restarts, so readers
// stay connected when FFmpeg is restarted. Each reader's numbering is shifted so that its first packet carries
// exactly the seq/rtptime its PLAY reply announced in RTP-Info (as live555 does). Readers share each packet's
// bytes: only the 16 bytes before the payload (the `$` frame header and the 12-byte RTP header, where the shift
// is) are the reader's own, handed to `writeFrame` with the shared rest.
import type { Logger } from "../log.ts";
import { createStream as createFanout, type Consumer, type Stream as Fanout } from "../core/stream.ts";
import { encodeFrame } from "./message.ts";
import {
  createTrackNumbering, nextStart, readerSdp, renumber, rtpPayloadOffset, senderReportTs, startsKeyFrame,
  type RtpStart, type StreamTrack, type TrackNumbering,
} from "./rtp.ts";

export { DROP_REPORT_INTERVAL_MS } from "../core/stream.ts";
export { startsKeyFrame, type RtpStart, type StreamTrack } from "./rtp.ts";

/** A reader whose socket holds more than this many unsent bytes skips to the next key frame. */
export const MAX_READER_BACKLOG_BYTES = 1024 * 1024;
/** A reader's own bytes of each packet: the `$` frame header (4) and the RTP fixed header (12). */
export const RTP_HEAD_BYTES = 16;
const NO_REST = Buffer.alloc(0);

export interface StreamReader {
  label: string;
  /** Interleaved channel pair (rtp, rtcp) per track index; undefined for tracks the reader did not set up. */
  channels: ([number, number] | undefined)[];
  /** Bytes queued on the reader's socket and not yet sent. */
  backlog(): number;
  write(bytes: Buffer): void;
  /**
   * One interleaved frame in two parts, to be sent in this order: `head` (the 4-byte `$` frame header and the
   * reader's own bytes: an RTP packet's 12-byte header, or a whole sender report; fresh for each call, the reader's
   * to keep) and `rest` (an RTP packet after its fixed header, shared by every reader: never change it; empty for a
   * sender report). A reader without it gets `write` with the parts joined (a copy per reader). TCP/TLS readers:
   * lib/rtsp/frame-writer.ts; UDP: one datagram of both parts (lib/rtsp/udp.ts).
   */
  writeFrame?(head: Buffer, rest: Buffer): void;
  /** The stream stopped writing to this reader because its write threw (optional). */
  ended?(reason: string): void;
}

export interface ReaderHandle {
  detach(): void;
  /** Per track index (undefined for tracks the reader did not set up): its first packet's seq and rtptime. */
  readonly rtpInfo: readonly (RtpStart | undefined)[];
  readonly delivered: number;
  readonly dropped: number;
}

export interface Stream {
  readonly path: string;
  /** The publisher started recording with this SDP. */
  publish(sdp: string): void;
  unpublish(): void;
  readonly live: boolean;
  /** SDP for readers (session part + media with our controls); undefined while nobody publishes. */
  sdp(): string | undefined;
  readonly tracks: readonly StreamTrack[];
  /** An RTP (`rtcp` false) or RTCP packet from the publisher for track `index`. */
  ingest(index: number, packet: Buffer, rtcp: boolean): void;
  addReader(reader: StreamReader): ReaderHandle;
  readonly readers: number;
  /** Resolves once the stream is live, or rejects after `timeoutMs` or when `failWaiters` is called. */
  whenLive(timeoutMs: number): Promise<void>;
  /** The publisher could not start (e.g. the printer refused the login): waiting readers hear it now. */
  failWaiters(reason: string): void;
  /** Ask for a publisher (FFmpeg starts on demand); call the returned function when done. */
  claim(): () => void;
  setDemand(demand: (() => () => void) | undefined): void;
  /** performance.now() of the last RTP packet received, 0 before any. */
  readonly lastPacketAt: number;
  readonly packetsIn: number;
  /** Called for every RTP packet as it arrives (benchmarks, frame taps), with the rewritten header. */
  onPacket(listener: (index: number, packet: Buffer) => void): () => void;
}

/** A reader's numbering relative to the stream's on one track, fixed by its first packet. */
interface ReaderShift {
  seq: number;
  ts: number;
}

/** One RTP packet as the fan-out carries it: numbering already rewritten, key frame already decided. */
interface RtpPacket {
  index: number;
  packet: Buffer;
  /** The packet after its 12-byte fixed header (CSRCs, extension, payload): the bytes every reader shares. */
  rest: Buffer;
  seq: number;
  ts: number;
  key: boolean;
  /** Whole interleaved frames per channel, encoded once for the `write`-only readers whose numbering is not shifted. */
  framed: Map<number, Buffer> | undefined;
}

interface ReaderState {
  reader: StreamReader;
  consumer: Consumer<RtpPacket>;
  start: (RtpStart | undefined)[];
  shift: (ReaderShift | undefined)[];
}

/** The `$` frame header and the reader's own RTP header (its numbering shift applied) for one packet. */
function frameHead(channel: number, p: RtpPacket, shift: ReaderShift): Buffer {
  const head = Buffer.allocUnsafe(RTP_HEAD_BYTES);
  head[0] = 0x24;
  head[1] = channel;
  head.writeUInt16BE(p.packet.length, 2);
  p.packet.copy(head, 4, 0, 12);
  head.writeUInt16BE((p.seq + shift.seq) & 0xffff, 4 + 2);
  head.writeUInt32BE((p.ts + shift.ts) >>> 0, 4 + 4);
  return head;
}

/** What one reader does with a packet: its own numbering shift (fixed by its first packet), then the interleaved frame. */
function writePacket(r: ReaderState, p: RtpPacket): void {
  const channel = r.reader.channels[p.index]![0];
  let shift = r.shift[p.index];
  if (!shift) {
    const start = r.start[p.index] ?? { seq: p.seq, rtptime: p.ts };
    shift = r.shift[p.index] = { seq: (start.seq - p.seq) & 0xffff, ts: (start.rtptime - p.ts) >>> 0 };
  }
  if (r.reader.writeFrame) return r.reader.writeFrame(frameHead(channel, p, shift), p.rest);
  if (shift.seq === 0 && shift.ts === 0) {
    p.framed ??= new Map();
    let bytes = p.framed.get(channel);
    if (!bytes) p.framed.set(channel, (bytes = encodeFrame(channel, p.packet)));
    r.reader.write(bytes);
    return;
  }
  r.reader.write(Buffer.concat([frameHead(channel, p, shift), p.rest], RTP_HEAD_BYTES + p.rest.length));
}

/** A sender report (already on our SSRC, `ts` on our timestamp line) to every reader of the track, on its shift. */
function forwardSenderReport(readers: Iterable<ReaderState>, index: number, packet: Buffer, ts: number): void {
  for (const r of readers) {
    const channels = r.reader.channels[index];
    const shift = r.shift[index];
    if (!channels || !shift || r.consumer.waitingForKey) continue;
    const framed = encodeFrame(channels[1], packet);
    framed.writeUInt32BE((ts + shift.ts) >>> 0, 4 + 16);
    // Through writeFrame too when the reader has it, so it keeps its place among the RTP frames.
    if (r.reader.writeFrame) r.reader.writeFrame(framed, NO_REST);
    else r.reader.write(framed);
  }
}

/** Resolves once a producer publishes (its waiter woken without a failure); rejects on a failure or after `timeoutMs`. */
function waitUntilLive(waiters: Set<(failure?: string) => void>, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const wake = (failure?: string) => {
      clearTimeout(timer);
      waiters.delete(wake);
      if (failure) reject(new Error(failure));
      else resolve();
    };
    const timer = setTimeout(() => {
      waiters.delete(wake);
      reject(new Error(`no video within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    waiters.add(wake);
  });
}

/** The reader as a consumer of the fan-out: skip to the next key frame, over its backlog budget too. */
function readerConsumer(
  fanout: Fanout<RtpPacket>, reader: StreamReader, write: (p: RtpPacket) => void, ended: () => void,
): Consumer<RtpPacket> {
  return fanout.addConsumer({
    label: reader.label,
    policy: { kind: "key-frame", isKey: (p) => p.key },
    budget: { bytes: MAX_READER_BACKLOG_BYTES },
    waitingBytes: () => reader.backlog(),
    // Tracks the reader did not set up are not its packets (nor its drops).
    accepts: (p) => reader.channels[p.index] !== undefined,
    write,
    onEnd: (why) => {
      ended();
      reader.ended?.(why);
    },
  });
}

export function createStream(path: string, log: Logger): Stream {
  let sessionLines: string[] = [];
  let tracks: StreamTrack[] = [];
  let live = false;
  let lastPacketAt = 0;
  let packetsIn = 0;
  let demand: (() => () => void) | undefined;
  const state: TrackNumbering[] = [];
  const readers = new Set<ReaderState>();
  const waiters = new Set<(failure?: string) => void>();
  const listeners = new Set<(index: number, packet: Buffer) => void>();
  const fanout = createFanout<RtpPacket>({ log, what: "packets up to the next key frame" });

  const trackState = (index: number): TrackNumbering => (state[index] ??= createTrackNumbering());

  const stream: Stream = {
    path,
    publish(sdp) {
      ({ sessionLines, tracks } = readerSdp(sdp));
      for (let i = 0; i < tracks.length; i++) trackState(i).firstOfPublisher = true;
      fanout.awaitKeyFrame();
      live = true;
      for (const wake of [...waiters]) wake();
    },
    unpublish() {
      live = false;
    },
    get live() {
      return live;
    },
    sdp() {
      if (!live) return undefined;
      const session = sessionLines.length ? sessionLines : ["v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=pandaproxy", "t=0 0"];
      return [...session, "a=control:*", ...tracks.map((t) => t.media)].join("\r\n") + "\r\n";
    },
    get tracks() {
      return tracks;
    },
    ingest(index, packet, rtcp) {
      const track = tracks[index];
      if (!track) return;
      const s = trackState(index);
      if (rtcp) {
        // Only sender reports, rewritten to our SSRC and timestamp line; readers need nothing else from us.
        const ts = senderReportTs(s, packet);
        if (ts !== undefined) forwardSenderReport(readers, index, packet, ts);
        return;
      }
      const payloadAt = rtpPayloadOffset(packet);
      if (payloadAt < 0) return;
      lastPacketAt = performance.now();
      renumber(s, packet, lastPacketAt);
      packetsIn++;
      const key = track.h264 ? startsKeyFrame(packet.subarray(payloadAt), s.endedFrame) : true;
      s.endedFrame = (packet[1]! & 0x80) !== 0;
      for (const listener of listeners) listener(index, packet);
      fanout.publish({ index, packet, rest: packet.subarray(12), seq: s.lastOutSeq, ts: s.lastOutTs, key, framed: undefined });
    },
    addReader(reader) {
      // The next packet on the stream and the RTP clock now: what a live555 reader would get next.
      const start = reader.channels.map((channels, index) => {
        const track = tracks[index];
        return channels && track ? nextStart(trackState(index), track.clockRate, performance.now()) : undefined;
      });
      const consumer = readerConsumer(fanout, reader, (p) => writePacket(r, p), () => readers.delete(r));
      const r: ReaderState = { reader, start, shift: [], consumer };
      readers.add(r);
      return {
        detach() {
          if (!readers.delete(r)) return;
          r.consumer.remove();
        },
        rtpInfo: start,
        get delivered() {
          return r.consumer.delivered;
        },
        get dropped() {
          return r.consumer.dropped;
        },
      };
    },
    get readers() {
      return readers.size;
    },
    whenLive: (timeoutMs) => (live ? Promise.resolve() : waitUntilLive(waiters, timeoutMs)),
    failWaiters(reason) {
      for (const wake of [...waiters]) wake(reason);
    },
    claim() {
      return demand ? demand() : () => {};
    },
    setDemand(next) {
      demand = next;
    },
    get lastPacketAt() {
      return lastPacketAt;
    },
    get packetsIn() {
      return packetsIn;
    },
    onPacket(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  return stream;
}
