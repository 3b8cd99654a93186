// Pure RTP and SDP helpers for the RTSP stream: where an RTP packet's payload starts, whether an H.264 payload
// starts a key frame (RFC 6184), and an SDP split into its session part and media sections. No state, no sockets.

const DEFAULT_CLOCK_RATE = 90_000;

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

/** The producer's SDP as readers get it: the session lines without control/range, each media section with our own control. */
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
