// A hostile LAN in front of the proxy's FlashForge services (TCP 8899, HTTP 8898, camera 8080, discovery 48899)
// with a simulated Adventurer 5M behind them: half-open, silent, slow-loris and flooding clients are each closed
// within their (injected, short) deadline with a log line naming the peer, while well-behaved clients of the same
// printer keep being served: a camera viewer keeps its frames, a console client's ~M115 and an HTTP client's
// /detail keep being answered. Random datagrams to 48899 crash nothing. Addresses: 127.0.23.0/24 only.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSocket } from "node:dgram";
import { connect, type Socket } from "node:net";
import { createFlashforgeCamera, createMjpegParser } from "../lib/flashforge/camera.ts";
import { createFlashforgeDiscovery } from "../lib/flashforge/discovery.ts";
import { createFlashforgeHttp } from "../lib/flashforge/http.ts";
import { createFlashforgeTcp } from "../lib/flashforge/tcp.ts";
import { DISCOVERY_REPLY_BYTES } from "../lib/flashforge/discovery-codec.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { consoleClient, flashforgeContext } from "./flashforge-helpers.ts";

const SIM_HOST = "127.0.23.12";
const PROXY_HOST = "127.0.23.11";
/** Hostile clients come from here, so their log lines can be told apart. */
const HOSTILE_HOST = "127.0.23.50";
const GOOD_HOST = "127.0.23.51";
const PORTS = { tcp: 8899, http: 8898, camera: 8080, discovery: 48899 };
/** The injected deadlines: idle console, request head (camera, HTTP), JSON body. */
const DEADLINE_MS = 600;
/** A close is "within its deadline" when it comes no later than this after it. */
const MARGIN_MS = 1_000;
const SLOW_BYTE_MS = 150;
/** Bun's node:http emits "connection" for a client that sends nothing about a second late (docs/protocol-notes.md). */
const BUN_SILENT_CONNECTION_DELAY_MS = 1_000;

let sim: SimFlashforge;
let services: Service[];
let logs: ReturnType<typeof captureLogs>;

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  logs = captureLogs();
  sim = await startSimulatedFlashforge({ host: SIM_HOST });
  const ctx = flashforgeContext(sim, PROXY_HOST);
  services = [
    createFlashforgeTcp(ctx, { lingerMs: 60_000, clientIdleTimeoutMs: DEADLINE_MS }),
    createFlashforgeHttp(ctx, { headersTimeoutMs: DEADLINE_MS, jsonBodyTimeoutMs: DEADLINE_MS }),
    createFlashforgeCamera(ctx, { lingerMs: 60_000, requestHeadTimeoutMs: DEADLINE_MS }),
    createFlashforgeDiscovery(ctx),
  ];
  for (const s of services) await s.start();
});

afterAll(async () => {
  logs?.stop();
  for (const s of services ?? []) await s.stop();
  await sim?.stop();
});

interface Outcome {
  what: string;
  peer: string;
  /** From connect to the proxy closing it; Infinity when it was still open at the end of the wait. */
  closedAfterMs: number;
}

/** One hostile client on `port`: `act` misbehaves until the proxy closes it (bounded by `waitMs`). */
function hostile(what: string, port: number, act: (socket: Socket, closed: () => boolean) => void | Promise<void>, waitMs = DEADLINE_MS + 3_000): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = connect({ host: PROXY_HOST, port, localAddress: HOSTILE_HOST });
    let closed = false;
    let peer = "?";
    let started = 0;
    socket.on("error", () => {});
    socket.resume(); // reads whatever comes back, so the proxy's writes never stall
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ what, peer, closedAfterMs: Infinity });
    }, waitMs);
    socket.on("close", () => {
      closed = true;
      clearTimeout(timer);
      resolve({ what, peer, closedAfterMs: Date.now() - started });
    });
    socket.on("connect", () => {
      started = Date.now();
      peer = `${HOSTILE_HOST}:${socket.localPort}`;
      void act(socket, () => closed);
    });
  });
}

/** Writes `text` one byte every SLOW_BYTE_MS until the proxy closes the socket (or the text ends). */
async function slowLoris(socket: Socket, closed: () => boolean, text: string): Promise<void> {
  for (let i = 0; i < text.length && !closed(); i++) {
    socket.write(text[i]!);
    await Bun.sleep(SLOW_BYTE_MS);
  }
}

const expectClosedInTime = (outcomes: Outcome[], deadlineMs: number) => {
  for (const o of outcomes) {
    const allowed = deadlineMs + MARGIN_MS + (o.what === "8898 silent" ? BUN_SILENT_CONNECTION_DELAY_MS : 0);
    if (!(o.closedAfterMs <= allowed)) throw new Error(`${o.what} (${o.peer}) was closed after ${o.closedAfterMs} ms, deadline ${deadlineMs} ms`);
  }
};

const expectLogged = (outcomes: Outcome[]) => {
  for (const o of outcomes) {
    if (!logs.lines.some((l) => l.includes(` ${o.peer} `))) throw new Error(`no log line names ${o.what} (${o.peer})`);
  }
};

/** A camera viewer that keeps reading; `gaps()` is the longest wait between two frames so far. */
function cameraViewer() {
  const socket = connect({ host: PROXY_HOST, port: PORTS.camera, localAddress: GOOD_HOST });
  socket.on("error", () => {});
  socket.write("GET /?action=stream HTTP/1.1\r\nHost: camera\r\n\r\n");
  const arrivals: number[] = [];
  let parser: ReturnType<typeof createMjpegParser> | undefined;
  let head: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    if (!parser) {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end === -1) return;
      parser = createMjpegParser(/boundary=(\S+)/.exec(head.subarray(0, end).toString("latin1"))![1]!);
      chunk = head.subarray(end + 4);
    }
    for (const _ of parser.push(chunk)) arrivals.push(Date.now());
  });
  return {
    arrivals,
    longestGapSince(from: number) {
      const times = [from, ...arrivals.filter((t) => t >= from), Date.now()];
      let gap = 0;
      for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
      return gap;
    },
    close: () => socket.destroy(),
  };
}

const detailRequest = () =>
  fetch(`http://${PROXY_HOST}:${PORTS.http}/detail`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Connection: "close" },
    body: JSON.stringify({ serialNumber: sim.identity.serial, checkCode: sim.identity.checkCode }),
  }).then(async (r) => ((await r.json()) as { code: number }).code);

describe("FlashForge services on a hostile LAN", () => {
  test("half-open, silent, slow-loris and flooding clients on 8899, 8898 and the camera are each closed within their deadline; the good clients are served throughout", async () => {
    const viewer = cameraViewer();
    const poller = await consoleClient(PROXY_HOST, PORTS.tcp);
    try {
      await waitUntil(() => viewer.arrivals.length >= 2, 5_000);
      const from = Date.now();
      let polling = true;
      const answers = { tcp: 0, http: 0 };
      // The well-behaved clients, while the hostile ones run.
      const tcpPoll = (async () => {
        for (let i = 0; i < 200 && polling; i++) {
          poller.send("~M115");
          expect((await poller.readText()).startsWith("CMD M115 Received.")).toBe(true);
          answers.tcp++;
          await Bun.sleep(150);
        }
      })();
      const httpPoll = (async () => {
        for (let i = 0; i < 100 && polling; i++) {
          expect(await detailRequest()).toBe(0);
          answers.http++;
          await Bun.sleep(200);
        }
      })();

      const garbage = Buffer.alloc(64 * 1024, 0x41);
      const outcomes = await Promise.all([
        // TCP 8899
        hostile("8899 half-open", PORTS.tcp, (s) => void s.write("~M11")),
        hostile("8899 silent", PORTS.tcp, () => {}),
        hostile("8899 slow-loris", PORTS.tcp, (s, closed) => slowLoris(s, closed, `~M115 ${"x".repeat(60)}\r\n`)),
        hostile("8899 flood", PORTS.tcp, (s) => void s.write("~M105\r\n".repeat(5_000))),
        hostile("8899 garbage", PORTS.tcp, (s) => void s.write(garbage)),
        // HTTP 8898
        hostile("8898 half-open", PORTS.http, (s) => void s.write("POST /detail HTTP/1.1\r\nContent-Le")),
        hostile("8898 silent", PORTS.http, () => {}),
        hostile("8898 slow-loris", PORTS.http, (s, closed) => slowLoris(s, closed, `POST /detail HTTP/1.1\r\nHost: printer\r\nX-Pad: ${"y".repeat(60)}\r\n\r\n`)),
        hostile("8898 half-sent body", PORTS.http, (s) => void s.write("POST /detail HTTP/1.1\r\nHost: printer\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"serial")),
        hostile("8898 flood", PORTS.http, (s) => void s.write(`GET /detail HTTP/1.1\r\nX-Flood: ${garbage.toString("latin1")}`)),
        // camera
        hostile("camera half-open", PORTS.camera, (s) => void s.write("GET /?acti")),
        hostile("camera silent", PORTS.camera, () => {}),
        hostile("camera slow-loris", PORTS.camera, (s, closed) => slowLoris(s, closed, `GET /?action=stream HTTP/1.1\r\nHost: camera\r\nX-Pad: ${"z".repeat(60)}\r\n\r\n`)),
        hostile("camera flood", PORTS.camera, (s) => void s.write(garbage)),
        hostile("camera unreadable target", PORTS.camera, (s) => void s.write("GET //[ HTTP/1.1\r\n\r\n")),
      ]);
      expectClosedInTime(outcomes, DEADLINE_MS);
      await Bun.sleep(50); // the last log lines
      expectLogged(outcomes);
      polling = false;
      await Promise.all([tcpPoll, httpPoll]);

      expect(answers.tcp).toBeGreaterThan(5);
      expect(answers.http).toBeGreaterThan(3);
      // The simulated camera sends 10 frames a second; the viewer never waited long for one.
      expect(viewer.longestGapSince(from)).toBeLessThan(1_000);
      expect(logs.lines.some((l) => /TypeError|\n\s+at /.test(l))).toBe(false);
      poller.send("~M115");
      expect((await poller.readText()).startsWith("CMD M115 Received.")).toBe(true);
    } finally {
      viewer.close();
      poller.close();
    }
  }, 30_000);

  test("random datagrams on 48899 crash nothing and log nothing above one flood warning; a real probe is answered after", async () => {
    const socket = createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, HOSTILE_HOST, () => resolve()));
    const replies: Buffer[] = [];
    socket.on("message", (m) => replies.push(m));
    const mark = logs.lines.length;
    try {
      let seed = 12_345;
      const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
      for (let i = 0; i < 300; i++) {
        const datagram = Buffer.alloc(Math.floor(random() * 1_500));
        for (let k = 0; k < datagram.length; k++) datagram[k] = Math.floor(random() * 256);
        socket.send(datagram, PORTS.discovery, PROXY_HOST);
        if (i % 50 === 49) await Bun.sleep(5);
      }
      await Bun.sleep(1_100); // past the one-second reply window
      const before = replies.length;
      socket.send(Buffer.from("www.usr.cn\0\0\0\0\0\0\0\0\0\0"), PORTS.discovery, PROXY_HOST);
      await waitUntil(() => replies.length > before, 3_000);
      expect(replies.at(-1)!.length).toBe(DISCOVERY_REPLY_BYTES);
      const loud = logs.lines.slice(mark).filter((l) => /\b(WARN|ERROR)\b/.test(l));
      expect(loud.every((l) => l.includes("[ff5m/discovery]") && l.includes("probes a second"))).toBe(true);
      expect(loud.length).toBeLessThanOrEqual(2);
      expect(services.every((s) => !s.status().state.startsWith("error"))).toBe(true);
    } finally {
      socket.close();
    }
  }, 10_000);
});

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await Bun.sleep(10);
  }
}
