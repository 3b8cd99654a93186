// Fuzz targets for what the RTSP push ([export.rtsp], lib/rtsp/relay.ts) reads from the media server: its 401
// challenges, answered by lib/rtsp/auth.ts `authorizationFor`, and, over real
// sockets, whatever else it answers (401s, RECORD replies, interleaved frames, garbage). Invariants: never a
// throw; an answer is one header value (no line break, no NUL; quotes that parse back to what was signed); a
// challenge from our own server is answered so that it accepts the login; the pusher's connection ends when
// the media server's does, its slot comes back, and unreadable bytes get a log line naming the media server.
// Loopback 127.0.57.10 (the media server) and 127.0.57.11 (the relay).
import fc from "fast-check";
import { connect, createServer, type Server, type Socket } from "node:net";
import { captureLogs, serviceLogger } from "../../lib/log.ts";
import { encodeFrame, encodeResponse, type Headers } from "../../lib/rtsp/message.ts";
import { startRelay, type Relay } from "../../lib/rtsp/relay.ts";
import { bytes } from "./bytes.ts";
import { authorizationFor, createAuthenticator, digestResponse, parseAuthParams } from "../../lib/rtsp/auth.ts";
import { wireText } from "./bytes.ts";
import type { FuzzTarget } from "./target.ts";

const fail = (why: string): never => {
  throw new Error(why);
};

/** Names and passwords as a config file may hold them (no quote or backslash in a user name). */
const user = fc.stringMatching(/^[A-Za-z0-9_.@-]{1,16}$/);
const password = fc.string({ maxLength: 24 });
const method = fc.constantFrom("OPTIONS", "ANNOUNCE", "SETUP", "RECORD", "TEARDOWN");
const uri = fc.stringMatching(/^rtsp:\/\/127\.0\.0\.1:8554\/[A-Za-z0-9_/.-]{0,20}$/);

const paramValue = fc.oneof(
  fc.stringMatching(/^[0-9a-f]{1,32}$/),
  wireText(24),
  fc.constantFrom("", "\"", "\\", "a\"b", "a\\\"b", "x\ny", "x\rInjected: 1", "x\u0000", ",", "auth", "auth,auth-int", "auth-int", "MD5", "true"),
);
const param = fc.tuple(fc.constantFrom("realm", "nonce", "qop", "opaque", "stale", "algorithm", "domain", "Realm", "NONCE"), paramValue, fc.boolean())
  .map(([name, value, quoted]) => `${name}=${quoted ? `"${value}"` : value}`);
const challenge = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.constantFrom("Digest ", "digest ", "Digest\t", "Basic ", "basic", "Bearer ", "Digest"), fc.array(param, { maxLength: 6 }), fc.constantFrom(", ", ",", " ", ",,"))
    .map(([scheme, params, sep]) => scheme + params.join(sep)) },
  { weight: 1, arbitrary: wireText(120) },
);

/** An Authorization value that is one header line whose Digest fields parse back to what it signed. */
function checkAnswer(answer: string, who: { user: string; password: string; method: string; uri: string }): void {
  if (/[\r\n\u0000]/.test(answer)) fail(`a line break or NUL in the Authorization value ${JSON.stringify(answer)}`);
  if (answer.startsWith("Basic ")) {
    if (Buffer.from(answer.slice(6), "base64").toString("utf8") !== `${who.user}:${who.password}`) fail("Basic credentials do not decode to user:password");
    return;
  }
  if (!answer.startsWith("Digest ")) fail(`an answer in neither scheme: ${answer}`);
  const p = parseAuthParams(answer.slice(7));
  if (p.username !== who.user || p.uri !== who.uri) fail(`username or uri do not parse back: ${JSON.stringify(answer)}`);
  if (!p.realm || !p.nonce || !p.response) return fail(`realm, nonce or response missing: ${JSON.stringify(answer)}`);
  const expected = digestResponse({ user: who.user, password: who.password, realm: p.realm, nonce: p.nonce, method: who.method, uri: who.uri, qop: p.qop, nc: p.nc, cnonce: p.cnonce });
  if (p.response !== expected) fail(`the response does not sign the fields as they parse back: ${JSON.stringify(answer)}`);
}

const mediaServerChallenges: FuzzTarget = {
  name: "media server WWW-Authenticate challenges",
  property: () =>
    fc.property(fc.array(challenge, { maxLength: 3 }), user, password, method, uri, (challenges, u, pw, m, path) => {
      const answer = authorizationFor(challenges, u, pw, m, path);
      if (answer !== undefined) checkAnswer(answer, { user: u, password: pw, method: m, uri: path });
      // Whatever the challenge, what parseAuthParams gives is strings only.
      for (const c of challenges) for (const v of Object.values(parseAuthParams(c))) if (typeof v !== "string") fail("a parameter that is not a string");
    }),
};

/** Our own RTSP server's authenticator as the media server: its challenge, answered, logs in. */
const ownServerRoundTrip: FuzzTarget = {
  name: "Digest and Basic challenge round trip",
  property: () =>
    fc.property(user, password, method, uri, fc.stringMatching(/^[A-Za-z0-9 ._-]{1,30}$/), fc.boolean(), fc.boolean(), (u, pw, m, path, realm, allowBasic, basicFirst) => {
      const server = createAuthenticator({ realm, credentials: () => [{ user: u, password: pw, role: "publisher" }], allowBasic });
      const challenges = server.challenge();
      const answer = authorizationFor(basicFirst ? [...challenges].reverse() : challenges, u, pw, m, path);
      if (answer === undefined) fail(`no answer to ${JSON.stringify(challenges)}`);
      checkAnswer(answer!, { user: u, password: pw, method: m, uri: path });
      if (server.check(m, answer)?.user !== u) fail(`our own server refused ${JSON.stringify(answer)} to ${JSON.stringify(challenges)}`);
    }),
};

// --- the relay over sockets -------------------------------------------------------------------------------------

const MEDIA_HOST = "127.0.57.10";
const RELAY_HOST = "127.0.57.11";
const MEDIA_PORT = 57_554;
/** The media server ends its side right after its bytes; the pusher's side must be closed by then and a margin. */
const CLOSE_DEADLINE_MS = 3_000;
const RELAY_SLOTS = 3;

/** What the media server sends this case, once the first request arrives. */
let script: Buffer[] = [];
let fixture: Promise<{ media: Server; relay: Relay }> | undefined;
const started = () =>
  (fixture ??= (async () => {
    const media = createServer((socket: Socket) => {
      socket.on("error", () => {});
      socket.once("data", () => {
        for (const part of script) socket.write(part);
        socket.end();
      });
    });
    await new Promise<void>((resolve) => media.listen(MEDIA_PORT, MEDIA_HOST, resolve));
    const relay = await startRelay({
      log: serviceLogger("fuzz-printer", "export rtsp"), host: MEDIA_HOST, port: MEDIA_PORT, listenHost: RELAY_HOST, user: "pandaproxy",
      password: () => "secret", peer: "media server", maxClients: RELAY_SLOTS,
      // as lib/export/rtsp.ts words it
      refusedMessage: `media server ${MEDIA_HOST}:${MEDIA_PORT} refused the login of user "pandaproxy": check [export.rtsp] username and password`,
    });
    return { media, relay };
  })());

export async function teardown(): Promise<void> {
  if (!fixture) return;
  const { media, relay } = await fixture;
  fixture = undefined;
  await relay.close();
  await new Promise<void>((resolve) => media.close(() => resolve()));
}

const responseHeaders = fc.array(fc.tuple(fc.constantFrom("CSeq", "WWW-Authenticate", "Session", "Content-Type", "Transport", "X"), fc.oneof(fc.constantFrom("1", "2", "0"), wireText(40))), { maxLength: 4 });
const mediaServerPart: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(fc.constantFrom(200, 401, 401, 454, 500), responseHeaders, challenge, bytes(40)).map(([status, h, c, body]) =>
    encodeResponse(status, [["CSeq", "1"], ...(status === 401 ? [["WWW-Authenticate", c] as [string, string]] : []), ...h] as Headers, body)),
  fc.tuple(fc.integer({ min: 0, max: 255 }), bytes(200)).map(([channel, payload]) => encodeFrame(channel, payload)),
  wireText(120).map((t) => Buffer.from(t, "latin1")),
  bytes(200),
);

const relayOverSockets: FuzzTarget = {
  name: "RTSP push relay and a media server's replies",
  costFactor: 5,
  property: () =>
    fc.asyncProperty(fc.array(mediaServerPart, { minLength: 1, maxLength: 4 }), async (parts) => {
      const { relay } = await started();
      script = parts;
      const before = relay.connections;
      const logs = captureLogs();
      const pusher = connect({ host: RELAY_HOST, port: Number(new URL(relay.url("/")).port) });
      pusher.on("error", () => {});
      pusher.on("data", () => {});
      pusher.write("ANNOUNCE " + relay.url("/p1s") + " RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n");
      const closed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), CLOSE_DEADLINE_MS);
        pusher.once("close", () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      pusher.destroy();
      logs.stop();
      if (!closed) fail(`the pusher's connection was still open ${CLOSE_DEADLINE_MS} ms after the media server ended its side`);
      if (relay.connections !== before + 1) fail("the relay took no connection: its slots are held by earlier pushes");
      for (const line of logs.lines) {
        if (/[\r\n]/.test(line)) fail(`a log line with a line break from the media server's bytes: ${JSON.stringify(line)}`);
        if (!line.includes("[fuzz-printer/export rtsp]") || !line.includes("media server")) fail(`a log line that does not name printer, service and media server: ${line}`);
      }
    }),
};

export const targets: FuzzTarget[] = [mediaServerChallenges, ownServerRoundTrip, relayOverSockets];
