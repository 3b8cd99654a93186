// Fuzz targets for the RTSP codec (lib/rtsp/message.ts): requests, responses and `$` interleaved frames from
// readers and from FFmpeg, cut anywhere; and the Transport header.
import fc from "fast-check";
import { deepStrictEqual } from "node:assert";
import {
  MAX_BODY_BYTES, MAX_HEADER_BYTES, RtspParseError, createRtspParser, encodeFrame, encodeRequest, encodeResponse, parseTransport,
  type Headers, type RtspMessage,
} from "../../lib/rtsp/message.ts";
import { bytes, chunked, cuts, wireText } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";
import { createTrackNumbering, renumber, rtpPayloadOffset, senderReportTs, startsKeyFrame } from "../../lib/rtsp/rtp.ts";
import { createAuthenticator, digestResponse, parseAuthParams } from "../../lib/rtsp/auth.ts";

const fail = (why: string): never => {
  throw new Error(why);
};

/** Most a parser may hold between pushes: one header block being read, or one message's header and body. */
const MAX_BUFFERED = MAX_HEADER_BYTES + 4 + MAX_BODY_BYTES;

/** Pushes chunks until the parser refuses the stream (the server closes there). */
function parse(chunks: Buffer[]): { messages: RtspMessage[]; error?: RtspParseError } {
  const parser = createRtspParser();
  const messages: RtspMessage[] = [];
  for (const chunk of chunks) {
    try {
      messages.push(...parser.push(chunk));
    } catch (error) {
      if (!(error instanceof RtspParseError)) fail(`the parser threw ${String(error)}, not an RtspParseError`);
      return { messages, error: error as RtspParseError };
    }
    if (parser.buffered > MAX_BUFFERED) fail(`the parser holds ${parser.buffered} bytes`);
  }
  return { messages };
}

const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,12}$/);
const headerValueText = fc.string({ maxLength: 30, unit: "grapheme-ascii" }).map((v) => v.trim());
const headers: fc.Arbitrary<Headers> = fc.array(
  fc.tuple(token.filter((n) => n.toLowerCase() !== "content-length"), headerValueText),
  { maxLength: 5 },
);
type Piece = { message: RtspMessage; bytes: Buffer };
const request: fc.Arbitrary<Piece> = fc
  .tuple(fc.constantFrom("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "TEARDOWN", "GET_PARAMETER", "ANNOUNCE", "RECORD"),
    fc.stringMatching(/^rtsps?:\/\/[a-z0-9.:]{1,20}\/[!-~]{0,20}$/), headers, bytes(40))
  .map(([method, uri, h, body]) => ({
    message: { kind: "request", method, uri, headers: body.length ? [...h, ["Content-Length", String(body.length)]] : h, body } as RtspMessage,
    bytes: encodeRequest(method, uri, h, body),
  }));
const response: fc.Arbitrary<Piece> = fc
  .tuple(fc.constantFrom(200, 401, 404, 454, 461, 503), headers, bytes(40))
  .map(([status, h, body]) => {
    const encoded = encodeResponse(status, h, body);
    const reason = encoded.toString("latin1").split("\r\n")[0]!.split(" ").slice(2).join(" ");
    return {
      message: { kind: "response", status, reason, headers: body.length ? [...h, ["Content-Length", String(body.length)]] : h, body } as RtspMessage,
      bytes: encoded,
    };
  });
const frame: fc.Arbitrary<Piece> = fc
  .tuple(fc.integer({ min: 0, max: 255 }), bytes(300))
  .map(([channel, payload]) => ({ message: { kind: "frame", channel, payload }, bytes: encodeFrame(channel, payload) }));

const rtspMessages: FuzzTarget = {
  name: "RTSP requests, responses and interleaved frames",
  property: () =>
    fc.property(fc.array(fc.oneof(request, response, frame), { maxLength: 6 }), cuts(10), (pieces, at) => {
      const stream = Buffer.concat(pieces.map((p) => p.bytes));
      const { messages, error } = parse(chunked(stream, at));
      if (error) fail(`well-formed messages refused: ${error.message}`);
      // decode(encode(x)) is x, wherever the stream was cut; the bodies and payloads are copies or stay valid.
      deepStrictEqual(messages.map(plain), pieces.map((p) => plain(p.message)));
    }),
};
const plain = (m: RtspMessage) => ({ ...m, ...("body" in m ? { body: [...m.body] } : {}), ...("payload" in m ? { payload: [...m.payload] } : {}) });

const rtspText = fc.oneof(
  wireText(200).map((t) => Buffer.from(t, "latin1")),
  bytes(300),
  fc.tuple(fc.constantFrom("OPTIONS * RTSP/1.0", "RTSP/1.0 200 OK", "SETUP rtsp://x/1 RTSP/1.0", "GET / HTTP/1.1", "$"),
    fc.array(fc.tuple(fc.constantFrom("CSeq", "Content-Length", "content-length", "Transport", "Session", "", ":"), wireText(12)), { maxLength: 5 }), bytes(20))
    .map(([first, h, body]) => Buffer.concat([Buffer.from([first, ...h.map(([n, v]) => `${n}: ${v}`)].join("\r\n") + "\r\n\r\n", "latin1"), body])),
  fc.integer({ min: MAX_HEADER_BYTES - 8, max: MAX_HEADER_BYTES + 8 }).map((n) => Buffer.from(`OPTIONS * RTSP/1.0\r\nX: ${"a".repeat(n)}\r\n\r\n`)),
);
const rtspGarbage: FuzzTarget = {
  name: "RTSP random bytes",
  property: () =>
    fc.property(fc.array(rtspText, { minLength: 1, maxLength: 4 }), cuts(10), (parts, at) => {
      const stream = Buffer.concat(parts);
      const whole = parse([stream]);
      const split = parse(chunked(stream, at));
      // The same verdict wherever the stream was cut: the messages before a refusal, then the refusal.
      if (!whole.error) {
        if (split.error) fail(`refused only when cut: ${split.error.message}`);
        deepStrictEqual(split.messages.map(plain), whole.messages.map(plain));
      } else if (!split.error) fail(`refused only whole: ${whole.error.message}`);
      for (const m of split.messages) {
        if (m.kind === "frame" && (m.channel < 0 || m.channel > 255 || m.payload.length > 0xffff)) fail("a frame out of range");
        if (m.kind !== "frame" && m.body.length > MAX_BODY_BYTES) fail(`a body of ${m.body.length} bytes`);
        if (m.kind === "request" && (/\s/.test(m.uri) || !/^[A-Z_]+$/.test(m.method))) fail(`request line ${m.method} ${m.uri}`);
      }
    }),
};

const transport: FuzzTarget = {
  name: "RTSP Transport header",
  property: () =>
    fc.property(
      fc.oneof(
        wireText(80),
        fc.array(fc.constantFrom("RTP/AVP", "RTP/AVP/TCP", "RTP/AVP/UDP", ";unicast", ";multicast", ";interleaved=", ";client_port=", ";mode=record",
          ";mode=\"PLAY\"", "0", "1", "-", "255", "256", "65535", "65536", "-1", "1e3", "x", ",", "=", ";"), { maxLength: 12 }).map((p) => p.join("")),
      ),
      (value) => {
        const specs = parseTransport(value);
        if (specs.length !== value.split(",").length) fail("one spec per comma-separated part");
        for (const spec of specs) {
          const inRange = (pair: [number, number] | undefined, min: number, max: number) => !pair || pair.every((n) => Number.isInteger(n) && n >= min && n <= max);
          // A channel goes out as one byte (256 would be channel 0 on the wire); UDP sends to port 0 or 70000 throw.
          if (!inRange(spec.interleaved, 0, 255)) fail(`interleaved channels ${JSON.stringify(spec.interleaved)}`);
          if (!inRange(spec.clientPort, 1, 65_535)) fail(`client ports ${JSON.stringify(spec.clientPort)}`);
        }
      },
    ),
};

/** RTP and RTCP packets from the producer (FFmpeg pulling the printer): never throw, never point past the packet. */
const rtpPackets: FuzzTarget = {
  name: "RTP and RTCP packets from the producer",
  property: () =>
    fc.property(bytes(1500), fc.boolean(), (packet, previousEnded) => {
      const offset = rtpPayloadOffset(packet);
      if (offset !== -1 && (offset < 12 || offset > packet.length)) fail(`payload offset ${offset} for ${packet.length} bytes`);
      if (offset >= 0) startsKeyFrame(packet.subarray(offset), previousEnded);
      const numbering = createTrackNumbering();
      const copy = Buffer.from(packet);
      if (copy.length >= 12) renumber(numbering, copy, 0);
      if (copy.length !== packet.length) fail("renumbering changed the packet's length");
      senderReportTs(numbering, Buffer.from(packet));
    }),
};

/** Authorization headers from a client: a refusal or a credential, never a throw; a forged Digest never passes. */
const rtspAuthorization: FuzzTarget = {
  name: "RTSP Authorization header",
  property: () =>
    fc.property(fc.oneof(wireText(200), fc.constantFrom("Digest ", "Basic ", "Digest nonce=\"", "Digest username=\"bblp\", nc=zz")), (header) => {
      parseAuthParams(header);
      const auth = createAuthenticator({ realm: "r", credentials: () => [{ user: "bblp", password: "12345678", role: "access code" }], allowBasic: false });
      auth.challenge();
      if (auth.check("DESCRIBE", header)) fail(`a made-up header was accepted: ${JSON.stringify(header)}`);
      // A well-formed answer to a nonce we never issued is refused too.
      const forged = `Digest username="bblp", realm="r", nonce="n0", uri="/", response="${digestResponse({ user: "bblp", password: "12345678", realm: "r", nonce: "n0", method: "DESCRIBE", uri: "/" })}"`;
      if (auth.check("DESCRIBE", forged)) fail("a nonce we never issued was accepted");
    }),
};

export const targets: FuzzTarget[] = [rtspMessages, rtspGarbage, transport, rtpPackets, rtspAuthorization];
