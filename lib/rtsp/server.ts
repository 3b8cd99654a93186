// Our RTSP server, one connection at a time: readers (OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN,
// GET_PARAMETER) and, where allowed, a publisher (ANNOUNCE, SETUP mode=record, RECORD). RTP goes over the
// RTSP connection (TCP interleaved) or, on connections handled with `{ udp: true }` (plain RTSP only: over TLS,
// UDP would carry the stream unencrypted), to the client's UDP ports; otherwise UDP is answered 461 so clients
// fall back to TCP. Plug `handle` into core/server.ts listen() as onClient.
import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { commandLane, endAndDestroy } from "../core/edge.ts";
import type { ClientInfo } from "../core/server.ts";
import type { Logger } from "../log.ts";
import type { Authenticator, Credential } from "./auth.ts";
import { createRtspParser, encodeResponse, header, parseTransport, RtspParseError, type Headers, type RtspRequest, type Transport } from "./message.ts";
import type { ReaderHandle, Stream } from "./stream.ts";
import { openUdpPair, type UdpPair } from "./udp.ts";

/** A session with no request and no RTCP from its client for this long is closed (announced in Session:). */
export const SESSION_TIMEOUT_MS = 60_000;
/** A connection that never sets up a session is closed after this long without a request. */
export const IDLE_TIMEOUT_MS = 30_000;
/** A connection's first whole request must arrive within this long (silent and slow-loris clients). */
export const FIRST_REQUEST_TIMEOUT_MS = 10_000;
/** How often idle connections are looked for (at most; shorter when the timeouts are shorter). */
const IDLE_CHECK_INTERVAL_MS = 5_000;
/** How long DESCRIBE waits for FFmpeg to start publishing before answering 503. */
export const DESCRIBE_WAIT_MS = 20_000;
const SERVER_NAME = "pandaproxy";

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

/** `rtsps://host:322/streaming/live/1/track1?x` -> `/streaming/live/1/track1`. */
export function pathOf(uri: string): string {
  const noScheme = uri.replace(/^[a-z]+:\/\/[^/]*/i, "");
  const path = noScheme.split("?")[0] ?? "/";
  return ("/" + path.replace(/^\/+/, "")).replace(/\/+$/, "") || "/";
}

export function createRtspServer(options: RtspServerOptions): RtspServer {
  let playing = 0;
  let sessionsOpened = 0;
  let udpPortPairs = 0;
  const sessionTimeoutMs = options.sessionTimeoutMs ?? SESSION_TIMEOUT_MS;
  const idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  const firstRequestTimeoutMs = Math.min(options.firstRequestTimeoutMs ?? FIRST_REQUEST_TIMEOUT_MS, idleTimeoutMs);
  const checkEveryMs = Math.max(100, Math.min(IDLE_CHECK_INTERVAL_MS, sessionTimeoutMs / 4, idleTimeoutMs / 4, firstRequestTimeoutMs / 4));
  const sessionTimeoutS = Math.max(1, Math.round(sessionTimeoutMs / 1000));

  const resolve = (uri: string): { stream: Stream; track?: string } | undefined => {
    const path = pathOf(uri);
    const direct = options.streams.get(path);
    if (direct) return { stream: direct };
    const slash = path.lastIndexOf("/");
    const parent = options.streams.get(path.slice(0, slash));
    if (parent) return { stream: parent, track: path.slice(slash + 1) };
    return undefined;
  };

  const handle = (socket: Socket, client: ClientInfo, connection: ConnectionOptions = {}) => {
    const log = client.log;
    const encrypted = (socket as TLSSocket).encrypted === true;
    const udpAllowed = connection.udp === true && !encrypted;
    /** Per track index: the UDP ports of a reader that set that track up over UDP. */
    const udpTracks: (UdpPair | undefined)[] = [];
    const parser = createRtspParser();
    let credential: Credential | undefined;
    let sessionId: string | undefined;
    let stream: Stream | undefined;
    let role: "reader" | "publisher" | undefined;
    const channels: ([number, number] | undefined)[] = [];
    const publisherChannels = new Map<number, { track: number; rtcp: boolean }>();
    let reader: ReaderHandle | undefined;
    let release: (() => void) | undefined;
    let recording = false;
    let closed = false;
    let lastActivity = Date.now();
    let requests = 0;
    const connectedAt = Date.now();

    const timer = setInterval(() => {
      const idle = Date.now() - lastActivity;
      if (requests === 0 && Date.now() - connectedAt > firstRequestTimeoutMs) {
        log.info(`closing: no whole request within ${(firstRequestTimeoutMs / 1000).toFixed(1)} s of connecting`);
        return void socket.destroy();
      }
      const limit = sessionId ? sessionTimeoutMs : idleTimeoutMs;
      if (idle > limit && !recording && lane.pending === 0) {
        log.info(`closing: ${sessionId ? "session" : "connection"} idle for ${(idle / 1000).toFixed(1)} s (no request, no RTCP)`);
        socket.destroy();
      }
    }, checkEveryMs);
    timer.unref?.();

    const stopPlaying = () => {
      if (reader) {
        reader.detach();
        reader = undefined;
        playing--;
      }
    };

    const closeUdp = () => {
      for (const pair of udpTracks) {
        if (!pair) continue;
        pair.close();
        udpPortPairs--;
      }
      udpTracks.length = 0;
    };

    const cleanup = () => {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      lane.close();
      stopPlaying();
      closeUdp();
      release?.();
      release = undefined;
      if (role === "publisher" && recording && stream) {
        log.info(`publisher of ${stream.path} left`);
        stream.unpublish();
        publishers.delete(stream);
      }
    };
    socket.once("close", cleanup);

    const reply = (request: RtspRequest, status: number, headers: Headers = [], body?: string) => {
      const cseq = header(request.headers, "cseq");
      const all: Headers = [...(cseq !== undefined ? [["CSeq", cseq] as [string, string]] : []), ["Server", SERVER_NAME], ...headers];
      if (body !== undefined) all.push(["Content-Type", "application/sdp"]);
      if (!socket.destroyed) socket.write(encodeResponse(status, all, body));
    };

    const sessionHeader = (): [string, string] => ["Session", `${sessionId};timeout=${sessionTimeoutS}`];

    const authorize = (request: RtspRequest, auth: Authenticator): boolean => {
      if (credential && auth === (role === "publisher" ? options.publisherAuth : options.readerAuth)) return true;
      const who = auth.check(request.method, header(request.headers, "authorization"));
      if (!who) {
        if (header(request.headers, "authorization")) log.warn(`${request.method} refused: wrong user or password`);
        reply(request, 401, auth.challenge().map((c) => ["WWW-Authenticate", c] as [string, string]));
        return false;
      }
      credential = who;
      return true;
    };

    const checkSession = (request: RtspRequest): boolean => {
      const given = header(request.headers, "session")?.split(";")[0]?.trim();
      if (!sessionId || (given !== undefined && given !== sessionId)) {
        reply(request, 454);
        return false;
      }
      return true;
    };

    const onRequest = async (request: RtspRequest) => {
      lastActivity = Date.now();
      const isPublish = request.method === "ANNOUNCE" || request.method === "RECORD" || role === "publisher";
      switch (request.method) {
        case "OPTIONS": {
          const methods = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"];
          if (options.publisherAuth) methods.push("ANNOUNCE", "RECORD");
          return reply(request, 200, [["Public", methods.join(", ")]]);
        }
        case "GET_PARAMETER":
        case "SET_PARAMETER":
          return reply(request, 200, sessionId ? [sessionHeader()] : []);
        case "DESCRIBE": {
          if (!authorize(request, options.readerAuth)) return;
          const found = resolve(request.uri);
          if (!found || found.track) return reply(request, 404);
          role = "reader";
          stream = found.stream;
          release ??= stream.claim();
          try {
            await stream.whenLive(DESCRIBE_WAIT_MS);
          } catch (error) {
            log.warn(`DESCRIBE ${stream.path}: ${(error as Error).message}; answering 503`);
            return reply(request, 503);
          }
          const base = request.uri.replace(/\/+$/, "") + "/";
          return reply(request, 200, [["Content-Base", base]], stream.sdp());
        }
        case "ANNOUNCE": {
          if (!options.publisherAuth) return reply(request, 405, [["Allow", "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"]]);
          if (!authorize(request, options.publisherAuth)) return;
          const found = resolve(request.uri);
          if (!found || found.track) return reply(request, 404);
          role = "publisher";
          stream = found.stream;
          announcedSdp = request.body.toString("utf8");
          return reply(request, 200);
        }
        case "SETUP": {
          if (isPublish && role === "publisher") return setupPublisher(request);
          if (!authorize(request, options.readerAuth)) return;
          const found = resolve(request.uri);
          if (!found) return reply(request, 404);
          if (stream && found.stream !== stream) return reply(request, 459);
          stream = found.stream;
          role = "reader";
          release ??= stream.claim();
          if (!stream.live) {
            try {
              await stream.whenLive(DESCRIBE_WAIT_MS);
            } catch {
              return reply(request, 503);
            }
          }
          const index = found.track ? stream.tracks.findIndex((t) => t.control === found.track) : stream.tracks.length === 1 ? 0 : -1;
          if (index < 0) return reply(request, 404);
          const asked = header(request.headers, "transport") ?? "";
          const transports = parseTransport(asked);
          const udpOk = (t: Transport) => !t.tcp && !t.multicast && t.clientPort !== undefined && /^RTP\/AVP(\/UDP)?$/i.test(t.profile);
          const usable = (t: Transport) => t.tcp || (udpAllowed && udpOk(t));
          // A session already set up keeps its transport kind when the client offers both.
          const sessionKind = channels.some(Boolean) ? (udpTracks.some(Boolean) ? "udp" : "tcp") : undefined;
          const chosen = transports.find((t) => usable(t) && (t.tcp ? "tcp" : "udp") === sessionKind) ?? transports.find(usable);
          if (!chosen) {
            const why = transports.every((t) => t.multicast) ? "multicast is not served, only unicast"
              : encrypted ? "RTP over UDP would carry the stream unencrypted beside this TLS connection"
              : !udpAllowed ? "UDP is not served on this port"
              : "no usable RTP/AVP unicast client_port";
            log.info(`SETUP asked for ${asked || "no Transport"}; answering 461: ${why}; use TCP`);
            return reply(request, 461);
          }
          // One session, one transport: live555 does the same, and it keeps the reader's write path simple.
          if (sessionKind !== undefined && sessionKind !== (chosen.tcp ? "tcp" : "udp")) {
            log.info(`SETUP mixes TCP and UDP in one session; answering 461`);
            return reply(request, 461);
          }
          if (sessionId && !checkSession(request)) return;
          if (chosen.tcp) {
            const pair = chosen.interleaved ?? [index * 2, index * 2 + 1];
            channels[index] = pair;
            openSession();
            return reply(request, 200, [["Transport", `RTP/AVP/TCP;unicast;interleaved=${pair[0]}-${pair[1]}`], sessionHeader()]);
          }
          const clientPorts = chosen.clientPort!;
          let udp: UdpPair;
          try {
            udp = await openUdpPair({
              localAddress: socket.localAddress ?? "0.0.0.0",
              clientAddress: socket.remoteAddress ?? "",
              clientPorts,
              onRtcp: () => void (lastActivity = Date.now()),
              onError: (error) => log.debug(`UDP socket error: ${error.message}`),
            });
          } catch (error) {
            log.warn(`SETUP over UDP failed: ${(error as Error).message}; answering 500`);
            return reply(request, 500);
          }
          if (closed) return udp.close();
          const previous = udpTracks[index];
          if (previous) previous.close();
          else udpPortPairs++;
          udpTracks[index] = udp;
          // Our stream writes `$`-framed packets on these channels; the reader's write turns them into datagrams.
          channels[index] = [index * 2, index * 2 + 1];
          openSession();
          const [c, d] = udp.serverPorts;
          log.debug(`track ${index + 1} over UDP: ${client.peer.replace(/:\d+$/, "")}:${clientPorts[0]}-${clientPorts[1]} from ports ${c}-${d}`);
          return reply(request, 200, [["Transport", `RTP/AVP;unicast;client_port=${clientPorts[0]}-${clientPorts[1]};server_port=${c}-${d}`], sessionHeader()]);
        }
        case "PLAY": {
          if (!authorize(request, options.readerAuth)) return;
          if (!checkSession(request) || !stream) return;
          if (!channels.some(Boolean)) return reply(request, 455);
          if (reader) return reply(request, 200, [sessionHeader(), ["Range", "npt=0.000-"]]);
          const s = stream;
          reader = s.addReader(udpTracks.some(Boolean) ? {
            label: `UDP reader ${client.peer}`,
            channels,
            // No backlog: a datagram that finds the socket buffer full is dropped by the kernel.
            backlog: () => 0,
            write: (bytes) => udpTracks[bytes[1]! >> 1]?.send(bytes.subarray(4), (bytes[1]! & 1) === 1),
          } : {
            label: `reader ${client.peer}`,
            channels,
            backlog: () => socket.writableLength,
            write: (bytes) => void (!socket.destroyed && socket.write(bytes)),
          });
          playing++;
          // Like live555: RTP-Info gives each track's first seq/rtptime (the reader's first packet carries them).
          const aggregate = request.uri.replace(/\/+$/, "");
          const base = resolve(request.uri)?.track ? aggregate.slice(0, aggregate.lastIndexOf("/")) : aggregate;
          const rtpInfo = reader.rtpInfo
            .map((start, i) => (start ? `url=${base}/${s.tracks[i]?.control};seq=${start.seq};rtptime=${start.rtptime}` : undefined))
            .filter((v) => v !== undefined)
            .join(",");
          reply(request, 200, [sessionHeader(), ["Range", "npt=0.000-"], ...(rtpInfo ? [["RTP-Info", rtpInfo] as [string, string]] : [])]);
          log.info(`playing ${s.path}`);
          return;
        }
        case "PAUSE":
          if (!authorize(request, options.readerAuth)) return;
          if (!checkSession(request)) return;
          stopPlaying();
          return reply(request, 200, [sessionHeader()]);
        case "RECORD": {
          if (!options.publisherAuth) return reply(request, 405);
          if (!authorize(request, options.publisherAuth)) return;
          if (role !== "publisher" || !stream || !checkSession(request) || publisherChannels.size === 0) return reply(request, 455);
          const previous = publishers.get(stream);
          if (previous && previous !== socket) {
            log.info(`a new publisher replaces the previous one of ${stream.path}`);
            previous.destroy();
          }
          publishers.set(stream, socket);
          recording = true;
          reply(request, 200, [sessionHeader()]);
          stream.publish(announcedSdp);
          log.info(`publishing ${stream.path} (${stream.tracks.length} track(s))`);
          return;
        }
        case "TEARDOWN":
          reply(request, 200);
          stopPlaying();
          closeUdp();
          channels.length = 0;
          sessionId = undefined;
          if (role === "publisher") endAndDestroy(socket);
          return;
        default:
          return reply(request, 501);
      }
    };

    const openSession = () => {
      if (sessionId) return;
      sessionId = randomBytes(8).toString("hex").toUpperCase();
      sessionsOpened++;
    };

    let announcedSdp = "";
    const setupPublisher = (request: RtspRequest) => {
      if (!stream) return reply(request, 455);
      const transports = parseTransport(header(request.headers, "transport") ?? "");
      const tcp = transports.find((t) => t.tcp && t.interleaved);
      if (!tcp?.interleaved) return reply(request, 461);
      const controls = announcedSdp.split(/\r?\n/).filter((l) => l.startsWith("m=") || l.startsWith("a=control:"));
      // Track index = order of the media section whose control the URI ends with (FFmpeg: streamid=N).
      let index = -1;
      let media = -1;
      for (const line of controls) {
        if (line.startsWith("m=")) media++;
        else if (media >= 0 && request.uri.endsWith(line.slice("a=control:".length))) index = media;
      }
      if (index < 0) index = publisherChannels.size / 2;
      publisherChannels.set(tcp.interleaved[0], { track: index, rtcp: false });
      publisherChannels.set(tcp.interleaved[1], { track: index, rtcp: true });
      if (!sessionId) {
        sessionId = randomBytes(8).toString("hex").toUpperCase();
        sessionsOpened++;
      }
      return reply(request, 200, [["Transport", `RTP/AVP/TCP;unicast;interleaved=${tcp.interleaved[0]}-${tcp.interleaved[1]};mode=record`], sessionHeader()]);
    };

    // Requests are answered one at a time, in order, even when DESCRIBE waits for the publisher; the socket is
    // paused meanwhile, and a client with too many requests waiting is closed.
    const lane = commandLane<RtspRequest>(socket, onRequest, {
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
        if (message.kind === "frame") {
          if (recording && stream) {
            const target = publisherChannels.get(message.channel);
            if (target) stream.ingest(target.track, message.payload, target.rtcp);
          } else if (sessionId) lastActivity = Date.now(); // a reader's RTCP receiver report keeps its session alive
        } else if (message.kind === "request") {
          requests++;
          if (!lane.push(message)) return;
        }
      }
    });
  };

  const publishers = new Map<Stream, Socket>();

  return {
    handle,
    get playing() {
      return playing;
    },
    get sessionsOpened() {
      return sessionsOpened;
    },
    get udpPortPairs() {
      return udpPortPairs;
    },
  };
}
