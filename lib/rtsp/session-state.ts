// The RTSP session's state and the small steps every method uses (lib/rtsp/session.ts is the state machine):
// the events it takes, the actions it gives, the per-connection state, responses, sign-in and session checks.
import type { Authenticator, Credential } from "./auth.ts";
import { header, type Headers, type RtspMessage, type RtspRequest } from "./message.ts";
import type { RtpStart } from "./stream.ts";

/** A session with no request and no RTCP from its client for this long is closed (announced in Session:). */
export const SESSION_TIMEOUT_MS = 60_000;
/** A connection that never sets up a session is closed after this long without a request. */
export const IDLE_TIMEOUT_MS = 30_000;
/** How long DESCRIBE waits for FFmpeg to start publishing before answering 503. */
export const DESCRIBE_WAIT_MS = 20_000;
const SERVER_NAME = "pandaproxy";

/** What the session reads of a stream (lib/rtsp/stream.ts's Stream has it all). */
export interface SessionStream {
  readonly path: string;
  readonly live: boolean;
  readonly tracks: readonly { readonly control: string }[];
  sdp(): string | undefined;
  /** Packets the stream has taken in so far: a reader's idleness counts only while they flow. */
  readonly packetsIn?: number;
}

export interface SessionOptions<S extends SessionStream> {
  /** Path ("/streaming/live/1") -> stream. */
  streams: ReadonlyMap<string, S>;
  readerAuth: Authenticator;
  /** Present only where FFmpeg publishes to us (the loopback listener). */
  publisherAuth?: Authenticator;
  /** The connection came in on a port that serves RTP over UDP. */
  udp: boolean;
  /** The connection is TLS (UDP would carry the stream unencrypted beside it: never served). */
  encrypted: boolean;
  /** The client's address and port, for log lines. */
  peer: string;
  sessionTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Clock and session ids (tests fix them). */
  now?: () => number;
  newSessionId?: () => string;
}

export type ChannelPairs = ([number, number] | undefined)[];

export type SessionEvent =
  | RtspMessage
  /** A packet from the client on one of our UDP RTCP ports (receiver reports keep the session alive). */
  | { kind: "rtcp" }
  /** The deadline check; `busy` while a request is waiting or being answered. */
  | { kind: "tick"; busy: boolean }
  | { kind: "live" }
  | { kind: "not-live"; reason: string }
  | { kind: "udp-opened"; track: number; serverPorts: [number, number] }
  | { kind: "udp-failed"; reason: string }
  | { kind: "attached"; rtpInfo: readonly (RtpStart | undefined)[] }
  | { kind: "closed" };

export type SessionAction<S> =
  | { kind: "reply"; status: number; headers: Headers; body?: string }
  | { kind: "log"; level: "debug" | "info" | "warn"; message: string }
  /** Ask for the stream's producer (FFmpeg starts on demand); once per connection, until `release`. */
  | { kind: "claim"; stream: S }
  | { kind: "release" }
  /** Ask: answer `live` or `not-live`. */
  | { kind: "wait-live"; stream: S; timeoutMs: number }
  /** Ask: answer `udp-opened` or `udp-failed`. */
  | { kind: "open-udp"; track: number; clientPorts: [number, number] }
  /** Close every UDP port pair of this connection. */
  | { kind: "close-udp" }
  | { kind: "session-opened"; id: string }
  /** Ask: add this connection's consumer to the stream (`channels` stays this session's live table); answer
   * `attached`. */
  | { kind: "attach"; stream: S; udp: boolean; channels: ChannelPairs }
  | { kind: "detach" }
  /** This connection becomes the stream's producer (replacing any other). */
  | { kind: "publish"; stream: S; sdp: string }
  | { kind: "unpublish"; stream: S }
  | { kind: "ingest"; stream: S; track: number; payload: Buffer; rtcp: boolean }
  /** End then destroy (a publisher's TEARDOWN). */
  | { kind: "end" }
  | { kind: "destroy" };


export type Actions<S> = SessionAction<S>[];
export type Answer = Extract<SessionEvent, { kind: "live" | "not-live" | "udp-opened" | "udp-failed" | "attached" }>;

export interface State<S extends SessionStream> {
  o: SessionOptions<S> & { sessionTimeoutMs: number; idleTimeoutMs: number; now: () => number; newSessionId: () => string };
  credential?: Credential;
  id?: string;
  stream?: S;
  role?: "reader" | "publisher";
  /** Per track index: the interleaved channel pair the consumer writes on (UDP tracks too: the glue maps). */
  channels: ChannelPairs;
  /** Per track index: set up over UDP. */
  udpTracks: boolean[];
  publisherChannels: Map<number, { track: number; rtcp: boolean }>;
  announcedSdp: string;
  attached: boolean;
  claimed: boolean;
  recording: boolean;
  closed: boolean;
  lastActivity: number;
  /** The stream's packetsIn at the previous tick. */
  packetsAtTick?: number;
  /** What to do with the answer to the ask in flight. */
  resume?: (answer: Answer) => Actions<S>;
}

export const NOTHING: never[] = [];

/** `rtsps://host:322/streaming/live/1/track1?x` -> `/streaming/live/1/track1`. */
export function pathOf(uri: string): string {
  const noScheme = uri.replace(/^[a-z]+:\/\/[^/]*/i, "");
  const path = noScheme.split("?")[0] ?? "/";
  return ("/" + path.replace(/^\/+/, "")).replace(/\/+$/, "") || "/";
}

/** The stream a URI names, and the track when it names one below the stream. */
export function resolveUri<S>(streams: ReadonlyMap<string, S>, uri: string): { stream: S; track?: string } | undefined {
  const path = pathOf(uri);
  const direct = streams.get(path);
  if (direct) return { stream: direct };
  const slash = path.lastIndexOf("/");
  const parent = streams.get(path.slice(0, slash));
  if (parent) return { stream: parent, track: path.slice(slash + 1) };
  return undefined;
}

export function reply<S>(request: RtspRequest, status: number, headers: Headers = [], body?: string): SessionAction<S> {
  const cseq = header(request.headers, "cseq");
  const all: Headers = [...(cseq !== undefined ? [["CSeq", cseq] as [string, string]] : []), ["Server", SERVER_NAME], ...headers];
  if (body !== undefined) all.push(["Content-Type", "application/sdp"]);
  return { kind: "reply", status, headers: all, body };
}

export const log = <S>(level: "debug" | "info" | "warn", message: string): SessionAction<S> => ({ kind: "log", level, message });

export function sessionHeader(s: State<SessionStream>): [string, string] {
  return ["Session", `${s.id};timeout=${Math.max(1, Math.round(s.o.sessionTimeoutMs / 1000))}`];
}

/** Undefined when the request may go on; else the 401 to send. A connection signs in once per role. */
export function authorize<S extends SessionStream>(s: State<S>, request: RtspRequest, auth: Authenticator): Actions<S> | undefined {
  if (s.credential && auth === (s.role === "publisher" ? s.o.publisherAuth : s.o.readerAuth)) return undefined;
  const given = header(request.headers, "authorization");
  const who = auth.check(request.method, given);
  if (who) {
    s.credential = who;
    return undefined;
  }
  return [
    ...(given ? [log<S>("warn", `${request.method} refused: wrong user or password`)] : []),
    reply(request, 401, auth.challenge().map((c) => ["WWW-Authenticate", c] as [string, string])),
  ];
}

/** Undefined when the request names this connection's session (or none); else the 454 to send. */
export function checkSession<S extends SessionStream>(s: State<S>, request: RtspRequest): Actions<S> | undefined {
  const given = header(request.headers, "session")?.split(";")[0]?.trim();
  if (!s.id || (given !== undefined && given !== s.id)) return [reply(request, 454)];
  return undefined;
}

export function openSession<S extends SessionStream>(s: State<S>): Actions<S> {
  if (s.id) return NOTHING;
  s.id = s.o.newSessionId();
  return [{ kind: "session-opened", id: s.id }];
}

export function claim<S extends SessionStream>(s: State<S>, stream: S): Actions<S> {
  if (s.claimed) return NOTHING;
  s.claimed = true;
  return [{ kind: "claim", stream }];
}

export function detach<S extends SessionStream>(s: State<S>): Actions<S> {
  if (!s.attached) return NOTHING;
  s.attached = false;
  return [{ kind: "detach" }];
}

export function closeUdp<S extends SessionStream>(s: State<S>): Actions<S> {
  const any = s.udpTracks.some(Boolean);
  s.udpTracks.length = 0;
  return any ? [{ kind: "close-udp" }] : NOTHING;
}
