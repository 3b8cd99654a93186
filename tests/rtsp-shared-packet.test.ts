// Readers share each RTP packet's bytes (lib/rtsp/stream.ts writeFrame): per reader only the `$` frame header and
// the 12-byte RTP header (its RTP-Info shift) are its own, written with the shared rest. Proved on real sockets:
// two readers (TLS and plain TCP) that joined at different times get RTP numbered from their own RTP-Info, payloads
// byte-identical to the source's, from one shared buffer, and (lib/rtsp/frame-writer.ts) all frames of one turn of
// the event loop in one socket write; a UDP reader gets whole datagrams from the two parts;
// and FFmpeg decodes through our RTSP server when its readers are written this way. Loopback 127.0.54.1-9.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { connect as tcpConnect, createServer as createTcpServer, type Server, type Socket } from "node:net";
import { connect as tlsConnect, createServer as createTlsServer } from "node:tls";
import { listen, type Listening } from "../lib/core/server.ts";
import { serviceLogger, setupLogging } from "../lib/log.ts";
import { createAuthenticator } from "../lib/rtsp/auth.ts";
import { createPublisher, ffmpegMissing, testPatternArgs } from "../lib/rtsp/ffmpeg.ts";
import { startLoopback } from "../lib/rtsp/loopback.ts";
import { createRtspParser, type InterleavedFrame } from "../lib/rtsp/message.ts";
import { createRtspServer } from "../lib/rtsp/server.ts";
import { tickWriter } from "../lib/rtsp/frame-writer.ts";
import { createStream, RTP_HEAD_BYTES, type ReaderHandle, type Stream, type StreamReader } from "../lib/rtsp/stream.ts";
import { openUdpPair } from "../lib/rtsp/udp.ts";
import { makeCa, makeLeaf } from "../lib/tls.ts";
import { ffmpegDecode } from "./rtsp-fixtures.ts";

const TCP_HOST = "127.0.54.1";
const TLS_HOST = "127.0.54.2";
const UDP_HOST = "127.0.54.3";
const UDP_CLIENT = "127.0.54.4";
const RTSP_HOST = "127.0.54.5";
const PATH = "/streaming/live/1";
const SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";
const log = serviceLogger("x1c", "rtsp");

/** An RTP packet from the publisher: `nal` first payload byte (0x67 SPS starts a key frame), then `size` bytes
 * of a pattern unique to `seq`. */
function sourcePacket(seq: number, ts: number, nal: number, size = 1200): Buffer {
  const packet = Buffer.alloc(12 + 1 + size);
  packet[0] = 0x80;
  packet[1] = 0x80 | 96;
  packet.writeUInt16BE(seq & 0xffff, 2);
  packet.writeUInt32BE(ts >>> 0, 4);
  packet.writeUInt32BE(0xcafe, 8);
  packet[12] = nal;
  for (let i = 0; i < size; i++) packet[13 + i] = (seq * 7 + i) & 0xff;
  return packet;
}

/** What the socket glue does with a reader's two parts on a TCP or TLS socket: one write per turn of the event
 * loop (lib/rtsp/frame-writer.ts), or simply two writes. */
function socketReader(label: string, socket: Socket, rests: Buffer[], perTurn: boolean): StreamReader & { writes: number } {
  const counted = { get destroyed() { return socket.destroyed; }, write: (b: Buffer) => (reader.writes++, socket.write(b)) };
  const batched = tickWriter(counted);
  const reader = {
    label,
    writes: 0,
    channels: [[0, 1] as [number, number]],
    backlog: () => socket.writableLength,
    write: (bytes: Buffer) => void counted.write(bytes),
    writeFrame(head: Buffer, rest: Buffer) {
      rests.push(rest);
      if (perTurn) return batched(head, rest);
      counted.write(head);
      counted.write(rest);
    },
  };
  return reader;
}

interface Client {
  frames: InterleavedFrame[];
  socket: Socket;
}

function collect(socket: Socket): Client {
  const parser = createRtspParser();
  const client: Client = { frames: [], socket };
  socket.on("data", (chunk: Buffer) => {
    for (const m of parser.push(chunk)) if (m.kind === "frame") client.frames.push({ ...m, payload: Buffer.from(m.payload) });
  });
  return client;
}

async function until(what: string, ok: () => boolean, ms = 5_000): Promise<void> {
  for (const end = Date.now() + ms; !ok(); await Bun.sleep(10)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

describe("RTSP readers share one packet buffer (real sockets)", () => {
  let tcpServer: Server;
  let tlsServer: Server;
  const accepted: Socket[] = [];
  beforeAll(async () => {
    setupLogging("warn", { quiet: true });
    const ca = makeCa("shared packet test", "pandaproxy tests");
    const leaf = makeLeaf(ca, TLS_HOST, { dns: [], ips: [TLS_HOST] });
    tcpServer = createTcpServer((s) => void accepted.push(s));
    tlsServer = createTlsServer({ key: leaf.key, cert: leaf.cert }, (s) => void accepted.push(s));
    await new Promise<void>((resolve) => tcpServer.listen(0, TCP_HOST, resolve));
    await new Promise<void>((resolve) => tlsServer.listen(0, TLS_HOST, resolve));
  });
  afterAll(() => {
    for (const s of accepted) s.destroy();
    tcpServer?.close();
    tlsServer?.close();
  });

  test("two readers joined at different times: their own numbering from RTP-Info, the source's payload, one buffer", async () => {
    const stream = createStream(PATH, log);
    stream.publish(SDP);
    const sent: Buffer[] = [];
    let seq = 50_000;
    let ts = 1_000;
    /** `count` packets, five per turn of the event loop (as FFmpeg's chunks carry several). */
    const ingest = async (count: number) => {
      for (let i = 0; i < count; i++) {
        if (i % 5 === 0) await Bun.sleep(0);
        // A key frame every 10 packets, so a reader added later starts soon.
        const packet = sourcePacket(seq++, (ts += 3000), sent.length % 10 === 0 ? 0x67 : 0x41);
        sent.push(Buffer.from(packet));
        stream.ingest(0, packet, false);
      }
    };
    const join = async (tls: boolean): Promise<{ client: Client; handle: ReaderHandle; rests: Buffer[]; reader: ReturnType<typeof socketReader> }> => {
      const before = accepted.length;
      const address = (tls ? tlsServer : tcpServer).address() as { port: number };
      const socket = tls
        ? tlsConnect({ host: TLS_HOST, port: address.port, rejectUnauthorized: false })
        : tcpConnect({ host: TCP_HOST, port: address.port });
      const client = collect(socket);
      await until("the connection", () => accepted.length > before);
      const rests: Buffer[] = [];
      const reader = socketReader(tls ? "tls" : "tcp", accepted[before]!, rests, tls);
      const handle = stream.addReader(reader);
      return { client, handle, rests, reader };
    };
    await ingest(15);
    const a = await join(true);
    await ingest(40);
    const b = await join(false);
    await ingest(45);
    await until("every packet", () => a.client.frames.length === 80 && b.client.frames.length === 40);

    for (const [reader, firstSent] of [[a, 20], [b, 60]] as const) {
      const start = reader.handle.rtpInfo[0]!;
      const frames = reader.client.frames;
      for (const [i, frame] of frames.entries()) {
        const source = sent[firstSent + i]!;
        expect(frame.channel).toBe(0);
        expect(frame.payload.readUInt16BE(2)).toBe((start.seq + i) & 0xffff);
        expect(frame.payload.readUInt32BE(4)).toBe((start.rtptime + (source.readUInt32BE(4) - sent[firstSent]!.readUInt32BE(4))) >>> 0);
        expect(frame.payload.subarray(12).equals(source.subarray(12))).toBe(true);
        expect(frame.payload[0]).toBe(source[0]);
        expect(frame.payload[1]).toBe(source[1]);
      }
      expect(new Set(frames.map((f) => f.payload.readUInt32BE(8))).size).toBe(1);
    }
    // Same SSRC for both, and the packets both got came from one buffer each, not a copy per reader.
    expect(a.client.frames[0]!.payload.readUInt32BE(8)).toBe(b.client.frames[0]!.payload.readUInt32BE(8));
    expect(a.rests).toHaveLength(80);
    expect(b.rests).toHaveLength(40);
    for (let i = 0; i < 40; i++) {
      const mine = a.rests[40 + i]!;
      const theirs = b.rests[i]!;
      expect(theirs.buffer).toBe(mine.buffer);
      expect(theirs.byteOffset).toBe(mine.byteOffset);
      expect(theirs.length).toBe(mine.length);
    }
    // The TLS reader's 80 frames left in one write per turn (16 turns of five), the other's in two per frame.
    expect(a.reader.writes).toBe(16);
    expect(b.reader.writes).toBe(80);
    a.handle.detach();
    b.handle.detach();
  });

  test("a reader without writeFrame still gets whole frames (a copy each)", async () => {
    const stream = createStream(PATH, log);
    stream.publish(SDP);
    const got: Buffer[] = [];
    const handle = stream.addReader({ label: "whole", channels: [[0, 1]], backlog: () => 0, write: (b) => void got.push(Buffer.from(b)) });
    const source = sourcePacket(7, 9000, 0x67);
    stream.ingest(0, Buffer.from(source), false);
    expect(got).toHaveLength(1);
    expect(got[0]!.length).toBe(4 + source.length);
    expect(got[0]!.readUInt16BE(4 + 2)).toBe(handle.rtpInfo[0]!.seq);
    expect(got[0]!.subarray(4 + 12).equals(source.subarray(12))).toBe(true);
  });

  test("a sender report keeps its place among the RTP frames: it goes through writeFrame too, on the reader's shift", () => {
    const stream = createStream(PATH, log);
    stream.publish(SDP);
    const calls: { head: Buffer; rest: Buffer }[] = [];
    const handle = stream.addReader({
      label: "order", channels: [[0, 1]], backlog: () => 0,
      write: () => {
        throw new Error("whole frames are not expected from a reader with writeFrame");
      },
      writeFrame: (head, rest) => void calls.push({ head: Buffer.from(head), rest }),
    });
    stream.ingest(0, sourcePacket(1, 90_000, 0x67, 100), false);
    const report = Buffer.alloc(28);
    report[0] = 0x80;
    report[1] = 200;
    report.writeUInt16BE(6, 2);
    report.writeUInt32BE(90_000 + 4_500, 16);
    stream.ingest(0, report, true);
    stream.ingest(0, sourcePacket(2, 93_000, 0x41, 100), false);
    expect(calls.map((c) => c.head[1])).toEqual([0, 1, 0]);
    const sr = calls[1]!;
    expect(sr.rest.length).toBe(0);
    expect(sr.head.length).toBe(4 + 28);
    // The report's RTP time is on the reader's line: its first packet's rtptime + 4500.
    expect(sr.head.readUInt32BE(4 + 16)).toBe((handle.rtpInfo[0]!.rtptime + 4_500) >>> 0);
  });

  test("over UDP the two parts leave as one datagram: the reader's RTP header, then the shared rest", async () => {
    const stream = createStream(PATH, log);
    stream.publish(SDP);
    const rtp: UdpSocket = createSocket("udp4");
    const rtcp: UdpSocket = createSocket("udp4");
    await new Promise<void>((resolve) => rtp.bind(0, UDP_CLIENT, resolve));
    await new Promise<void>((resolve) => rtcp.bind(rtp.address().port + 1, UDP_CLIENT, resolve));
    const datagrams: Buffer[] = [];
    let twoParts = 0;
    rtp.on("message", (m) => datagrams.push(m));
    const pair = await openUdpPair({
      localAddress: UDP_HOST, clientAddress: UDP_CLIENT, clientPorts: [rtp.address().port, rtp.address().port + 1],
      onRtcp: () => {}, onError: () => {},
    });
    try {
      const handle = stream.addReader({
        label: "udp", channels: [[0, 1]], backlog: () => 0,
        write: (bytes) => pair.send(bytes.subarray(4), (bytes[1]! & 1) === 1),
        writeFrame: (head, rest) => {
          twoParts++;
          pair.send([head.subarray(4), rest], (head[1]! & 1) === 1);
        },
      });
      const sent: Buffer[] = [];
      for (let i = 0; i < 5; i++) {
        const packet = sourcePacket(100 + i, 3000 * i, i === 0 ? 0x67 : 0x41, 900);
        sent.push(Buffer.from(packet));
        stream.ingest(0, packet, false);
      }
      await until("five datagrams", () => datagrams.length === 5);
      for (const [i, datagram] of datagrams.entries()) {
        expect(datagram.length).toBe(sent[i]!.length);
        expect(datagram.readUInt16BE(2)).toBe((handle.rtpInfo[0]!.seq + i) & 0xffff);
        expect(datagram.subarray(12).equals(sent[i]!.subarray(12))).toBe(true);
      }
      expect(twoParts).toBe(5);
      expect(RTP_HEAD_BYTES).toBe(16);
    } finally {
      pair.close();
      rtp.close();
      rtcp.close();
    }
  });
});

const noFfmpeg = ffmpegMissing("ffmpeg");
describe.skipIf(noFfmpeg !== undefined)("FFmpeg decodes readers written in two parts (our RTSP server)", () => {
  let listening: Listening;
  let stopAll: () => Promise<void>;
  const rests = new Map<string, Buffer[]>();

  beforeAll(async () => {
    setupLogging("warn", { quiet: true });
    const stream = createStream(PATH, log);
    const loopback = await startLoopback(log, new Map([[PATH, stream]]));
    const publisher = createPublisher({
      log, binary: "ffmpeg", stream, describe: "test pattern", lingerMs: 60_000,
      args: () => testPatternArgs(loopback.publishUrl(PATH), "320x240", 15),
    });
    stream.setDemand(() => publisher.upstream.claim());
    publisher.start();
    // The readers' stream: the same stream, its TCP readers written as the glue would with writeFrame.
    const twoParts: Stream = Object.create(stream, {
      addReader: {
        value: (reader: StreamReader) => {
          const mine: Buffer[] = [];
          rests.set(reader.label, mine);
          const perTurn = tickWriter({ destroyed: false, write: (bytes) => (reader.write(bytes), true) });
          return stream.addReader({
            ...reader,
            writeFrame(head: Buffer, rest: Buffer) {
              mine.push(rest);
              perTurn(head, rest);
            },
          });
        },
      },
    });
    const server = createRtspServer({
      log, streams: new Map([[PATH, twoParts]]),
      readerAuth: createAuthenticator({ realm: "test", allowBasic: false, credentials: () => [{ user: "bblp", password: "12345678", role: "access code" }] }),
    });
    listening = await listen({ log, what: "RTSP two-part test", host: RTSP_HOST, port: 0, onClient: server.handle });
    stopAll = async () => {
      await listening.close();
      await publisher.stop();
      await loopback.close();
    };
  });
  afterAll(async () => await stopAll?.());

  test("two FFmpeg readers, the second joining later, both decode; they got the same packet buffers", async () => {
    const url = `rtsp://bblp:12345678@${RTSP_HOST}:${listening.address.port}${PATH}`;
    const first = ffmpegDecode(url, 60, 40_000);
    await Bun.sleep(1_500);
    const second = await ffmpegDecode(url, 30, 40_000);
    const firstDone = await first;
    expect(second.frames).toBeGreaterThanOrEqual(30);
    expect(firstDone.frames).toBeGreaterThanOrEqual(60);
    const [a, b] = [...rests.values()];
    expect(a!.length).toBeGreaterThan(0);
    expect(b!.length).toBeGreaterThan(0);
    const shared = new Set(a!.map((r) => r.buffer));
    expect(b!.some((r) => shared.has(r.buffer))).toBe(true);
  }, 60_000);
});
