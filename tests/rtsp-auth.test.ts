// RTSP Digest without replay: our nonces expire, and a nonce's count (qop=auth) must grow, so an Authorization
// header seen on the LAN (plain RTSP) cannot be replayed on a new connection; the 401 then says stale=true
// with a fresh nonce (RFC 7616 3.3, 3.4). ffmpeg still plays through the proxy. Loopback 127.0.28.0/24.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { listen, type Listening } from "../lib/core/server.ts";
import type { Service } from "../lib/core/service.ts";
import { processLogger } from "../lib/log.ts";
import { createAuthenticator, digestResponse, parseAuthParams, type Authenticator } from "../lib/rtsp/auth.ts";
import { createRtspParser, encodeRequest, headerAll, type RtspResponse } from "../lib/rtsp/message.ts";
import { createRtspServer } from "../lib/rtsp/server.ts";
import { simIdentity } from "../lib/sim/bambu.ts";
import { startSimRtsp, type SimRtsp } from "../lib/sim/rtsp.ts";
import { ACCESS_CODE, ffmpegDecode, proxyContext } from "./rtsp-fixtures.ts";

const HOST = "127.0.28.80";
const PORT = 8554;
const SHORT_PORT = 8555;
const SHORT_LIFETIME_MS = 300;
const REALM = "pandaproxy test";
const USER = "bblp";
const URI = `rtsp://${HOST}:${PORT}/nothing`;

/** One request on a new plain connection; the response. */
function requestOnce(port: number, method: string, uri: string, authorization?: string): Promise<RtspResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: HOST, port }, () => {
      socket.write(encodeRequest(method, uri, [["CSeq", "1"], ...(authorization ? [["Authorization", authorization] as [string, string]] : [])]));
    });
    const parser = createRtspParser();
    const timer = setTimeout(() => (socket.destroy(), reject(new Error(`no answer to ${method}`))), 5_000);
    socket.on("data", (chunk: Buffer) => {
      for (const m of parser.push(chunk)) {
        if (m.kind !== "response") continue;
        clearTimeout(timer);
        socket.destroy();
        resolve(m);
      }
    });
    socket.on("error", reject);
  });
}

const digestChallenge = (response: RtspResponse) => parseAuthParams(headerAll(response.headers, "www-authenticate").find((c) => /^digest /i.test(c))!.slice(7));

/** An Authorization header as a client computes it (qop=auth with `nc`, or RFC 2069 without). */
function signed(nonce: string, nc: string | undefined, password = ACCESS_CODE, method = "DESCRIBE"): string {
  const cnonce = "0a4f113b";
  const qop = nc ? "auth" : undefined;
  const response = digestResponse({ user: USER, password, realm: REALM, nonce, method, uri: URI, qop, nc, cnonce });
  const base = `Digest username="${USER}", realm="${REALM}", nonce="${nonce}", uri="${URI}", response="${response}"`;
  return nc ? `${base}, qop=auth, nc=${nc}, cnonce="${cnonce}"` : base;
}

async function serve(port: number, auth: Authenticator): Promise<Listening> {
  const server = createRtspServer({ log: processLogger("rtsp-auth-test"), streams: new Map(), readerAuth: auth });
  return listen({ log: processLogger("rtsp-auth-test"), what: "test RTSP", host: HOST, port, onClient: server.handle });
}

describe("Digest nonces: counted, single-use without a count, and expiring", () => {
  const listeners: Listening[] = [];
  const credentials = () => [{ user: USER, password: ACCESS_CODE, role: "access code" }];
  beforeAll(async () => {
    listeners.push(await serve(PORT, createAuthenticator({ realm: REALM, allowBasic: false, credentials })));
    listeners.push(await serve(SHORT_PORT, createAuthenticator({ realm: REALM, allowBasic: false, credentials, nonceLifetimeMs: SHORT_LIFETIME_MS })));
  });
  afterAll(async () => {
    for (const l of listeners) await l.close();
  });

  test("the challenge offers qop=auth; a signed request passes; replaying it (same nc) on a new connection is refused as stale", async () => {
    const first = await requestOnce(PORT, "DESCRIBE", URI);
    expect(first.status).toBe(401);
    const challenge = digestChallenge(first);
    expect(challenge.qop).toBe("auth");
    expect(challenge.stale).toBeUndefined();
    const header = signed(challenge.nonce!, "00000001");
    expect((await requestOnce(PORT, "DESCRIBE", URI, header)).status).toBe(404); // signed in; no such stream

    const replayed = await requestOnce(PORT, "DESCRIBE", URI, header);
    expect(replayed.status).toBe(401);
    const fresh = digestChallenge(replayed);
    expect(fresh.stale).toBe("true");
    expect(fresh.nonce).not.toBe(challenge.nonce);

    // The same nonce with a higher count is the client's next request: accepted; going back is not.
    expect((await requestOnce(PORT, "DESCRIBE", URI, signed(challenge.nonce!, "00000002"))).status).toBe(404);
    expect((await requestOnce(PORT, "DESCRIBE", URI, signed(challenge.nonce!, "00000002"))).status).toBe(401);
    expect((await requestOnce(PORT, "DESCRIBE", URI, signed(challenge.nonce!, "00000001"))).status).toBe(401);
    // The fresh nonce works at once, as a client retrying after stale=true does.
    expect((await requestOnce(PORT, "DESCRIBE", URI, signed(fresh.nonce!, "00000001"))).status).toBe(404);
  });

  test("a client that sends no count (RFC 2069) signs in once with a nonce; a replay is stale", async () => {
    const challenge = digestChallenge(await requestOnce(PORT, "DESCRIBE", URI));
    const header = signed(challenge.nonce!, undefined);
    expect((await requestOnce(PORT, "DESCRIBE", URI, header)).status).toBe(404);
    const replayed = await requestOnce(PORT, "DESCRIBE", URI, header);
    expect(replayed.status).toBe(401);
    expect(digestChallenge(replayed).stale).toBe("true");
  });

  test("a wrong password is a plain 401 (not stale), and does not use up the nonce", async () => {
    const challenge = digestChallenge(await requestOnce(PORT, "DESCRIBE", URI));
    const wrong = await requestOnce(PORT, "DESCRIBE", URI, signed(challenge.nonce!, "00000001", "00000000"));
    expect(wrong.status).toBe(401);
    expect(digestChallenge(wrong).stale).toBeUndefined();
    expect((await requestOnce(PORT, "DESCRIBE", URI, signed(challenge.nonce!, "00000001"))).status).toBe(404);
  });

  test("a nonce older than its lifetime is refused as stale", async () => {
    const uri = URI;
    const challenge = digestChallenge(await requestOnce(SHORT_PORT, "DESCRIBE", uri));
    await Bun.sleep(SHORT_LIFETIME_MS + 200);
    const late = await requestOnce(SHORT_PORT, "DESCRIBE", uri, signed(challenge.nonce!, "00000001"));
    expect(late.status).toBe(401);
    expect(digestChallenge(late).stale).toBe("true");
  });
});

describe.skipIf(!Bun.which("ffmpeg"))("ffmpeg still plays", () => {
  const SIM = "127.0.28.82";
  const PROXY = "127.0.28.83";
  let sim: SimRtsp;
  let service: Service;
  beforeAll(async () => {
    // Both ends use these nonces: our server for ffmpeg, the simulated printer for the proxy's relay.
    sim = await startSimRtsp(simIdentity({ host: SIM, model: "X1C", serial: "00M09A350100123", accessCode: ACCESS_CODE, ports: { rtsp: 322 } }), { cameraWidth: 320, cameraHeight: 180, cameraFps: 15 });
    service = createRtspService(proxyContext({ bind: PROXY, printerHost: SIM, printerRtsp: 322 }), { backoffMinMs: 300 });
    await service.start();
  });
  afterAll(async () => {
    await service?.stop();
    await sim?.stop();
  });

  test("ffmpeg decodes frames through the proxy, signing in with Digest", async () => {
    const { frames, ran } = await ffmpegDecode(`rtsps://bblp:${ACCESS_CODE}@${PROXY}:322/streaming/live/1`, 10);
    expect(ran.code).toBe(0);
    expect(frames).toBeGreaterThanOrEqual(10);
  }, 60_000);
});
