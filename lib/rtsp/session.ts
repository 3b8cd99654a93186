// One RTSP connection to our server as a state machine: events in (a parsed request, an interleaved frame, a
// deadline tick, the stream going live or not, a UDP port pair opened, a consumer attached, the connection
// gone), actions out (a response, claim the producer, attach/detach a consumer, open UDP ports, publish,
// ingest, close) as plain values. No socket, no timer: lib/rtsp/server.ts performs the actions and feeds back
// the answers to the asks (`wait-live`, `open-udp`, `attach`), which are always the last action of a batch.
import { randomBytes } from "node:crypto";
import { header, parseTransport, type RtspRequest } from "./message.ts";
import { describe, play, setupReader } from "./session-reader.ts";
import {
  authorize, checkSession, closeUdp, detach, IDLE_TIMEOUT_MS, log, NOTHING, openSession, reply, resolveUri, SESSION_TIMEOUT_MS,
  sessionHeader, type Actions, type SessionAction, type SessionEvent, type SessionOptions, type SessionStream, type State,
} from "./session-state.ts";

export { chooseTransport } from "./session-reader.ts";
export {
  DESCRIBE_WAIT_MS, IDLE_TIMEOUT_MS, pathOf, resolveUri, SESSION_TIMEOUT_MS,
  type ChannelPairs, type SessionAction, type SessionEvent, type SessionOptions, type SessionStream,
} from "./session-state.ts";

const READER_METHODS = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"];
const READER_ALLOW = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER";

export interface RtspSession<S extends SessionStream> {
  handle(event: SessionEvent): SessionAction<S>[];
  readonly id: string | undefined;
}

export function createRtspSession<S extends SessionStream>(options: SessionOptions<S>): RtspSession<S> {
  const s: State<S> = {
    o: {
      ...options,
      sessionTimeoutMs: options.sessionTimeoutMs ?? SESSION_TIMEOUT_MS,
      idleTimeoutMs: options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
      now: options.now ?? Date.now,
      newSessionId: options.newSessionId ?? (() => randomBytes(8).toString("hex").toUpperCase()),
    },
    channels: [], udpTracks: [], publisherChannels: new Map(), announcedSdp: "",
    attached: false, claimed: false, recording: false, closed: false, lastActivity: 0,
  };
  s.lastActivity = s.o.now();
  return {
    handle: (event) => onEvent(s, event),
    get id() {
      return s.id;
    },
  };
}

function onEvent<S extends SessionStream>(s: State<S>, event: SessionEvent): Actions<S> {
  switch (event.kind) {
    case "request":
      s.lastActivity = s.o.now();
      return onRequest(s, event);
    case "frame":
      return onFrame(s, event.channel, event.payload);
    case "response":
      return NOTHING;
    case "rtcp":
      s.lastActivity = s.o.now();
      return NOTHING;
    case "tick":
      return onTick(s, event.busy);
    case "closed":
      return onClosed(s);
    default: {
      const resume = s.resume;
      s.resume = undefined;
      return resume ? resume(event) : NOTHING;
    }
  }
}

function onRequest<S extends SessionStream>(s: State<S>, request: RtspRequest): Actions<S> {
  switch (request.method) {
    case "OPTIONS":
      return [reply(request, 200, [["Public", [...READER_METHODS, ...(s.o.publisherAuth ? ["ANNOUNCE", "RECORD"] : [])].join(", ")]])];
    case "GET_PARAMETER":
    case "SET_PARAMETER":
      return [reply(request, 200, s.id ? [sessionHeader(s)] : [])];
    case "DESCRIBE":
      return describe(s, request);
    case "ANNOUNCE":
      return announce(s, request);
    case "SETUP":
      return s.role === "publisher" ? setupPublisher(s, request) : setupReader(s, request);
    case "PLAY":
      return play(s, request);
    case "PAUSE": {
      const refused = authorize(s, request, s.o.readerAuth) ?? checkSession(s, request);
      if (refused) return refused;
      return [...detach(s), reply(request, 200, [sessionHeader(s)])];
    }
    case "RECORD":
      return record(s, request);
    case "TEARDOWN": {
      const out: Actions<S> = [reply(request, 200), ...detach(s), ...closeUdp(s)];
      s.channels.length = 0;
      s.id = undefined;
      if (s.role === "publisher") out.push({ kind: "end" });
      return out;
    }
    default:
      return [reply(request, 501)];
  }
}

function announce<S extends SessionStream>(s: State<S>, request: RtspRequest): Actions<S> {
  if (!s.o.publisherAuth) return [reply(request, 405, [["Allow", READER_ALLOW]])];
  const refused = authorize(s, request, s.o.publisherAuth);
  if (refused) return refused;
  const found = resolveUri(s.o.streams, request.uri);
  if (!found || found.track) return [reply(request, 404)];
  s.role = "publisher";
  s.stream = found.stream;
  s.announcedSdp = request.body.toString("utf8");
  return [reply(request, 200)];
}

function setupPublisher<S extends SessionStream>(s: State<S>, request: RtspRequest): Actions<S> {
  if (!s.stream) return [reply(request, 455)];
  const tcp = parseTransport(header(request.headers, "transport") ?? "").find((t) => t.tcp && t.interleaved);
  if (!tcp?.interleaved) return [reply(request, 461)];
  // Track index = order of the media section whose control the URI ends with (FFmpeg: streamid=N).
  let index = -1;
  let media = -1;
  for (const line of s.announcedSdp.split(/\r?\n/)) {
    if (line.startsWith("m=")) media++;
    else if (line.startsWith("a=control:") && media >= 0 && request.uri.endsWith(line.slice("a=control:".length))) index = media;
  }
  if (index < 0) index = s.publisherChannels.size / 2;
  const [rtp, rtcp] = tcp.interleaved;
  s.publisherChannels.set(rtp, { track: index, rtcp: false });
  s.publisherChannels.set(rtcp, { track: index, rtcp: true });
  const opened = openSession(s);
  return [...opened, reply(request, 200, [["Transport", `RTP/AVP/TCP;unicast;interleaved=${rtp}-${rtcp};mode=record`], sessionHeader(s)])];
}

function record<S extends SessionStream>(s: State<S>, request: RtspRequest): Actions<S> {
  if (!s.o.publisherAuth) return [reply(request, 405)];
  const refused = authorize(s, request, s.o.publisherAuth);
  if (refused) return refused;
  const stream = s.stream;
  if (s.role !== "publisher" || !stream) return [reply(request, 455)];
  const wrongSession = checkSession(s, request);
  if (wrongSession) return wrongSession;
  if (s.publisherChannels.size === 0) return [reply(request, 455)];
  s.recording = true;
  return [reply(request, 200, [sessionHeader(s)]), { kind: "publish", stream, sdp: s.announcedSdp }];
}

function onFrame<S extends SessionStream>(s: State<S>, channel: number, payload: Buffer): Actions<S> {
  if (s.recording && s.stream) {
    const target = s.publisherChannels.get(channel);
    return target ? [{ kind: "ingest", stream: s.stream, track: target.track, payload, rtcp: target.rtcp }] : NOTHING;
  }
  // A reader's RTCP receiver report keeps its session alive.
  if (s.id) s.lastActivity = s.o.now();
  return NOTHING;
}

function onTick<S extends SessionStream>(s: State<S>, busy: boolean): Actions<S> {
  const packetsIn = s.attached ? s.stream?.packetsIn : undefined;
  if (packetsIn !== undefined) {
    // A player reports (RTCP) only while packets reach it: while its stream waits for the printer to come back, it
    // is not idle, or every reader would be closed a minute into an outage (docs/outages.md).
    if (packetsIn === s.packetsAtTick) s.lastActivity = s.o.now();
    s.packetsAtTick = packetsIn;
  }
  const idle = s.o.now() - s.lastActivity;
  const limit = s.id ? s.o.sessionTimeoutMs : s.o.idleTimeoutMs;
  if (idle <= limit || s.recording || busy) return NOTHING;
  return [log("info", `closing: ${s.id ? "session" : "connection"} idle for ${(idle / 1000).toFixed(1)} s (no request, no RTCP)`), { kind: "destroy" }];
}

function onClosed<S extends SessionStream>(s: State<S>): Actions<S> {
  if (s.closed) return NOTHING;
  s.closed = true;
  const out: Actions<S> = [...detach(s), ...closeUdp(s)];
  if (s.claimed) out.push({ kind: "release" });
  s.claimed = false;
  if (s.role === "publisher" && s.recording && s.stream) {
    out.push(log("info", `producer of ${s.stream.path} left`), { kind: "unpublish", stream: s.stream });
  }
  return out;
}
