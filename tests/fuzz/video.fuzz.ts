// Fuzz targets for the video parsers: the H.264 RTP depacketizer and key-frame keeper (lib/rtsp/h264.ts), fed
// by the printer's RTP packets, and the fragmented-MP4 box splitter, moof/moov readers and keeper
// (lib/rtsp/fmp4.ts), fed by the remuxing FFmpeg's stdout.
import fc from "fast-check";
import { deepStrictEqual } from "node:assert";
import { createKeyFrameKeeper, spropParameterSets } from "../../lib/rtsp/h264.ts";
import { codecOf, createBoxSplitter, createFmp4Keeper, moofStartsWithKey, type Box } from "../../lib/rtsp/fmp4.ts";
import { bytes, chunked, cuts } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const fail = (why: string): never => {
  throw new Error(why);
};

// --- H.264 over RTP (RFC 6184) --------------------------------------------------------------------------------

/** A small access-unit limit, so the fuzzer reaches it with a few packets. */
const SMALL_UNIT_BYTES = 4_096;
/** The largest RTP packet a case sends (a UDP datagram or a `$` frame). */
const MAX_PACKET = 1_500;

const rtp = (seq: number, ts: number, marker: boolean, payload: Buffer): Buffer => {
  const header = Buffer.alloc(12);
  header[0] = 0x80;
  header[1] = (marker ? 0x80 : 0) | 96;
  header.writeUInt16BE(seq & 0xffff, 2);
  header.writeUInt32BE(ts >>> 0, 4);
  header.writeUInt32BE(0x1234_5678, 8);
  return Buffer.concat([header, payload]);
};

/** Payloads that look like RFC 6184's: a NAL header byte of each kind, then anything (lengths and FU headers included). */
const h264Payload = fc.oneof(
  bytes(MAX_PACKET - 12),
  fc.tuple(fc.constantFrom(1, 5, 6, 7, 8, 9, 24, 25, 28, 29, 30, 0), fc.integer({ min: 0, max: 255 }), bytes(MAX_PACKET - 14))
    .map(([type, second, rest]) => Buffer.concat([Buffer.from([0x60 | type, second]), rest])),
  // FU-A with the start, the end, neither or both, of an IDR or a non-IDR slice
  fc.tuple(fc.constantFrom(0x80, 0x40, 0x00, 0xc0), fc.constantFrom(1, 5, 7), bytes(MAX_PACKET - 14, 1_000))
    .map(([se, type, rest]) => Buffer.concat([Buffer.from([0x7c, se | type]), rest])),
);
type RtpStep = { kind: "packet"; ts: number; marker: boolean; seqGap: boolean; payload: Buffer } | { kind: "raw"; bytes: Buffer } | { kind: "reset" }
  | { kind: "fragments"; ts: number; type: number; count: number; end: boolean };
const rtpStep: fc.Arbitrary<RtpStep> = fc.oneof(
  // Mostly one timestamp and no marker: long units, where the limit is reached.
  { weight: 8, arbitrary: fc.record({ kind: fc.constant("packet" as const), ts: fc.constantFrom(0, 0, 0, 1, 2), marker: fc.constantFrom(false, false, false, true),
    seqGap: fc.constantFrom(false, false, false, true), payload: h264Payload }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("raw" as const), bytes: bytes(MAX_PACKET) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "reset" as const }) },
  // One NAL unit's FU-A run: a start, `count` middles, maybe its end (a huge slice, or one whose end never comes)
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("fragments" as const), ts: fc.constantFrom(0, 1), type: fc.constantFrom(1, 5, 7), count: fc.nat(12), end: fc.boolean() }) },
);

/** Any packet sequence: never a throw; the unit in progress and the kept key frame stay within the limit. */
const h264Packets: FuzzTarget = {
  name: "H.264 RTP packets, any sequence",
  property: () =>
    fc.property(fc.array(rtpStep, { maxLength: 40 }), fc.option(fc.string({ maxLength: 120 }), { nil: undefined }), (steps, sdp) => {
      const keeper = createKeyFrameKeeper(SMALL_UNIT_BYTES);
      keeper.setSdp(sdp);
      let seq = 0;
      for (const step of steps) {
        if (step.kind === "reset") keeper.reset();
        else if (step.kind === "raw") keeper.push(step.bytes);
        else if (step.kind === "fragments") {
          const piece = Buffer.alloc(MAX_PACKET - 14, 0x55);
          for (let i = 0; i <= step.count + (step.end ? 1 : 0); i++) {
            const se = i === 0 ? 0x80 : i > step.count ? 0x40 : 0;
            keeper.push(rtp(++seq, step.ts, false, Buffer.concat([Buffer.from([0x7c, se | step.type]), piece])));
            if (keeper.buffered > SMALL_UNIT_BYTES + MAX_PACKET) fail(`the keeper holds ${keeper.buffered} bytes of an unfinished unit (limit ${SMALL_UNIT_BYTES})`);
          }
        } else {
          seq += step.seqGap ? 2 : 1;
          keeper.push(rtp(seq, step.ts, step.marker, step.payload));
        }
        // One packet may come on top of a full unit before it is found too big; never more.
        if (keeper.buffered > SMALL_UNIT_BYTES + MAX_PACKET) fail(`the keeper holds ${keeper.buffered} bytes of an unfinished unit (limit ${SMALL_UNIT_BYTES})`);
        const kept = keeper.latest();
        if (kept && kept.annexB.length > SMALL_UNIT_BYTES) fail(`a kept key frame of ${kept.annexB.length} bytes (limit ${SMALL_UNIT_BYTES})`);
      }
    }),
};

/** A NAL unit of `type`: its header byte (forbidden bit clear, NRI 3) and a body. */
const nal = (type: number, maxBody: number) => bytes(maxBody, 1).map((body) => Buffer.concat([Buffer.from([0x60 | type]), body]));
/** An IDR access unit as a camera sends it: maybe an AUD, SPS, PPS, maybe SEI, one to three IDR slices. */
const idrUnit = fc
  .tuple(fc.boolean(), nal(7, 30), nal(8, 10), fc.option(nal(6, 40), { nil: undefined }), fc.array(nal(5, 5_000), { minLength: 1, maxLength: 3 }))
  .map(([aud, sps, pps, sei, slices]) => [...(aud ? [Buffer.from([0x09, 0xf0])] : []), sps, pps, ...(sei ? [sei] : []), ...slices]);

/** RTP payloads for `nals` (RFC 6184 mode 1): single NAL units, STAP-A of neighbours, FU-A cut at the given sizes. */
function packetize(nals: Buffer[], choices: number[], sizes: number[]): Buffer[] {
  const payloads: Buffer[] = [];
  let c = 0;
  const next = (n: number) => choices[c++ % Math.max(1, choices.length)]! % n;
  for (let i = 0; i < nals.length;) {
    const unit = nals[i]!;
    const how = next(3);
    if (how === 1 && i + 1 < nals.length) {
      // STAP-A of this one and the next one or two
      const count = Math.min(nals.length - i, 2 + next(2));
      const parts = nals.slice(i, i + count);
      if (parts.reduce((n, p) => n + 2 + p.length, 1) <= 0xffff) {
        const nri = Math.max(...parts.map((p) => p[0]! & 0x60));
        payloads.push(Buffer.concat([Buffer.from([nri | 24]), ...parts.flatMap((p) => [Buffer.from([p.length >> 8, p.length & 0xff]), p])]));
        i += count;
        continue;
      }
    }
    if (how === 2 && unit.length > 2) {
      const body = unit.subarray(1);
      const size = 1 + (sizes[c % Math.max(1, sizes.length)] ?? 1_000);
      for (let at = 0; at < body.length; at += size) {
        const se = (at === 0 ? 0x80 : 0) | (at + size >= body.length ? 0x40 : 0);
        payloads.push(Buffer.concat([Buffer.from([(unit[0]! & 0xe0) | 28, se | (unit[0]! & 0x1f)]), body.subarray(at, at + size)]));
      }
    } else payloads.push(unit);
    i++;
  }
  return payloads;
}

/** A valid packetization of a known IDR access unit gives back exactly its NAL units, in order, as Annex B. */
const h264AccessUnit: FuzzTarget = {
  name: "H.264 access unit, any valid packetization",
  property: () =>
    fc.property(
      idrUnit, fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 1_400 }), { minLength: 1, maxLength: 4 }),
      fc.array(h264Payload, { maxLength: 6 }), fc.nat(0xffff),
      (nals, choices, sizes, noise, firstSeq) => {
        const keeper = createKeyFrameKeeper();
        let seq = firstSeq;
        // Whatever came before (on other timestamps) must not spoil this unit.
        noise.forEach((payload, i) => keeper.push(rtp(seq++, 1_000 + i, false, payload)));
        keeper.push(rtp(seq++, 2_000, true, Buffer.from([0x09, 0xf0]))); // the noise's last unit ends (an AUD alone)
        const payloads = packetize(nals, choices, sizes);
        const before = keeper.keyFrames;
        payloads.forEach((payload, i) => keeper.push(rtp(seq++, 90_000, i === payloads.length - 1, payload)));
        if (keeper.keyFrames !== before + 1) fail(`${keeper.keyFrames - before} key frames from one IDR unit in ${payloads.length} packets`);
        const expected = Buffer.concat(nals.filter((n) => (n[0]! & 0x1f) !== 9).flatMap((n) => [Buffer.from([0, 0, 0, 1]), n]));
        if (!keeper.latest()!.annexB.equals(expected)) fail("the key frame is not the access unit's NAL units in order");
      },
    ),
};

/**
 * A packetization damaged where the keeper can tell (an FU-A's end or start bit cleared, a STAP-A length that
 * points past its packet): no key frame comes of it, rather than one with a NAL unit missing or cut.
 */
const h264Damaged: FuzzTarget = {
  name: "H.264 damaged packetization gives no key frame",
  property: () =>
    fc.property(idrUnit, fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 1_400 }), { minLength: 1, maxLength: 4 }), fc.nat(), (nals, choices, sizes, pick) => {
      const payloads = packetize(nals, choices, sizes).map((p) => Buffer.from(p));
      const damageable = payloads.flatMap((p, i) => ((p[0]! & 0x1f) === 28 && p[1]! & 0xc0 ? [i] : (p[0]! & 0x1f) === 24 ? [i] : []));
      if (!damageable.length) return;
      const at = damageable[pick % damageable.length]!;
      const payload = payloads[at]!;
      if ((payload[0]! & 0x1f) === 24) payload.writeUInt16BE(payload.length, 1); // the first length points past the packet
      else if (payload[1]! & 0x40) payload[1]! &= ~0x40; // the end of this NAL unit is not said
      else payload[1]! &= ~0x80; // nor its start
      const keeper = createKeyFrameKeeper();
      payloads.forEach((p, i) => keeper.push(rtp(i, 90_000, i === payloads.length - 1, p)));
      if (keeper.keyFrames) fail(`a key frame from a damaged unit (packet ${at} of ${payloads.length})`);
    }),
};

const spropSets: FuzzTarget = {
  name: "H.264 sprop-parameter-sets",
  property: () =>
    fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.array(fc.constantFrom("sprop-parameter-sets=", "Z0", "aM", "=", ",", "+", "/", "AAAA", ";", " "), { maxLength: 12 }).map((p) => p.join(""))), (media) => {
      const { sps, pps } = spropParameterSets(media);
      if (sps && (sps[0]! & 0x1f) !== 7) fail("an SPS that is not type 7");
      if (pps && (pps[0]! & 0x1f) !== 8) fail("a PPS that is not type 8");
    }),
};

// --- fragmented MP4 ---------------------------------------------------------------------------------------------

const SMALL_BOX_BYTES = 2_048;
const boxType = fc.constantFrom("ftyp", "moov", "moof", "mdat", "free", "styp", "sidx");
/** A box as bytes: 32-bit size, or size 1 and a 64-bit largesize. */
const box = fc.tuple(boxType, bytes(300), fc.boolean()).map(([type, body, large]) => {
  const header = Buffer.alloc(large ? 16 : 8);
  if (large) {
    header.writeUInt32BE(1, 0);
    header.writeBigUInt64BE(BigInt(16 + body.length), 8);
  } else header.writeUInt32BE(8 + body.length, 0);
  header.write(type, 4, "latin1");
  return { type, bytes: Buffer.concat([header, body]) };
});

function split(chunks: Buffer[], maxBytes?: number) {
  const boxes: Box[] = [];
  const lost: string[] = [];
  const splitter = createBoxSplitter((b) => {
    if (lost.length) fail("a box after lost sync");
    boxes.push(b);
  }, (why) => lost.push(why), maxBytes);
  for (const chunk of chunks) {
    splitter(chunk);
    if (splitter.buffered > (maxBytes ?? 16 * 1024 * 1024) + 16) fail(`the splitter holds ${splitter.buffered} bytes`);
  }
  return { boxes: boxes.map((b) => ({ type: b.type, bytes: [...b.bytes] })), lost };
}

const fmp4Boxes: FuzzTarget = {
  name: "fMP4 boxes cut anywhere",
  property: () =>
    fc.property(fc.array(box, { maxLength: 8 }), cuts(12), (boxes, at) => {
      const stream = Buffer.concat(boxes.map((b) => b.bytes));
      const got = split(chunked(stream, at));
      if (got.lost.length) fail(`valid boxes lost sync: ${got.lost[0]}`);
      deepStrictEqual(got.boxes, boxes.map((b) => ({ type: b.type, bytes: [...b.bytes] })));
    }),
};

const fmp4Garbage: FuzzTarget = {
  name: "fMP4 random bytes",
  property: () =>
    fc.property(fc.array(fc.oneof(bytes(600), box.map((b) => b.bytes)), { minLength: 1, maxLength: 6 }), cuts(12), (parts, at) => {
      const stream = Buffer.concat(parts);
      const whole = split([stream], SMALL_BOX_BYTES);
      const pieces = split(chunked(stream, at), SMALL_BOX_BYTES);
      // The same boxes and the same verdict wherever FFmpeg's pipe cut its output; lost sync is said once.
      deepStrictEqual(pieces, whole);
      if (whole.lost.length > 1) fail("lost sync reported twice");
      for (const b of whole.boxes) if (b.bytes.length > SMALL_BOX_BYTES) fail(`a ${b.bytes.length}-byte box over the limit`);
    }),
};

const full = (type: string, version: number, flags: number, body: Buffer) => {
  const head = Buffer.alloc(12);
  head.writeUInt32BE(12 + body.length, 0);
  head.write(type, 4, "latin1");
  head.writeUInt32BE(((version & 0xff) << 24) | (flags & 0xffffff), 8);
  return Buffer.concat([head, body]);
};
const plainBox = (type: string, ...children: Buffer[]) => {
  const head = Buffer.alloc(8);
  const body = Buffer.concat(children);
  head.writeUInt32BE(8 + body.length, 0);
  head.write(type, 4, "latin1");
  return Buffer.concat([head, body]);
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

const syncFlags = fc.tuple(fc.boolean(), fc.nat()).map(([nonSync, rest]) => (nonSync ? 0x1_0000 : 0) | (rest & ~0x1_0000));
/**
 * A moof whose first sample's sync bit is known, from wherever ISO 14496-12 lets it be: trun's first_sample_flags,
 * the first sample's own flags in trun (after its duration and size, if present), or tfhd's default_sample_flags
 * (after whichever optional tfhd fields come first).
 */
const keyedMoof = fc
  .tuple(fc.constantFrom("first", "sample", "default"), fc.integer({ min: 0, max: 0x1f }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 30 }), fc.boolean(),
    syncFlags, syncFlags, fc.integer({ min: 0, max: 40 }), fc.nat(8))
  .map(([where, tfhdOptional, sampleFields, samples, dataOffset, flags, otherFlags, cutAt, extraTrafs]) => {
    const defaultFlags = where === "default" ? flags : otherFlags;
    // tfhd: base_data_offset (8), sample_description_index, default duration, default size (4 each), then default flags
    const tfhdFlags = (tfhdOptional & 0x1b) | (where === "default" || tfhdOptional & 0x04 ? 0x20 : 0);
    const tfhdBody = [u32(1)];
    if (tfhdFlags & 0x01) tfhdBody.push(Buffer.alloc(8, 7));
    if (tfhdFlags & 0x02) tfhdBody.push(u32(1));
    if (tfhdFlags & 0x08) tfhdBody.push(u32(3000));
    if (tfhdFlags & 0x10) tfhdBody.push(u32(900));
    if (tfhdFlags & 0x20) tfhdBody.push(u32(defaultFlags));
    const tfhd = full("tfhd", 0, tfhdFlags, Buffer.concat(tfhdBody));
    const duration = sampleFields & 1 ? 0x100 : 0;
    const size = sampleFields & 2 ? 0x200 : 0;
    const trunFlags = (dataOffset ? 0x01 : 0) | (where === "first" ? 0x04 : 0) | (where === "sample" ? 0x400 | duration | size : 0);
    const trunBody = [u32(samples), ...(dataOffset ? [u32(100)] : [])];
    if (where === "first") trunBody.push(u32(flags));
    if (where === "sample") for (let i = 0; i < samples; i++) trunBody.push(...(duration ? [u32(3000)] : []), ...(size ? [u32(500 + i)] : []), u32(i === 0 ? flags : otherFlags));
    const trun = full("trun", 0, trunFlags, Buffer.concat(trunBody));
    const moof = plainBox("moof", full("mfhd", 0, 0, u32(1)), ...Array.from({ length: extraTrafs % 2 }, () => plainBox("free")), plainBox("traf", tfhd, trun));
    return { moof, key: (flags & 0x1_0000) === 0, cutAt };
  });

const fmp4Readers: FuzzTarget = {
  name: "fMP4 moof and moov readers",
  property: () =>
    fc.property(fc.oneof(bytes(400), keyedMoof.map((m) => m.moof.subarray(0, m.moof.length - m.cutAt))), keyedMoof, (random, { moof, key }) => {
      // Truncated or random: an answer or undefined, never a read past the box.
      const found = moofStartsWithKey(random);
      if (found !== undefined && typeof found !== "boolean") fail("not a boolean");
      const codec = codecOf(random);
      if (codec !== undefined && !/^avc1\.[0-9a-f]{6}$/.test(codec)) fail(`codec ${codec}`);
      if (moofStartsWithKey(moof) !== key) fail(`a moof whose first sample is ${key ? "" : "not "}a sync sample read as ${moofStartsWithKey(moof)}`);
    }),
};

const SMALL_GOP_BYTES = 1_024;
/** A moof (key or not) and the mdat after it. */
const fragmentPair = fc.tuple(keyedMoof, bytes(400, 200)).map(([m, data]) => [{ type: "moof", bytes: m.moof }, { type: "mdat", bytes: plainBox("mdat", data) }]);
const fmp4Keeper: FuzzTarget = {
  name: "fMP4 keeper, any box sequence",
  property: () =>
    fc.property(fc.boolean(), fc.array(fc.oneof({ weight: 1, arbitrary: box.map((b) => [b]) }, { weight: 4, arbitrary: fragmentPair }), { maxLength: 20 }), (initFirst, runs) => {
      const keeper = createFmp4Keeper(SMALL_GOP_BYTES);
      const start = initFirst ? [plainBox("ftyp", Buffer.from("isom")), plainBox("moov", Buffer.from("....avcC\x01\x64\x00\x28", "latin1"))] : [];
      for (const b of [...start.map((bytes) => ({ type: bytes.toString("latin1", 4, 8), bytes })), ...runs.flat()]) {
        keeper.add(b);
        const since = keeper.sinceKey;
        const held = since.reduce((n, f) => n + f.bytes.length, 0);
        if (since.length && !since[0]!.key) fail("the fragments since the key frame do not start with a key fragment");
        if (since.length > 1 && held > SMALL_GOP_BYTES) fail(`${held} bytes kept since the key frame (limit ${SMALL_GOP_BYTES})`);
        if (since.length && !keeper.init) fail("fragments kept without an init segment");
      }
    }),
};

export const targets: FuzzTarget[] = [h264Packets, h264AccessUnit, h264Damaged, spropSets, fmp4Boxes, fmp4Garbage, fmp4Readers, fmp4Keeper];
