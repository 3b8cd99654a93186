// The RTSPS camera (X1/H2/P2, port 322): one FFmpeg pulls the printer's stream (`-c copy`) through our
// credential relay and publishes it into our own RTSP server, which serves any number of RTSPS (and optional
// plain RTSP) clients on the printer's path. For the web page, each run only while someone asks: an FFmpeg that
// rewraps the H.264 as fragmented MP4 without decoding (live.mp4, rtsp/fmp4-live.ts), and one that turns the
// stream into JPEG frames (camera.mjpeg, for browsers without Media Source Extensions). Snapshots decode the
// latest key frame once (rtsp/h264.ts, rtsp/h264-snapshot.ts). RTP over UDP is offered on the plain port only.
// While the printer reports its camera off (liveview.ts), FFmpeg stays down and the status says what to switch on.
import { createStream as createFrameStream, nextValue } from "../core/stream.ts";
import { createRateMeter } from "../core/rate.ts";
import { listen, type Listening } from "../core/server.ts";
import { MAX_CAMERA_JPEG_BYTES, type CameraFeed, type CameraFrame, type Service, type ServiceContext, type ServiceStatus } from "../core/service.ts";
import { createUpstream, upstreamProblem, type Upstream } from "../core/upstream.ts";
import { registerSecret, serviceLogger } from "../log.ts";
import { printerClientTlsOptions, serverTlsOptions } from "../tls.ts";
import { LIVEVIEW_OFF } from "./liveview.ts";
import { modelOf } from "./models.ts";
import { createAuthenticator, LIVE555_REALM, type Credential } from "../rtsp/auth.ts";
import { createPublisher, ffmpegMissing, jpegArgs, relayArgs, spawnFfmpeg, watchOutput, type FfmpegChild, type OutputWatchdog, type Publisher } from "../rtsp/ffmpeg.ts";
import { startLoopback, type Loopback } from "../rtsp/loopback.ts";
import { startRelay, type Relay } from "../rtsp/relay.ts";
import { createRtspServer, type RtspServer } from "../rtsp/server.ts";
import { createStream, type Stream } from "../rtsp/stream.ts";
import { createLiveVideo, type LiveVideo } from "../rtsp/fmp4-live.ts";
import { createKeyFrameKeeper } from "../rtsp/h264.ts";
import { createKeyFrameSnapshots } from "../rtsp/h264-snapshot.ts";
import type { StreamTrack } from "../rtsp/rtp.ts";

export const CAMERA_PATH = "/streaming/live/1";
export const RTSP_USER = "bblp";
export const RTSP_MAX_CLIENTS = 64;
/** JPEG frames per second for the web page (its viewers need no more). */
export const JPEG_FPS = 4;
/**
 * While a reader waits for a printer that is away, its camera is retried at least this often: a returning printer's
 * stream then needs FFmpeg's start and probe on top of the wait, and the readers' own retries on top of that, so the
 * 10 s of the other services would leave a reader 13-15 s behind (measured in tests/outage-long.test.ts).
 */
export const RTSP_WAITING_RETRY_MS = 5_000;
/** The JPEG FFmpeg keeps running this long after the last web viewer left. */
export const JPEG_LINGER_MS = 10_000;

export interface RtspServiceOptions {
  /** FFmpeg stops this long after the last client left (default 30 s). */
  lingerMs?: number;
  stallTimeoutMs?: number;
  /** The JPEG and remuxing FFmpegs are restarted after writing nothing this long while video came in (OUTPUT_STALL_TIMEOUT_MS). */
  outputStallTimeoutMs?: number;
  backoffMinMs?: number;
  /** Readers' RTSP session timeout (default SESSION_TIMEOUT_MS: 60 s). */
  sessionTimeoutMs?: number;
  /** A connection without a session and without requests (default IDLE_TIMEOUT_MS: 30 s). */
  idleTimeoutMs?: number;
  /** A connection's first whole request (default FIRST_REQUEST_TIMEOUT_MS: 10 s). */
  firstRequestTimeoutMs?: number;
  /** Requests a client may have waiting before it is closed (default MAX_PENDING_COMMANDS). */
  maxPendingRequests?: number;
  /** Sees every RTP packet as our server receives it from FFmpeg (bench/rtsp.ts measures added latency). */
  onPacket?: (packet: Buffer) => void;
}

/**
 * Cuts JPEG pictures (FFD8 … FFD9) out of FFmpeg's MJPEG output. More than MAX_CAMERA_JPEG_BYTES without an end
 * means we lost sync: drop the buffer.
 */
const START_OF_IMAGE = Buffer.from([0xff, 0xd8]);
const END_OF_IMAGE = Buffer.from([0xff, 0xd9]);

export function createJpegSplitter(onJpeg: (jpeg: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    for (;;) {
      const start = pending.indexOf(START_OF_IMAGE);
      if (start < 0) {
        pending = Buffer.alloc(0);
        return;
      }
      const end = pending.indexOf(END_OF_IMAGE, start + 2);
      if (end < 0) {
        pending = pending.length - start > MAX_CAMERA_JPEG_BYTES ? Buffer.alloc(0) : pending.subarray(start);
        return;
      }
      onJpeg(Buffer.from(pending.subarray(start, end + 2)));
      pending = pending.subarray(end + 2);
    }
  };
}

export function createRtspService(ctx: ServiceContext, options: RtspServiceOptions = {}): Service {
  const { printer } = ctx;
  const log = serviceLogger(printer.name, "rtsp");
  registerSecret(printer.accessCode);
  registerSecret(printer.viewerAccessCode);
  const stream: Stream = createStream(CAMERA_PATH, log);
  const streams = new Map([[CAMERA_PATH, stream]]);
  const tap = options.onPacket;
  if (tap) stream.onPacket((_index, packet) => tap(packet));
  const model = modelOf(printer);
  const frames = createFrameStream<CameraFrame>({ log, what: "camera frames" });
  const frameRate = createRateMeter();
  const videoFrameRate = createRateMeter();
  let lastVideoFrameAt: number | undefined;
  // The latest key frame, for snapshots: the first H.264 track's packets, SPS/PPS from the SDP until the stream has them.
  const keyFrames = createKeyFrameKeeper();
  let seenTracks: readonly StreamTrack[] | undefined;
  let videoTrack = -1;
  stream.onPacket((index, packet) => {
    if (stream.tracks !== seenTracks) {
      seenTracks = stream.tracks;
      videoTrack = seenTracks.findIndex((t) => t.h264);
      keyFrames.setSdp(seenTracks[videoTrack]?.media);
      keyFrames.reset();
    }
    if (index !== videoTrack) return;
    keyFrames.push(packet);
    if (packet[1]! & 0x80) {
      videoFrameRate.tick();
      lastVideoFrameAt = Date.now();
    }
  });
  // An SPS unlike the last one (the camera changed its picture size or profile mid-stream): the remuxing FFmpeg's
  // init segment (with -c copy it keeps the first SPS) no longer fits, so browsers get a new run and reconnect.
  keyFrames.onParametersChange(() => liveVideo?.restart("the camera's H.264 parameters (SPS) changed"));
  const snapshots = createKeyFrameSnapshots({
    log, ffmpeg: ctx.proxy.ffmpeg, keeper: keyFrames, lastPacketAt: () => stream.lastPacketAt, claim: () => stream.claim(),
  });
  let liveVideo: LiveVideo | undefined;
  /** A camera that sends no H.264 has no key frames for us to keep: its snapshots come from the JPEG FFmpeg. */
  const notH264 = () => stream.live && stream.tracks.length > 0 && !stream.tracks.some((t) => t.h264);
  const nextJpeg = async (waitMs: number, giveUp?: () => boolean) => {
    const release = feed.claim();
    try {
      return await nextValue(frames, waitMs, giveUp);
    } finally {
      release();
    }
  };
  let relay: Relay | undefined;
  let loopback: Loopback | undefined;
  let publisher: Publisher | undefined;
  let jpeg: Upstream<FfmpegChild> | undefined;
  let jpegWatchdog: OutputWatchdog | undefined;
  let server: RtspServer | undefined;
  const listeners: Listening[] = [];
  let state = "stopped";
  let liveviewOff = false;
  let makePublisher: (() => Publisher) | undefined;

  const credentials = (): Credential[] => {
    const list: Credential[] = [{ user: RTSP_USER, password: printer.accessCode, role: "access code" }];
    if (printer.viewerAccessCode) list.push({ user: RTSP_USER, password: printer.viewerAccessCode, role: "viewer access code" });
    return list;
  };

  const feed: CameraFeed = {
    source: "rtsp",
    frames,
    claim: () => (jpeg ? jpeg.claim() : () => {}),
    state: () => publisher?.upstream.state ?? "stopped",
    problem: () => (publisher ? upstreamProblem(publisher.upstream) : undefined),
    // The video's frame rate (access units through our server), whatever the JPEG FFmpeg makes of it.
    frameRate: () => Math.max(videoFrameRate.rate(), frameRate.rate()),
    lastFrameAt: () => lastVideoFrameAt,
    loopbackUrl: () => loopback?.readUrl(CAMERA_PATH),
    async keyFrameJpeg(waitMs, giveUp) {
      const frame = await snapshots.take(waitMs, () => (giveUp?.() ?? false) || notH264());
      return frame || !notH264() ? frame : nextJpeg(waitMs, giveUp);
    },
  };

  const stopAll = async () => {
    await Promise.allSettled(listeners.map((l) => l.close()));
    listeners.length = 0;
    jpegWatchdog?.stop();
    await jpeg?.stop();
    await liveVideo?.stop();
    await publisher?.stop();
    await relay?.close();
    await loopback?.close();
    jpeg = publisher = relay = loopback = server = jpegWatchdog = undefined;
    liveVideo = feed.liveVideo = undefined;
  };

  let stopLiveview: (() => void) | undefined;
  /** Off: FFmpeg is stopped (not retried) and waiting readers are told; on again: a fresh FFmpeg on demand. */
  const followLiveview = async (liveview: "on" | "off" | undefined) => {
    const off = liveview === "off";
    if (off === liveviewOff || !makePublisher) return;
    liveviewOff = off;
    if (off) {
      log.warn(`${LIVEVIEW_OFF} (the printer reports ipcam.rtsp_url "disable"); FFmpeg stays down until it is on`);
      state = LIVEVIEW_OFF;
      stream.failWaiters(LIVEVIEW_OFF);
      await publisher?.stop();
      return;
    }
    log.info("the printer reports its camera on again");
    state = "listening";
    publisher = makePublisher();
    publisher.start();
  };

  return {
    name: "rtsp",
    async start() {
      const missing = ffmpegMissing(ctx.proxy.ffmpeg);
      if (missing) {
        state = `error: ${missing}`;
        throw new Error(`${printer.name}: the RTSPS camera needs FFmpeg. ${missing}`);
      }
      try {
        relay = await startRelay({
          log, host: printer.host, port: printer.printerPorts.rtsp, tls: printerClientTlsOptions(printer),
          user: RTSP_USER, password: () => printer.accessCode,
        });
        loopback = await startLoopback(log, streams);
        const { url: relayUrl } = relay;
        const publishUrl = loopback.publishUrl;
        makePublisher = () => createPublisher({
          log, binary: ctx.proxy.ffmpeg, stream, describe: `FFmpeg for the camera at ${printer.host}:${printer.printerPorts.rtsp}`,
          args: () => relayArgs(relayUrl(CAMERA_PATH), publishUrl(CAMERA_PATH), model?.name),
          lingerMs: options.lingerMs, stallTimeoutMs: options.stallTimeoutMs, backoffMinMs: options.backoffMinMs,
          waitingRetryMaxMs: RTSP_WAITING_RETRY_MS, loginRefused: () => relay?.refused ?? false,
        });
        publisher = makePublisher();
        stream.setDemand(() => {
          if (!liveviewOff) return publisher!.upstream.claim();
          queueMicrotask(() => stream.failWaiters(LIVEVIEW_OFF));
          return () => {};
        });
        publisher.start();

        const readUrl = loopback.readUrl(CAMERA_PATH);
        jpeg = createUpstream<FfmpegChild>({
          log, describe: "FFmpeg making JPEG frames for the web page", onDemand: true, lingerMs: JPEG_LINGER_MS,
          backoffMinMs: options.backoffMinMs,
          connect: async () => {
            const child = spawnFfmpeg(ctx.proxy.ffmpeg, jpegArgs(readUrl, JPEG_FPS), log, { stdout: true });
            jpegWatchdog?.wrote();
            const split = createJpegSplitter((picture) => {
              jpegWatchdog?.wrote();
              const receivedAt = Date.now();
              frameRate.tick();
              frames.publish({ jpeg: picture, receivedAt });
            });
            void (async () => {
              for await (const chunk of child.process.stdout as ReadableStream<Uint8Array>) split(Buffer.from(chunk));
            })().catch(() => undefined);
            return { connection: child, closed: child.exited.then((reason) => new Error(`JPEG FFmpeg ${reason}`)), close: () => child.kill() };
          },
        });
        jpeg.start();
        jpegWatchdog = watchOutput({ upstream: jpeg, log, what: "the JPEG FFmpeg", lastPacketAt: () => stream.lastPacketAt, timeoutMs: options.outputStallTimeoutMs });
        liveVideo = feed.liveVideo = createLiveVideo({
          log, ffmpeg: ctx.proxy.ffmpeg, input: () => loopback?.readUrl(CAMERA_PATH), backoffMinMs: options.backoffMinMs,
          lastPacketAt: () => stream.lastPacketAt, stallTimeoutMs: options.outputStallTimeoutMs,
        });
        liveVideo.start();

        server = createRtspServer({
          log, streams, sessionTimeoutMs: options.sessionTimeoutMs, idleTimeoutMs: options.idleTimeoutMs,
          firstRequestTimeoutMs: options.firstRequestTimeoutMs, maxPendingRequests: options.maxPendingRequests,
          readerAuth: createAuthenticator({ realm: LIVE555_REALM, allowBasic: true, credentials }),
        });
        const s = server;
        listeners.push(await listen({
          log, what: "RTSPS camera", host: printer.bind, allow: printer.allow, port: printer.ports.rtsp, tls: serverTlsOptions(ctx.tls),
          maxClients: RTSP_MAX_CLIENTS, onClient: s.handle,
        }));
        if (printer.ports.rtsp_plain) {
          listeners.push(await listen({
            log, what: "plain RTSP camera", host: printer.bind, allow: printer.allow, port: printer.ports.rtsp_plain,
            maxClients: RTSP_MAX_CLIENTS, onClient: (socket, client) => s.handle(socket, client, { udp: true }),
          }));
        }
      } catch (error) {
        state = `error: ${(error as Error).message}`;
        await stopAll();
        throw error;
      }
      ctx.hub.setCamera(feed);
      state = "listening";
      stopLiveview = ctx.hub.onInfo((info) => void followLiveview(info.liveview));
      await followLiveview(ctx.hub.info.liveview);
      log.info(`RTSPS camera on ${printer.bind}:${printer.ports.rtsp}${CAMERA_PATH}${printer.ports.rtsp_plain ? ` (plain RTSP on ${printer.ports.rtsp_plain})` : ""}`);
    },
    async stop() {
      stopLiveview?.();
      stopLiveview = makePublisher = undefined;
      if (ctx.hub.camera === feed) ctx.hub.setCamera(undefined);
      await stopAll();
      state = "stopped";
    },
    status(): ServiceStatus {
      return {
        state,
        clients: listeners.reduce((n, l) => n + l.clients, 0),
        upstream: publisher?.upstream.state,
        details: {
          playing: server?.playing ?? 0,
          udpPortPairs: server?.udpPortPairs ?? 0,
          ffmpegStarts: publisher?.starts ?? 0,
          ffmpegPid: publisher?.pid,
          stalls: publisher?.stalls ?? 0,
          packets: stream.packetsIn,
          printerSessions: relay?.connections ?? 0,
          jpegViewers: jpeg?.claims ?? 0,
          jpegFfmpeg: jpeg?.state ?? "stopped",
          videoViewers: liveVideo?.viewers ?? 0,
          remuxFfmpeg: liveVideo?.state ?? "stopped",
          outputStalls: (jpegWatchdog?.stalls ?? 0) + (liveVideo?.stalls ?? 0),
          keyFrames: keyFrames.keyFrames,
          spsChanges: keyFrames.parameterChanges,
          snapshotDecodes: snapshots.decodes,
        },
      };
    },
  };
}
