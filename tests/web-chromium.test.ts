// The status page in a real browser: Debian's headless Chromium driven by playwright-core shows the live camera
// image and follows status changes without a reload.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";
import { createChamberPicture } from "../lib/sim/jpeg-picture.ts";
import type { WebServer } from "../lib/web/server.ts";
import { STATUS_POLL_MS, VIDEO_TRIES } from "../lib/web/page.ts";
import { createStream } from "../lib/core/stream.ts";
import type { LiveFragment, LiveVideo } from "../lib/rtsp/fmp4-live.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import { createTestFeed, startTestWeb, TEST_ADMIN, testPrinter, testService, type TestFeed } from "./web-fixtures.ts";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];
// Page-side checks are strings: this project type-checks without the DOM library.
const ALL_CAMERAS_SHOWN = `(() => { const imgs = [...document.querySelectorAll("img.camera")];
  return imgs.length === 2 && imgs.every((img) => img.naturalWidth > 0); })()`;
const textIs = (selector: string, text: string) => `document.querySelector(${JSON.stringify(selector)})?.textContent === ${JSON.stringify(text)}`;
const SCREENSHOT = "/tmp/pandaproxy-status-page.png";
const A1_MINI_CODE = "A1mini99";
const PHONE_SCREENSHOT = "/tmp/pandaproxy-status-page-phone.png";

/** A camera's live video that offers a codec no browser plays, or (`ready` false) never has video: live.mp4 answers 503. */
function fakeLiveVideo(ready: boolean): LiveVideo {
  return {
    fragments: createStream<LiveFragment>(),
    joining: () => ({ run: 1, init: Buffer.from("\0\0\0\x08ftyp"), sinceKey: [{ bytes: Buffer.alloc(8), key: true }], codec: "avc1.ffffff" }),
    claim: () => () => {},
    restart() {},
    whenReady: async () => ready,
    state: "connected", viewers: 0, runs: 1, stalls: 0, pid: undefined,
    start() {},
    async stop() {},
  };
}

describe.skipIf(!existsSync(CHROMIUM))("status page in Chromium", () => {
  let browser: Browser;
  let printers: PrinterRuntime[];
  let web: WebServer;
  let url: string;
  const feeds: TestFeed[] = [];
  const chamber = testService("chamber", { state: "listening", clients: 1, upstream: "connected", details: { viewers: 1 } });

  beforeAll(async () => {
    const picture = createChamberPicture({ name: "P1S", width: 640, height: 360 });
    const p1s = createTestFeed({ intervalMs: 200, jpeg: picture.frameAt(Date.now()) });
    const a1 = createTestFeed({ intervalMs: 200, jpeg: createChamberPicture({ name: "A1", width: 640, height: 360 }).frameAt(Date.now()) });
    feeds.push(p1s, a1);
    printers = [
      testPrinter("p1s", p1s.feed, [
        chamber,
        testService("mqtt", { state: "listening", clients: 2, upstream: "connected", details: { messages: 1234 } }),
        testService("ftp", { state: "listening", clients: 0, upstream: "idle" }),
      ]),
      testPrinter("a1-mini", a1.feed, [testService("chamber", { state: "listening", clients: 0, upstream: "backoff: connection refused" })]),
      testPrinter("x1c", undefined, [testService("rtsp", { state: "error: ffmpeg not found", clients: 0 })]),
    ];
    printers[1]!.config.accessCode = A1_MINI_CODE; // the others keep the test printers' 12345678
    ({ web, url } = await startTestWeb(printers, { host: "127.0.8.6" }));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    await web?.stop();
    for (const f of feeds) f.stop();
  });

  test("shows every printer's live camera image and follows status changes", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, httpCredentials: TEST_ADMIN });
    try {
      await page.goto(`${url}/`);
      const p1sImage = page.locator('section[data-printer="p1s"] img.camera');
      await p1sImage.waitFor({ timeout: 10_000 });
      await page.waitForFunction(ALL_CAMERAS_SHOWN, undefined, { timeout: 10_000 });
      expect(await p1sImage.evaluate((img: any) => [img.naturalWidth, img.naturalHeight])).toEqual([640, 360]);
      expect(await p1sImage.getAttribute("src")).toContain("printers/p1s/camera.mjpeg");
      expect(await page.locator("img.camera").count()).toBe(2); // x1c has no camera here
      expect(feeds[0]!.claims).toBe(1); // the page's stream keeps the camera running

      const p1s = page.locator('section[data-printer="p1s"]');
      await page.waitForFunction(textIs('section[data-printer="p1s"] .camera-state', "chamber camera: connected"), undefined, { timeout: STATUS_POLL_MS * 3 });
      expect(await p1s.locator('tr[data-service="mqtt"] .clients').textContent()).toBe("2");
      expect(await page.locator('section[data-printer="a1-mini"] tr[data-service="chamber"] .upstream').textContent()).toBe("backoff: connection refused");
      expect(await page.locator('section[data-printer="x1c"] .camera-state').textContent()).toBe("no camera for this printer");

      // The page polls: a change on the server shows up without a reload.
      chamber.current = { ...chamber.current, clients: 7 };
      await page.waitForFunction(textIs('section[data-printer="p1s"] tr[data-service="chamber"] .clients', "7"), undefined, { timeout: STATUS_POLL_MS * 3 });
      expect(await p1s.locator(".web-viewers").textContent()).toBe("1 web viewer");
      expect(await p1s.locator(".view .none").isHidden()).toBe(true); // the "waiting for the camera" note is gone
      expect(await p1s.locator(".fps").textContent()).toMatch(/^\d+\.\d fps$/);
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    } finally {
      await page.close();
    }
    // Closing the tab ends its stream and gives the camera back.
    const deadline = Date.now() + 5_000;
    while (feeds[0]!.claims > 0 && Date.now() < deadline) await Bun.sleep(20);
    expect(feeds[0]!.claims).toBe(0);
  }, 30_000);

  test("asks for credentials; a printer's access code shows that printer's camera and no other printer", async () => {
    const anonymous = await browser.newPage();
    try {
      const statuses: number[] = [];
      anonymous.on("response", (response) => statuses.push(response.status()));
      // Headless Chromium has no one to ask, so the navigation fails where a desktop browser shows its login dialog.
      await expect(anonymous.goto(`${url}/`)).rejects.toThrow("ERR_INVALID_AUTH_CREDENTIALS");
      expect(statuses).toEqual([401]);
      expect(await anonymous.locator("img.camera").count()).toBe(0);
    } finally {
      await anonymous.close();
    }
    // The user is "bblp", as on the printer's own services.
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, httpCredentials: { username: "bblp", password: A1_MINI_CODE } });
    try {
      await page.goto(`${url}/`);
      await page.waitForFunction(
        `(() => { const imgs = [...document.querySelectorAll("img.camera")]; return imgs.length === 1 && imgs[0].naturalWidth > 0; })()`,
        undefined,
        { timeout: 10_000 },
      );
      expect(await page.locator("section.printer").evaluateAll((sections: any[]) => sections.map((s) => s.dataset.printer))).toEqual(["a1-mini"]);
      expect(await page.locator("img.camera").getAttribute("src")).toContain("printers/a1-mini/camera.mjpeg");
      expect(await page.evaluate(`fetch("printers/p1s/snapshot.jpg").then((r) => r.status)`)).toBe(403);
    } finally {
      await page.close();
    }
  }, 30_000);

  test("fits a phone screen", async () => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, httpCredentials: TEST_ADMIN });
    try {
      await page.goto(`${url}/`);
      await page.waitForFunction(ALL_CAMERAS_SHOWN, undefined, { timeout: 10_000 });
      // Nothing wider than the screen: no sideways scrolling.
      expect(await page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(390);
      const overflowing = await page.evaluate(`[...document.querySelectorAll("section.printer *")]
        .filter((e) => e.getBoundingClientRect().right > e.closest("section").getBoundingClientRect().right + 0.5)
        .map((e) => e.tagName + "." + e.className + ": " + e.textContent)`);
      expect(overflowing).toEqual([]);
      expect(await page.locator('section[data-printer="x1c"] .view').isHidden()).toBe(true);
      await page.screenshot({ path: PHONE_SCREENSHOT, fullPage: true });
    } finally {
      await page.close();
    }
  }, 30_000);

  test("when a printer's camera is replaced (reload, restart) the page reconnects to the new one", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, httpCredentials: TEST_ADMIN });
    try {
      await page.goto(`${url}/`);
      await page.waitForFunction(ALL_CAMERAS_SHOWN, undefined, { timeout: 10_000 });
      const replacement = createTestFeed({ intervalMs: 200, jpeg: createChamberPicture({ name: "A1 NEW", width: 480, height: 270 }).frameAt(Date.now()) });
      feeds.push(replacement);
      printers[1]!.hub.setCamera(replacement.feed);
      await page.waitForFunction(
        `document.querySelector('section[data-printer="a1-mini"] img.camera')?.naturalWidth === 480`,
        undefined,
        { timeout: STATUS_POLL_MS * 4 },
      );
      expect(replacement.claims).toBe(1);
      const deadline = Date.now() + 5_000;
      while (feeds[1]!.claims > 0 && Date.now() < deadline) await Bun.sleep(20);
      expect(feeds[1]!.claims).toBe(0); // the old camera's stream was ended by the server
    } finally {
      await page.close();
    }
  }, 30_000);

  test("with more cameras than a browser has connections it shows refreshed snapshots instead of streams", async () => {
    const many = Array.from({ length: 6 }, () => createTestFeed({ intervalMs: 500 }));
    feeds.push(...many);
    const { web: manyWeb, url: manyUrl } = await startTestWeb(
      many.map((f, i) => testPrinter(`printer-${i + 1}`, f.feed, [])),
      { host: "127.0.8.7" },
    );
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, httpCredentials: TEST_ADMIN });
    try {
      await page.goto(`${manyUrl}/`);
      await page.waitForFunction(
        `(() => { const imgs = [...document.querySelectorAll("img.camera")];
          return imgs.length === 6 && imgs.every((img) => img.naturalWidth > 0 && img.src.includes("/snapshot.jpg")); })()`,
        undefined,
        { timeout: 15_000 },
      );
      const first = await page.locator('section[data-printer="printer-1"] img.camera').getAttribute("src");
      await page.waitForFunction(
        `document.querySelector('section[data-printer="printer-1"] img.camera').getAttribute("src") !== ${JSON.stringify(first)}`,
        undefined,
        { timeout: STATUS_POLL_MS * 4 },
      );
      // The page still updates while the snapshots refresh: its polls are not starved of connections.
      const updated = await page.locator("#updated").textContent();
      await page.waitForFunction(`document.querySelector("#updated").textContent !== ${JSON.stringify(updated)}`, undefined, { timeout: STATUS_POLL_MS * 4 });
      expect(await page.locator("#updated").getAttribute("class")).not.toBe("bad");
    } finally {
      await page.close();
      await manyWeb.stop();
    }
  }, 30_000);

  test("a camera whose live video this browser cannot play, or that fails each time, falls back to the MJPEG image", async () => {
    const badCodec = createTestFeed({ intervalMs: 200 });
    const noVideo = createTestFeed({ intervalMs: 200 });
    feeds.push(badCodec, noVideo);
    badCodec.feed.liveVideo = fakeLiveVideo(true);
    noVideo.feed.liveVideo = fakeLiveVideo(false);
    const { web: videoWeb, url: videoUrl } = await startTestWeb([testPrinter("bad-codec", badCodec.feed), testPrinter("no-video", noVideo.feed)], { host: "127.0.49.20" });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, httpCredentials: TEST_ADMIN });
    const asked = new Map<string, number>();
    page.on("request", (r) => {
      const m = /printers\/([^/]+)\/live\.mp4/.exec(r.url());
      if (m) asked.set(m[1]!, (asked.get(m[1]!) ?? 0) + 1);
    });
    try {
      await page.goto(`${videoUrl}/`);
      await page.waitForFunction(
        `(() => { const imgs = [...document.querySelectorAll("img.camera")];
          return imgs.length === 2 && imgs.every((img) => img.naturalWidth > 0 && img.src.includes("/camera.mjpeg")); })()`,
        undefined,
        { timeout: 30_000 },
      );
      expect(await page.locator("video").count()).toBe(0);
      // The codec check gives up at once; a stream that fails is tried VIDEO_TRIES times first.
      expect(Object.fromEntries(asked)).toEqual({ "bad-codec": 1, "no-video": VIDEO_TRIES });
    } finally {
      await page.close();
      await videoWeb.stop();
    }
  }, 40_000);
});
