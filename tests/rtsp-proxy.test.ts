// The RTSPS camera through pandaproxy against the simulated X1C (FFmpeg test pattern behind our own server with
// live555-style Digest-only auth): real clients (ffmpeg, ffprobe, GStreamer) decode frames; credentials,
// transports, FFmpeg supervision (kill, stall, linger) and the web JPEG feed.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import type { Service } from "../lib/core/service.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { simIdentity } from "../lib/sim/bambu.ts";
import { startSimRtsp, type SimRtsp } from "../lib/sim/rtsp.ts";
import { encodeFrame, header, type RtspResponse } from "../lib/rtsp/message.ts";
import { ACCESS_CODE, VIEWER_CODE, ffmpegDecode, proxyContext, rawClient, run, waitFor, type RawClient } from "./rtsp-fixtures.ts";

const SIM = "127.0.5.1";
const PROXY = "127.0.5.2";
const PATH = "/streaming/live/1";
const url = (host: string, password = ACCESS_CODE) => `rtsps://bblp:${password}@${host}:322${PATH}`;
const LINGER_MS = 4_000;
const STALL_MS = 3_000;
/** A second proxy with a short session timeout (the default 60 s would make the test slow). */
const SHORT = "127.0.5.3";
const SHORT_SESSION_MS = 1_500;
const KEEPALIVE_EVERY_MS = 400;

let sim: SimRtsp;
let service: Service;
let shortService: Service;
const ctx = proxyContext({ bind: PROXY, printerHost: SIM, printerRtsp: 322, plain: 8554 });
const details = () => service.status().details ?? {};

/** DESCRIBE, SETUP, PLAY as a raw client; frames land in `client.frames`, the PLAY reply in `client.played`. */
async function play(host = PROXY, password = ACCESS_CODE): Promise<RawClient & { played: RtspResponse; session: string }> {
  const client = await rawClient(host, 322, { user: "bblp", password });
  const described = await client.request("DESCRIBE", `rtsps://${host}:322${PATH}`);
  expect(described.status).toBe(200);
  const setup = await client.request("SETUP", `rtsps://${host}:322${PATH}/track1`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"]]);
  expect(setup.status).toBe(200);
  const session = setup.headers.find(([n]) => n === "Session")?.[1]?.split(";")[0] ?? "";
  const played = await client.request("PLAY", `rtsps://${host}:322${PATH}`, [["Session", session]]);
  expect(played.status).toBe(200);
  return Object.assign(client, { played, session });
}

beforeAll(async () => {
  sim = await startSimRtsp(simIdentity({ host: SIM, model: "X1C", serial: "00M09A350100123", accessCode: ACCESS_CODE, ports: { rtsp: 322 } }), { cameraWidth: 640, cameraHeight: 360, cameraFps: 15 });
  service = createRtspService(ctx, { lingerMs: LINGER_MS, stallTimeoutMs: STALL_MS, backoffMinMs: 300 });
  await service.start();
  shortService = createRtspService(proxyContext({ bind: SHORT, printerHost: SIM, printerRtsp: 322 }), { lingerMs: 1_000, backoffMinMs: 300, sessionTimeoutMs: SHORT_SESSION_MS });
  await shortService.start();
});

afterAll(async () => {
  await shortService?.stop();
  await service?.stop();
  await sim?.stop();
});

describe("RTSPS camera through pandaproxy (simulated X1C)", () => {
  test("ffmpeg decodes frames through the proxy", async () => {
    const { frames, ran } = await ffmpegDecode(url(PROXY), 20);
    expect(ran.code).toBe(0);
    expect(frames).toBeGreaterThanOrEqual(20);
  }, 60_000);

  test("ffprobe sees the printer's H.264 stream, also on the plain RTSP port", async () => {
    const ran = await run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", `rtsp://bblp:${ACCESS_CODE}@${PROXY}:8554${PATH}`]);
    expect(ran.stdout.trim()).toBe("h264,640,360");
  }, 30_000);

  test("GStreamer rtspsrc plays it over TLS", async () => {
    const ran = await run([
      "gst-launch-1.0", "rtspsrc", `location=rtsps://${PROXY}:322${PATH}`, "tls-validation-flags=0", "user-id=bblp", `user-pw=${VIEWER_CODE}`,
      "protocols=tcp", "!", "rtph264depay", "!", "avdec_h264", "!", "identity", "eos-after=10", "!", "fakesink",
    ], 40_000);
    // Ten decoded frames end the stream (EOS); errors count only before it. While gst-launch shuts down, its
    // application thread cancels rtspsrc's connection while rtspsrc is still writing PAUSE, which GStreamer 1.22
    // reports as "Received end-of-file": a client-side race, rarer since PLAY answers RTP-Info (about 1 in 35
    // runs) but not gone (docs/protocol-notes.md, GStreamer rtspsrc).
    const output = ran.stdout + ran.stderr;
    const eos = output.indexOf('Got EOS from element "pipeline0"');
    expect(eos).toBeGreaterThan(-1);
    expect(output.slice(0, eos)).not.toContain("ERROR");
  }, 45_000);

  test("wrong credentials get 401; the viewer access code and Basic work; SDP carries SPS/PPS", async () => {
    const wrong = await rawClient(PROXY, 322, { user: "bblp", password: "00000000" });
    const refused = await wrong.request("DESCRIBE", `rtsps://${PROXY}:322${PATH}`);
    expect(refused.status).toBe(401);
    expect(refused.headers.filter(([n]) => n === "WWW-Authenticate").map(([, v]) => v.split(" ")[0])).toEqual(["Digest", "Basic"]);
    wrong.close();

    const viewer = await rawClient(PROXY, 322, { user: "bblp", password: VIEWER_CODE });
    const described = await viewer.request("DESCRIBE", `rtsps://${PROXY}:322${PATH}`);
    expect(described.status).toBe(200);
    expect(described.body.toString()).toContain("sprop-parameter-sets=");
    expect(described.body.toString()).toContain("a=control:track1");
    viewer.close();

    const basic = await rawClient(PROXY, 322);
    const ok = await basic.request("DESCRIBE", `rtsps://${PROXY}:322${PATH}`, [["Authorization", `Basic ${Buffer.from(`bblp:${ACCESS_CODE}`).toString("base64")}`]]);
    expect(ok.status).toBe(200);
    basic.close();
  }, 30_000);

  test("the simulated printer refuses Basic, as live555 does", async () => {
    const client = await rawClient(SIM, 322);
    const refused = await client.request("DESCRIBE", `rtsps://${SIM}:322${PATH}`, [["Authorization", `Basic ${Buffer.from(`bblp:${ACCESS_CODE}`).toString("base64")}`]]);
    expect(refused.status).toBe(401);
    expect(refused.headers.filter(([n]) => n === "WWW-Authenticate").map(([, v]) => v)).toEqual([expect.stringMatching(/^Digest realm="LIVE555 Streaming Media", nonce="/)]);
    client.close();
  });

  test("UDP-only SETUP is answered 461 so clients fall back to TCP", async () => {
    const client = await rawClient(PROXY, 322, { user: "bblp", password: ACCESS_CODE });
    expect((await client.request("DESCRIBE", `rtsps://${PROXY}:322${PATH}`)).status).toBe(200);
    const setup = await client.request("SETUP", `rtsps://${PROXY}:322${PATH}/track1`, [["Transport", "RTP/AVP;unicast;client_port=5000-5001"]]);
    expect(setup.status).toBe(461);
    client.close();
  }, 30_000);

  test("the access code never appears in FFmpeg's command line", async () => {
    const reader = await play();
    await waitFor("FFmpeg", () => details().ffmpegPid !== undefined);
    const cmdline = readFileSync(`/proc/${details().ffmpegPid}/cmdline`, "utf8").split("\0");
    expect(cmdline).toContain("copy");
    expect(cmdline.join(" ")).not.toContain(ACCESS_CODE);
    expect(cmdline.join(" ")).not.toContain(VIEWER_CODE);
    reader.close();
  }, 30_000);

  test("a new reader starts at a key frame (its first packet begins an SPS or IDR)", async () => {
    const reader = await play();
    await waitFor("video", () => reader.frames.length > 0);
    const first = reader.frames.find((f) => f.channel === 0)!;
    const nal = first.payload[12]! & 0x1f;
    const fuType = first.payload[13]! & 0x1f;
    expect(nal === 7 || nal === 5 || nal === 24 || (nal === 28 && fuType === 5)).toBe(true);
    reader.close();
  }, 30_000);

  test("PLAY answers RTP-Info like live555: the seq and rtptime of the reader's first packet", async () => {
    const readers = [await play(), await play()];
    for (const reader of readers) {
      const info = header(reader.played.headers, "rtp-info") ?? "";
      const match = /^url=rtsps:\/\/[^;]+\/streaming\/live\/1\/track1;seq=(\d+);rtptime=(\d+)$/.exec(info);
      expect(match).not.toBeNull();
      await waitFor("video", () => reader.frames.some((f) => f.channel === 0));
      const first = reader.frames.find((f) => f.channel === 0)!;
      expect(first.payload.readUInt16BE(2)).toBe(Number(match![1]));
      expect(first.payload.readUInt32BE(4)).toBe(Number(match![2]));
      // Numbering runs on from there without gaps.
      await waitFor("more video", () => reader.frames.filter((f) => f.channel === 0).length >= 20);
      const seqs = reader.frames.filter((f) => f.channel === 0).slice(0, 20).map((f) => f.payload.readUInt16BE(2));
      for (let i = 1; i < seqs.length; i++) expect((seqs[i]! - seqs[i - 1]!) & 0xffff).toBe(1);
      reader.close();
    }
  }, 30_000);

  test("the web page's CameraFeed gets JPEG frames while claimed", async () => {
    const feed = ctx.hub.camera!;
    expect(feed.source).toBe("rtsp");
    const before = feed.frames.published;
    const release = feed.claim();
    try {
      await waitFor("JPEG frames", () => feed.frames.published >= before + 3, 30_000);
      const jpeg = feed.frames.latest()!.jpeg;
      expect(jpeg.subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
      expect(jpeg.subarray(-2)).toEqual(Buffer.from([0xff, 0xd9]));
    } finally {
      release();
    }
  }, 40_000);

  test("FFmpeg is restarted after being killed, and a playing reader keeps receiving", async () => {
    const reader = await play();
    await waitFor("FFmpeg", () => details().ffmpegPid !== undefined);
    const starts = Number(details().ffmpegStarts);
    process.kill(Number(details().ffmpegPid), "SIGKILL");
    await waitFor("a new FFmpeg", () => Number(details().ffmpegStarts) > starts && details().ffmpegPid !== undefined, 30_000);
    const count = reader.frames.length;
    await waitFor("video after the restart", () => reader.frames.length > count + 50, 30_000);
    reader.close();
  }, 60_000);

  test("a stalled FFmpeg is killed and restarted", async () => {
    const reader = await play();
    await waitFor("FFmpeg", () => details().ffmpegPid !== undefined);
    const stalls = Number(details().stalls);
    const starts = Number(details().ffmpegStarts);
    process.kill(Number(details().ffmpegPid), "SIGSTOP");
    await waitFor("the stall to be noticed", () => Number(details().stalls) > stalls, STALL_MS + 10_000);
    await waitFor("a new FFmpeg", () => Number(details().ffmpegStarts) > starts && details().ffmpegPid !== undefined, 30_000);
    const count = reader.frames.length;
    await waitFor("video after the restart", () => reader.frames.length > count + 50, 30_000);
    reader.close();
  }, 60_000);

  test("FFmpeg stops after the linger once the last client left", async () => {
    const reader = await play();
    await waitFor("FFmpeg", () => details().ffmpegPid !== undefined);
    const pid = Number(details().ffmpegPid);
    reader.close();
    await Bun.sleep(LINGER_MS / 2);
    expect(details().ffmpegPid).toBe(pid);
    await waitFor("FFmpeg to stop", () => details().ffmpegPid === undefined, LINGER_MS + 5_000);
    expect(service.status().upstream).toBe("idle");
    // The process is really gone.
    expect(() => process.kill(pid, 0)).toThrow();
  }, 30_000);
});

describe("RTSP session timeout (shortened to 1.5 s)", () => {
  test("an idle session is closed; GET_PARAMETER keepalives and RTCP receiver reports keep theirs alive", async () => {
    const idle = await play(SHORT);
    const idleSince = Date.now();
    const viaGet = await play(SHORT);
    const viaRtcp = await play(SHORT);
    expect(header(idle.played.headers, "session")).toBe(`${idle.session};timeout=2`);
    const closedAt = new Map<RawClient, number>();
    for (const c of [idle, viaGet, viaRtcp]) c.socket.once("close", () => closedAt.set(c, Date.now()));
    // An RTCP receiver report (RFC 3550 6.4.2) with no report blocks, on the RTCP channel of interleaved=0-1.
    const receiverReport = Buffer.from([0x80, 201, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78]);
    const until = Date.now() + SHORT_SESSION_MS * 3;
    while (Date.now() < until) {
      expect((await viaGet.request("GET_PARAMETER", `rtsps://${SHORT}:322${PATH}`, [["Session", viaGet.session]])).status).toBe(200);
      viaRtcp.socket.write(encodeFrame(1, receiverReport));
      await Bun.sleep(KEEPALIVE_EVERY_MS);
    }
    await waitFor("the idle session to be closed", () => closedAt.has(idle), SHORT_SESSION_MS * 2);
    expect(closedAt.get(idle)! - idleSince).toBeGreaterThanOrEqual(SHORT_SESSION_MS);
    expect(closedAt.has(viaGet)).toBe(false);
    expect(closedAt.has(viaRtcp)).toBe(false);
    // Still playing, not just connected.
    const counts = [viaGet.frames.length, viaRtcp.frames.length];
    await waitFor("video on the kept sessions", () => viaGet.frames.length > counts[0]! + 10 && viaRtcp.frames.length > counts[1]! + 10);
    viaGet.close();
    viaRtcp.close();
  }, 40_000);
});
