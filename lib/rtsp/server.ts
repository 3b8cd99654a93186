// Our RTSP server's socket glue: one connection at a time, the RTSP session (lib/rtsp/session.ts) decides and
// this file performs: it writes responses, holds the consumer a reader attaches to the stream, the UDP port
// pairs of a reader that asked for RTP over UDP (plain RTSP only, on connections handled with `{ udp: true }`:
// over TLS, UDP would carry the stream unencrypted) and the one producer each stream has. Requests go through
// the command lane (one at a time, bounded); the first-request deadline and the idle check run here.
// Plug `handle` into core/server.ts listen() as onClient.
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { commandLane, endAndDestroy } from "../core/edge.ts";
import type { ClientInfo } from "../core/server.ts";
import type { Logger } from "../log.ts";
import type { Authenticator } from "./auth.ts";
import { createRtspParser, encodeResponse, RtspParseError, type RtspRequest } from "./message.ts";
import { createRtspSession, IDLE_TIMEOUT_MS, SESSION_TIMEOUT_MS, type RtspSession, type SessionAction, type SessionEvent } from "./session.ts";
import type { ReaderHandle, Stream, StreamReader } from "./stream.ts";
import { tickWriter } from "./frame-writer.ts";
import { openUdpPair, type UdpPair } from "./udp.ts";

export { DESCRIBE_WAIT_MS, IDLE_TIMEOUT_MS, pathOf, SESSION_TIMEOUT_MS } from "./session.ts";
/** A connection's first whole request must arrive within this long (silent and slow-loris clients). */
export const FIRST_REQUEST_TIMEOUT_MS = 10_000;
/** How often idle connections are looked for (at most; shorter when the timeouts are shorter). */
const IDLE_CHECK_INTERVAL_MS = 5_000;

export interface RtspServerOptions {
  log: Logger;
  /** Path ("/streaming/live/1") -> stream. */
  streams: Map<string, Stream>;
  readerAuth: Authenticator;
  /** Present only on the loopback listener FFmpeg publishes to. */
  publisherAuth?: Authenticator;
  /** Defaults SESSION_TIMEOUT_MS, IDLE_TIMEOUT_MS and FIRST_REQUEST_TIMEOUT_MS (tests shorten them). */
  sessionTimeoutMs?: number;
  idleTimeoutMs?: number;
  firstRequestTimeoutMs?: number;
  /** Requests a client may have waiting before it is closed (default MAX_PENDING_COMMANDS in core/edge.ts). */
  maxPendingRequests?: number;
}

export interface ConnectionOptions {
  /** Readers may ask for RTP over UDP (never honoured on a TLS socket). */
  udp?: boolean;
}

export interface RtspServer {
  handle(socket: Socket, client: ClientInfo, options?: ConnectionOptions): void;
  /** Reader sessions now playing. */
  readonly playing: number;
  /** UDP port pairs now open for readers (each SETUP over UDP opens one; TEARDOWN or the connection's end
   * closes it). */
  readonly udpPortPairs: number;
  /** Every session count ever set up (tests prove "one upstream session" with it). */
  readonly sessionsOpened: number;
}

/** What every connection of one server shares. */
interface Shared {
  options: RtspServerOptions;
  counts: { playing: number; sessionsOpened: number; udpPortPairs: number };
  /** Each stream's producer: a new one replaces (closes) the previous. */
  producers: Map<Stream, Socket>;
  firstRequestTimeoutMs: number;
  checkEveryMs: number;
}

/** One connection's resources, which the session's actions take and give back. */
interface Link {
  shared: Shared;
  socket: Socket;
  client: ClientInfo;
  session: RtspSession<Stream>;
  /** Per track index: the UDP ports of a reader that set that track up over UDP. */
  udpTracks: (UdpPair | undefined)[];
  consumer?: ReaderHandle;
  release?: () => void;
  closed: boolean;
}

type Answer = SessionEvent | Promise<SessionEvent | undefined> | undefined;

export function createRtspServer(options: RtspServerOptions): RtspServer {
  const sessionTimeoutMs = options.sessionTimeoutMs ?? SESSION_TIMEOUT_MS;
  const idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  const firstRequestTimeoutMs = Math.min(options.firstRequestTimeoutMs ?? FIRST_REQUEST_TIMEOUT_MS, idleTimeoutMs);
  const shared: Shared = {
    options,
    counts: { playing: 0, sessionsOpened: 0, udpPortPairs: 0 },
    producers: new Map(),
    firstRequestTimeoutMs,
    checkEveryMs: Math.max(100, Math.min(IDLE_CHECK_INTERVAL_MS, sessionTimeoutMs / 4, idleTimeoutMs / 4, firstRequestTimeoutMs / 4)),
  };
  return {
    handle: (socket, client, connection = {}) => serve(shared, socket, client, connection),
    get playing() {
      return shared.counts.playing;
    },
    get sessionsOpened() {
      return shared.counts.sessionsOpened;
    },
    get udpPortPairs() {
      return shared.counts.udpPortPairs;
    },
  };
}

/** Performs a batch of actions; an ask (always last) is answered back into the session, whose actions follow. */
function run(link: Link, actions: SessionAction<Stream>[]): Promise<void> | void {
  for (const action of actions) {
    const answer = perform(link, action);
    if (answer === undefined) continue;
    if (answer instanceof Promise) return answer.then((event) => (event ? run(link, link.session.handle(event)) : undefined));
    return run(link, link.session.handle(answer));
  }
}

function serve(shared: Shared, socket: Socket, client: ClientInfo, connection: ConnectionOptions): void {
  const { options } = shared;
  const log = client.log;
  const session = createRtspSession<Stream>({
    streams: options.streams, readerAuth: options.readerAuth, publisherAuth: options.publisherAuth,
    udp: connection.udp === true, encrypted: (socket as TLSSocket).encrypted === true, peer: client.peer,
    sessionTimeoutMs: options.sessionTimeoutMs, idleTimeoutMs: options.idleTimeoutMs,
  });
  const link: Link = { shared, socket, client, session, udpTracks: [], closed: false };
  const parser = createRtspParser();
  let requests = 0;
  const connectedAt = Date.now();

  // Requests are answered one at a time, in order, even when DESCRIBE waits for the producer; the socket is
  // paused meanwhile, and a client with too many requests waiting is closed.
  const lane = commandLane<RtspRequest>(socket, (request) => run(link, session.handle(request)), {
    max: options.maxPendingRequests,
    onOverflow(max) {
      log.warn(`closing: more than ${max} requests sent without waiting for the answers`);
      endAndDestroy(socket);
    },
    onError(error) {
      log.error(`closing: a request failed: ${(error as Error).message}`);
      socket.destroy();
    },
  });
  const timer = setInterval(() => {
    if (requests === 0 && Date.now() - connectedAt > shared.firstRequestTimeoutMs) {
      log.info(`closing: no whole request within ${(shared.firstRequestTimeoutMs / 1000).toFixed(1)} s of connecting`);
      return void socket.destroy();
    }
    run(link, session.handle({ kind: "tick", busy: lane.pending > 0 }));
  }, shared.checkEveryMs);
  timer.unref?.();
  socket.once("close", () => {
    if (link.closed) return;
    link.closed = true;
    clearInterval(timer);
    lane.close();
    run(link, session.handle({ kind: "closed" }));
    closeUdp(link);
  });

  socket.on("data", (chunk: Buffer) => {
    let messages;
    try {
      messages = parser.push(chunk);
    } catch (error) {
      if (error instanceof RtspParseError) log.warn(`closing: ${error.message}`);
      socket.destroy();
      return;
    }
    for (const message of messages) {
      if (message.kind === "frame") run(link, session.handle(message));
      else if (message.kind === "request") {
        requests++;
        if (!lane.push(message)) return;
      }
    }
  });
}

function perform(link: Link, action: SessionAction<Stream>): Answer {
  const { socket, shared } = link;
  switch (action.kind) {
    case "ingest":
      return void action.stream.ingest(action.track, action.payload, action.rtcp);
    case "reply":
      return void (!socket.destroyed && socket.write(encodeResponse(action.status, action.headers, action.body)));
    case "log":
      return void link.client.log[action.level](action.message);
    case "claim":
      return void (link.release ??= action.stream.claim());
    case "release":
      link.release?.();
      link.release = undefined;
      return;
    case "wait-live":
      return action.stream.whenLive(action.timeoutMs).then(
        () => ({ kind: "live" }),
        (error: Error) => ({ kind: "not-live", reason: error.message }),
      );
    case "open-udp":
      return openUdp(link, action.track, action.clientPorts);
    case "close-udp":
      return void closeUdp(link);
    case "session-opened":
      return void shared.counts.sessionsOpened++;
    case "attach":
      link.consumer = action.stream.addReader(consumerOf(link, action.udp, action.channels));
      shared.counts.playing++;
      return { kind: "attached", rtpInfo: link.consumer.rtpInfo };
    case "detach":
      if (!link.consumer) return;
      link.consumer.detach();
      link.consumer = undefined;
      shared.counts.playing--;
      return;
    case "publish":
      return void publish(link, action.stream, action.sdp);
    case "unpublish":
      // A producer replaced by a newer one leaves the stream to it.
      if (shared.producers.get(action.stream) !== socket) return;
      action.stream.unpublish();
      shared.producers.delete(action.stream);
      return;
    case "end":
      return void endAndDestroy(socket);
    case "destroy":
      return void socket.destroy();
  }
}

/** The consumer of one reader: the RTSP socket itself (TCP interleaved) or its UDP port pairs. */
function consumerOf(link: Link, udp: boolean, channels: StreamReader["channels"]): StreamReader {
  const { socket, client, udpTracks } = link;
  if (udp) {
    return {
      label: `client ${client.peer} (UDP)`,
      channels,
      // No backlog: a datagram that finds the socket buffer full is dropped by the kernel.
      backlog: () => 0,
      write: (bytes) => udpTracks[bytes[1]! >> 1]?.send(bytes.subarray(4), (bytes[1]! & 1) === 1),
      // One datagram of the reader's own header and the rest every reader shares.
      writeFrame: (head, rest) => udpTracks[head[1]! >> 1]?.send([head.subarray(4), rest], (head[1]! & 1) === 1),
    };
  }
  return {
    label: `client ${client.peer}`,
    channels,
    backlog: () => socket.writableLength,
    write: (bytes) => void (!socket.destroyed && socket.write(bytes)),
    // The frames of one turn of the event loop in one socket write.
    writeFrame: tickWriter(socket),
  };
}

async function openUdp(link: Link, track: number, clientPorts: [number, number]): Promise<SessionEvent | undefined> {
  const { socket, client } = link;
  let udp: UdpPair;
  try {
    udp = await openUdpPair({
      localAddress: socket.localAddress ?? "0.0.0.0",
      clientAddress: socket.remoteAddress ?? "",
      clientPorts,
      onRtcp: () => void run(link, link.session.handle({ kind: "rtcp" })),
      onError: (error) => client.log.debug(`UDP socket error: ${error.message}`),
    });
  } catch (error) {
    return { kind: "udp-failed", reason: (error as Error).message };
  }
  if (link.closed) return void udp.close();
  const previous = link.udpTracks[track];
  if (previous) previous.close();
  else link.shared.counts.udpPortPairs++;
  link.udpTracks[track] = udp;
  return { kind: "udp-opened", track, serverPorts: udp.serverPorts };
}

function closeUdp(link: Link): void {
  for (const pair of link.udpTracks) {
    if (!pair) continue;
    pair.close();
    link.shared.counts.udpPortPairs--;
  }
  link.udpTracks.length = 0;
}

function publish(link: Link, stream: Stream, sdp: string): void {
  const { producers } = link.shared;
  const previous = producers.get(stream);
  if (previous && previous !== link.socket) {
    link.client.log.info(`a new producer replaces the previous one of ${stream.path}`);
    previous.destroy();
  }
  producers.set(stream, link.socket);
  stream.publish(sdp);
  link.client.log.info(`producer publishing ${stream.path} (${stream.tracks.length} track(s))`);
}
