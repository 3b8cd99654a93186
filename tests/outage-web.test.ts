// A browser that opens camera.mjpeg while the printer is away (docs/outages.md): it gets the 200 and the multipart
// headers at once, the connection stays open through the outage, and parts come once the printer is back, none
// older than the freshness limit. Real pieces: the simulated P1S's chamber camera behind pandaproxy's chamber
// service and web server; the clients are fetch, a raw socket (what arrives when) and Chromium, which must still
// take the stream as a motion JPEG picture. Loopback range 127.0.47.0/24 (.20-.29).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { chromium, type Browser } from "playwright-core";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { createChamberService } from "../lib/bambu/chamber.ts";
import type { Service, ServiceContext } from "../lib/core/service.ts";
import { LIVE_FRAME_MAX_AGE_MS } from "../lib/core/stream.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import type { WebServer } from "../lib/web/server.ts";
import { setupLogging } from "../lib/log.ts";
import { DEFAULT_PICTURE_HEIGHT, DEFAULT_PICTURE_WIDTH, readJpegStamp } from "../lib/sim/jpeg-picture.ts";
import { ACCESS_CODE, proxyContext } from "./chamber-fixtures.ts";
import { ADMIN_AUTH, startTestWeb, TEST_ADMIN, watchMjpeg } from "./web-fixtures.ts";

const SIM = "127.0.47.20";
const PROXY = "127.0.47.21";
const WEB = "127.0.47.22";
const SERIAL = "01P00A000000001";
/** Longer than the 10-12 s after which a connection without a response was reset (docs/outages.md). */
const AWAY_MS = 14_000;
const BACK_WITHIN_MS = 15_000;
const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const startSim = () =>
  startSimulatedBambu({ host: SIM, model: "P1S", serial: SERIAL, accessCode: ACCESS_CODE, services: ["chamber"], cameraFps: 5 });

/** The simulator stamps each JPEG with its send time: how old the frame was when it reached us. */
const ageOf = (jpeg: Uint8Array) => Date.now() - Number(readJpegStamp(Buffer.from(jpeg))!.split(" ")[2]);

/** A raw HTTP client that notes when the response head is complete and whether the server reset or closed it. */
function rawRequest(host: string, port: number, path: string) {
  const seen = { headAt: 0, bytes: 0, closedAt: 0, error: "" };
  let head = "";
  const socket = connect({ host, port });
  socket.setTimeout(60_000, () => socket.destroy());
  socket.on("error", (e) => (seen.error = e.message));
  socket.on("close", () => (seen.closedAt = Date.now()));
  socket.on("data", (chunk: Buffer) => {
    seen.bytes += chunk.length;
    if (seen.headAt) return;
    head += chunk.toString("latin1");
    if (head.includes("\r\n\r\n")) seen.headAt = Date.now();
  });
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: ${ADMIN_AUTH.Authorization}\r\n\r\n`);
  return { seen, head: () => head, close: () => socket.destroy() };
}

describe("web MJPEG opened while the printer is away", () => {
  let sim: SimPrinter | undefined;
  let ctx: ServiceContext;
  let chamber: Service;
  let web: WebServer;
  let url: string;
  let browser: Browser | undefined;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSim();
    ctx = proxyContext({ name: "p1s", proxy: PROXY, printer: SIM });
    chamber = createChamberService(ctx);
    await chamber.start();
    const runtime: PrinterRuntime = { config: ctx.printer, hub: ctx.hub, services: [chamber], start: async () => {}, stop: async () => {} };
    ({ web, url } = await startTestWeb([runtime], { host: WEB, metrics: ctx.metrics }));
    // A frame seen before the outage: the proxy has one cached, which must not be shown as live later.
    const before = await fetch(`${url}/printers/p1s/snapshot.jpg`, { headers: ADMIN_AUTH });
    expect(before.status).toBe(200);
    if (existsSync(CHROMIUM)) browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    await web?.stop();
    await chamber?.stop();
    await sim?.stop();
  });

  test("the response head comes at once, the stream outlives a 14 s outage, and fresh parts follow the return", async () => {
    await sim!.stop();
    sim = undefined;
    // Past the freshness limit, so the frame cached from before is no longer live.
    await Bun.sleep(LIVE_FRAME_MAX_AGE_MS + 500);
    const opened = Date.now();
    const raw = rawRequest(WEB, web.port, "/printers/p1s/camera.mjpeg");
    // fetch resolves only once the whole head is there.
    const viewer = await Promise.race([
      watchMjpeg(`${url}/printers/p1s/camera.mjpeg`),
      Bun.sleep(3_000).then(() => undefined),
    ]);
    const page = browser ? await browser.newPage({ httpCredentials: TEST_ADMIN }) : undefined;
    try {
      expect(viewer).toBeDefined();
      expect(viewer!.response.status).toBe(200);
      expect(viewer!.response.headers.get("content-type")).toBe("multipart/x-mixed-replace;boundary=boundarydonotcross");
      expect(raw.seen.headAt).toBeGreaterThan(0);
      expect(raw.seen.headAt - opened).toBeLessThan(3_000);
      if (page) {
        // The status page's origin, so the picture request carries the login; the <img> opens during the outage.
        await page.goto(`${url}/`);
        await page.evaluate(`(() => { const img = document.createElement("img"); img.id = "late"; img.src = "printers/p1s/camera.mjpeg"; document.body.append(img); })()`);
      }
      await Bun.sleep(Math.max(0, opened + AWAY_MS - Date.now()));
      expect(raw.seen.closedAt).toBe(0);
      expect(raw.seen.error).toBe("");
      expect(viewer!.error).toBeUndefined();
      expect(viewer!.parts.length).toBe(0);

      sim = await startSim();
      const returned = Date.now();
      await viewer!.until(3, BACK_WITHIN_MS);
      expect(Date.now() - returned).toBeLessThan(BACK_WITHIN_MS);
      for (const part of viewer!.parts) expect(ageOf(part.jpeg)).toBeLessThanOrEqual(LIVE_FRAME_MAX_AGE_MS);
      expect(raw.seen.closedAt).toBe(0);
      if (page) {
        await page.waitForFunction(`document.getElementById("late").naturalWidth > 0`, undefined, { timeout: BACK_WITHIN_MS });
        expect(await page.evaluate(`[document.getElementById("late").naturalWidth, document.getElementById("late").naturalHeight]`)).toEqual([DEFAULT_PICTURE_WIDTH, DEFAULT_PICTURE_HEIGHT]);
      }
    } finally {
      raw.close();
      await viewer?.close();
      await page?.close();
    }
  }, 60_000);
});
