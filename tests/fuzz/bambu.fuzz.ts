// Fuzz targets for the Bambu decoders of bytes from a client or a printer: chamber login and frames, MQTT
// packets as our reader cuts them (and topic filters, and reports merged into the state), FTP command lines and
// replies, bind frames, SSDP datagrams and the file-tunnel login.
import fc from "fast-check";
import { PassThrough } from "node:stream";
import type { Socket } from "node:net";
import { deepStrictEqual } from "node:assert";
import {
  FRAME_HEADER_SIZE, LOGIN_SIZE, MAX_FRAME_BYTES, createFrameParser, decodeLogin, encodeFrameHeader, encodeLogin, loginMatches,
  type ParseEvent,
} from "../../lib/bambu/chamber-codec.ts";
import { PacketTooLarge, createPacketReader, encode, type Packet } from "../../lib/bambu/mqtt-wire.ts";
import { topicMatches, validFilter } from "../../lib/bambu/mqtt-topics.ts";
import {
  carriesAddress, createReportState, ipv4ToLittleEndian, isObject, isStateSection, littleEndianToIpv4, rewriteAddresses,
  type Json, type JsonObject,
} from "../../lib/bambu/mqtt-state.ts";
import {
  MAX_COMMAND_LINE, createLineSplitter, createReplyAssembler, formatEpsvReply, formatPasvReply, formatReply, parseCommand,
  parseEprtArg, parseEpsvReply, parsePasvReply, parsePortArg, parseQuotedPath, quotePath, replyMessage, type FtpReply,
} from "../../lib/bambu/ftp-codec.ts";
import { BIND_MAX_FRAME_BYTES, decodeBindFrame, detectRequest, encodeBindFrame, isDetectRequest } from "../../lib/bambu/bind-codec.ts";
import {
  SSDP_MAX_MESSAGE_BYTES, announcementOf, encodeNotify, encodeSearch, encodeSearchResponse, isBambuSearch, parseSsdp,
  type BambuAnnouncement,
} from "../../lib/bambu/ssdp-message.ts";
import { readTunnelLogin, tunnelLoginMatches } from "../../lib/bambu/tunnel.ts";
import { bytes, chunked, cuts, wireText } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const fail = (why: string): never => {
  throw new Error(why);
};

// --- chamber camera (TLS 6000) -------------------------------------------------------------------------------

const latin1Field = fc.string({ maxLength: 32, unit: fc.integer({ min: 1, max: 255 }).map((c) => String.fromCharCode(c)) });

const chamberLogin: FuzzTarget = {
  name: "chamber login",
  property: () =>
    fc.property(
      fc.oneof(bytes(100), bytes(LOGIN_SIZE, LOGIN_SIZE), fc.record({ username: latin1Field, accessCode: latin1Field }).map(encodeLogin)),
      latin1Field,
      (login, code) => {
        const decoded = decodeLogin(login);
        if ("error" in decoded) {
          if (login.length === LOGIN_SIZE && login.readUInt32LE(0) === 0x40 && login.readUInt32LE(4) === 0x3000) fail("a well-typed login was refused");
          return;
        }
        if (decoded.username.length > 32 || decoded.accessCode.length > 32) fail("a name field longer than its 32 bytes");
        // encode(decode(x)) is x up to the bytes a login does not carry (the reserved words, what follows a NUL).
        deepStrictEqual(decodeLogin(encodeLogin(decoded)), decoded);
        const matches = loginMatches(decoded, [code, undefined]);
        const expected = decoded.username === "bblp" && code.length > 0 && decoded.accessCode === code;
        if (matches !== expected) fail(`loginMatches said ${matches} for ${JSON.stringify(decoded)} against ${JSON.stringify(code)}`);
      },
    ),
};

const jpeg = bytes(48).map((middle) => Buffer.concat([Buffer.from([0xff, 0xd8]), middle, Buffer.from([0xff, 0xd9])]));
type ChamberSegment = { kind: "frame"; jpeg: Buffer } | { kind: "bad"; body: Buffer } | { kind: "garbage"; bytes: Buffer };
const chamberSegment: fc.Arbitrary<ChamberSegment> = fc.oneof(
  { weight: 4, arbitrary: jpeg.map((j) => ({ kind: "frame" as const, jpeg: j })) },
  // A body that is not a JPEG (it does not start with FF D8).
  { weight: 2, arbitrary: bytes(40, 1).map((b) => ({ kind: "bad" as const, body: Buffer.concat([Buffer.from([0]), b]) })) },
  { weight: 1, arbitrary: bytes(40, 1).map((b) => ({ kind: "garbage" as const, bytes: b })) },
);
const segmentBytes = (s: ChamberSegment) =>
  s.kind === "frame" ? Buffer.concat([encodeFrameHeader(s.jpeg.length), s.jpeg]) : s.kind === "bad" ? Buffer.concat([encodeFrameHeader(s.body.length), s.body]) : s.bytes;

const runFrameParser = (chunks: Buffer[]) => {
  const events: ParseEvent[] = [];
  const parser = createFrameParser((event) => events.push(event));
  for (const chunk of chunks) {
    parser.push(chunk);
    // Waiting for the rest of one frame at most, never more than the largest frame allowed.
    if (parser.buffered > MAX_FRAME_BYTES + FRAME_HEADER_SIZE) fail(`parser buffers ${parser.buffered} bytes`);
  }
  return events;
};

const chamberFrames: FuzzTarget = {
  name: "chamber frames",
  property: () =>
    fc.property(fc.array(chamberSegment, { maxLength: 8 }), cuts(), (segments, at) => {
      const stream = Buffer.concat(segments.map(segmentBytes));
      const whole = runFrameParser([stream]);
      const split = runFrameParser(chunked(stream, at));
      deepStrictEqual(split, whole);
      const outOfSync = whole.findIndex((e) => e.kind === "out-of-sync");
      if (outOfSync >= 0 && outOfSync !== whole.length - 1) fail("events after out-of-sync");
      if (segments.every((s) => s.kind !== "garbage")) {
        const expected = segments.map((s) => s.kind);
        deepStrictEqual(whole.map((e) => (e.kind === "bad-frame" ? "bad" : e.kind)), expected);
        whole.forEach((e, i) => {
          const s = segments[i]!;
          if (e.kind === "frame" && s.kind === "frame" && !e.frame.jpeg.equals(s.jpeg)) fail(`frame ${i} changed on the way`);
        });
      }
    }),
};

// --- MQTT (8883) -------------------------------------------------------------------------------------------

const mqttTopic = fc.stringMatching(/^[a-z0-9/+#$]{1,24}$/);
const messageId = fc.integer({ min: 1, max: 65_535 });
const mqttPacket: fc.Arbitrary<Packet> = fc.oneof(
  fc.record({
    cmd: fc.constant("connect" as const), protocolId: fc.constant("MQTT"), protocolVersion: fc.constant(4 as const), clean: fc.boolean(),
    clientId: fc.string({ maxLength: 23 }), keepalive: fc.integer({ min: 0, max: 65_535 }),
    username: fc.option(fc.string({ maxLength: 16 }), { nil: undefined }), password: fc.option(bytes(16), { nil: undefined }),
  }).map((p) => ({ ...p, clientId: p.clean || p.clientId ? p.clientId : "c", password: p.username === undefined ? undefined : p.password }) as Packet),
  fc.record({ cmd: fc.constant("publish" as const), topic: mqttTopic.filter((t) => !/[+#]/.test(t)), payload: bytes(200), qos: fc.constantFrom(0 as const, 1 as const),
    retain: fc.boolean(), dup: fc.constant(false), messageId }).map((p) => (p.qos === 0 ? { ...p, messageId: undefined } : p) as Packet),
  fc.record({ cmd: fc.constant("subscribe" as const), messageId,
    subscriptions: fc.array(fc.record({ topic: mqttTopic, qos: fc.constantFrom(0 as const, 1 as const) }), { minLength: 1, maxLength: 4 }) }) as fc.Arbitrary<Packet>,
  fc.record({ cmd: fc.constant("unsubscribe" as const), messageId, unsubscriptions: fc.array(mqttTopic, { minLength: 1, maxLength: 4 }) }) as fc.Arbitrary<Packet>,
  fc.constantFrom<Packet>({ cmd: "pingreq" }, { cmd: "disconnect" }, { cmd: "pingresp" }),
  fc.record({ cmd: fc.constantFrom("puback" as const, "pubrec" as const, "pubrel" as const, "pubcomp" as const, "unsuback" as const), messageId }) as fc.Arbitrary<Packet>,
  fc.record({ cmd: fc.constant("connack" as const), sessionPresent: fc.boolean(), returnCode: fc.integer({ min: 0, max: 5 }) }) as fc.Arbitrary<Packet>,
  fc.record({ cmd: fc.constant("suback" as const), messageId, granted: fc.array(fc.constantFrom(0, 1, 128), { minLength: 1, maxLength: 4 }) }) as fc.Arbitrary<Packet>,
);

/** Feeds chunks until the reader throws (the caller would log and close there); returns what came out. */
function readMqtt(chunks: Buffer[], maxPacketBytes: number) {
  const packets: Packet[] = [];
  const reader = createPacketReader(() => maxPacketBytes, (p) => packets.push(p));
  let error: Error | undefined;
  for (const chunk of chunks) {
    try {
      reader.push(chunk);
    } catch (thrown) {
      if (!(thrown instanceof Error) || thrown instanceof TypeError || thrown instanceof RangeError) {
        fail(`the reader threw ${String(thrown)} (a bug, not a verdict on the bytes)`);
      }
      error = thrown as Error;
      break;
    }
    if (reader.buffered > maxPacketBytes) fail(`reader buffers ${reader.buffered} bytes over its limit of ${maxPacketBytes}`);
  }
  return { packets, error };
}

const mqttPackets: FuzzTarget = {
  name: "MQTT packets after mqtt-packet",
  property: () =>
    fc.property(
      fc.array(mqttPacket.map((p) => encode(p)), { maxLength: 6 }),
      fc.oneof(fc.constant(Buffer.alloc(0)), bytes(64)),
      cuts(),
      fc.constantFrom(1 << 20, 4096, 64, 2),
      (frames, tail, at, limit) => {
        const { packets, error } = readMqtt(chunked(Buffer.concat([...frames, tail]), at), limit);
        const fitting = frames.findIndex((f) => f.length > limit);
        const expectedWhole = fitting < 0 ? frames.length : fitting;
        if (packets.length < expectedWhole && !(fitting >= 0 && error instanceof PacketTooLarge)) {
          fail(`${packets.length} of ${expectedWhole} valid packets came out (${error?.message ?? "no error"})`);
        }
        // encode(decode(x)) is x for every packet that came out of well-formed frames.
        packets.slice(0, expectedWhole).forEach((p, i) => {
          if (!encode(p).equals(frames[i]!)) fail(`packet ${i} (${p.cmd}) does not re-encode to its bytes`);
        });
        if (fitting >= 0 && packets.length > fitting) fail(`a ${frames[fitting]!.length}-byte packet passed the ${limit}-byte limit`);
        for (const p of packets) {
          // What mqtt.ts does next with a client's packets: filters validated, topics matched.
          if (p.cmd === "subscribe") for (const s of p.subscriptions) validFilter(s.topic);
          if (p.cmd === "publish") topicMatches("device/+/request", p.topic);
        }
      },
    ),
};

const mqttRandomBytes: FuzzTarget = {
  name: "MQTT random bytes",
  property: () =>
    fc.property(fc.oneof(bytes(300), fc.tuple(fc.constantFrom(0x10, 0x30, 0x32, 0x82, 0xa2, 0xc0, 0xe0), bytes(300)).map(([type, rest]) => Buffer.concat([Buffer.from([type]), rest]))),
      cuts(), fc.constantFrom(1 << 20, 128, 8), (stream, at, limit) => {
        const { packets } = readMqtt(chunked(stream, at), limit);
        for (const p of packets) if (typeof p.cmd !== "string") fail("a packet without a command");
      }),
};

/** The specification's matching, written as a regular expression, to check topicMatches against. */
function referenceMatch(filter: string, topic: string): boolean {
  const levels = filter.split("/");
  if (topic.startsWith("$") && (levels[0] === "+" || levels[0] === "#")) return false;
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  let pattern = "";
  levels.forEach((level, i) => {
    if (level === "#") pattern += i === 0 ? "[\\s\\S]*" : "(/[\\s\\S]*)?";
    else pattern += (i === 0 ? "" : "/") + (level === "+" ? "[^/]*" : escape(level));
  });
  return new RegExp(`^${pattern}$`).test(topic);
}
const referenceValid = (filter: string) =>
  filter.length > 0 && !filter.includes("\u0000") && filter.split("/").every((l, i, all) => (l === "#" ? i === all.length - 1 : l === "+" || !/[+#]/.test(l)));

const topicText = (alphabet: string[]) => fc.array(fc.constantFrom(...alphabet), { maxLength: 10 }).map((p) => p.join(""));
const mqttTopics: FuzzTarget = {
  name: "MQTT topic filters",
  property: () =>
    fc.property(topicText(["a", "b", "/", "+", "#", "$", "\u0000", "ab"]), topicText(["a", "b", "/", "$", "ab"]), (filter, topic) => {
      const valid = validFilter(filter);
      if (valid !== referenceValid(filter)) fail(`validFilter(${JSON.stringify(filter)}) is ${valid}`);
      if (valid && topic.length > 0 && topicMatches(filter, topic) !== referenceMatch(filter, topic)) {
        fail(`topicMatches(${JSON.stringify(filter)}, ${JSON.stringify(topic)}) is ${!referenceMatch(filter, topic)}`);
      }
      if (topic.length > 0 && !topicMatches(topic, topic)) fail(`${JSON.stringify(topic)} does not match itself`);
    }),
};

// Reports are built as text and parsed with JSON.parse, as mqtt.ts does, so keys like "__proto__" arrive as own
// properties exactly as a printer (or anything pretending to be one) could send them.
type JsonTree = { object: [string, JsonTree][] } | { array: JsonTree[] } | { value: null | boolean | number | string };
const reportKey = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom("print", "info", "system", "net", "info", "ip", "ipcam", "rtsp_url", "command", "msg", "sequence_id", "result", "push_status", "get_version", "module", "nozzle_temper") },
  { weight: 1, arbitrary: fc.constantFrom("__proto__", "constructor", "prototype", "toString", "hasOwnProperty") },
  { weight: 1, arbitrary: fc.string({ maxLength: 6 }) },
);
const reportValue = fc.oneof(
  fc.constantFrom(null, true, false, 0, 1, "push_status", "get_version", "rtsps://192.168.1.5:322/streaming/live/1", "disable", ""),
  fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string({ maxLength: 8 }),
);
const { tree: jsonTree } = fc.letrec<{ tree: JsonTree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    reportValue.map((value) => ({ value })),
    fc.array(fc.tuple(reportKey, tie("tree")), { maxLength: 5 }).map((object) => ({ object })),
    fc.array(tie("tree"), { maxLength: 4 }).map((array) => ({ array })),
  ),
}));
const jsonText = (t: JsonTree): string =>
  "object" in t ? `{${t.object.map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`).join(",")}}`
  : "array" in t ? `[${t.array.map(jsonText).join(",")}]`
  : JSON.stringify(t.value);
/** A report (an object of sections); sometimes a full `push_status` with `msg: 0`, sometimes absurdly deep. */
const reportText = fc.oneof(
  { weight: 40, arbitrary: fc.array(fc.tuple(reportKey, jsonTree), { maxLength: 4 }).map((object) => jsonText({ object })) },
  { weight: 8, arbitrary: fc.array(fc.tuple(reportKey, jsonTree), { maxLength: 4 })
      .map((fields) => `{"print":${jsonText({ object: [["command", { value: "push_status" }], ["msg", { value: 0 }], ...fields] })}}`) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 100, max: 20_000 }), fc.constantFrom("print", "info", "__proto__"), fc.constantFrom('{"a":', '{"__proto__":', "["))
      .map(([depth, section, open]) => `{"${section}":${open.repeat(depth)}1${(open === "[" ? "]" : "}").repeat(depth)}}`) },
);

/** Every (path, value) a delta sets: objects are merged, so only the leaves (and arrays) must show in the state. */
function leaves(value: Json, path: string[] = [], out: [string[], Json][] = []): [string[], Json][] {
  if (isObject(value) && Object.keys(value).length) for (const [k, v] of Object.entries(value)) leaves(v, [...path, k], out);
  else out.push([path, value]);
  return out;
}
const at = (root: Json | undefined, path: string[]) => path.reduce<Json | undefined>((v, k) => (isObject(v) && Object.hasOwn(v, k) ? v[k] : undefined), root);

const mqttReports: FuzzTarget = {
  name: "MQTT reports merged into the state",
  property: () =>
    fc.property(fc.array(reportText, { minLength: 1, maxLength: 5 }), fc.ipV4(), (texts, proxyIp) => {
      const before = new Set(Object.getOwnPropertyNames(Object.prototype));
      try {
        mergeReports(texts, proxyIp);
      } finally {
        // Undo a pollution at once, so it is blamed on this case and not on the next ones.
        const added = Object.getOwnPropertyNames(Object.prototype).filter((k) => !before.has(k));
        for (const key of added) delete (Object.prototype as Record<string, unknown>)[key];
        if (added.length) fail(`a report added ${added.map((k) => `"${k}"`).join(", ")} to Object.prototype`);
      }
    }),
};

function mergeReports(texts: string[], proxyIp: string): void {
      const state = createReportState();
      for (const text of texts) {
        const report = JSON.parse(text) as Json;
        if (!isObject(report)) continue;
        const deep = text.length > 500;
        state.apply(report);
        if (!deep) {
          for (const [name, section] of Object.entries(report)) {
            if (name === "__proto__" || !isStateSection(section)) continue;
            for (const [path, value] of leaves(section)) {
              if (path.includes("__proto__")) continue;
              const kept = at(state.sections[name], path);
              // An empty object merges into what is there; anything else replaces it.
              if (isObject(value)) isObject(kept) || fail(`${name}.${path.join(".")} is not an object after the merge`);
              else deepStrictEqual(kept, value, `${name}.${path.join(".")} not merged`);
            }
          }
        }
        rewriteAddresses(report, proxyIp);
        carriesAddress(report);
      }
      for (const reply of state.pushallReply("7")) if (Object.keys(reply).length !== 1) fail("a pushall message with more than one section");
      JSON.stringify(state.pushallReply("7"));
      JSON.stringify(state.versionReply("8") ?? null);
      if (littleEndianToIpv4(ipv4ToLittleEndian(proxyIp)) !== proxyIp) fail(`${proxyIp} does not survive the little-endian form`);
}

// --- FTPS control (990) ------------------------------------------------------------------------------------

const splitLines = (chunks: Buffer[]) => {
  const lines: string[] = [];
  let tooLong = 0;
  const push = createLineSplitter((l) => lines.push(l), () => tooLong++);
  for (const chunk of chunks) push(chunk);
  return { lines, tooLong };
};
const ftpLineBytes = fc.oneof(
  wireText(120).map((t) => Buffer.from(t, "utf8")),
  bytes(200),
  fc.tuple(fc.string({ maxLength: 20, unit: "grapheme" }), fc.integer({ min: MAX_COMMAND_LINE - 4, max: MAX_COMMAND_LINE + 300 }))
    .map(([name, length]) => Buffer.from(`STOR ${name}${"x".repeat(length)}\r\nNOOP\r\n`)),
);

const ftpCommandLines: FuzzTarget = {
  name: "FTP command lines",
  property: () =>
    fc.property(fc.array(ftpLineBytes, { maxLength: 4 }), cuts(12), (parts, at) => {
      const stream = Buffer.concat(parts);
      const whole = splitLines([stream]);
      const split = splitLines(chunked(stream, at));
      // Where TCP or TLS cut the bytes does not change the lines (a UTF-8 character may be split too).
      deepStrictEqual(split.lines, whole.lines);
      for (const line of whole.lines) {
        if (line.length > MAX_COMMAND_LINE) fail(`a line of ${line.length} characters passed the ${MAX_COMMAND_LINE} limit`);
        if (line.includes("\n")) fail("a line with a line feed in it");
        const command = parseCommand(line);
        if (command.verb !== command.verb.toUpperCase() || command.verb.includes(" ")) fail(`verb ${JSON.stringify(command.verb)}`);
        if (!line.endsWith(command.arg)) fail(`argument ${JSON.stringify(command.arg)} is not the end of the line`);
        parsePortArg(command.arg);
        parseEprtArg(command.arg);
      }
    }),
};

const replyLine = fc.oneof(
  wireText(40).map((t) => t.replace(/[\r\n]/g, "")),
  fc.tuple(fc.integer({ min: 100, max: 599 }), fc.constantFrom(" ", "-", ""), wireText(30)).map(([c, s, t]) => `${c}${s}${t.replace(/[\r\n]/g, "")}`),
);
const ftpReplies: FuzzTarget = {
  name: "FTP replies",
  property: () =>
    fc.property(
      fc.array(replyLine, { maxLength: 8 }),
      fc.integer({ min: 100, max: 599 }),
      fc.array(fc.string({ maxLength: 20 }).map((l) => l.replace(/[\r\n]/g, "")), { minLength: 1, maxLength: 4 }),
      fc.ipV4(), fc.integer({ min: 1, max: 65_535 }), fc.string({ maxLength: 20 }),
      (noise, code, lines, host, port, path) => {
        const replies: FtpReply[] = [];
        const assemble = createReplyAssembler((r) => replies.push(r));
        for (const line of noise) assemble(line);
        for (const r of replies) {
          if (!(r.code >= 100 && r.code <= 599) || r.lines.length === 0) fail(`reply ${JSON.stringify(r)}`);
          replyMessage(r);
          parsePasvReply(r.lines.join(" "));
          parseEpsvReply(r.lines.join(" "));
          parseQuotedPath(r.lines.join(" "));
        }
        // A reply we format comes back as the same reply (middle lines must not look like its last line).
        const body = lines.map((l, i) => (i > 0 && i < lines.length - 1 && l.startsWith(`${code}`) ? ` ${l}` : l));
        const ours: FtpReply[] = [];
        const again = createReplyAssembler((r) => ours.push(r));
        const text = formatReply(code, ...body);
        for (const line of text.split("\r\n").slice(0, -1)) again(line);
        if (ours.length !== 1 || ours[0]!.code !== code || ours[0]!.lines.join("\r\n") + "\r\n" !== text) fail(`formatReply(${code}, ${JSON.stringify(body)}) did not come back`);
        deepStrictEqual(parsePasvReply(formatPasvReply(host, port)), { host, port });
        if (parseEpsvReply(formatEpsvReply(port)) !== port) fail(`EPSV ${port}`);
        if (parseQuotedPath(`257 ${quotePath(path)} is the current directory`) !== path) fail(`path ${JSON.stringify(path)}`);
      },
    ),
};

// --- bind/detect (3000/3002) -------------------------------------------------------------------------------

const bindMessage = fc.oneof(
  fc.string({ maxLength: 12 }).map((s) => detectRequest(s)),
  // Any JSON but the one-character ones ("0"): a frame carries at least "{}".
  fc.jsonValue({ maxDepth: 3 }).filter((v) => JSON.stringify(v).length >= 2),
  fc.constant({ login: { command: "detect", sequence_id: 20000 } }),
);
const bindFrames: FuzzTarget = {
  name: "bind frames",
  property: () =>
    fc.property(
      bindMessage, bytes(24),
      fc.oneof(bytes(64), fc.tuple(fc.integer({ min: 0, max: 0xffff }), bytes(40)).map(([length, rest]) => {
        const header = Buffer.from([0xa5, 0xa5, 0, 0]);
        header.writeUInt16LE(length, 2);
        return Buffer.concat([header, rest]);
      })),
      fc.integer({ min: 0, max: 100 }),
      (message, tail, junk, cut) => {
        // Random bytes: a verdict, never a throw; a frame never longer than the bytes; "incomplete" only below the limit.
        for (const input of [junk, Buffer.concat([junk, tail])]) {
          const d = decodeBindFrame(input);
          if (d.kind === "frame" && (d.bytes > input.length || d.bytes > BIND_MAX_FRAME_BYTES)) fail(`frame of ${d.bytes} bytes from ${input.length}`);
          if (d.kind === "incomplete" && input.length >= BIND_MAX_FRAME_BYTES) fail("incomplete at the limit");
          if (d.kind === "frame") isDetectRequest(d.message);
        }
        const frame = encodeBindFrame(message);
        const decoded = decodeBindFrame(Buffer.concat([frame, tail]));
        if (frame.length > BIND_MAX_FRAME_BYTES) return void (decoded.kind !== "invalid" && fail("an oversize frame was not refused"));
        if (decoded.kind !== "frame" || decoded.bytes !== frame.length) fail(`own frame decoded as ${decoded.kind}`);
        deepStrictEqual(decoded.kind === "frame" && decoded.message, JSON.parse(JSON.stringify(message)));
        const prefix = frame.subarray(0, Math.floor((cut / 100) * (frame.length - 1)));
        if (decodeBindFrame(prefix).kind !== "incomplete") fail(`a ${prefix.length}-byte prefix of a frame is not incomplete`);
      },
    ),
};

// --- SSDP (UDP 2021) ---------------------------------------------------------------------------------------

const headerValue = (maxLength: number) =>
  fc.string({ maxLength, unit: "grapheme-ascii" }).map((s) => s.replace(/[\r\n]/g, "").trim());
const announcement: fc.Arbitrary<BambuAnnouncement> = fc.record({
  location: fc.ipV4(),
  serial: fc.stringMatching(/^[0-9A-Z]{1,16}$/),
  modelCode: headerValue(10), name: headerValue(24), version: headerValue(12), connect: fc.constantFrom("lan", "cloud"),
  bind: fc.constantFrom("free", "occupied"), signal: fc.option(headerValue(5), { nil: undefined }),
  seclink: fc.option(headerValue(8), { nil: undefined }), inf: headerValue(6), cap: fc.option(headerValue(3), { nil: undefined }),
});
const ssdpDatagram = fc.oneof(
  bytes(200),
  wireText(200).map((t) => Buffer.from(t)),
  fc.tuple(fc.constantFrom("NOTIFY * HTTP/1.1", "M-SEARCH * HTTP/1.1", "HTTP/1.1 200 OK", "HTTP/1.0 404 x", "notify * http/1.0"),
    fc.array(fc.tuple(fc.constantFrom("NT", "NTS", "ST", "USN", "Location", "DevModel.bambu.com", "__proto__", "constructor", ""), wireText(30)), { maxLength: 8 }))
    .map(([start, headers]) => Buffer.from([start, ...headers.map(([n, v]) => `${n}: ${v}`)].join("\r\n") + "\r\n\r\n")),
  fc.integer({ min: SSDP_MAX_MESSAGE_BYTES - 2, max: SSDP_MAX_MESSAGE_BYTES + 2 }).map((n) => Buffer.concat([Buffer.from("NOTIFY * HTTP/1.1\r\n"), Buffer.alloc(n, 0x41)]).subarray(0, n)),
);
const ssdp: FuzzTarget = {
  name: "SSDP datagrams",
  property: () =>
    fc.property(ssdpDatagram, announcement, (datagram, a) => {
      const message = parseSsdp(datagram);
      if (message) {
        if (datagram.length > SSDP_MAX_MESSAGE_BYTES) fail(`a ${datagram.length}-byte datagram was parsed`);
        if (Object.getPrototypeOf(message.headers) !== Object.prototype) fail("a header replaced the headers' prototype");
        const found = announcementOf(message);
        if (found && !found.serial) fail("an announcement without a serial");
        isBambuSearch(message);
      }
      for (const encoded of [encodeNotify(a), encodeSearchResponse(a)]) {
        const back = parseSsdp(encoded);
        deepStrictEqual(back && announcementOf(back), { ...a });
      }
      const search = parseSsdp(encodeSearch());
      if (!search || !isBambuSearch(search)) fail("our own M-SEARCH is not a Bambu search");
    }),
};

// --- file tunnel login (6000 on P2S/H2/X2D) ----------------------------------------------------------------

const pad = (text: string, size: number) => {
  const out = Buffer.alloc(size);
  out.write(text, "latin1");
  return out;
};
const framedLogin = (code: string) => {
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16, 0);
  header.writeUInt16LE(0x013f, 4);
  header[6] = 1;
  return Buffer.concat([header, pad("bblp", 8), pad(code, 8)]);
};
const bareLogin = (code: string) => Buffer.concat([pad("bblp", 8), pad(code, 32), Buffer.alloc(24)]);
const accessCode = fc.stringMatching(/^[0-9]{8}$/);
const tunnelInput = fc.oneof(
  bytes(100).map((b) => ({ stream: b, form: "unknown" as const, code: "" })),
  fc.tuple(accessCode, bytes(30)).map(([code, rest]) => ({ stream: Buffer.concat([framedLogin(code), rest]), form: "framed" as const, code })),
  fc.tuple(accessCode, bytes(30)).map(([code, rest]) => ({ stream: Buffer.concat([bareLogin(code), rest]), form: "bare" as const, code })),
);
/** The client side of a socket, fed by a stream: readTunnelLogin only uses a socket's stream half. */
const fedSocket = (chunks: Buffer[]) => {
  const socket = new PassThrough();
  const writing = (async () => {
    for (const chunk of chunks) {
      socket.write(chunk);
      await new Promise((r) => setImmediate(r));
    }
    socket.end();
  })();
  return { socket, writing };
};
/** What is left on the socket after the login, up to its end (attached at once, as tunnel.ts does). */
const readRest = (socket: PassThrough, ms: number) =>
  new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    const done = () => resolve(Buffer.concat(chunks));
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.once("end", done);
    setTimeout(done, ms).unref?.();
  });

const tunnelLogin: FuzzTarget = {
  name: "file-tunnel login",
  costFactor: 2,
  property: () =>
    fc.asyncProperty(tunnelInput, cuts(6), accessCode, async ({ stream, form, code }, at, configured) => {
      const { socket, writing } = fedSocket(chunked(stream, at));
      const reading = readTunnelLogin(socket as unknown as Socket, 1_000).then(
        (login) => ({ login, rest: readRest(socket, 1_000) }),
        (error: Error) => ({ error }),
      );
      await writing;
      const result = await reading;
      if ("error" in result) {
        if (stream.length >= 64) fail(`no login from ${stream.length} bytes: ${result.error.message}`);
        return;
      }
      const { login } = result;
      const rest = await result.rest;
      // Every byte read is forwarded as is, and what follows the login is still there for the relay.
      if (!Buffer.concat([login.bytes, rest]).equals(stream)) fail("the login and the rest are not the bytes sent");
      if (login.bytes.length > 64) fail(`${login.bytes.length} bytes read for a login`);
      if (form !== "unknown") {
        if (!login.credentials) fail(`a ${form} login was not recognized`);
        if (!tunnelLoginMatches(login.credentials!, code)) fail(`a ${form} login with the right code was refused`);
        if (configured !== code && tunnelLoginMatches(login.credentials!, configured)) fail(`a ${form} login with a wrong code was accepted`);
      } else if (login.credentials) {
        tunnelLoginMatches(login.credentials, configured);
      }
      socket.destroy();
    }),
};

export const targets: FuzzTarget[] = [
  chamberLogin, chamberFrames, mqttPackets, mqttRandomBytes, mqttTopics, mqttReports, ftpCommandLines, ftpReplies, bindFrames, ssdp, tunnelLogin,
];
