// MQTT on a byte stream: cuts complete packets out of the stream (so a size limit applies before anything is
// buffered or parsed) and decodes each with mqtt-packet, except a plain QoS 0 PUBLISH (every report), read in
// place; each packet comes with its frame as received. Shared by the proxy, its printer session and the simulator.
import mqttPacket, { type Packet } from "mqtt-packet";

export type { Packet } from "mqtt-packet";

/** CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3). */
export const CONNACK_ACCEPTED = 0;
export const CONNACK_UNACCEPTABLE_PROTOCOL = 1;
export const CONNACK_SERVER_UNAVAILABLE = 3;
export const CONNACK_BAD_CREDENTIALS = 4;
export const CONNACK_NOT_AUTHORIZED = 5;
export const SUBACK_FAILURE = 0x80;

export class PacketTooLarge extends Error {}

export interface PacketReader {
  /** Feed bytes from the socket; calls onPacket for each complete packet. Throws on a malformed stream. */
  push(chunk: Buffer): void;
  /** Bytes waiting for the rest of a packet. */
  readonly buffered: number;
}

/**
 * `maxPacketBytes` is read before each packet, so the limit can grow once a client has logged in.
 * Errors (too large, malformed) are thrown from push(): the caller logs and closes.
 */
export function createPacketReader(maxPacketBytes: () => number, onPacket: (packet: Packet, frame: Buffer) => void): PacketReader {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  let parsed: Packet | undefined;
  let parseError: Error | undefined;
  parser.on("packet", (packet: Packet) => void (parsed = packet));
  parser.on("error", (error: Error) => void (parseError = error));
  let pending: Buffer = Buffer.alloc(0);

  const frameLength = (buffer: Buffer): number | undefined => {
    // Fixed header: one byte, then the remaining length as a 1-4 byte varint.
    let multiplier = 1;
    let remaining = 0;
    for (let i = 1; i <= 4; i++) {
      if (i >= buffer.length) return undefined;
      const byte = buffer[i]!;
      remaining += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) return 1 + i + remaining;
      multiplier *= 128;
    }
    throw new Error("malformed remaining length");
  };

  return {
    push(chunk) {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 2) {
        const length = frameLength(pending);
        if (length === undefined) break;
        if (length > maxPacketBytes()) throw new PacketTooLarge(`packet of ${length} bytes is over the limit of ${maxPacketBytes()}`);
        if (pending.length < length) break;
        const frame = pending.subarray(0, length);
        pending = pending.subarray(length);
        const publish = plainPublish(frame);
        if (publish) {
          onPacket(publish, frame);
          continue;
        }
        parsed = undefined;
        parseError = undefined;
        parser.parse(frame);
        if (parseError) throw parseError;
        if (!parsed) throw new Error("incomplete packet");
        onPacket(parsed, frame);
      }
      if (pending.length > maxPacketBytes()) throw new PacketTooLarge(`over ${maxPacketBytes()} bytes buffered`);
    },
    get buffered() {
      return pending.length;
    },
  };
}

/**
 * A QoS 0 PUBLISH without DUP or RETAIN (every report a printer sends), decoded without mqtt-packet: topic and
 * payload are views into the frame. Undefined for anything else, which mqtt-packet decodes (and validates).
 */
function plainPublish(frame: Buffer): Packet | undefined {
  if (frame[0] !== 0x30) return undefined;
  let headerBytes = 1;
  while (frame[headerBytes]! & 0x80) headerBytes++; // the remaining length, 1-4 bytes (checked by frameLength)
  headerBytes++;
  if (frame.length < headerBytes + 2) return undefined;
  const topicLength = frame.readUInt16BE(headerBytes);
  const payloadAt = headerBytes + 2 + topicLength;
  if (topicLength === 0 || payloadAt > frame.length) return undefined;
  const topic = frame.toString("utf8", headerBytes + 2, payloadAt);
  return { cmd: "publish", topic, payload: frame.subarray(payloadAt), qos: 0, dup: false, retain: false, length: frame.length - headerBytes };
}

/** Encodes a packet as MQTT 3.1.1 unless told otherwise. */
export function encode(packet: Packet, protocolVersion: 3 | 4 = 4): Buffer {
  return mqttPacket.generate(packet, { protocolVersion });
}

/** A PUBLISH of `payload` on `topic`; the payload bytes go out untouched. */
export function encodePublish(topic: string, payload: Buffer, qos: 0 | 1 = 0, messageId?: number): Buffer {
  return mqttPacket.generate({ cmd: "publish", topic, payload, qos, retain: false, dup: false, messageId });
}

/** A CONNACK any client version understands (3.1.1 layout; MQTT 5 clients read the refusal too). */
export function connackBytes(returnCode: number): Buffer {
  return Buffer.from([0x20, 0x02, 0x00, returnCode]);
}
