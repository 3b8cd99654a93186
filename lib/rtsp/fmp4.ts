// Fragmented MP4 as FFmpeg writes it (`-movflags empty_moov+default_base_moof+frag_keyframe`): a box splitter for
// its stdout, and the keeper of what a new viewer needs: the init segment (ftyp + moov) and the fragments (moof +
// mdat) since the last key frame. A fragment starts at a key frame when its first sample is a sync sample: the
// sample flags in trun (first_sample_flags, or the first sample's own flags) or tfhd (default_sample_flags). No
// decoding, no sockets.

/** A box larger than this is not video from our FFmpeg: we lost sync with its output (restart it). */
export const MAX_BOX_BYTES = 16 * 1024 * 1024;
/** The fragments kept since the last key frame stop growing here (a printer with very long key-frame gaps). */
export const MAX_GOP_BYTES = 24 * 1024 * 1024;

export interface Box {
  type: string;
  /** The whole box, header included. */
  bytes: Buffer;
}

/** One moof + mdat pair, as a new viewer or a live one gets it. */
export interface Fragment {
  bytes: Buffer;
  /** Its first sample is a sync sample: a decoder may start here. */
  key: boolean;
}

/** Feed it the stream's chunks in order. */
export interface BoxSplitter {
  (chunk: Buffer): void;
  /** Bytes waiting for the rest of a box. */
  readonly buffered: number;
}

/**
 * Cuts a byte stream into top-level boxes (32-bit sizes, 64-bit `largesize`). A box over `maxBytes`, a size
 * below its header, or size 0 ("to the end of the file", which a live stream never has) calls `onLostSync`
 * and drops the buffer; the caller restarts the producer.
 */
export function createBoxSplitter(onBox: (box: Box) => void, onLostSync: (why: string) => void, maxBytes = MAX_BOX_BYTES): BoxSplitter {
  let pending: Buffer = Buffer.alloc(0);
  let lost = false;
  const split = (chunk: Buffer) => {
    if (lost) return;
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    for (;;) {
      if (pending.length - at < 8) break;
      let size = pending.readUInt32BE(at);
      let header = 8;
      if (size === 1) {
        if (pending.length - at < 16) break;
        const big = pending.readBigUInt64BE(at + 8);
        size = big > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(big);
        header = 16;
      }
      const type = pending.toString("latin1", at + 4, at + 8);
      if (size < header || size > maxBytes) {
        lost = true;
        pending = Buffer.alloc(0);
        onLostSync(size < header ? `a "${printable(type)}" box of ${size} bytes` : `a "${printable(type)}" box of ${size} bytes (more than ${maxBytes})`);
        return;
      }
      if (pending.length - at < size) break;
      onBox({ type, bytes: Buffer.from(pending.subarray(at, at + size)) });
      at += size;
    }
    pending = at === 0 ? pending : pending.subarray(at);
  };
  return Object.defineProperty(split, "buffered", { get: () => pending.length }) as BoxSplitter;
}

const printable = (type: string) => type.replace(/[^\x20-\x7e]/g, "?");

/** The child boxes inside `bytes[from, to)`; stops at the first malformed one. */
function* children(bytes: Buffer, from: number, to: number): Generator<{ type: string; start: number; end: number; body: number }> {
  let at = from;
  while (at + 8 <= to) {
    let size = bytes.readUInt32BE(at);
    let body = at + 8;
    if (size === 1) {
      if (at + 16 > to) return;
      size = Number(bytes.readBigUInt64BE(at + 8));
      body = at + 16;
    } else if (size === 0) size = to - at;
    if (size < body - at || at + size > to) return;
    yield { type: bytes.toString("latin1", at + 4, at + 8), start: at, end: at + size, body };
    at += size;
  }
}

const SAMPLE_IS_NON_SYNC = 0x0001_0000;
const TFHD_BASE_DATA_OFFSET = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX = 0x02;
const TFHD_DEFAULT_DURATION = 0x08;
const TFHD_DEFAULT_SIZE = 0x10;
const TFHD_DEFAULT_FLAGS = 0x20;
const TRUN_DATA_OFFSET = 0x01;
const TRUN_FIRST_SAMPLE_FLAGS = 0x04;
const TRUN_SAMPLE_DURATION = 0x100;
const TRUN_SAMPLE_SIZE = 0x200;
const TRUN_SAMPLE_FLAGS = 0x400;

/**
 * Whether a moof's first sample (of its first track run) is a sync sample; undefined when the flags are not in
 * the moof (they would be in the moov's trex, which our FFmpeg never leaves them to).
 */
export function moofStartsWithKey(moof: Buffer): boolean | undefined {
  for (const traf of children(moof, 8, moof.length)) {
    if (traf.type !== "traf") continue;
    let defaultFlags: number | undefined;
    for (const box of children(moof, traf.body, traf.end)) {
      if (box.type === "tfhd" && box.body + 8 <= box.end) {
        const flags = moof.readUInt32BE(box.body) & 0xffffff;
        let at = box.body + 8; // version/flags, track_ID
        if (flags & TFHD_BASE_DATA_OFFSET) at += 8;
        if (flags & TFHD_SAMPLE_DESCRIPTION_INDEX) at += 4;
        if (flags & TFHD_DEFAULT_DURATION) at += 4;
        if (flags & TFHD_DEFAULT_SIZE) at += 4;
        if (flags & TFHD_DEFAULT_FLAGS && at + 4 <= box.end) defaultFlags = moof.readUInt32BE(at);
      } else if (box.type === "trun" && box.body + 8 <= box.end) {
        const flags = moof.readUInt32BE(box.body) & 0xffffff;
        const samples = moof.readUInt32BE(box.body + 4);
        let at = box.body + 8;
        if (flags & TRUN_DATA_OFFSET) at += 4;
        let sampleFlags: number | undefined;
        if (flags & TRUN_FIRST_SAMPLE_FLAGS) {
          if (at + 4 > box.end) return undefined;
          sampleFlags = moof.readUInt32BE(at);
        } else if (flags & TRUN_SAMPLE_FLAGS && samples > 0) {
          if (flags & TRUN_SAMPLE_DURATION) at += 4;
          if (flags & TRUN_SAMPLE_SIZE) at += 4;
          if (at + 4 > box.end) return undefined;
          sampleFlags = moof.readUInt32BE(at);
        } else sampleFlags = defaultFlags;
        return sampleFlags === undefined ? undefined : (sampleFlags & SAMPLE_IS_NON_SYNC) === 0;
      }
    }
  }
  return undefined;
}

/** The RFC 6381 codec string of the moov's H.264 track ("avc1.640028"), from its avcC box; undefined without one. */
export function codecOf(moov: Buffer): string | undefined {
  const at = moov.indexOf("avcC", 0, "latin1");
  if (at < 0 || at + 8 > moov.length || moov[at + 4] !== 1) return undefined;
  return `avc1.${moov.subarray(at + 5, at + 8).toString("hex")}`;
}

export interface Fmp4Keeper {
  /** Feed it the boxes in order. Returns the finished fragment when this box completed one. */
  add(box: Box): Fragment | undefined;
  /** ftyp + moov, once both came. */
  readonly init: Buffer | undefined;
  readonly codec: string | undefined;
  /** The fragments since the last key frame, the first one a key fragment (empty before the first key frame). */
  readonly sinceKey: readonly Fragment[];
}

/** Keeps the init segment and the fragments since the last key frame; pairs each moof with the mdat after it. */
export function createFmp4Keeper(maxGopBytes = MAX_GOP_BYTES): Fmp4Keeper {
  let ftyp: Buffer | undefined;
  let init: Buffer | undefined;
  let codec: string | undefined;
  let moof: { bytes: Buffer; key: boolean } | undefined;
  let sinceKey: Fragment[] = [];
  let gopBytes = 0;
  return {
    add(box) {
      switch (box.type) {
        case "ftyp":
          ftyp = box.bytes;
          init = undefined;
          sinceKey = [];
          gopBytes = 0;
          return undefined;
        case "moov":
          init = ftyp ? Buffer.concat([ftyp, box.bytes]) : box.bytes;
          codec = codecOf(box.bytes);
          return undefined;
        case "moof":
          moof = { bytes: box.bytes, key: moofStartsWithKey(box.bytes) ?? false };
          return undefined;
        case "mdat": {
          if (!moof || !init) return undefined;
          const fragment: Fragment = { bytes: Buffer.concat([moof.bytes, box.bytes]), key: moof.key };
          moof = undefined;
          if (fragment.key) {
            sinceKey = [fragment];
            gopBytes = fragment.bytes.length;
          } else if (sinceKey.length && gopBytes + fragment.bytes.length <= maxGopBytes) {
            sinceKey.push(fragment);
            gopBytes += fragment.bytes.length;
          } else {
            // Too long since the key frame to keep it all: new viewers wait for the next one.
            sinceKey = [];
            gopBytes = 0;
          }
          return fragment;
        }
        default:
          return undefined; // styp, sidx, mfra (at FFmpeg's exit): nothing a live viewer needs
      }
    },
    get init() {
      return init;
    },
    get codec() {
      return codec;
    },
    get sinceKey() {
      return sinceKey;
    },
  };
}
