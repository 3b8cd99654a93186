// Fuzz targets for the FlashForge decoders of bytes from a client or a printer: TCP 8899 command lines and the
// printer's replies (text, ~M661 file lists, ~M662 thumbnails, in any chunking), the camera's request line and
// its MJPEG stream, discovery datagrams, and the /detail answer the HTTP 8898 proxy rewrites.
import fc from "fast-check";
import { deepStrictEqual } from "node:assert";
import { MJPEG_BOUNDARY, mjpegPart } from "../../lib/core/mjpeg.ts";
import type { CameraFrame } from "../../lib/core/service.ts";
import { createMjpegParser } from "../../lib/flashforge/camera.ts";
import { MAX_CAMERA_JPEG_BYTES } from "../../lib/core/service.ts";
import { parseCameraRequestLine } from "../../lib/flashforge/camera-request.ts";
import { DISCOVERY_REPLY_BYTES, decodeDiscoveryReply, encodeDiscoveryReply, rewriteDiscoveryReply } from "../../lib/flashforge/discovery-codec.ts";
import { rewriteDetail } from "../../lib/flashforge/http.ts";
import {
  FILE_ENTRY_MAGIC, MAX_BINARY_REPLY_BYTES, MAX_COMMAND_LINE_BYTES, MAX_REPLY_TEXT_BYTES, THUMBNAIL_MAGIC, createReplyReader, encodeFileList, encodeThumbnail, parseCommand, textReply,
  type Reply,
} from "../../lib/flashforge/tcp-codec.ts";
import { bytes, chunked, cuts, wireText } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const fail = (why: string): never => {
  throw new Error(why);
};

// --- TCP 8899: client command lines -----------------------------------------------------------------------------

const CODE = /^[GM]\d{1,4}$/;
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;

/** File names and arguments as people write them: ASCII, umlauts, CJK, emoji. */
const argumentText = fc.string({ maxLength: 40, unit: fc.constantFrom("a", "Z", "0", " ", "/", ":", ".", "_", "-", "ü", "ß", "é", "模", "型", "🙂") });

const wellFormedCommand = fc
  .record({ tilde: fc.boolean(), letter: fc.constantFrom("G", "M", "g", "m"), number: fc.integer({ min: 0, max: 9999 }), args: argumentText, cr: fc.boolean() })
  .map(({ tilde, letter, number, args, cr }) => ({ line: `${tilde ? "~" : ""}${letter}${number}${args.trim() ? ` ${args.trim()}` : ""}`, cr, letter, number, args: args.trim() }));

const commandLine: FuzzTarget = {
  name: "FlashForge TCP command line",
  property: () =>
    fc.property(
      fc.oneof(bytes(80), wireText(60).map((t) => Buffer.from(t)), wellFormedCommand.map((c) => Buffer.from(c.line + (c.cr ? "\r" : "")))),
      (line) => {
        const command = parseCommand(line);
        if (!command) return;
        if (!CODE.test(command.code)) fail(`code ${JSON.stringify(command.code)}`);
        if (CONTROL.test(command.line)) fail(`a control character in ${JSON.stringify(command.line)}`);
        const raw = line[line.length - 1] === 0x0d ? line.subarray(0, line.length - 1) : line;
        if (raw.length > MAX_COMMAND_LINE_BYTES) fail(`a ${raw.length}-byte line was accepted`);
        // The printer gets the client's bytes exactly, and parsing what it gets gives the same command.
        if (!command.wire.equals(Buffer.concat([raw, Buffer.from("\r\n")]))) fail("the wire bytes are not the client's");
        deepStrictEqual(parseCommand(command.wire.subarray(0, command.wire.length - 2)), command);
        if (Buffer.from(command.line).equals(raw)) deepStrictEqual(parseCommand(command.line), command);
      },
    ),
};

const commandFields: FuzzTarget = {
  name: "FlashForge TCP command fields",
  property: () =>
    fc.property(wellFormedCommand, ({ line, cr, letter, number, args }) => {
      const command = parseCommand(Buffer.from(line + (cr ? "\r" : "")));
      if (!command) return fail(`${JSON.stringify(line)} was refused`);
      if (command.code !== `${letter.toUpperCase()}${number}` || command.args !== args || command.line !== line) {
        fail(`${JSON.stringify(line)} read as ${JSON.stringify(command)}`);
      }
    }),
};

// --- TCP 8899: the printer's replies --------------------------------------------------------------------------

/** Reply lines the printer writes: no line ends inside, never a bare "ok" (that ends the reply). */
const replyLine = wireText(30).map((t) => t.replace(/[\r\n]/g, "")).filter((l) => l !== "ok");

type ScriptedReply = { code: string; bytes: Buffer; binary: boolean };

const scriptedReply: fc.Arbitrary<ScriptedReply> = fc.oneof(
  fc.record({ code: fc.constantFrom("M115", "M119", "M105", "M27", "G28"), lines: fc.array(replyLine, { maxLength: 6 }) }).map(({ code, lines }) => ({
    code, bytes: textReply(code, lines), binary: false,
  })),
  fc.record({ paths: fc.array(argumentText, { maxLength: 5 }), withList: fc.boolean() }).map(({ paths, withList }) => ({
    code: "M661", bytes: Buffer.concat([textReply("M661", []), withList ? encodeFileList(paths) : Buffer.alloc(0)]), binary: withList,
  })),
  fc.record({ image: bytes(300), withImage: fc.boolean() }).map(({ image, withImage }) => ({
    code: "M662", bytes: Buffer.concat([textReply("M662", []), withImage ? encodeThumbnail(image) : Buffer.alloc(0)]), binary: withImage,
  })),
);

/** Feeds one reply's bytes as the proxy would: chunk by chunk; the binary grace ends a reply that has none. */
function readOne(reader: ReturnType<typeof createReplyReader>, code: string, chunks: Buffer[]): Reply | { error: string } | undefined {
  reader.expect(code);
  let waiting = false;
  for (const chunk of chunks) {
    reader.push(chunk);
    for (;;) {
      const step = reader.next();
      if (step.kind === "reply") return step.reply;
      if (step.kind === "error") return { error: step.why };
      waiting = step.kind === "waiting-binary";
      break;
    }
  }
  return waiting ? reader.endWithoutBinary() : undefined;
}

const replyStream: FuzzTarget = {
  name: "FlashForge TCP replies (text, file list, thumbnail)",
  property: () =>
    fc.property(fc.array(fc.tuple(scriptedReply, cuts(6)), { minLength: 1, maxLength: 6 }), (script) => {
      const reader = createReplyReader();
      for (const [reply, at] of script) {
        const got = readOne(reader, reply.code, chunked(reply.bytes, at));
        if (!got || "error" in got) return fail(`${reply.code}: ${got ? got.error : "no reply"} from ${reply.bytes.toString("hex")}`);
        if (!got.bytes.equals(reply.bytes)) fail(`${reply.code}: the reply's bytes changed`);
        if ((got.binary !== undefined) !== reply.binary) fail(`${reply.code}: binary part ${got.binary ? "found" : "lost"}`);
        if (!got.bytes.subarray(0, got.text.length).toString("utf8").startsWith(`CMD ${reply.code} Received.`)) fail("the text part is not the reply's");
        if (reader.takeStray().length) fail("bytes left over");
      }
    }),
};

const replyGarbage: FuzzTarget = {
  name: "FlashForge TCP replies, garbage from the printer",
  property: () =>
    fc.property(
      fc.constantFrom("M115", "M661", "M662"),
      fc.oneof(bytes(300), wireText(200).map((t) => Buffer.from(t)), scriptedReply.chain((r) => bytes(40).map((tail) => Buffer.concat([r.bytes, tail])))),
      cuts(6),
      (code, stream, at) => {
        const reader = createReplyReader();
        reader.expect(code);
        let consumed = 0;
        for (const chunk of chunked(stream, at)) {
          reader.push(chunk);
          const step = reader.next();
          if (step.kind === "error") return;
          if (step.kind === "reply") {
            // A reply is the start of what arrived, byte for byte.
            if (!step.reply.bytes.equals(stream.subarray(consumed, consumed + step.reply.bytes.length))) fail("a reply that is not the stream's bytes");
            consumed += step.reply.bytes.length;
            if (step.reply.binary && !step.reply.bytes.subarray(step.reply.bytes.length - step.reply.binary.length).equals(step.reply.binary)) fail("binary not at the end");
            reader.expect(code);
          }
        }
      },
    ),
};

const replyBound: FuzzTarget = {
  name: "FlashForge TCP replies, a printer that never says ok",
  costFactor: 200,
  property: () =>
    fc.property(fc.integer({ min: 1, max: 16 }), fc.constantFrom(0x41, 0x0a, 0x6f), (chunks, filler) => {
      const reader = createReplyReader();
      reader.expect("M115");
      const chunk = Buffer.alloc(Math.ceil((MAX_REPLY_TEXT_BYTES + 1) / chunks), filler);
      for (let i = 0; i < chunks; i++) {
        reader.push(chunk);
        const step = reader.next();
        if (step.kind === "reply") fail("a reply without ok");
        if (step.kind === "error") return;
      }
      fail(`${chunks * chunk.length} bytes without ok were kept, not refused`);
    }),
};

const binaryClaim: FuzzTarget = {
  name: "FlashForge TCP replies, the length a binary part claims",
  property: () =>
    fc.property(fc.constantFrom("M661", "M662"), fc.array(argumentText, { maxLength: 3 }), fc.integer({ min: 0, max: 0xffffffff }), bytes(64), (code, paths, claim, tail) => {
      // Framed as the printer would, the last length its own choice: one past the limit is refused at once, not awaited.
      const u32 = (n: number) => {
        const b = Buffer.alloc(4);
        b.writeUInt32BE(n);
        return b;
      };
      const before = code === "M662" ? THUMBNAIL_MAGIC : encodeFileList(paths);
      if (code === "M661") before.writeUInt32BE(paths.length + 1, 4);
      const binary = Buffer.concat(code === "M662" ? [before, u32(claim), tail] : [before, FILE_ENTRY_MAGIC, u32(claim), tail]);
      const reader = createReplyReader();
      reader.expect(code);
      reader.push(Buffer.concat([textReply(code, []), binary]));
      const step = reader.next();
      const claimed = (code === "M662" ? 8 : before.length + 8) + claim;
      if (claimed > MAX_BINARY_REPLY_BYTES + 8 && step.kind !== "error") fail(`a binary part claiming ${claimed} bytes gave ${step.kind}`);
      if (claimed <= MAX_BINARY_REPLY_BYTES && step.kind === "error") fail(`a binary part of ${claimed} bytes was refused`);
      if (step.kind === "reply" && step.reply.binary?.length !== claimed) fail("the binary part is not the claimed length");
    }),
};

// --- camera: the viewer's request line, the printer's MJPEG stream -------------------------------------------

const targetText = fc.string({ maxLength: 30, unit: fc.constantFrom("/", "?", "&", "=", "a", "action", "stream", "snapshot", "%", "%2", "%41", "%C3", "+", "[", "]", ":", "@", "#", " ", "ü", "//") });

const cameraRequestLine: FuzzTarget = {
  name: "FlashForge camera request line",
  property: () =>
    fc.property(
      fc.oneof(
        wireText(80),
        fc.record({ method: fc.constantFrom("GET", "HEAD", "POST", "G T", ""), target: targetText, version: fc.constantFrom("HTTP/1.1", "HTTP/1.0", "HTTP/2", "") }).map(
          ({ method, target, version }) => `${method} ${target} ${version}`,
        ),
      ),
      (line) => {
        const request = parseCameraRequestLine(line);
        if (request === "invalid") return;
        if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(request.method)) fail(`method ${JSON.stringify(request.method)}`);
        if (!request.path.startsWith("/") || /[\s?#]/.test(request.path)) fail(`path ${JSON.stringify(request.path)}`);
        if (request.action !== undefined && typeof request.action !== "string") fail("action is not a string");
        // Where URL can read the target too, both find the same action.
        const target = line.split(" ")[1]!;
        const query = target.includes("?") ? target.slice(target.indexOf("?") + 1) : "";
        let decodable = true;
        try {
          decodeURIComponent(query.replace(/\+/g, " "));
        } catch {
          decodable = false;
        }
        let url: URL | undefined;
        try {
          url = new URL(target, "http://camera");
        } catch {
          url = undefined; // "//" and "//[": the cases new URL() throws on, read here all the same
        }
        if (url && target.startsWith("/") && decodable) {
          const expected = url.searchParams.get("action") ?? undefined;
          if (expected !== request.action) fail(`action ${JSON.stringify(request.action)}, URL says ${JSON.stringify(expected)}`);
        }
      },
    ),
};

const cameraAction: FuzzTarget = {
  name: "FlashForge camera request line, any action",
  property: () =>
    fc.property(fc.string({ maxLength: 20, unit: "grapheme" }), (action) => {
      const request = parseCameraRequestLine(`GET /?action=${encodeURIComponent(action)}&t=1 HTTP/1.1`);
      if (request === "invalid" || request.action !== action) fail(`${JSON.stringify(action)} read as ${JSON.stringify(request)}`);
    }),
};

const jpeg = bytes(200).map((b) => Buffer.concat([Buffer.from([0xff, 0xd8]), b, Buffer.from([0xff, 0xd9])]));

const cameraStream: FuzzTarget = {
  name: "FlashForge camera MJPEG stream from the printer",
  property: () =>
    fc.property(
      fc.oneof(
        fc.array(jpeg, { maxLength: 4 }).map((frames) => ({ frames, stream: Buffer.concat(frames.map((j) => mjpegPart({ jpeg: j, receivedAt: 0 } as CameraFrame))) })),
        fc.oneof(bytes(400), wireText(200).map((t) => Buffer.from(t))).map((stream) => ({ frames: undefined, stream })),
      ),
      cuts(6),
      ({ frames, stream }, at) => {
        const parser = createMjpegParser(MJPEG_BOUNDARY);
        const out: Buffer[] = [];
        try {
          for (const chunk of chunked(stream, at)) out.push(...parser.push(chunk));
        } catch (e) {
          if (frames) fail(`a well-formed stream was refused: ${(e as Error).message}`);
          return;
        }
        for (const frame of out) if (frame[0] !== 0xff || frame[1] !== 0xd8 || frame.length > MAX_CAMERA_JPEG_BYTES) fail("a frame that is not a JPEG");
        if (frames) deepStrictEqual(out.map((f) => f.toString("hex")), frames.map((f) => f.toString("hex")));
      },
    ),
};

// --- discovery 48899 -------------------------------------------------------------------------------------------

const nameText = fc.string({ maxLength: 140, unit: fc.constantFrom("a", "Z", "5", "-", " ", "ü", "模", "🙂") });

const discoveryDatagram: FuzzTarget = {
  name: "FlashForge discovery datagram",
  property: () =>
    fc.property(
      fc.oneof(bytes(400), bytes(DISCOVERY_REPLY_BYTES + 20, DISCOVERY_REPLY_BYTES)),
      fc.record({ name: nameText, serial: nameText, commandPort: fc.integer({ min: 0, max: 65535 }), httpPort: fc.integer({ min: 0, max: 65535 }) }),
      (datagram, changes) => {
        let decoded: ReturnType<typeof decodeDiscoveryReply> | undefined;
        try {
          decoded = decodeDiscoveryReply(datagram);
        } catch (e) {
          if (datagram.length > 0x92) fail(`a ${datagram.length}-byte datagram was refused: ${(e as Error).message}`);
        }
        if (decoded) {
          if (decoded.name.includes("\0") || decoded.serial.includes("\0")) fail("a NUL inside a name");
          for (const port of [decoded.commandPort, decoded.httpPort]) if (!(port >= 0 && port <= 65535)) fail(`port ${port}`);
        }
        if (datagram.length < DISCOVERY_REPLY_BYTES) return;
        // The proxy's rewrite changes name, serial and ports, and keeps every other byte of the printer's reply.
        const out = rewriteDiscoveryReply(datagram, changes);
        if (out.length !== datagram.length) fail("the rewrite changed the length");
        const back = decodeDiscoveryReply(out);
        if (back.commandPort !== changes.commandPort || back.httpPort !== changes.httpPort) fail("ports not rewritten");
        if (!Buffer.from(changes.name).toString("utf8").startsWith(back.name.replace(/\uFFFD$/, ""))) fail(`name ${JSON.stringify(back.name)}`);
        for (let i = 0x86; i < 0x8e; i++) if (out[i] !== datagram[i]) fail(`byte ${i} changed`);
        if (out[0x90] !== datagram[0x90] || out[0x91] !== datagram[0x91]) fail("status changed");
        const whole = encodeDiscoveryReply({ ...changes, vendorId: 1, productId: 2, productType: 3, status: 4 });
        if (whole.length !== DISCOVERY_REPLY_BYTES) fail("an encoded reply of the wrong length");
        const again = decodeDiscoveryReply(whole);
        if (Buffer.byteLength(changes.name) < 0x83 && !changes.name.includes("\0") && again.name !== changes.name) fail(`name ${JSON.stringify(changes.name)} came back ${JSON.stringify(again.name)}`);
      },
    ),
};

// --- HTTP 8898: the /detail answer the proxy rewrites -------------------------------------------------------------

const detailAnswer = fc.oneof(
  wireText(120),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc
    .record({
      code: fc.integer(),
      detail: fc.oneof(
        fc.record({ ipAddr: fc.oneof(fc.ipV4(), fc.integer()), cameraStreamUrl: fc.oneof(fc.webUrl(), fc.constant(""), wireText(30), fc.constant("http://[")), name: fc.string() }, { requiredKeys: [] }),
        fc.jsonValue({ maxDepth: 2 }),
      ),
    })
    .map((v) => JSON.stringify(v)),
);

const httpDetail: FuzzTarget = {
  name: "FlashForge HTTP /detail answer",
  property: () =>
    fc.property(detailAnswer, fc.ipV4(), fc.integer({ min: 1, max: 65535 }), (text, local, port) => {
      const out = rewriteDetail(text, local, port);
      if (out === text) return;
      const body = JSON.parse(out) as { detail: Record<string, unknown> };
      const before = (JSON.parse(text) as { detail: Record<string, unknown> }).detail;
      if (typeof before.ipAddr === "string" && body.detail.ipAddr !== local) fail("ipAddr not ours");
      let original: URL | undefined;
      try {
        original = typeof before.cameraStreamUrl === "string" ? new URL(before.cameraStreamUrl) : undefined;
      } catch {
        original = undefined;
      }
      if (original && /^https?:$/.test(original.protocol)) {
        const url = new URL(String(body.detail.cameraStreamUrl));
        if (url.hostname !== local || (url.port !== String(port) && !(url.port === "" && String(port) === (url.protocol === "https:" ? "443" : "80")))) {
          fail(`camera URL ${body.detail.cameraStreamUrl}`);
        }
      }
      else deepStrictEqual(body.detail.cameraStreamUrl, before.cameraStreamUrl);
      for (const key of Object.keys(before)) if (key !== "ipAddr" && key !== "cameraStreamUrl") deepStrictEqual(body.detail[key], before[key]);
    }),
};

export const targets: FuzzTarget[] = [
  commandLine, commandFields, replyStream, replyGarbage, replyBound, binaryClaim, cameraRequestLine, cameraAction, cameraStream, discoveryDatagram, httpDetail,
];
