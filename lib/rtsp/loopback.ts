// The loopback side of our RTSP server: the listener FFmpeg publishes into and our own JPEG FFmpeg reads from,
// with per-run random credentials of its own (never the access code), on 127.0.0.1 only.
import { randomBytes } from "node:crypto";
import { listen, type Listening } from "../core/server.ts";
import { registerSecret, type Logger } from "../log.ts";
import { createAuthenticator } from "./auth.ts";
import { createRtspServer, type RtspServer } from "./server.ts";
import type { Stream } from "./stream.ts";

const LOOPBACK_MAX_CLIENTS = 8;

declare module "../core/service.ts" {
  interface CameraFeed {
    /** RTSP cameras: our own stream on the loopback server, for our own FFmpegs (the [export.rtsp] push). */
    loopbackUrl?(): string | undefined;
  }
}

export interface Loopback {
  /** rtsp://publisher:<random>@127.0.0.1:<port><path> */
  publishUrl(path: string): string;
  /** rtsp://reader:<random>@127.0.0.1:<port><path> (our own JPEG FFmpeg). */
  readUrl(path: string): string;
  server: RtspServer;
  close(): Promise<void>;
}

export async function startLoopback(log: Logger, streams: Map<string, Stream>): Promise<Loopback> {
  const publisher = { user: "publisher", password: randomBytes(12).toString("hex"), role: "publisher" };
  const reader = { user: "reader", password: randomBytes(12).toString("hex"), role: "internal reader" };
  // FFmpeg may print its output URL in an error line: keep these out of the logs too.
  registerSecret(publisher.password);
  registerSecret(reader.password);
  const server = createRtspServer({
    log,
    streams,
    readerAuth: createAuthenticator({ realm: "pandaproxy", credentials: () => [reader], allowBasic: false }),
    publisherAuth: createAuthenticator({ realm: "pandaproxy", credentials: () => [publisher], allowBasic: false }),
  });
  const listening: Listening = await listen({
    log, what: "loopback RTSP", host: "127.0.0.1", port: 0, maxClients: LOOPBACK_MAX_CLIENTS, onClient: server.handle,
  });
  const base = (who: { user: string; password: string }) => `rtsp://${who.user}:${who.password}@127.0.0.1:${listening.address.port}`;
  return {
    publishUrl: (path) => base(publisher) + path,
    readUrl: (path) => base(reader) + path,
    server,
    close: () => listening.close(),
  };
}
