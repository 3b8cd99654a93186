// The push's relay (rtsp/relay.ts in plain-TCP mode) when the media server stops reading mid-RECORD: the
// relay must close both sides once the bytes waiting for it have gone untaken for writeStallMs, or the push would
// hang until TCP gives up. The media server here is a few lines over real sockets: it answers ANNOUNCE, SETUP and
// RECORD 200, then reads nothing more; the pusher writes interleaved RTP as fast as the relay lets it.
// Loopback 127.0.52.10 (the media server).
import { afterAll, describe, expect, test } from "bun:test";
import { connect, createServer, type Server, type Socket } from "node:net";
import { captureLogs, processLogger, setupLogging } from "../lib/log.ts";
import { createRtspParser, encodeFrame, encodeRequest, encodeResponse, header } from "../lib/rtsp/message.ts";
import { startRelay, type Relay } from "../lib/rtsp/relay.ts";
import { until } from "./mqtt-helpers.ts";

const MEDIA = "127.0.52.10";
const MEDIA_PORT = 18556;
const STALL_MS = 1_000;
const FRAME_BYTES = 60_000;

let media: Server | undefined;
let relay: Relay | undefined;
afterAll(async () => {
  await relay?.close();
  media?.close();
});

/** Answers every request 200, and stops reading after RECORD. */
async function stuckMediaServer(): Promise<{ server: Server; stuck: () => boolean }> {
  let stuck = false;
  const server = createServer((socket: Socket) => {
    const parser = createRtspParser();
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      for (const m of parser.push(chunk)) {
        if (m.kind !== "request") continue;
        const headers: [string, string][] = [["CSeq", header(m.headers, "cseq") ?? "0"]];
        if (m.method === "SETUP") headers.push(["Session", "12345678"], ["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"]);
        socket.write(encodeResponse(200, headers));
        if (m.method === "RECORD") {
          stuck = true;
          socket.pause();
          return;
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(MEDIA_PORT, MEDIA, resolve));
  return { server, stuck: () => stuck };
}

describe("the push relay and a media server that stops reading", () => {
  test("both sides are closed once nothing was taken for writeStallMs, with a log line naming the media server", async () => {
    setupLogging("info");
    const stuckServer = await stuckMediaServer();
    media = stuckServer.server;
    let recording = false;
    relay = await startRelay({
      log: processLogger("export rtsp"), host: MEDIA, port: MEDIA_PORT, user: "", password: () => "", peer: "media server", maxClients: 1,
      writeStallMs: STALL_MS, onResponse: (method, status) => void (method === "RECORD" && status === 200 && (recording = true)),
    });
    const logs = captureLogs();
    const url = relay.url("/p1s");
    const { port } = new URL(url);
    const pusher = connect({ host: "127.0.0.1", port: Number(port) });
    let closed = false;
    pusher.on("close", () => (closed = true)).on("error", () => {});
    const sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";
    pusher.write(encodeRequest("ANNOUNCE", url, [["CSeq", "1"], ["Content-Type", "application/sdp"]], sdp));
    pusher.write(encodeRequest("SETUP", `${url}/streamid=0`, [["CSeq", "2"], ["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"]]));
    pusher.write(encodeRequest("RECORD", url, [["CSeq", "3"], ["Session", "12345678"]]));
    try {
      await until("RECORD accepted", () => recording && stuckServer.stuck(), 10_000);
      // RTP as fast as the relay takes it, until it closes us.
      const frame = encodeFrame(0, Buffer.alloc(FRAME_BYTES, 0x47));
      const pump = () => {
        while (!closed && pusher.write(frame));
        if (!closed) pusher.once("drain", pump);
      };
      pump();
      await until("the relay closing the pusher", () => closed, 60_000);
    } finally {
      logs.stop();
      pusher.destroy();
    }
    expect(logs.lines.some((l) => l.includes(`media server ${MEDIA}:${MEDIA_PORT} took none of the`) && l.includes(`in ${STALL_MS / 1000} s: closing`))).toBe(true);
  }, 90_000);
});
