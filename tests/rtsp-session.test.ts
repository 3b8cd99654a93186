// The RTSP session state machine (lib/rtsp/session.ts) without a socket: requests in, responses and stream
// actions out; the clock, the session id and the stream are plain values the test holds.
import { describe, expect, test } from "bun:test";
import { authorizationFor, createAuthenticator, LIVE555_REALM, type Authenticator } from "../lib/rtsp/auth.ts";
import { createRtspParser, encodeRequest, header, headerAll, type RtspRequest } from "../lib/rtsp/message.ts";
import { createRtspSession, SESSION_TIMEOUT_MS, IDLE_TIMEOUT_MS, type SessionAction, type SessionEvent, type SessionStream } from "../lib/rtsp/session.ts";

const PATH = "/streaming/live/1";
const URI = `rtsps://127.0.32.1:322${PATH}`;
const PLAIN_URI = `rtsp://127.0.32.1:8554${PATH}`;
const ACCESS_CODE = "12345678";
const SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";

interface FakeStream extends SessionStream {
  live: boolean;
  packetsIn?: number;
}
const fakeStream = (live = true): FakeStream => ({
  path: PATH,
  live,
  tracks: [{ control: "track1" }],
  sdp() {
    return this.live ? "v=0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=control:track1\r\n" : undefined;
  },
});
const auth = (user: string, password: string): Authenticator =>
  createAuthenticator({ realm: LIVE555_REALM, allowBasic: true, credentials: () => [{ user, password, role: "access code" }] });

type Action = SessionAction<FakeStream>;

/** One client connection's session, with a clock the test moves and a request helper that signs in with
 * Digest the way clients do (answering the 401's challenge). */
function connection(options: { udp?: boolean; encrypted?: boolean; publisher?: boolean; live?: boolean } = {}) {
  let clock = 1_000_000;
  let cseq = 0;
  const stream = fakeStream(options.live ?? true);
  const readerAuth = auth("bblp", ACCESS_CODE);
  const publisherAuth = options.publisher ? auth("publisher", "secret") : undefined;
  const session = createRtspSession<FakeStream>({
    streams: new Map([[PATH, stream]]), readerAuth, publisherAuth, udp: options.udp ?? false, encrypted: options.encrypted ?? true,
    peer: "127.0.32.9:40000", now: () => clock, newSessionId: () => "5E55",
  });
  const parse = (method: string, uri: string, headers: [string, string][], body?: string): RtspRequest => {
    const [message] = createRtspParser().push(encodeRequest(method, uri, [["CSeq", String(++cseq)], ...headers], body));
    return message as RtspRequest;
  };
  const handle = (event: SessionEvent) => session.handle(event) as Action[];
  return {
    stream, session, handle,
    tick: (ms: number, busy = false) => ((clock += ms), handle({ kind: "tick", busy })),
    advance: (ms: number) => void (clock += ms),
    /** Sends `method` unsigned; on a 401, signs it as `user` and sends it again (what clients do). */
    request(method: string, uri: string, headers: [string, string][] = [], login = { user: "bblp", password: ACCESS_CODE }, body?: string): Action[] {
      const first = handle(parse(method, uri, headers, body));
      const challenge = replyOf(first);
      if (challenge?.status !== 401) return first;
      const signed = authorizationFor(headerAll(challenge.headers, "www-authenticate"), login.user, login.password, method, uri)!;
      return handle(parse(method, uri, [...headers, ["Authorization", signed]], body));
    },
    raw: (method: string, uri: string, headers: [string, string][] = []) => handle(parse(method, uri, headers)),
  };
}

const replyOf = (actions: Action[]) => actions.find((a) => a.kind === "reply") as Extract<Action, { kind: "reply" }> | undefined;
const statusOf = (actions: Action[]) => replyOf(actions)?.status;
const kinds = (actions: Action[]) => actions.map((a) => a.kind);
const logs = (actions: Action[]) => actions.flatMap((a) => (a.kind === "log" ? [a.message] : []));
const headerOf = (actions: Action[], name: string) => header(replyOf(actions)?.headers ?? [], name);

/** DESCRIBE (live stream) and SETUP over TCP interleaved: a session is set up. */
function setUpTcp(c: ReturnType<typeof connection>, uri = URI) {
  expect(kinds(c.request("DESCRIBE", uri))).toEqual(["claim", "wait-live"]);
  expect(statusOf(c.handle({ kind: "live" }))).toBe(200);
  const setup = c.request("SETUP", `${uri}/track1`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"]]);
  expect(statusOf(setup)).toBe(200);
  return setup;
}

/** A reader on the plain port playing over UDP. */
function playingOverUdp() {
  const c = connection({ udp: true, encrypted: false });
  c.request("SETUP", `${PLAIN_URI}/track1`, [["Transport", "RTP/AVP;unicast;client_port=5000-5001"]]);
  expect(statusOf(c.handle({ kind: "udp-opened", track: 0, serverPorts: [6000, 6001] }))).toBe(200);
  c.request("PLAY", PLAIN_URI, [["Session", "5E55"]]);
  expect(statusOf(c.handle({ kind: "attached", rtpInfo: [] }))).toBe(200);
  return c;
}

describe("an RTSP reader's session", () => {
  test("OPTIONS lists the reader methods, with ANNOUNCE and RECORD only where a producer may publish; CSeq is echoed", () => {
    const reader = replyOf(connection().raw("OPTIONS", URI))!;
    expect(reader.status).toBe(200);
    expect(header(reader.headers, "cseq")).toBe("1");
    expect(header(reader.headers, "server")).toBe("pandaproxy");
    expect(header(reader.headers, "public")).toBe("OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER");
    expect(header(replyOf(connection({ publisher: true }).raw("OPTIONS", URI))!.headers, "public")).toEndWith("ANNOUNCE, RECORD");
  });

  test("DESCRIBE without credentials gets a Digest challenge; with the access code it claims the producer, waits, answers the SDP", () => {
    const c = connection();
    const unsigned = c.raw("DESCRIBE", URI);
    expect(statusOf(unsigned)).toBe(401);
    expect(headerAll(replyOf(unsigned)!.headers, "www-authenticate")[0]).toStartWith(`Digest realm="${LIVE555_REALM}", nonce=`);
    expect(logs(unsigned)).toEqual([]);
    const signed = c.request("DESCRIBE", URI);
    expect(kinds(signed)).toEqual(["claim", "wait-live"]);
    const answered = c.handle({ kind: "live" });
    expect(statusOf(answered)).toBe(200);
    expect(headerOf(answered, "content-base")).toBe(`${URI}/`);
    expect(headerOf(answered, "content-type")).toBe("application/sdp");
    expect(replyOf(answered)!.body).toContain("a=control:track1");
  });

  test("DESCRIBE with a wrong password is refused with a log line; a stream that never goes live gets 503", () => {
    const c = connection();
    const wrong = c.request("DESCRIBE", URI, [], { user: "bblp", password: "87654321" });
    expect(statusOf(wrong)).toBe(401);
    expect(logs(wrong)).toEqual(["DESCRIBE refused: wrong user or password"]);
    c.request("DESCRIBE", URI);
    const failed = c.handle({ kind: "not-live", reason: "no video within 20 s" });
    expect(statusOf(failed)).toBe(503);
    expect(logs(failed)).toEqual([`DESCRIBE ${PATH}: no video within 20 s; answering 503`]);
  });

  test("SETUP over TCP interleaved opens the session and echoes the channels; a second SETUP keeps the session", () => {
    const c = connection();
    const setup = setUpTcp(c);
    expect(kinds(setup)).toEqual(["session-opened", "reply"]);
    expect(headerOf(setup, "transport")).toBe("RTP/AVP/TCP;unicast;interleaved=0-1");
    expect(headerOf(setup, "session")).toBe(`5E55;timeout=${SESSION_TIMEOUT_MS / 1000}`);
    const again = c.request("SETUP", `${URI}/track1`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=4-5"], ["Session", "5E55"]]);
    expect(kinds(again)).toEqual(["reply"]);
    expect(headerOf(again, "transport")).toBe("RTP/AVP/TCP;unicast;interleaved=4-5");
    expect(statusOf(c.request("SETUP", `${URI}/track1`, [["Transport", "RTP/AVP/TCP;unicast"], ["Session", "0THER"]]))).toBe(454);
  });

  test("SETUP before the stream is live claims the producer and waits for it", () => {
    const c = connection({ live: false });
    const setup = c.request("SETUP", `${URI}/track1`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"]]);
    expect(kinds(setup)).toEqual(["claim", "wait-live"]);
    c.stream.live = true;
    expect(statusOf(c.handle({ kind: "live" }))).toBe(200);
  });

  test("SETUP over UDP on the plain port opens a port pair and names both pairs", () => {
    const c = connection({ udp: true, encrypted: false });
    const asked = c.request("SETUP", `${PLAIN_URI}/track1`, [["Transport", "RTP/AVP;unicast;client_port=5000-5001"]]);
    expect(asked.at(-1)).toEqual({ kind: "open-udp", track: 0, clientPorts: [5000, 5001] });
    const opened = c.handle({ kind: "udp-opened", track: 0, serverPorts: [6000, 6001] });
    expect(kinds(opened)).toEqual(["session-opened", "log", "reply"]);
    expect(headerOf(opened, "transport")).toBe("RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001");
    expect(logs(opened)).toEqual(["track 1 over UDP: 127.0.32.9:5000-5001 from ports 6000-6001"]);
    // One session, one transport.
    const mixed = c.request("SETUP", `${PLAIN_URI}/track1`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"], ["Session", "5E55"]]);
    expect(statusOf(mixed)).toBe(461);
    const played = c.request("PLAY", PLAIN_URI, [["Session", "5E55"]]);
    expect(played).toEqual([{ kind: "attach", stream: c.stream, udp: true, channels: [[0, 1]] }]);
  });

  test("a UDP port pair that cannot be opened is answered 500", () => {
    const c = connection({ udp: true, encrypted: false });
    c.request("SETUP", `${PLAIN_URI}/track1`, [["Transport", "RTP/AVP;unicast;client_port=5000-5001"]]);
    const failed = c.handle({ kind: "udp-failed", reason: "no free even/odd UDP port pair" });
    expect(statusOf(failed)).toBe(500);
    expect(logs(failed)[0]).toContain("SETUP over UDP failed");
  });

  test("UDP on the TLS port and multicast anywhere get 461 with a log line saying why; TCP offered after UDP is taken", () => {
    const tls = connection({ udp: true, encrypted: true });
    const overTls = tls.request("SETUP", `${URI}/track1`, [["Transport", "RTP/AVP;unicast;client_port=5000-5001"]]);
    expect(statusOf(overTls)).toBe(461);
    expect(logs(overTls)[0]).toContain("RTP over UDP would carry the stream unencrypted beside this TLS connection");
    const plain = connection({ udp: true, encrypted: false });
    const multicast = plain.request("SETUP", `${PLAIN_URI}/track1`, [["Transport", "RTP/AVP;multicast;port=5000-5001"]]);
    expect(statusOf(multicast)).toBe(461);
    expect(logs(multicast)[0]).toContain("multicast is not served, only unicast");
    const noUdpPort = connection({ udp: false, encrypted: false });
    expect(logs(noUdpPort.request("SETUP", `${PLAIN_URI}/track1`, [["Transport", "RTP/AVP;unicast;client_port=5000-5001"]]))[0]).toContain("UDP is not served on this port");
    const fallback = tls.request("SETUP", `${URI}/track1`, [["Transport", "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1"]]);
    expect(headerOf(fallback, "transport")).toBe("RTP/AVP/TCP;unicast;interleaved=0-1");
  });

  test("PLAY attaches the consumer once and answers RTP-Info with its first packet's seq and rtptime", () => {
    const c = connection();
    setUpTcp(c);
    const play = c.request("PLAY", URI, [["Session", "5E55"]]);
    expect(play).toEqual([{ kind: "attach", stream: c.stream, udp: false, channels: [[0, 1]] }]);
    const answered = c.handle({ kind: "attached", rtpInfo: [{ seq: 4242, rtptime: 90_000 }] });
    expect(statusOf(answered)).toBe(200);
    expect(headerOf(answered, "rtp-info")).toBe(`url=${URI}/track1;seq=4242;rtptime=90000`);
    expect(headerOf(answered, "range")).toBe("npt=0.000-");
    expect(logs(answered)).toEqual([`playing ${PATH}`]);
    expect(kinds(c.request("PLAY", URI, [["Session", "5E55"]]))).toEqual(["reply"]);
    expect(kinds(c.request("PAUSE", URI, [["Session", "5E55"]]))).toEqual(["detach", "reply"]);
  });

  test("PLAY without a session, or with another one, is 454; GET_PARAMETER answers with the session", () => {
    const c = connection();
    expect(statusOf(c.request("PLAY", URI))).toBe(454);
    expect(headerOf(c.raw("GET_PARAMETER", URI), "session")).toBeUndefined();
    setUpTcp(c);
    expect(statusOf(c.request("PLAY", URI, [["Session", "0THER"]]))).toBe(454);
    expect(headerOf(c.raw("GET_PARAMETER", URI, [["Session", "5E55"]]), "session")).toBe("5E55;timeout=60");
  });

  test("TEARDOWN detaches the consumer, closes the UDP ports and ends the session", () => {
    const c = playingOverUdp();
    const teardown = c.raw("TEARDOWN", PLAIN_URI, [["Session", "5E55"]]);
    expect(kinds(teardown)).toEqual(["reply", "detach", "close-udp"]);
    expect(c.session.id).toBeUndefined();
    expect(statusOf(c.request("PLAY", PLAIN_URI, [["Session", "5E55"]]))).toBe(454);
  });

  test("bad requests: unknown method 501, unknown path 404, a track DESCRIBE 404, another stream's SETUP 459, no Transport 461", () => {
    const c = connection();
    expect(statusOf(c.raw("REDIRECT", URI))).toBe(501);
    expect(statusOf(c.request("DESCRIBE", "rtsps://127.0.32.1:322/other"))).toBe(404);
    expect(statusOf(c.request("DESCRIBE", `${URI}/track1`))).toBe(404);
    expect(statusOf(c.request("SETUP", `${URI}/track9`, [["Transport", "RTP/AVP/TCP;unicast"]]))).toBe(404);
    expect(statusOf(c.request("SETUP", `${URI}/track1`))).toBe(461);
    expect(c.handle({ kind: "response", status: 200, reason: "OK", headers: [], body: Buffer.alloc(0) })).toEqual([]);
    const two = new Map([[PATH, fakeStream()], ["/streaming/live/2", fakeStream()]]);
    const s = createRtspSession({ streams: two, readerAuth: auth("bblp", ACCESS_CODE), udp: false, encrypted: true, peer: "x" });
    const signed = (uri: string) => ({ kind: "request", method: "SETUP", uri, body: Buffer.alloc(0), headers: [["Transport", "RTP/AVP/TCP;unicast"], ["Authorization", `Basic ${Buffer.from(`bblp:${ACCESS_CODE}`).toString("base64")}`]] }) as RtspRequest;
    expect(replyOf(s.handle(signed(`${URI}/track1`)) as Action[])?.status).toBe(200);
    expect(replyOf(s.handle(signed("rtsps://127.0.32.1:322/streaming/live/2/track1")) as Action[])?.status).toBe(459);
  });

  test("the connection's end detaches, closes UDP and releases the claim, once", () => {
    const c = playingOverUdp();
    expect(kinds(c.handle({ kind: "closed" }))).toEqual(["detach", "close-udp", "release"]);
    expect(c.handle({ kind: "closed" })).toEqual([]);
  });
});

describe("RTSP session timeout", () => {
  test("an idle session is closed after the session timeout, a connection without one after the idle timeout", () => {
    const c = connection();
    expect(c.tick(IDLE_TIMEOUT_MS)).toEqual([]);
    const idle = c.tick(1);
    expect(kinds(idle)).toEqual(["log", "destroy"]);
    expect(logs(idle)[0]).toStartWith("closing: connection idle for 30.0 s");
    const s = connection();
    setUpTcp(s);
    expect(s.tick(IDLE_TIMEOUT_MS + 1)).toEqual([]);
    expect(logs(s.tick(SESSION_TIMEOUT_MS - IDLE_TIMEOUT_MS))[0]).toStartWith("closing: session idle for 60.0 s");
  });

  test("GET_PARAMETER keepalives and RTCP receiver reports keep a session alive; a request being answered holds the close", () => {
    const c = connection();
    setUpTcp(c);
    for (let i = 0; i < 5; i++) {
      c.advance(SESSION_TIMEOUT_MS - 1);
      c.raw("GET_PARAMETER", URI, [["Session", "5E55"]]);
      expect(c.tick(0)).toEqual([]);
    }
    for (let i = 0; i < 5; i++) {
      c.advance(SESSION_TIMEOUT_MS - 1);
      c.handle({ kind: "frame", channel: 1, payload: Buffer.from([0x80, 201, 0, 1, 0, 0, 0, 1]) });
      expect(c.tick(0)).toEqual([]);
    }
    c.advance(SESSION_TIMEOUT_MS - 1);
    c.handle({ kind: "rtcp" });
    expect(c.tick(SESSION_TIMEOUT_MS - 1)).toEqual([]);
    expect(c.tick(10, true)).toEqual([]);
    expect(kinds(c.tick(0))).toEqual(["log", "destroy"]);
  });
});

describe("a player while its stream waits for the printer", () => {
  const playing = () => {
    const c = connection();
    c.stream.packetsIn = 0;
    setUpTcp(c);
    c.request("PLAY", URI, [["Session", "5E55"]]);
    expect(statusOf(c.handle({ kind: "attached", rtpInfo: [] }))).toBe(200);
    return c;
  };

  test("is not idle while no packet reaches it (it sends no RTCP then): kept through a long outage", () => {
    const c = playing();
    for (let i = 0; i < 20; i++) expect(c.tick(SESSION_TIMEOUT_MS / 4)).toEqual([]); // 5 minutes, no packet, no RTCP
  });

  test("is idle again once packets flow and it still reports nothing", () => {
    const c = playing();
    for (let i = 0; i < 8; i++) expect(c.tick(SESSION_TIMEOUT_MS / 4)).toEqual([]);
    let closed: Action[] = [];
    for (let i = 0; i < 6 && !closed.length; i++) {
      c.stream.packetsIn! += 100;
      closed = c.tick(SESSION_TIMEOUT_MS / 4);
    }
    expect(kinds(closed)).toEqual(["log", "destroy"]);
    expect(logs(closed)[0]).toStartWith("closing: session idle for");
  });
});

describe("a producer publishing to us (as FFmpeg does)", () => {
  const login = { user: "publisher", password: "secret" };
  const LOOPBACK = `rtsp://127.0.0.1:5554${PATH}`;

  function publishing() {
    const c = connection({ publisher: true, encrypted: false });
    expect(statusOf(c.request("ANNOUNCE", LOOPBACK, [["Content-Type", "application/sdp"]], login, SDP))).toBe(200);
    const setup = c.request("SETUP", `${LOOPBACK}/streamid=0`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"]], login);
    expect(kinds(setup)).toEqual(["session-opened", "reply"]);
    expect(headerOf(setup, "transport")).toBe("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record");
    return c;
  }

  test("ANNOUNCE, SETUP mode=record and RECORD publish the announced SDP; its frames are ingested by channel", () => {
    const c = publishing();
    expect(c.handle({ kind: "frame", channel: 0, payload: Buffer.from("early") })).toEqual([]);
    const record = c.request("RECORD", LOOPBACK, [["Session", "5E55"]], login);
    expect(statusOf(record)).toBe(200);
    expect(record.at(-1)).toEqual({ kind: "publish", stream: c.stream, sdp: SDP });
    const rtp = Buffer.from("rtp");
    expect(c.handle({ kind: "frame", channel: 0, payload: rtp })).toEqual([{ kind: "ingest", stream: c.stream, track: 0, payload: rtp, rtcp: false }]);
    expect(c.handle({ kind: "frame", channel: 1, payload: rtp })).toEqual([{ kind: "ingest", stream: c.stream, track: 0, payload: rtp, rtcp: true }]);
    expect(c.handle({ kind: "frame", channel: 7, payload: rtp })).toEqual([]);
    // A recording producer is never closed as idle; when it leaves, the stream is unpublished.
    expect(c.tick(SESSION_TIMEOUT_MS * 10)).toEqual([]);
    const left = c.handle({ kind: "closed" });
    expect(logs(left)).toEqual([`producer of ${PATH} left`]);
    expect(left.at(-1)).toEqual({ kind: "unpublish", stream: c.stream });
  });

  test("a producer's TEARDOWN ends its connection", () => {
    const c = publishing();
    c.request("RECORD", LOOPBACK, [["Session", "5E55"]], login);
    expect(kinds(c.raw("TEARDOWN", LOOPBACK, [["Session", "5E55"]]))).toEqual(["reply", "end"]);
  });

  test("RECORD with another session is answered once, 454; RECORD without ANNOUNCE is 455", () => {
    const c = publishing();
    const wrong = c.request("RECORD", LOOPBACK, [["Session", "0THER"]], login);
    expect(wrong.filter((a) => a.kind === "reply").map((a) => (a as { status: number }).status)).toEqual([454]);
    const early = connection({ publisher: true, encrypted: false });
    expect(statusOf(early.request("RECORD", LOOPBACK, [], login))).toBe(455);
  });

  test("where nobody may publish, ANNOUNCE and RECORD are 405; the reader's code does not sign a producer in", () => {
    const reader = connection();
    const announce = reader.raw("ANNOUNCE", URI);
    expect(statusOf(announce)).toBe(405);
    expect(headerOf(announce, "allow")).toBe("OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER");
    expect(statusOf(reader.raw("RECORD", URI))).toBe(405);
    const c = connection({ publisher: true, encrypted: false });
    expect(statusOf(c.request("ANNOUNCE", LOOPBACK, [], { user: "bblp", password: ACCESS_CODE }, SDP))).toBe(401);
  });
});
