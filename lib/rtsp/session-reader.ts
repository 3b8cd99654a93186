// The reader's side of an RTSP session: DESCRIBE, SETUP (TCP interleaved or UDP), PLAY with RTP-Info.
import { header, parseTransport, type RtspRequest, type Transport } from "./message.ts";
import {
  authorize, checkSession, claim, DESCRIBE_WAIT_MS, log, NOTHING, openSession, reply, resolveUri, sessionHeader,
  type Actions, type SessionStream, type State,
} from "./session-state.ts";

export function describe<S extends SessionStream>(s: State<S>, request: RtspRequest): Actions<S> {
  const refused = authorize(s, request, s.o.readerAuth);
  if (refused) return refused;
  const found = resolveUri(s.o.streams, request.uri);
  if (!found || found.track) return [reply(request, 404)];
  const stream = found.stream;
  s.role = "reader";
  s.stream = stream;
  s.resume = (answer) => {
    if (answer.kind !== "live") {
      const why = answer.kind === "not-live" ? answer.reason : "no stream";
      return [log("warn", `DESCRIBE ${stream.path}: ${why}; answering 503`), reply(request, 503)];
    }
    const base = request.uri.replace(/\/+$/, "") + "/";
    return [reply(request, 200, [["Content-Base", base]], stream.sdp())];
  };
  return [...claim(s, stream), { kind: "wait-live", stream, timeoutMs: DESCRIBE_WAIT_MS }];
}

export function setupReader<S extends SessionStream>(s: State<S>, request: RtspRequest): Actions<S> {
  const refused = authorize(s, request, s.o.readerAuth);
  if (refused) return refused;
  const found = resolveUri(s.o.streams, request.uri);
  if (!found) return [reply(request, 404)];
  if (s.stream && found.stream !== s.stream) return [reply(request, 459)];
  const stream = found.stream;
  s.stream = stream;
  s.role = "reader";
  const claimed = claim(s, stream);
  if (stream.live) return [...claimed, ...setupTrack(s, request, stream, found.track)];
  s.resume = (answer) => (answer.kind === "live" ? setupTrack(s, request, stream, found.track) : [reply(request, 503)]);
  return [...claimed, { kind: "wait-live", stream, timeoutMs: DESCRIBE_WAIT_MS }];
}

/** Which offered transport a reader gets; `why` says what is wrong with all of them. */
export function chooseTransport(offered: Transport[], can: { udp: boolean; encrypted: boolean }, sessionKind?: "tcp" | "udp"): { chosen: Transport } | { why: string } {
  const udpOk = (t: Transport) => !t.tcp && !t.multicast && t.clientPort !== undefined && /^RTP\/AVP(\/UDP)?$/i.test(t.profile);
  const udpAllowed = can.udp && !can.encrypted;
  const usable = (t: Transport) => t.tcp || (udpAllowed && udpOk(t));
  // A session already set up keeps its transport kind when the client offers both.
  const chosen = offered.find((t) => usable(t) && (t.tcp ? "tcp" : "udp") === sessionKind) ?? offered.find(usable);
  if (chosen) return { chosen };
  const why = offered.every((t) => t.multicast) ? "multicast is not served, only unicast"
    : can.encrypted ? "RTP over UDP would carry the stream unencrypted beside this TLS connection"
    : !udpAllowed ? "UDP is not served on this port"
    : "no usable RTP/AVP unicast client_port";
  return { why };
}

function setupTrack<S extends SessionStream>(s: State<S>, request: RtspRequest, stream: S, track: string | undefined): Actions<S> {
  const index = track ? stream.tracks.findIndex((t) => t.control === track) : stream.tracks.length === 1 ? 0 : -1;
  if (index < 0) return [reply(request, 404)];
  const asked = header(request.headers, "transport") ?? "";
  const sessionKind = s.channels.some(Boolean) ? (s.udpTracks.some(Boolean) ? "udp" : "tcp") : undefined;
  const choice = chooseTransport(parseTransport(asked), s.o, sessionKind);
  if ("why" in choice) return [log("info", `SETUP asked for ${asked || "no Transport"}; answering 461: ${choice.why}; use TCP`), reply(request, 461)];
  const { chosen } = choice;
  // One session, one transport: live555 does the same, and it keeps the consumer's write path simple.
  if (sessionKind !== undefined && sessionKind !== (chosen.tcp ? "tcp" : "udp")) return [log("info", `SETUP mixes TCP and UDP in one session; answering 461`), reply(request, 461)];
  const wrongSession = s.id ? checkSession(s, request) : undefined;
  if (wrongSession) return wrongSession;
  if (chosen.tcp) {
    const pair = chosen.interleaved ?? [index * 2, index * 2 + 1];
    s.channels[index] = pair;
    const opened = openSession(s);
    return [...opened, reply(request, 200, [["Transport", `RTP/AVP/TCP;unicast;interleaved=${pair[0]}-${pair[1]}`], sessionHeader(s)])];
  }
  const clientPorts = chosen.clientPort!;
  s.resume = (answer) => {
    if (answer.kind !== "udp-opened") {
      const why = answer.kind === "udp-failed" ? answer.reason : "no ports";
      return [log("warn", `SETUP over UDP failed: ${why}; answering 500`), reply(request, 500)];
    }
    s.udpTracks[index] = true;
    // The stream writes `$`-framed packets on these channels; the consumer's write turns them into datagrams.
    s.channels[index] = [index * 2, index * 2 + 1];
    const opened = openSession(s);
    const [c, d] = answer.serverPorts;
    return [
      ...opened,
      log("debug", `track ${index + 1} over UDP: ${s.o.peer.replace(/:\d+$/, "")}:${clientPorts[0]}-${clientPorts[1]} from ports ${c}-${d}`),
      reply(request, 200, [["Transport", `RTP/AVP;unicast;client_port=${clientPorts[0]}-${clientPorts[1]};server_port=${c}-${d}`], sessionHeader(s)]),
    ];
  };
  return [{ kind: "open-udp", track: index, clientPorts }];
}

export function play<S extends SessionStream>(s: State<S>, request: RtspRequest): Actions<S> {
  const refused = authorize(s, request, s.o.readerAuth) ?? checkSession(s, request);
  if (refused) return refused;
  const stream = s.stream;
  if (!stream) return NOTHING;
  if (!s.channels.some(Boolean)) return [reply(request, 455)];
  if (s.attached) return [reply(request, 200, [sessionHeader(s), ["Range", "npt=0.000-"]])];
  s.attached = true;
  s.resume = (answer) => {
    const starts = answer.kind === "attached" ? answer.rtpInfo : [];
    // Like live555: RTP-Info gives each track's first seq/rtptime (the consumer's first packet carries them).
    const aggregate = request.uri.replace(/\/+$/, "");
    const base = resolveUri(s.o.streams, request.uri)?.track ? aggregate.slice(0, aggregate.lastIndexOf("/")) : aggregate;
    const rtpInfo = starts
      .map((start, i) => (start ? `url=${base}/${stream.tracks[i]?.control};seq=${start.seq};rtptime=${start.rtptime}` : undefined))
      .filter((v) => v !== undefined)
      .join(",");
    return [
      reply(request, 200, [sessionHeader(s), ["Range", "npt=0.000-"], ...(rtpInfo ? [["RTP-Info", rtpInfo] as [string, string]] : [])]),
      log("info", `playing ${stream.path}`),
    ];
  };
  return [{ kind: "attach", stream, udp: s.udpTracks.some(Boolean), channels: s.channels }];
}
