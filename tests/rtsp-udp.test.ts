// RTP over UDP for readers on the plain RTSP port (never on the TLS port), through pandaproxy against the
// simulated X1C: ffmpeg and GStreamer decode frames over UDP, the Transport reply, RTCP both ways, 461 where UDP
// is not served, and the server's UDP ports closed after TEARDOWN, the connection's end and a session timeout.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import type { Service } from "../lib/core/service.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { simIdentity } from "../lib/sim/bambu.ts";
import { startSimRtsp, type SimRtsp } from "../lib/sim/rtsp.ts";
import { header, type RtspResponse } from "../lib/rtsp/message.ts";
import { ACCESS_CODE, VIEWER_CODE, ffmpegDecode, proxyContext, rawClient, run, waitFor, type RawClient } from "./rtsp-fixtures.ts";

const SIM = "127.0.5.40";
const PROXY = "127.0.5.41";
/** A second proxy with a short session timeout (the default 60 s would make the test slow). */
const SHORT = "127.0.5.42";
const PLAIN = 8554;
const PATH = "/streaming/live/1";
const SHORT_SESSION_MS = 1_500;
const KEEPALIVE_EVERY_MS = 400;
/** FFmpeg's RTP muxer sends a sender report with its first packet and then every few hundred packets. */
const SENDER_REPORT_WAIT_MS = 20_000;

let sim: SimRtsp;
let service: Service;
let shortService: Service;
const ctx = proxyContext({ bind: PROXY, printerHost: SIM, printerRtsp: 322, plain: PLAIN });
const shortCtx = proxyContext({ bind: SHORT, printerHost: SIM, printerRtsp: 322, plain: PLAIN });
const udpPairs = (s: Service = service) => Number(s.status().details?.udpPortPairs);

interface Received {
  packet: Buffer;
  from: RemoteInfo;
}

/** A client's even/odd UDP port pair on `address`, collecting what arrives on each. */
async function clientPorts(address: string): Promise<{ rtp: UdpSocket; rtcp: UdpSocket; ports: [number, number]; got: { rtp: Received[]; rtcp: Received[] }; close(): void }> {
  const bind = (port: number) =>
    new Promise<UdpSocket>((resolve, reject) => {
      const socket = createSocket("udp4");
      socket.once("error", (error) => {
        socket.close();
        reject(error);
      });
      socket.bind({ port, address, exclusive: true }, () => resolve(socket));
    });
  for (let attempt = 0; attempt < 32; attempt++) {
    const rtp = await bind(0);
    const port = rtp.address().port;
    if (port % 2) {
      rtp.close();
      continue;
    }
    const rtcp = await bind(port + 1).catch(() => undefined);
    if (!rtcp) {
      rtp.close();
      continue;
    }
    const got = { rtp: [] as Received[], rtcp: [] as Received[] };
    rtp.on("message", (packet, from) => got.rtp.push({ packet, from }));
    rtcp.on("message", (packet, from) => got.rtcp.push({ packet, from }));
    return { rtp, rtcp, ports: [port, port + 1], got, close: () => (rtp.close(), rtcp.close()) };
  }
  throw new Error("no client port pair");
}

/** Is `port` on `address` free to bind (i.e. the proxy closed its socket there)? */
function udpPortFree(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    socket.once("error", () => {
      socket.close();
      resolve(false);
    });
    socket.bind({ port, address, exclusive: true }, () => {
      socket.close();
      resolve(true);
    });
  });
}

type UdpReader = RawClient & { setup: RtspResponse; session: string; serverPorts: [number, number]; udp: Awaited<ReturnType<typeof clientPorts>> };

/** DESCRIBE and SETUP over UDP on the plain port as a raw client (PLAY is left to the test). */
async function setupUdp(host = PROXY): Promise<UdpReader> {
  const client = await rawClient(host, PLAIN, { user: "bblp", password: ACCESS_CODE }, true);
  const udp = await clientPorts(client.socket.localAddress!);
  const base = `rtsp://${host}:${PLAIN}${PATH}`;
  expect((await client.request("DESCRIBE", base)).status).toBe(200);
  const setup = await client.request("SETUP", `${base}/track1`, [["Transport", `RTP/AVP;unicast;client_port=${udp.ports[0]}-${udp.ports[1]}`]]);
  expect(setup.status).toBe(200);
  const session = header(setup.headers, "session")?.split(";")[0] ?? "";
  const ports = /server_port=(\d+)-(\d+)/.exec(header(setup.headers, "transport") ?? "");
  const serverPorts: [number, number] = [Number(ports?.[1]), Number(ports?.[2])];
  const close = client.close;
  return Object.assign(client, { setup, session, serverPorts, udp, close: () => (close(), udp.close()) });
}

async function playUdp(reader: UdpReader, host = PROXY): Promise<RtspResponse> {
  const played = await reader.request("PLAY", `rtsp://${host}:${PLAIN}${PATH}`, [["Session", reader.session]]);
  expect(played.status).toBe(200);
  return played;
}

beforeAll(async () => {
  // The 461 reasons are info lines.
  if (!process.env.RTSP_TEST_LOGS) setupLogging("info", { quiet: true });
  sim = await startSimRtsp(simIdentity({ host: SIM, model: "X1C", serial: "00M09A350100123", accessCode: ACCESS_CODE, ports: { rtsp: 322 } }), { cameraWidth: 640, cameraHeight: 360, cameraFps: 15 });
  service = createRtspService(ctx, { lingerMs: 4_000, backoffMinMs: 300 });
  await service.start();
  shortService = createRtspService(shortCtx, { lingerMs: 1_000, backoffMinMs: 300, sessionTimeoutMs: SHORT_SESSION_MS });
  await shortService.start();
});

afterAll(async () => {
  await shortService?.stop();
  await service?.stop();
  await sim?.stop();
  if (!process.env.RTSP_TEST_LOGS) setupLogging("warn", { quiet: true });
});

describe("RTP over UDP on the plain RTSP port (simulated X1C)", () => {
  test("ffmpeg -rtsp_transport udp decodes frames through the plain port", async () => {
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, udpPairs())), 50);
    try {
      const { frames, ran } = await ffmpegDecode(`rtsp://bblp:${ACCESS_CODE}@${PROXY}:${PLAIN}${PATH}`, 20, 40_000, "udp");
      expect(ran.code).toBe(0);
      expect(frames).toBeGreaterThanOrEqual(20);
    } finally {
      clearInterval(watch);
    }
    expect(most).toBe(1);
    await waitFor("ffmpeg's UDP ports to be closed", () => udpPairs() === 0, 5_000);
  }, 60_000);

  test("GStreamer rtspsrc protocols=udp decodes frames", async () => {
    const ran = await run([
      "gst-launch-1.0", "rtspsrc", `location=rtsp://${PROXY}:${PLAIN}${PATH}`, "user-id=bblp", `user-pw=${VIEWER_CODE}`,
      "protocols=udp", "!", "rtph264depay", "!", "avdec_h264", "!", "identity", "eos-after=10", "!", "fakesink",
    ], 40_000);
    // As in tests/rtsp-proxy.test.ts: ten decoded frames end the stream (EOS) and errors count only before it,
    // because gst-launch's shutdown races rtspsrc's own PAUSE (docs/protocol-notes.md, GStreamer rtspsrc).
    const output = ran.stdout + ran.stderr;
    const eos = output.indexOf('Got EOS from element "pipeline0"');
    expect(eos).toBeGreaterThan(-1);
    expect(output.slice(0, eos)).not.toContain("ERROR");
  }, 45_000);

  test("the Transport reply names both port pairs; RTP and sender reports arrive from them; TEARDOWN frees the ports", async () => {
    const reader = await setupUdp();
    try {
      const transport = header(reader.setup.headers, "transport") ?? "";
      const [a, b] = reader.udp.ports;
      const match = new RegExp(`^RTP/AVP;unicast;client_port=${a}-${b};server_port=(\\d+)-(\\d+)$`).exec(transport);
      expect(match).not.toBeNull();
      const [c, d] = reader.serverPorts;
      expect(c % 2).toBe(0);
      expect(d).toBe(c + 1);
      expect(udpPairs()).toBe(1);
      expect(await udpPortFree(PROXY, c)).toBe(false);

      const played = await playUdp(reader);
      const info = /;seq=(\d+);rtptime=(\d+)$/.exec(header(played.headers, "rtp-info") ?? "");
      expect(info).not.toBeNull();
      await waitFor("RTP over UDP", () => reader.udp.got.rtp.length >= 20);
      // Nothing comes over the RTSP connection.
      expect(reader.frames.length).toBe(0);
      const first = reader.udp.got.rtp[0]!;
      expect(first.from).toMatchObject({ address: PROXY, port: c });
      expect(first.packet.readUInt16BE(2)).toBe(Number(info![1]));
      expect(first.packet.readUInt32BE(4)).toBe(Number(info![2]));
      const nal = first.packet[12]! & 0x1f;
      expect(nal === 7 || nal === 5 || nal === 24 || (nal === 28 && (first.packet[13]! & 0x1f) === 5)).toBe(true);
      const seqs = reader.udp.got.rtp.slice(0, 20).map((r) => r.packet.readUInt16BE(2));
      for (let i = 1; i < seqs.length; i++) expect((seqs[i]! - seqs[i - 1]!) & 0xffff).toBe(1);

      // RTCP sender reports (payload type 200) carry the reader's SSRC, from our RTCP port.
      await waitFor("a sender report over UDP", () => reader.udp.got.rtcp.some((r) => r.packet[1] === 200), SENDER_REPORT_WAIT_MS);
      const report = reader.udp.got.rtcp.find((r) => r.packet[1] === 200)!;
      expect(report.from).toMatchObject({ address: PROXY, port: d });
      expect(report.packet.readUInt32BE(4)).toBe(first.packet.readUInt32BE(8));

      const teardown = await reader.request("TEARDOWN", `rtsp://${PROXY}:${PLAIN}${PATH}`, [["Session", reader.session]]);
      expect(teardown.status).toBe(200);
      expect(udpPairs()).toBe(0);
      expect(await udpPortFree(PROXY, c)).toBe(true);
      expect(await udpPortFree(PROXY, d)).toBe(true);
      const count = reader.udp.got.rtp.length;
      await Bun.sleep(300);
      expect(reader.udp.got.rtp.length).toBe(count);
    } finally {
      reader.close();
    }
  }, 45_000);

  test("closing the RTSP connection closes the reader's UDP ports", async () => {
    const reader = await setupUdp();
    await playUdp(reader);
    await waitFor("RTP over UDP", () => reader.udp.got.rtp.length > 0);
    const [c, d] = reader.serverPorts;
    expect(udpPairs()).toBe(1);
    reader.socket.destroy();
    await waitFor("the UDP ports to be closed", () => udpPairs() === 0, 5_000);
    expect(await udpPortFree(PROXY, c)).toBe(true);
    expect(await udpPortFree(PROXY, d)).toBe(true);
    reader.close();
  }, 30_000);

  test("UDP on the TLS port gets 461 with a log line saying why, while the plain port accepts the same SETUP", async () => {
    const logs = captureLogs();
    try {
      const tls = await rawClient(PROXY, 322, { user: "bblp", password: ACCESS_CODE });
      expect((await tls.request("DESCRIBE", `rtsps://${PROXY}:322${PATH}`)).status).toBe(200);
      const refused = await tls.request("SETUP", `rtsps://${PROXY}:322${PATH}/track1`, [["Transport", "RTP/AVP;unicast;client_port=5000-5001"]]);
      expect(refused.status).toBe(461);
      tls.close();
      expect(logs.lines.some((l) => l.includes("461") && l.includes("unencrypted"))).toBe(true);
      expect(udpPairs()).toBe(0);
    } finally {
      logs.stop();
    }
    const plain = await setupUdp();
    expect(udpPairs()).toBe(1);
    plain.close();
    await waitFor("the UDP ports to be closed", () => udpPairs() === 0, 5_000);
  }, 30_000);

  test("multicast gets 461; a client offering UDP then TCP gets UDP on the plain port", async () => {
    const client = await rawClient(PROXY, PLAIN, { user: "bblp", password: ACCESS_CODE }, true);
    const udp = await clientPorts(client.socket.localAddress!);
    try {
      const base = `rtsp://${PROXY}:${PLAIN}${PATH}`;
      expect((await client.request("DESCRIBE", base)).status).toBe(200);
      const multicast = await client.request("SETUP", `${base}/track1`, [["Transport", "RTP/AVP;multicast;port=5000-5001"]]);
      expect(multicast.status).toBe(461);
      const offered = `RTP/AVP/UDP;unicast;client_port=${udp.ports[0]}-${udp.ports[1]},RTP/AVP/TCP;unicast;interleaved=0-1`;
      const setup = await client.request("SETUP", `${base}/track1`, [["Transport", offered]]);
      expect(setup.status).toBe(200);
      expect(header(setup.headers, "transport")).toStartWith(`RTP/AVP;unicast;client_port=${udp.ports[0]}-${udp.ports[1]};server_port=`);
    } finally {
      client.close();
      udp.close();
    }
    await waitFor("the UDP ports to be closed", () => udpPairs() === 0, 5_000);
  }, 30_000);
});

describe("UDP session timeout (shortened to 1.5 s)", () => {
  test("receiver reports on our RTCP port keep a UDP session alive; an idle one is closed with its ports", async () => {
    const idle = await setupUdp(SHORT);
    const kept = await setupUdp(SHORT);
    await playUdp(idle, SHORT);
    await playUdp(kept, SHORT);
    const idleSince = Date.now();
    const closedAt = new Map<RawClient, number>();
    for (const c of [idle, kept]) c.socket.once("close", () => closedAt.set(c, Date.now()));
    expect(udpPairs(shortService)).toBe(2);
    // An RTCP receiver report (RFC 3550 6.4.2) with no report blocks, sent from the client's RTCP port.
    const receiverReport = Buffer.from([0x80, 201, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78]);
    const until = Date.now() + SHORT_SESSION_MS * 3;
    while (Date.now() < until) {
      kept.udp.rtcp.send(receiverReport, kept.serverPorts[1], SHORT);
      await Bun.sleep(KEEPALIVE_EVERY_MS);
    }
    await waitFor("the idle session to be closed", () => closedAt.has(idle), SHORT_SESSION_MS * 2);
    expect(closedAt.get(idle)! - idleSince).toBeGreaterThanOrEqual(SHORT_SESSION_MS);
    expect(closedAt.has(kept)).toBe(false);
    expect(udpPairs(shortService)).toBe(1);
    expect(await udpPortFree(SHORT, idle.serverPorts[0])).toBe(true);
    // Still playing, not just connected.
    const count = kept.udp.got.rtp.length;
    await waitFor("video on the kept session", () => kept.udp.got.rtp.length > count + 10);
    kept.close();
    idle.close();
    await waitFor("the UDP ports to be closed", () => udpPairs(shortService) === 0, 5_000);
  }, 40_000);
});
