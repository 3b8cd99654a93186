// Unit tests for the RTSP codec and authentication (key-frame detection: tests/rtp.test.ts).
import { describe, expect, test } from "bun:test";
import { authorizationFor, createAuthenticator, LIVE555_REALM } from "../lib/rtsp/auth.ts";
import { createRtspParser, encodeFrame, encodeRequest, encodeResponse, header, parseTransport, RtspParseError } from "../lib/rtsp/message.ts";
import { pathOf } from "../lib/rtsp/server.ts";
import { ffmpegMissing, relayArgs } from "../lib/rtsp/ffmpeg.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { proxyContext } from "./rtsp-fixtures.ts";

describe("RTSP message codec", () => {
  test("requests, responses and interleaved frames come out whole however the bytes are split", () => {
    const wire = Buffer.concat([
      encodeRequest("DESCRIBE", "rtsps://10.0.0.5/streaming/live/1", [["CSeq", "2"], ["Accept", "application/sdp"]]),
      encodeFrame(0, Buffer.from([0x80, 0x60, 1, 2, 3])),
      encodeResponse(200, [["CSeq", "2"]], "v=0\r\n"),
      Buffer.from("\r\n"),
      encodeFrame(1, Buffer.alloc(300, 7)),
    ]);
    for (const step of [1, 3, 7, wire.length]) {
      const parser = createRtspParser();
      const out = [];
      for (let at = 0; at < wire.length; at += step) out.push(...parser.push(wire.subarray(at, at + step)));
      expect(out.map((m) => m.kind)).toEqual(["request", "frame", "response", "frame"]);
      const [request, frame, response, big] = out;
      expect(request?.kind === "request" && request.method === "DESCRIBE" && header(request.headers, "cseq")).toBe("2");
      expect(frame?.kind === "frame" && frame.channel === 0 && frame.payload.length).toBe(5);
      expect(response?.kind === "response" && response.status === 200 && response.body.toString()).toBe("v=0\r\n");
      expect(big?.kind === "frame" && big.channel === 1 && big.payload.length).toBe(300);
      expect(parser.buffered).toBe(0);
    }
  });

  test("garbage and oversized headers are errors, not hangs", () => {
    expect(() => createRtspParser().push(Buffer.from("HELLO\r\n\r\n"))).toThrow(RtspParseError);
    expect(() => createRtspParser().push(Buffer.alloc(20_000, 0x41))).toThrow(RtspParseError);
    expect(() => createRtspParser().push(Buffer.from("PLAY x RTSP/1.0\r\nContent-Length: 999999\r\n\r\n"))).toThrow(RtspParseError);
  });

  test("a refused line is quoted with its control characters escaped: the error (a log line) cannot forge another", () => {
    const refusal = (text: string) => {
      try {
        createRtspParser().push(Buffer.from(text));
      } catch (error) {
        return (error as Error).message;
      }
      throw new Error("not refused");
    };
    for (const text of ["OPTIONS rtsp://x RTSP/1.0\r\nno colon\n2026-12-01 INFO forged\r\n\r\n", "HELLO\rINFO forged\r\n\r\n",
      "PLAY x RTSP/1.0\r\nContent-Length: 9\n\rx\r\n\r\n"]) {
      const message = refusal(text);
      expect(message).toMatch(/forged|Content-Length/);
      expect(message).not.toMatch(/[\r\n]/);
    }
  });

  test("a header holding a bare CR, LF or other control character is refused, not passed on (the relay re-encodes headers)", () => {
    for (const line of ["CSeq: 1\nInjected: yes", "Session: 12\rX: y", "User-Agent: a\x00b"]) {
      expect(() => createRtspParser().push(Buffer.from(`OPTIONS rtsp://x RTSP/1.0\r\n${line}\r\n\r\n`))).toThrow(RtspParseError);
      expect(() => createRtspParser().push(Buffer.from(`RTSP/1.0 200 OK\r\n${line}\r\n\r\n`))).toThrow(RtspParseError);
    }
    const [ok] = createRtspParser().push(Buffer.from("OPTIONS rtsp://x RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: a\tb\r\n\r\n"));
    expect(ok?.kind === "request" && header(ok.headers, "user-agent")).toBe("a\tb");
  });

  test("transports: TCP interleaved, UDP client ports, record mode", () => {
    const [tcp, udp] = parseTransport("RTP/AVP/TCP;unicast;interleaved=2-3;mode=record,RTP/AVP;unicast;client_port=5000-5001");
    expect(tcp).toMatchObject({ tcp: true, interleaved: [2, 3], record: true });
    expect(udp).toMatchObject({ tcp: false, clientPort: [5000, 5001], multicast: false, record: false });
    expect(parseTransport("RTP/AVP;multicast;port=5000-5001")[0]).toMatchObject({ tcp: false, multicast: true });
  });

  test("paths ignore scheme, host, query and trailing slashes", () => {
    expect(pathOf("rtsps://192.168.1.5:322/streaming/live/1/")).toBe("/streaming/live/1");
    expect(pathOf("rtsp://h/streaming/live/1/track1?x=1")).toBe("/streaming/live/1/track1");
  });
});

describe("RTSP authentication", () => {
  const credentials = () => [{ user: "bblp", password: "12345678", role: "access code" }];

  test("Digest answered by our client passes; a wrong password or a foreign nonce does not", () => {
    const auth = createAuthenticator({ realm: LIVE555_REALM, credentials, allowBasic: false });
    const challenge = auth.challenge();
    expect(challenge).toHaveLength(1);
    const uri = "rtsps://10.0.0.5/streaming/live/1";
    expect(auth.check("DESCRIBE", authorizationFor(challenge, "bblp", "12345678", "DESCRIBE", uri))?.role).toBe("access code");
    expect(auth.check("DESCRIBE", authorizationFor(challenge, "bblp", "87654321", "DESCRIBE", uri))).toBeUndefined();
    // Signed for another method: the digest covers it.
    expect(auth.check("SETUP", authorizationFor(challenge, "bblp", "12345678", "DESCRIBE", uri))).toBeUndefined();
    const foreign = [`Digest realm="${LIVE555_REALM}", nonce="00112233"`];
    expect(auth.check("DESCRIBE", authorizationFor(foreign, "bblp", "12345678", "DESCRIBE", uri))).toBeUndefined();
  });

  test("Basic only where allowed (printers' live555 refuses it)", () => {
    const basic = `Basic ${Buffer.from("bblp:12345678").toString("base64")}`;
    expect(createAuthenticator({ realm: "r", credentials, allowBasic: true }).check("DESCRIBE", basic)?.user).toBe("bblp");
    expect(createAuthenticator({ realm: "r", credentials, allowBasic: false }).check("DESCRIBE", basic)).toBeUndefined();
    const wrong = `Basic ${Buffer.from("bblp:1234567").toString("base64")}`;
    expect(createAuthenticator({ realm: "r", credentials, allowBasic: true }).check("DESCRIBE", wrong)).toBeUndefined();
  });

  test("the client answers Digest with qop when the server asks for it", () => {
    const value = authorizationFor([`Digest realm="r", nonce="n", qop="auth"`], "bblp", "x", "PLAY", "/a");
    expect(value).toContain("qop=auth");
    expect(value).toContain("cnonce=");
  });

  test("a Digest challenge whose echoed fields cannot be quoted again is not answered (Basic, if offered, is)", () => {
    for (const bad of [`nonce="a\\"b"`, `nonce="n", opaque="o\nInjected: 1"`, `realm="r\r", nonce="n"`]) {
      const digest = `Digest realm="r", ${bad}`;
      expect(authorizationFor([digest], "bblp", "x", "PLAY", "/a")).toBeUndefined();
      expect(authorizationFor([digest, `Basic realm="r"`], "bblp", "x", "PLAY", "/a")).toStartWith("Basic ");
    }
    expect(authorizationFor([`Digest realm="r", nonce="n", opaque="o"`], "bblp", "x", "PLAY", "/a")).toContain(`opaque="o"`);
  });
});

describe("FFmpeg arguments and availability", () => {
  test("P2S gets wall-clock timestamps and a larger probe; others do not", () => {
    const p2s = relayArgs("rtsp://127.0.0.1:1/streaming/live/1", "rtsp://p:x@127.0.0.1:2/streaming/live/1", "P2S");
    expect(p2s).toContain("-use_wallclock_as_timestamps");
    expect(p2s.indexOf("-use_wallclock_as_timestamps")).toBeLessThan(p2s.indexOf("-i"));
    expect(p2s).toContain("-probesize");
    const x1c = relayArgs("rtsp://127.0.0.1:1/streaming/live/1", "rtsp://p:x@127.0.0.1:2/streaming/live/1", "X1C");
    expect(x1c).not.toContain("-use_wallclock_as_timestamps");
    expect(x1c.slice(x1c.indexOf("-c"), x1c.indexOf("-c") + 2)).toEqual(["-c", "copy"]);
  });

  test("a missing FFmpeg is a clear startup error, not a crash", async () => {
    expect(ffmpegMissing("/nonexistent/ffmpeg")).toContain("[proxy] ffmpeg");
    const ctx = proxyContext({ bind: "127.0.5.30", printerHost: "127.0.5.31", printerRtsp: 322 });
    const service = createRtspService({ ...ctx, proxy: { ...ctx.proxy, ffmpeg: "/nonexistent/ffmpeg" } });
    await expect(service.start()).rejects.toThrow(/needs FFmpeg.*not found/);
    expect(service.status().state).toStartWith("error: FFmpeg not found");
    await service.stop();
  });
});
