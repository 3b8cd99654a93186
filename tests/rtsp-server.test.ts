// The RTSP server's socket glue (lib/rtsp/server.ts) where it holds what connections share: each stream's
// producer. Loopback on 127.0.32.x; the session logic itself is tested without sockets in rtsp-session.test.ts.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, type Socket } from "node:net";
import { listen, type Listening } from "../lib/core/server.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import { createAuthenticator } from "../lib/rtsp/auth.ts";
import { createRtspParser, encodeRequest, type RtspResponse } from "../lib/rtsp/message.ts";
import { createRtspServer } from "../lib/rtsp/server.ts";
import { createStream, type Stream } from "../lib/rtsp/stream.ts";

const HOST = "127.0.32.1";
const PATH = "/streaming/live/1";
const SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";
const BASIC = `Basic ${Buffer.from("publisher:secret").toString("base64")}`;

let capture: ReturnType<typeof captureLogs>;
let listening: Listening;
let stream: Stream;
const log = serviceLogger("x1c", "rtsp");

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  capture = captureLogs();
  stream = createStream(PATH, log);
  const credentials = () => [{ user: "publisher", password: "secret", role: "publisher" }];
  const server = createRtspServer({
    log,
    streams: new Map([[PATH, stream]]),
    readerAuth: createAuthenticator({ realm: "test", allowBasic: true, credentials: () => [] }),
    publisherAuth: createAuthenticator({ realm: "test", allowBasic: true, credentials }),
  });
  listening = await listen({ log, what: "RTSP glue test", host: HOST, port: 0, onClient: server.handle });
});
afterAll(async () => {
  await listening?.close();
  capture?.stop();
});

/** A producer as FFmpeg publishes: ANNOUNCE, SETUP mode=record, RECORD (each answered before the next). */
async function publish(): Promise<{ socket: Socket; closed: Promise<void> }> {
  const socket = connect({ host: HOST, port: listening.address.port });
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  const parser = createRtspParser();
  const answers: RtspResponse[] = [];
  socket.on("data", (chunk: Buffer) => answers.push(...parser.push(chunk).filter((m): m is RtspResponse => m.kind === "response")));
  await new Promise((resolve) => socket.once("connect", resolve));
  const uri = `rtsp://${HOST}:${listening.address.port}${PATH}`;
  const steps: [string, string, [string, string][], string?][] = [
    ["ANNOUNCE", uri, [["Content-Type", "application/sdp"]], SDP],
    ["SETUP", `${uri}/streamid=0`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"]]],
    ["RECORD", uri, []],
  ];
  let session: string | undefined;
  for (const [i, [method, target, headers, body]] of steps.entries()) {
    const extra: [string, string][] = session ? [["Session", session]] : [];
    socket.write(encodeRequest(method, target, [["CSeq", String(i + 1)], ["Authorization", BASIC], ...headers, ...extra], body));
    for (let n = 0; n < 200 && answers.length <= i; n++) await Bun.sleep(10);
    expect(answers[i]?.status).toBe(200);
    session ??= answers[i]!.headers.find(([name]) => name === "Session")?.[1]?.split(";")[0];
  }
  return { socket, closed };
}

describe("each stream's producer", () => {
  test("a producer replaced by a newer one is closed, and its leaving does not take the stream from the newer one", async () => {
    const first = await publish();
    expect(stream.live).toBe(true);
    const second = await publish();
    await Promise.race([first.closed, Bun.sleep(2_000)]);
    expect(first.socket.destroyed).toBe(true);
    expect(capture.lines.some((l) => l.includes(`a new producer replaces the previous one of ${PATH}`))).toBe(true);
    // Its close is handled by now (the server's socket closed before ours saw it); the stream stays live.
    await Bun.sleep(50);
    expect(stream.live).toBe(true);
    second.socket.destroy();
    await second.closed;
    for (let n = 0; n < 100 && stream.live; n++) await Bun.sleep(10);
    expect(stream.live).toBe(false);
  });
});
