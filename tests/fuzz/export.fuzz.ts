// Fuzz targets for what the RTSP push ([export.rtsp], lib/rtsp/relay.ts) reads from the media server: its 401
// challenges, answered by relay.ts `answerChallenges` (lib/rtsp/auth.ts `authorizationFor`). The relay reads the rest of the media server's
// bytes with the RTSP codec (tests/fuzz/rtsp.fuzz.ts). Invariants: never a throw; an answer is one header value
// (no line break, no NUL; quotes that parse back to what was signed); a challenge from our own server is answered
// so that it accepts the login.
import fc from "fast-check";
import { createAuthenticator, digestResponse, parseAuthParams } from "../../lib/rtsp/auth.ts";
import { answerChallenges } from "../../lib/rtsp/relay.ts";
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
      const answer = answerChallenges(challenges, u, pw, m, path);
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
      const answer = answerChallenges(basicFirst ? [...challenges].reverse() : challenges, u, pw, m, path);
      if (answer === undefined) fail(`no answer to ${JSON.stringify(challenges)}`);
      checkAnswer(answer!, { user: u, password: pw, method: m, uri: path });
      if (server.check(m, answer)?.user !== u) fail(`our own server refused ${JSON.stringify(answer)} to ${JSON.stringify(challenges)}`);
    }),
};

export const targets: FuzzTarget[] = [mediaServerChallenges, ownServerRoundTrip];
