// End to end: the simulated P1S camera (which serves at most 2 viewers) -> the chamber proxy -> the web server:
// MJPEG streams, snapshots, the API and the status page in Chromium, all from the one upstream connection.
import { serviceContext } from "./support.ts";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import { parseConfig } from "../lib/config.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import { createPrinterHub, type Service, type ServiceContext } from "../lib/core/service.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import { serviceLogger } from "../lib/log.ts";
import { makeCa, makeLeaf } from "../lib/tls.ts";
import { createChamberService } from "../lib/bambu/chamber.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { SIM_FRAME_STAMP, type SimChamber } from "../lib/sim/chamber.ts";
import { readJpegStamp } from "../lib/sim/jpeg-picture.ts";
import type { WebServer } from "../lib/web/server.ts";
import { ADMIN_AUTH, startTestWeb, TEST_ADMIN, waitFor, watchMjpeg } from "./web-fixtures.ts";

const PRINTER_HOST = "127.0.8.20";
const PROXY_HOST = "127.0.8.21";
const WEB_HOST = "127.0.8.22";
const LINGER_MS = 500;
const CHROMIUM = "/usr/bin/chromium";

const simSequence = (jpeg: Buffer) => {
  const stamp = readJpegStamp(jpeg);
  return stamp?.startsWith(SIM_FRAME_STAMP) ? Number(stamp.split(" ")[1]) : undefined;
};

describe("web camera through the chamber proxy", () => {
  let sim: SimPrinter;
  let chamber: Service;
  let ctx: ServiceContext;
  let web: WebServer;
  let url: string;

  beforeAll(async () => {
    sim = await startSimulatedBambu({ host: PRINTER_HOST, model: "P1S", services: ["chamber"], cameraFps: 10, cameraWidth: 640, cameraHeight: 360 });
    const config = parseConfig(
      `[[printer]]\nname = "p1s"\nhost = "${PRINTER_HOST}"\nserial = "${sim.identity.serial}"\naccess_code = "${sim.identity.accessCode}"\n` +
        `bind = "${PROXY_HOST}"\nmodel = "P1S"\nservices = ["camera"]\n`,
    );
    const printer = config.printers[0]!;
    const ca = makeCa("web test CA", "pandaproxy tests");
    const leaf = makeLeaf(ca, printer.serial, { dns: [], ips: [PROXY_HOST] });
    ctx = {
      printer,
      proxy: config.proxy,
      tls: { key: leaf.key, cert: leaf.cert + ca.cert, ca: ca.cert },
      log: serviceLogger(printer.name, "printer"),
      metrics: createMetrics(),
      hub: createPrinterHub({ model: "P1S" }),
    };
    chamber = createChamberService(ctx, { lingerMs: LINGER_MS });
    await chamber.start();
    const runtime: PrinterRuntime = { config: printer, hub: ctx.hub, services: [chamber], start: async () => {}, stop: async () => {} };
    ({ web, url } = await startTestWeb([runtime], { host: WEB_HOST, metrics: ctx.metrics }));
  });
  afterAll(async () => {
    await web?.stop();
    await chamber?.stop();
    await sim?.stop();
  });

  test("five browsers watch at once over one printer connection, and the camera closes after its linger", async () => {
    const viewers = await Promise.all(Array.from({ length: 5 }, () => watchMjpeg(`${url}/printers/p1s/camera.mjpeg`)));
    try {
      await Promise.all(viewers.map((v) => v.until(5, 10_000)));
      const camera = sim.service<SimChamber>("chamber")!;
      expect(camera.viewers).toBe(1); // the printer serves 2 at most; the proxy uses one
      for (const v of viewers) {
        for (const part of v.parts) {
          expect(part.headers["content-type"]).toBe("image/jpeg");
          expect(simSequence(part.jpeg)).toBeGreaterThan(0);
        }
      }
      const snapshot = await fetch(`${url}/printers/p1s/snapshot.jpg`, { headers: ADMIN_AUTH });
      expect(snapshot.status).toBe(200);
      expect(simSequence(Buffer.from(await snapshot.arrayBuffer()))).toBeGreaterThan(0);

      const [api] = (await (await fetch(`${url}/api/printers`, { headers: ADMIN_AUTH })).json()) as any[];
      expect(api.camera).toMatchObject({ kind: "chamber", state: "connected", webViewers: 5 });
      expect(api.camera.fps).toBeGreaterThan(0);
      expect(api.services[0]).toMatchObject({ name: "chamber", upstream: "connected" });
      const metrics = await (await fetch(`${url}/metrics`, { headers: ADMIN_AUTH })).text();
      expect(metrics).toMatch(/^pandaproxy_camera_frames_total\{[^}]*printer="p1s"[^}]*\} [1-9]/m);
      expect(metrics).toMatch(/^pandaproxy_web_viewers\{printer="p1s"\} 5$/m);
    } finally {
      await Promise.all(viewers.map((v) => v.close()));
    }
    await waitFor("the upstream to close after the linger", () => ctx.hub.camera!.state() === "idle", LINGER_MS + 5_000);
    await waitFor("the printer to see no viewer", () => sim.service<SimChamber>("chamber")!.viewers === 0);
  }, 30_000);

  test("a snapshot while nobody watches connects to the printer and returns a fresh frame", async () => {
    await waitFor("the camera to be idle", () => ctx.hub.camera!.state() === "idle", LINGER_MS + 5_000);
    const before = sim.service<SimChamber>("chamber")!.framesMade;
    const snapshot = await fetch(`${url}/printers/p1s/snapshot.jpg`, { headers: ADMIN_AUTH });
    expect(snapshot.status).toBe(200);
    expect(simSequence(Buffer.from(await snapshot.arrayBuffer()))!).toBeGreaterThan(before);
  }, 20_000);

  test.skipIf(!existsSync(CHROMIUM))("the status page shows the simulated printer's camera", async () => {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    try {
      // Logs in as a person would in the browser's Basic auth dialog.
      const context = await browser.newContext({ viewport: { width: 900, height: 800 }, httpCredentials: TEST_ADMIN });
      const page = await context.newPage();
      await page.goto(`${url}/`);
      await page.waitForFunction(`(() => { const img = document.querySelector('section[data-printer="p1s"] img.camera');
        return img !== null && img.naturalWidth === 640; })()`, undefined, { timeout: 15_000 });
      await page.waitForFunction(
        `document.querySelector('section[data-printer="p1s"] .camera-state')?.textContent === "chamber camera: connected"`,
        undefined,
        { timeout: 10_000 },
      );
      await page.screenshot({ path: "/tmp/pandaproxy-status-page-chamber.png" });
    } finally {
      await browser.close();
    }
  }, 40_000);
});

test("a snapshot of a printer that cannot be reached answers 503 after the wait, naming the printer", async () => {
  const unreachable = "127.0.8.23"; // nothing listens there
  const ctx = serviceContext(`name = "gone"\nhost = "${unreachable}"\nserial = "01P00A000000009"\naccess_code = "12345678"\nbind = "127.0.8.24"\nmodel = "P1S"\nservices = ["camera"]`);
  const printer = ctx.printer;
  const chamber = createChamberService(ctx, { lingerMs: LINGER_MS });
  await chamber.start();
  const runtime: PrinterRuntime = { config: printer, hub: ctx.hub, services: [chamber], start: async () => {}, stop: async () => {} };
  const { web, url } = await startTestWeb([runtime], { host: "127.0.8.25", metrics: ctx.metrics });
  try {
    const response = await fetch(`${url}/printers/gone/snapshot.jpg`, { headers: ADMIN_AUTH });
    expect(response.status).toBe(503);
    const body = await response.text();
    expect(body).toContain(`printer "gone" (${unreachable})`);
    expect(body).toContain("gave no picture within 10 s");
    expect(body).not.toContain("12345678");
  } finally {
    await web.stop();
    await chamber.stop();
  }
}, 20_000);
