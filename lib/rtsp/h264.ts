// H.264 out of RTP (RFC 6184): single NAL unit packets, STAP-A aggregates and FU-A fragments are put back into
// access units (one RTP timestamp; the marker bit ends one), and the latest access unit holding an IDR slice is
// kept as Annex B with the SPS and PPS in front (from the stream, or the SDP's sprop-parameter-sets): everything a
// decoder needs for one picture, so a snapshot decodes one frame instead of running a decoder all the time.
import { rtpPayloadOffset } from "./rtp.ts";

/** An access unit larger than this is not a camera picture: it is dropped (and the next one awaited). */
export const MAX_ACCESS_UNIT_BYTES = 8 * 1024 * 1024;

const NAL_NON_IDR = 1;
const NAL_IDR = 5;
const NAL_SPS = 7;
const NAL_PPS = 8;
const NAL_AUD = 9;
const STAP_A = 24;
const FU_A = 28;
const START_CODE = Buffer.from([0, 0, 0, 1]);

export interface KeyFrame {
  /** SPS, PPS and the access unit's NAL units, each after a start code. */
  annexB: Buffer;
  /** Date.now() when its last packet arrived. */
  receivedAt: number;
  /** Counts key frames from 1: a new number is a new picture. */
  id: number;
}

export interface KeyFrameKeeper {
  /** One RTP packet of the H.264 track, in order. */
  push(packet: Buffer): void;
  /** The SDP's media section for the track (its sprop-parameter-sets stand in until the stream sends SPS/PPS). */
  setSdp(media: string | undefined): void;
  latest(): KeyFrame | undefined;
  /** Called with each new key frame; returns the unsubscribe function. */
  onKeyFrame(listener: (frame: KeyFrame) => void): () => void;
  /** Called when the stream's SPS changed (a new picture size or profile; the new one sent at two key frames in a
   * row): what was made from the old one (an MP4 init segment) no longer fits. Returns the unsubscribe function. */
  onParametersChange(listener: () => void): () => void;
  /** SPS changes seen so far. */
  readonly parameterChanges: number;
  /** The producer restarted: forget the access unit in progress (not the latest key frame). */
  reset(): void;
  /** Key frames completed so far. */
  readonly keyFrames: number;
  /** Bytes held for the access unit in progress (its NAL units and FU-A pieces). */
  readonly buffered: number;
}

/** SPS and PPS from an SDP media section's `sprop-parameter-sets`. */
export function spropParameterSets(media: string): { sps?: Buffer; pps?: Buffer } {
  const found = /sprop-parameter-sets=([A-Za-z0-9+/=,]+)/.exec(media)?.[1];
  const out: { sps?: Buffer; pps?: Buffer } = {};
  for (const part of found?.split(",") ?? []) {
    const nal = Buffer.from(part, "base64");
    if (!nal.length) continue;
    if ((nal[0]! & 0x1f) === NAL_SPS) out.sps ??= nal;
    else if ((nal[0]! & 0x1f) === NAL_PPS) out.pps ??= nal;
  }
  return out;
}

export function createKeyFrameKeeper(maxBytes = MAX_ACCESS_UNIT_BYTES): KeyFrameKeeper {
  let sps: Buffer | undefined;
  let pps: Buffer | undefined;
  let sdpSps: Buffer | undefined;
  let sdpPps: Buffer | undefined;
  let latest: KeyFrame | undefined;
  let keyFrames = 0;
  let parameterChanges = 0;
  // The SPS the stream keeps sending, and one seen once since: a change counts when the new one comes again at the
  // next key frame, so an encoder whose SPS bytes differed every time (a counter, say) would not count at all.
  let settledSps: Buffer | undefined;
  let newSps: Buffer | undefined;
  const settleSps = (seen: Buffer) => {
    if (!settledSps || settledSps.equals(seen)) {
      settledSps ??= seen;
      newSps = undefined;
    } else if (newSps?.equals(seen)) {
      settledSps = seen;
      newSps = undefined;
      parameterChanges++;
      for (const listener of [...changeListeners]) listener();
    } else newSps = seen;
  };
  const listeners = new Set<(frame: KeyFrame) => void>();
  const changeListeners = new Set<() => void>();

  // The access unit being put together.
  let nals: Buffer[] = [];
  let bytes = 0;
  let timestamp: number | undefined;
  let broken = false;
  /** The unit's first slice is not an IDR: nothing of it is kept (most units; no copying for them). */
  let skipping = false;
  let lastSeq: number | undefined;
  /** FU-A pieces of the NAL unit being reassembled. */
  let fragments: Buffer[] | undefined;
  let fragmentBytes = 0;

  const startUnit = (ts: number | undefined) => {
    nals = [];
    bytes = 0;
    timestamp = ts;
    broken = false;
    skipping = false;
    fragments = undefined;
    fragmentBytes = 0;
  };

  /** `owned`: the bytes are ours already (reassembled); else they are copied out of the packet. */
  const addNal = (nal: Buffer, owned = false) => {
    if (!nal.length || skipping) return;
    const type = nal[0]! & 0x1f;
    if (type === NAL_NON_IDR && !nals.some((n) => (n[0]! & 0x1f) === NAL_IDR)) {
      skipping = true;
      nals = [];
      return;
    }
    bytes += nal.length + START_CODE.length;
    if (bytes > maxBytes) broken = true;
    if (broken) return;
    const copy = owned ? nal : Buffer.from(nal);
    if (type === NAL_SPS) {
      sps = copy;
      settleSps(copy);
    } else if (type === NAL_PPS) pps = copy;
    nals.push(copy);
  };

  const finishUnit = (at: number) => {
    const unit = nals;
    const usable = !broken && !skipping && !fragments && unit.some((n) => (n[0]! & 0x1f) === NAL_IDR);
    startUnit(undefined);
    if (!usable) return;
    const ownSps = unit.some((n) => (n[0]! & 0x1f) === NAL_SPS);
    const ownPps = unit.some((n) => (n[0]! & 0x1f) === NAL_PPS);
    const head: Buffer[] = [];
    const useSps = sps ?? sdpSps;
    const usePps = pps ?? sdpPps;
    if (!ownSps) {
      if (!useSps) return; // no decoder could start here
      head.push(useSps);
    }
    if (!ownPps) {
      if (!usePps) return;
      head.push(usePps);
    }
    const parts: Buffer[] = [];
    let size = 0;
    for (const nal of [...head, ...unit]) {
      if ((nal[0]! & 0x1f) === NAL_AUD) continue;
      parts.push(START_CODE, nal);
      size += START_CODE.length + nal.length;
    }
    if (size > maxBytes) return; // the unit fit, but not with the SPS and PPS it borrows
    latest = { annexB: Buffer.concat(parts), receivedAt: at, id: ++keyFrames };
    for (const l of [...listeners]) l(latest);
  };

  return {
    push(packet) {
      const at = rtpPayloadOffset(packet);
      if (at < 0) return;
      const seq = packet.readUInt16BE(2);
      // A packet without payload (padding only) still takes its place in the sequence: no gap after it.
      const gap = lastSeq !== undefined && seq !== ((lastSeq + 1) & 0xffff);
      lastSeq = seq;
      const ts = packet.readUInt32BE(4);
      const marker = (packet[1]! & 0x80) !== 0;
      // Padding (RFC 3550): the last byte says how much of the end is not payload.
      const end = packet[0]! & 0x20 ? packet.length - packet[packet.length - 1]! : packet.length;
      if (timestamp !== undefined && ts !== timestamp) finishUnit(Date.now());
      if (timestamp === undefined) startUnit(ts);
      if (gap) broken = true; // a packet of this unit is missing
      if (end <= at) {
        if (marker) finishUnit(Date.now());
        return;
      }
      const payload = packet.subarray(at, end);
      const type = payload[0]! & 0x1f;
      if (type >= 1 && type <= 23) addNal(payload);
      else if (type === STAP_A) {
        for (let i = 1; i + 2 <= payload.length;) {
          const size = payload.readUInt16BE(i);
          if (i + 2 + size > payload.length) {
            broken = true;
            break;
          }
          addNal(payload.subarray(i + 2, i + 2 + size));
          i += 2 + size;
        }
      } else if (type === FU_A && payload.length >= 2) {
        const fu = payload[1]!;
        const start = (fu & 0x80) !== 0;
        const last = (fu & 0x40) !== 0;
        if (start) {
          if (fragments) broken = true; // the NAL unit before never ended
          const nalType = fu & 0x1f;
          if (nalType === NAL_NON_IDR && !nals.some((n) => (n[0]! & 0x1f) === NAL_IDR)) skipping = true;
          fragments = skipping ? undefined : [Buffer.from([(payload[0]! & 0xe0) | nalType])];
          fragmentBytes = 1;
        }
        if (skipping) {
          // not kept: a unit that starts with a non-IDR slice is no key frame
        } else if (!fragments) broken = true; // its start was lost
        else if (bytes + fragmentBytes + payload.length - 2 > maxBytes) {
          // a NAL unit too large for the access unit (or one whose end never comes): nothing more of it is held
          fragments = undefined;
          fragmentBytes = 0;
          broken = true;
        } else {
          fragmentBytes += payload.length - 2;
          fragments.push(Buffer.from(payload.subarray(2)));
          if (last) {
            const nal = Buffer.concat(fragments);
            fragments = undefined;
            fragmentBytes = 0;
            addNal(nal, true);
          }
        }
      } else broken = true; // STAP-B, MTAP, FU-B: not in packetization mode 1
      if (marker) finishUnit(Date.now());
    },
    setSdp(media) {
      const sets = media ? spropParameterSets(media) : {};
      sdpSps = sets.sps;
      sdpPps = sets.pps;
    },
    latest: () => latest,
    onKeyFrame(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    onParametersChange(listener) {
      changeListeners.add(listener);
      return () => changeListeners.delete(listener);
    },
    get parameterChanges() {
      return parameterChanges;
    },
    reset() {
      startUnit(undefined);
      lastSeq = undefined;
    },
    get keyFrames() {
      return keyFrames;
    },
    get buffered() {
      let held = fragmentBytes;
      for (const nal of nals) held += nal.length;
      return held;
    },
  };
}
