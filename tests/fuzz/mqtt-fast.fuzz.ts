// Fuzz target for lib/bambu/mqtt-wire.ts's fast path: plain QoS 0 PUBLISH frames (first byte 0x30, every report
// a printer sends) are cut without mqtt-packet. Reference: mqtt-packet's own parser on the same frame. Both must
// give the same topic, payload and length, or both refuse (an error, or no packet from a frame that is short).
import fc from "fast-check";
import mqttPacket, { type Packet } from "mqtt-packet";
import { createPacketReader, encodePublish } from "../../lib/bambu/mqtt-wire.ts";
import { bytes } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const fail = (why: string): never => {
  throw new Error(why);
};

type Verdict = { packet: { cmd: string; topic?: string; payload?: number[]; qos?: number; dup?: boolean; retain?: boolean; length?: number } } | { refused: true } | { none: true };

const plain = (p: Packet): Verdict => {
  const publish = p as Packet & { topic?: string; payload?: Buffer | string; qos?: number; dup?: boolean; retain?: boolean; length?: number };
  return {
    packet: {
      cmd: p.cmd, topic: publish.topic, payload: publish.payload === undefined ? undefined : [...Buffer.from(publish.payload)],
      qos: publish.qos, dup: publish.dup, retain: publish.retain, length: publish.length,
    },
  };
};

/** mqtt-packet's verdict on one frame. */
function reference(frame: Buffer): Verdict {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  let got: Packet | undefined;
  let error: Error | undefined;
  parser.on("packet", (p: Packet) => void (got ??= p));
  parser.on("error", (e: Error) => void (error ??= e));
  parser.parse(frame);
  if (error) return { refused: true };
  return got ? plain(got) : { none: true };
}

/** Our reader's verdict on the same frame, pushed whole. */
function ours(frame: Buffer): Verdict {
  let got: Packet | undefined;
  const reader = createPacketReader(() => 1 << 20, (p) => void (got ??= p));
  try {
    reader.push(frame);
  } catch {
    return { refused: true };
  }
  return got ? plain(got) : { none: true };
}

const varint = (n: number, padTo = 0): number[] => {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0 || out.length + 1 < padTo) byte |= 0x80;
    out.push(byte);
  } while (n > 0 || out.length < padTo);
  return out;
};

const topic = fc.oneof(
  fc.constantFrom("device/01P00A000000000/report", "device/x/request", "a", "+", "#", "a/+/b", "$SYS/x", "é/ü", "\u0000", "a\u0000b", "\uFFFF", "😀"),
  fc.string({ maxLength: 40 }),
  fc.string({ maxLength: 20, unit: "binary" }),
);

/** Frames of every kind the fast path may see: valid ones, topic lengths that lie, bytes that are no UTF-8, random ones. */
const frame = fc.oneof(
  // encodePublish's own frames (mqtt-packet's encoder); retain/dup/qos variations by the first byte
  fc.tuple(topic, bytes(300), fc.constantFrom(0x30, 0x30, 0x30, 0x31, 0x38, 0x32, 0x3f)).map(([t, payload, first]) => {
    let f: Buffer;
    try {
      f = encodePublish(t, payload);
    } catch {
      f = Buffer.from([0x30, 0x00]);
    }
    f[0] = first;
    return f;
  }),
  // hand-made: a topic length field and topic bytes that need not agree, a remaining length of 1-4 bytes
  fc.tuple(fc.oneof(fc.nat(70), fc.constantFrom(0, 0xffff)), bytes(60), bytes(200), fc.integer({ min: 0, max: 4 }), fc.constantFrom(0x30, 0x30, 0x31))
    .map(([topicLength, topicBytes, payload, pad, first]) => {
      const body = Buffer.concat([Buffer.from([topicLength >> 8, topicLength & 0xff]), topicBytes, payload]);
      return Buffer.concat([Buffer.from([first, ...varint(body.length, pad)]), body]);
    }),
  // random bytes after 0x30 and a remaining length that matches them
  bytes(300).map((body) => Buffer.concat([Buffer.from([0x30, ...varint(body.length)]), body])),
  // and anything at all
  bytes(64, 1).map((b) => Buffer.concat([Buffer.from([0x30]), b])),
);

const show = (v: Verdict) => JSON.stringify(v, (_k, value) => (Array.isArray(value) && value.length > 16 ? `[${value.length} bytes]` : value));

const fastPublish: FuzzTarget = {
  name: "MQTT plain PUBLISH fast path against mqtt-packet",
  property: () =>
    fc.property(frame, (f) => {
      const expected = reference(f);
      const got = ours(f);
      // A frame mqtt-packet leaves waiting (short) is one our reader also waits on or refuses; else the same verdict.
      if ("none" in expected && !("packet" in got)) return;
      if (JSON.stringify(got) !== JSON.stringify(expected)) {
        fail(`frame ${f.toString("hex").slice(0, 200)}: ours ${show(got)}, mqtt-packet ${show(expected)}`);
      }
    }),
};

export const targets: FuzzTarget[] = [fastPublish];
