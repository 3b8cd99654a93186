// The simulated X1C RTSPS camera on port 322: FFmpeg's test pattern as H.264, published into our own RTSP
// server, served at /streaming/live/1 with Digest-only authentication like the printers' live555.
// This file reuses the proxy's RTSP code (server, Digest authenticator, FFmpeg publisher) for the demo and the
// benchmarks. That is allowed here because a third-party server plays the printer's camera in the interop tests
// (GStreamer's rtsp-server, tests/rtsp-gstreamer.test.ts); a test against this simulator alone proves nothing
// about the printer.
import { processLogger } from "../log.ts";
import { listen, type Listening } from "../core/server.ts";
import { serverTlsOptions } from "../tls.ts";
import { createAuthenticator, LIVE555_REALM } from "../rtsp/auth.ts";
import { createPublisher, ffmpegMissing, testPatternArgs, type Publisher } from "../rtsp/ffmpeg.ts";
import { startLoopback } from "../rtsp/loopback.ts";
import { createRtspServer, type RtspServer } from "../rtsp/server.ts";
import { createStream, type Stream } from "../rtsp/stream.ts";
import type { SimIdentity, SimOptions, SimService } from "./types.ts";

export const CAMERA_PATH = "/streaming/live/1";
/** The simulated camera keeps encoding this long after its last viewer left. */
const SIM_LINGER_MS = 5_000;
const SIM_MAX_CLIENTS = 8;

export interface SimRtsp extends SimService {
  readonly server: RtspServer;
  readonly stream: Stream;
  readonly publisher: Publisher;
  /** Camera connections accepted so far (a proxy should need one). */
  readonly accepted: number;
  /** The encoder starts again at this picture size; readers stay connected and see the new SPS in the stream. */
  setCameraSize(width: number, height: number): void;
}

export async function startSimRtsp(identity: SimIdentity, options: SimOptions & { ffmpeg?: string } = {}): Promise<SimRtsp> {
  const log = processLogger("sim").with({ printer: identity.name, service: "rtsp" });
  const binary = options.ffmpeg ?? "ffmpeg";
  const missing = ffmpegMissing(binary);
  if (missing) throw new Error(`simulator rtsp: ${missing}`);
  const stream = createStream(CAMERA_PATH, log);
  const streams = new Map([[CAMERA_PATH, stream]]);
  const loopback = await startLoopback(log, streams);
  let size = `${options.cameraWidth ?? 1280}x${options.cameraHeight ?? 720}`;
  const publisher = createPublisher({
    log, binary, stream, describe: "simulated camera encoder", lingerMs: SIM_LINGER_MS,
    args: () => testPatternArgs(loopback.publishUrl(CAMERA_PATH), size, options.cameraFps ?? 15),
  });
  stream.setDemand(() => publisher.upstream.claim());
  publisher.start();
  const server = createRtspServer({
    log, streams,
    readerAuth: createAuthenticator({
      realm: LIVE555_REALM, allowBasic: false,
      credentials: () => [{ user: "bblp", password: identity.accessCode, role: "access code" }],
    }),
  });
  let listening: Listening;
  try {
    listening = await listen({
      log, what: "simulated RTSPS camera", host: identity.host, port: identity.ports.rtsp,
      tls: serverTlsOptions(identity.tls), maxClients: SIM_MAX_CLIENTS, onClient: server.handle,
    });
  } catch (error) {
    await publisher.stop();
    await loopback.close();
    throw error;
  }
  return {
    name: "rtsp", server, stream, publisher,
    get accepted() {
      return listening.accepted;
    },
    setCameraSize(width, height) {
      size = `${width}x${height}`;
      publisher.upstream.reconnect(`the camera's picture size is now ${size}`);
    },
    async stop() {
      await listening.close();
      await publisher.stop();
      await loopback.close();
    },
  };
}
