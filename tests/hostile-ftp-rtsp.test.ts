// A hostile LAN against the FTPS control port, an FTPS data port and the RTSPS/RTSP ports of a proxy in front of a
// simulated X1C (issue 12): silent clients, half-open ones (a little, then nothing, forever), slow-loris (a byte
// every 200 ms) and command floods are each closed within their (injected, short) deadline with a log line
// naming the peer, while a well-behaved client on the same printer keeps working: an FTP LIST and RETR succeed,
// an RTSP reader keeps receiving packets. RTSP is skipped, with the reason, when ffmpeg is missing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { createFtpService } from "../lib/bambu/ftp.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { TLS_HANDSHAKE_TIMEOUT_MS } from "../lib/core/server.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { ffmpegMissing } from "../lib/rtsp/ffmpeg.ts";
import { encodeRequest } from "../lib/rtsp/message.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { rawControl, run } from "./ftp-helpers.ts";
import { rawClient, type RawClient } from "./rtsp-fixtures.ts";
import { serviceContext } from "./support.ts";

const SIM = "127.0.24.50";
const PROXY = "127.0.24.51";
const ACCESS_CODE = "24242424";
const PATH = "/streaming/live/1";
const PLAIN_RTSP = 8554;
/** Injected deadlines: short, so the whole file runs in seconds. */
const FTP_IDLE_MS = 1_500;
const FTP_HANDSHAKE_MS = 1_000;
const RTSP_FIRST_REQUEST_MS = 1_000;
const RTSP_IDLE_MS = 1_500;
const MAX_PENDING = 16;
/** How far past its deadline a close may come (timer granularity and a loaded 2-core machine). */
const SLACK_MS = 1_500;
const TRICKLE_EVERY_MS = 200;
const FLOOD_COMMANDS = 5_000;

const noFfmpeg = ffmpegMissing("ffmpeg");
if (noFfmpeg) console.warn(`hostile-ftp-rtsp: RTSP part skipped: ${noFfmpeg}`);

let capture: ReturnType<typeof captureLogs>;
let sim: SimPrinter;
let ftp: Service;
let rtsp: Service | undefined;
let dir: string;

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  capture = captureLogs();
  sim = await startSimulatedBambu({
    host: SIM, model: "X1C", serial: "00M09A350100124", accessCode: ACCESS_CODE, services: noFfmpeg ? ["ftp"] : ["ftp", "rtsp"],
    cameraWidth: 320, cameraHeight: 180, cameraFps: 15,
  });
  const ctx = serviceContext(
    `name = "hostile"\nhost = "${SIM}"\nserial = "00M09A350100124"\naccess_code = "${ACCESS_CODE}"\nbind = "${PROXY}"\n` +
      `model = "X1C"\nftp_data_ports = "41260-41279"\nftp_sessions = 2\nports = { rtsp = 322, rtsp_plain = ${PLAIN_RTSP} }\nprinter_ports = { rtsp = 322 }`,
    `[web]\nlisten = ""`,
  );
  ftp = createFtpService(ctx, { clientIdleMs: FTP_IDLE_MS, handshakeTimeoutMs: FTP_HANDSHAKE_MS, maxPendingCommands: MAX_PENDING });
  await ftp.start();
  if (!noFfmpeg) {
    rtsp = createRtspService(ctx, {
      firstRequestTimeoutMs: RTSP_FIRST_REQUEST_MS, idleTimeoutMs: RTSP_IDLE_MS, maxPendingRequests: MAX_PENDING, backoffMinMs: 300,
    });
    await rtsp.start();
  }
  dir = mkdtempSync(join(tmpdir(), "pp-hostile-"));
});

afterAll(async () => {
  capture?.stop();
  await rtsp?.stop();
  await ftp?.stop();
  await sim?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Hostile {
  what: string;
  /** "127.0.0.1:54321 ", as the log lines name the peer (read at connect: Bun forgets it after the close). */
  peer: string;
  openedAt: number;
  /** When the proxy closed it (0 while open). */
  closedAt(): number;
  /** The log line about this peer that says `words`, if any. */
  line(words: RegExp): string | undefined;
  stop(): void;
}

/** A hostile client: connects (TLS or not), then does `behave` with its socket until the proxy closes it. */
async function hostile(what: string, port: number, tls: boolean, behave: (socket: Socket) => (() => void) | void): Promise<Hostile> {
  const socket: Socket = tls ? tlsConnect({ host: PROXY, port, rejectUnauthorized: false }) : tcpConnect({ host: PROXY, port });
  socket.on("error", () => {});
  socket.on("data", () => {});
  let closedAt = 0;
  socket.once("close", () => (closedAt = Date.now()));
  await new Promise((resolve) => socket.once(tls ? "secureConnect" : "connect", resolve));
  const peer = `:${socket.localPort} `;
  const openedAt = Date.now();
  const stopBehaving = behave(socket);
  return {
    what, peer, openedAt,
    closedAt: () => closedAt,
    line: (words) => capture.lines.find((l) => l.includes(peer) && words.test(l)),
    stop() {
      stopBehaving?.();
      socket.destroy();
    },
  };
}
const silent = () => undefined;
const trickle = (bytes: string) => (socket: Socket) => {
  let i = 0;
  const timer = setInterval(() => !socket.destroyed && socket.write(bytes[i++ % bytes.length]!), TRICKLE_EVERY_MS);
  return () => clearInterval(timer);
};
const once = (bytes: string) => (socket: Socket) => void socket.write(bytes);

async function closedInTime(clients: { h: Hostile; deadlineMs: number; words: RegExp }[]): Promise<void> {
  const until = Math.max(...clients.map((c) => c.h.openedAt + c.deadlineMs + SLACK_MS));
  while (Date.now() < until && clients.some((c) => !c.h.closedAt() || !c.h.line(c.words))) await Bun.sleep(50);
  for (const { h, deadlineMs, words } of clients) {
    h.stop();
    const after = h.closedAt() ? h.closedAt() - h.openedAt : undefined;
    if (process.env.HOSTILE_DEBUG) console.log(h.what, after, h.line(words));
    expect({ what: h.what, closed: after !== undefined && after <= deadlineMs + SLACK_MS }).toEqual({ what: h.what, closed: true });
    expect({ what: h.what, logged: h.line(words) !== undefined }).toEqual({ what: h.what, logged: true });
  }
}

describe("hostile LAN against the FTPS ports", () => {
  test("control port: silent, half-open, slow-loris and flooding clients are closed in time; LIST and RETR keep working", async () => {
    const body = randomBytes(300_000);
    writeFileSync(join(dir, "good.3mf"), body);
    const curl = ["curl", "-sS", "-k", "--max-time", "15", "-u", `bblp:${ACCESS_CODE}`];
    expect((await run([...curl, "-T", join(dir, "good.3mf"), `ftps://${PROXY}/good.3mf`])).err).toBe("");

    const clients = [
      { h: await hostile("silent TCP (no TLS hello)", 990, false, silent), deadlineMs: FTP_HANDSHAKE_MS + 1_000, words: new RegExp(`FTPS client dropped: no TLS handshake within ${FTP_HANDSHAKE_MS / 1000} s`) },
      { h: await hostile("half-open after TLS", 990, true, once("USER bb")), deadlineMs: FTP_IDLE_MS, words: /sent no command for/ },
      { h: await hostile("silent after TLS", 990, true, silent), deadlineMs: FTP_IDLE_MS, words: /sent no command for/ },
      { h: await hostile("slow-loris", 990, true, trickle("NOOPNOOPNOOP")), deadlineMs: FTP_IDLE_MS, words: /sent no command for/ },
      {
        h: await hostile("command flood", 990, true, once(Array.from({ length: FLOOD_COMMANDS }, () => "NOOP\r\n").join(""))),
        deadlineMs: 500, words: new RegExp(`more than ${MAX_PENDING} commands`),
      },
    ];
    // The well-behaved client, while they are at it.
    const list = await run([...curl, `ftps://${PROXY}/`]);
    expect(list.code).toBe(0);
    expect(list.out).toContain("good.3mf");
    expect((await run([...curl, "-o", join(dir, "good.out"), `ftps://${PROXY}/good.3mf`])).code).toBe(0);
    expect(readFileSync(join(dir, "good.out")).equals(body)).toBe(true);
    await closedInTime(clients);
    expect(ftp.status().clients).toBe(0);
  }, 30_000);

  test("data port: silent, half-open, slow-loris and garbage data connections are closed in time; the control connection is told", async () => {
    const kinds: [string, (socket: Socket) => (() => void) | void][] = [
      ["silent data connection", silent],
      // The first bytes of a TLS record header, then nothing.
      ["half-open data connection", once("\x16\x03\x01")],
      ["slow-loris data connection", trickle("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")],
      ["garbage flood on a data connection", once("GET / HTTP/1.1\r\n".repeat(20_000))],
    ];
    const controls = kinds.map(() => rawControl(PROXY));
    const data: Hostile[] = [];
    for (const [i, c] of controls.entries()) {
      c.send("USER bblp", `PASS ${ACCESS_CODE}`, "PBSZ 0", "PROT P", "PASV");
      const pasv = await c.waitFor(/^227 .*\(\d+,\d+,\d+,\d+,(\d+),(\d+)\)/m);
      expect(pasv).toBeDefined();
      const port = Number(pasv![1]) * 256 + Number(pasv![2]);
      data.push(await hostile(kinds[i]![0], port, false, kinds[i]![1]));
      c.send("LIST");
    }
    // Two printer sessions: the four transfers' handshakes run two at a time.
    const until = Date.now() + 2 * (FTP_HANDSHAKE_MS + 1_000) + SLACK_MS;
    while (Date.now() < until && data.some((d) => !d.closedAt())) await Bun.sleep(50);
    for (const [i, d] of data.entries()) {
      if (process.env.HOSTILE_DEBUG) console.log(d.what, d.closedAt() - d.openedAt);
      expect({ what: d.what, closed: d.closedAt() > 0 && d.closedAt() - d.openedAt <= 2 * (FTP_HANDSHAKE_MS + 1_000) + SLACK_MS }).toEqual({ what: d.what, closed: true });
      expect(await controls[i]!.waitFor(/^425 /m)).toBeDefined();
      d.stop();
    }
    for (const d of data) expect(capture.lines.some((l) => l.includes(`client data connection (from 127.0.0.1${d.peer.trimEnd()}) failed`))).toBe(true);
    // Both controls still work after the failed transfer, and the printer answers them.
    for (const c of controls) {
      c.send("PWD");
      expect(await c.waitFor(/^257 /m)).toBeDefined();
      c.close();
    }
  }, 20_000);
});

describe.skipIf(Boolean(noFfmpeg))("hostile LAN against the RTSPS and RTSP ports", () => {
  test("silent, half-open, slow-loris and flooding clients are closed in time; a reader keeps receiving packets", async () => {
    // The well-behaved reader first: DESCRIBE, SETUP, PLAY over TLS.
    const reader: RawClient = await rawClient(PROXY, 322, { user: "bblp", password: ACCESS_CODE });
    expect((await reader.request("DESCRIBE", `rtsps://${PROXY}:322${PATH}`)).status).toBe(200);
    const setup = await reader.request("SETUP", `rtsps://${PROXY}:322${PATH}/track1`, [["Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"]]);
    const session = setup.headers.find(([n]) => n === "Session")?.[1]?.split(";")[0] ?? "";
    expect((await reader.request("PLAY", `rtsps://${PROXY}:322${PATH}`, [["Session", session]])).status).toBe(200);
    const until = Date.now() + 15_000;
    while (reader.frames.length < 10 && Date.now() < until) await Bun.sleep(50);
    expect(reader.frames.length).toBeGreaterThanOrEqual(10);

    const options = (cseq: number) => encodeRequest("OPTIONS", `rtsp://${PROXY}${PATH}`, [["CSeq", String(cseq)]]).toString("latin1");
    const partial = options(1).replace(/\r\n\r\n$/, "\r\n");
    const first = /no whole request within/;
    const clients = [
      { h: await hostile("RTSPS silent TCP (no TLS hello)", 322, false, silent), deadlineMs: TLS_HANDSHAKE_TIMEOUT_MS, words: /TLS handshake|handshake/ },
      { h: await hostile("RTSPS silent after TLS", 322, true, silent), deadlineMs: RTSP_FIRST_REQUEST_MS, words: first },
      { h: await hostile("RTSPS half-open request", 322, true, once(partial)), deadlineMs: RTSP_FIRST_REQUEST_MS, words: first },
      { h: await hostile("RTSPS slow-loris", 322, true, trickle(options(1))), deadlineMs: RTSP_FIRST_REQUEST_MS, words: first },
      {
        h: await hostile("RTSPS slow-loris after one request", 322, true, (s) => {
          s.write(options(1));
          return trickle(options(2).repeat(50))(s);
        }),
        deadlineMs: RTSP_IDLE_MS, words: /idle for/,
      },
      {
        h: await hostile("RTSPS request flood", 322, true, once(Array.from({ length: FLOOD_COMMANDS }, (_, i) => options(i + 1)).join(""))),
        deadlineMs: 500, words: new RegExp(`more than ${MAX_PENDING} requests`),
      },
      { h: await hostile("RTSP silent", PLAIN_RTSP, false, silent), deadlineMs: RTSP_FIRST_REQUEST_MS, words: first },
      { h: await hostile("RTSP half-open request", PLAIN_RTSP, false, once(partial)), deadlineMs: RTSP_FIRST_REQUEST_MS, words: first },
      {
        h: await hostile("RTSP request flood", PLAIN_RTSP, false, once(Array.from({ length: FLOOD_COMMANDS }, (_, i) => options(i + 1)).join(""))),
        deadlineMs: 500, words: new RegExp(`more than ${MAX_PENDING} requests`),
      },
    ];
    const before = reader.frames.length;
    await closedInTime(clients);
    // The reader went on receiving all along, and still does.
    const during = reader.frames.length - before;
    expect(during).toBeGreaterThan(20);
    const now = reader.frames.length;
    const more = Date.now() + 5_000;
    while (reader.frames.length < now + 10 && Date.now() < more) await Bun.sleep(50);
    expect(reader.frames.length).toBeGreaterThanOrEqual(now + 10);
    expect(reader.socket.destroyed).toBe(false);
    reader.close();
  }, 40_000);
});
