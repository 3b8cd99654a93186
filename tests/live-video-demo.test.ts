// The status page and the camera wall of `pandaproxy demo` in Chromium (issue #16): the X1C's RTSPS camera plays
// as a <video> fed by Media Source Extensions from live.mp4 (its currentTime and decoded frames advance), the
// P1S's print advances on the page with its temperatures and AMS colours, and a browser without MediaSource gets
// the MJPEG image instead; the AMS runout the demo's P1S simulator raises by itself (DEMO_RUNOUT_AFTER_MS into its
// print) is shown in words. The README's screenshot (docs/screenshot.png) is made here, from the demo, so it shows
// what the code does: run with PANDAPROXY_SCREENSHOT=1 to write it (a plain `npm test` leaves the tracked file alone).
// The demo binds fixed 127.0.0.x addresses: do not run this file with demo.test.ts.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"];
const BUN = join(import.meta.dir, "../node_modules/.bin/bun");
const MAIN = join(import.meta.dir, "../main.ts");
const WEB = "127.0.49.10:18191";
/** The demo X1C's test pattern rate (lib/rtsp/ffmpeg.ts testPatternArgs). */
const X1C_FPS = 15;
const X1C_VIDEO = 'section[data-printer="x1c"] video.camera';
const SCREENSHOT = join(import.meta.dir, "../docs/screenshot.png");
/** The runout's words and code (lib/bambu/telemetry.ts, from ha-bambulab's hms_P1S_en.json). */
const RUNOUT = "AMS A Slot 1 filament has run out. Please insert a new filament. (HMS_0700_2000_0002_0001)";

let demo: ChildProcess | undefined;
let output = "";
let browser: Browser;
let base: string;
let credentials: { username: string; password: string };
const state = mkdtempSync(join(tmpdir(), "pp-live-demo-"));

/** currentTime and decoded frames of the first video matching `selector`, now. */
const videoNow = (page: Page, selector: string) =>
  page.evaluate(`(() => { const v = document.querySelector(${JSON.stringify(selector)});
    return v ? { time: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, paused: v.paused } : null; })()`) as Promise<{ time: number; frames: number; paused: boolean } | null>;

/** Watches the video for `ms`: how far currentTime and the decoded frames moved. */
async function watch(page: Page, selector: string, ms: number) {
  await page.waitForFunction(`(document.querySelector(${JSON.stringify(selector)})?.currentTime ?? 0) > 0.2`, undefined, { timeout: 30_000 });
  const before = (await videoNow(page, selector))!;
  const started = Date.now();
  await Bun.sleep(ms);
  const after = (await videoNow(page, selector))!;
  const seconds = (Date.now() - started) / 1000;
  return { seconds, advanced: after.time - before.time, frames: after.frames - before.frames, paused: after.paused };
}

beforeAll(async () => {
  demo = spawn(BUN, [MAIN, "demo", "--state-dir", state, "--web", WEB], { stdio: ["ignore", "pipe", "pipe"] });
  demo.stdout!.on("data", (d) => (output += d));
  demo.stderr!.on("data", (d) => (output += d));
  const deadline = Date.now() + 40_000;
  while (!output.includes("Ctrl-C stops everything")) {
    if (Date.now() > deadline || demo.exitCode !== null) throw new Error(`the demo did not start; output:\n${output}`);
    await Bun.sleep(100);
  }
  const page = new URL(/Web page, every printer: (\S+)/.exec(output)![1]!);
  credentials = { username: decodeURIComponent(page.username), password: decodeURIComponent(page.password) };
  base = `http://${WEB}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  if (demo && demo.exitCode === null) {
    demo.kill("SIGINT");
    await Promise.race([new Promise((r) => demo!.once("exit", r)), Bun.sleep(10_000)]);
    if (demo.exitCode === null) demo.kill("SIGKILL");
  }
  rmSync(state, { recursive: true, force: true });
});

describe.skipIf(!existsSync(CHROMIUM))("pandaproxy demo in Chromium: live video and telemetry", () => {
  test("the X1C plays as video on the status page and the wall; the P1S's print advances with temperatures and AMS colours", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, httpCredentials: credentials });
    try {
      await page.goto(`${base}/`);
      // The simulator raises it 30 s into its print and clears it 30 s later: looked for first.
      const errors = 'section[data-printer="p1s"] .printer-error';
      await page.waitForFunction(`[...document.querySelectorAll('${errors}')].some((e) => e.textContent === ${JSON.stringify(RUNOUT)})`, undefined, { timeout: 60_000 });
      expect(await page.locator('section[data-printer="p1s"] .printer-state').textContent()).toContain("paused");
      await page.locator(X1C_VIDEO).waitFor({ timeout: 20_000 });
      const played = await watch(page, X1C_VIDEO, 4_000);
      console.log(`status page: X1C video advanced ${played.advanced.toFixed(2)} s and ${played.frames} frames in ${played.seconds.toFixed(2)} s (${(played.frames / played.seconds).toFixed(1)} fps; the stream has ${X1C_FPS})`);
      expect(played.paused).toBe(false);
      expect(played.advanced).toBeGreaterThanOrEqual(played.seconds / 2);
      expect(played.frames).toBeGreaterThanOrEqual((X1C_FPS * played.seconds) / 2);
      // While the runout shows (it lasts 30 s), with the video playing: the README's picture.
      if (process.env.PANDAPROXY_SCREENSHOT === "1") await page.screenshot({ type: "png", scale: "css", path: SCREENSHOT });
      // Video, not the JPEG fallback; the other cameras keep their MJPEG images.
      expect(await page.locator('section[data-printer="x1c"] img.camera').count()).toBe(0);
      expect(await page.locator('section[data-printer="p1s"] img.camera').getAttribute("src")).toContain("printers/p1s/camera.mjpeg");

      // The P1S's simulated print moves on the page: its progress line (percent, layer) changes.
      const p1s = 'section[data-printer="p1s"]';
      await page.locator(`${p1s} .progress-line`).waitFor({ timeout: 20_000 });
      const progress = await page.locator(`${p1s} .progress-line`).textContent();
      // Paused by the runout for 30 s at most: the line moves within a minute.
      await page.waitForFunction(`document.querySelector(${JSON.stringify(`${p1s} .progress-line`)})?.textContent !== ${JSON.stringify(progress)}`, undefined, { timeout: 60_000 });
      expect(await page.locator(`${p1s} .temperatures`).textContent()).toMatch(/\d+ (\/ \d+ )?°C/);
      const colours = await page.locator(`${p1s} .swatch`).evaluateAll((swatches: any[]) => swatches.map((s) => s.dataset.colour).filter(Boolean));
      expect(colours.length).toBeGreaterThan(0);
      expect(colours[0]).toMatch(/^#[0-9a-f]{6}/i);
    } finally {
      await page.close();
    }

    const wall = await browser.newPage({ viewport: { width: 1280, height: 900 }, httpCredentials: credentials });
    try {
      await wall.goto(`${base}/wall`);
      const tile = '.tile[data-printer="x1c"]';
      await wall.locator(tile).waitFor({ timeout: 20_000 });
      await wall.locator(tile).click(); // focus it: the focused camera streams
      await wall.locator(`${tile} video.camera`).waitFor({ timeout: 20_000 });
      const played = await watch(wall, `${tile} video.camera`, 3_000);
      console.log(`wall: X1C video advanced ${played.advanced.toFixed(2)} s and ${played.frames} frames in ${played.seconds.toFixed(2)} s`);
      expect(played.advanced).toBeGreaterThanOrEqual(played.seconds / 2);
      expect(played.frames).toBeGreaterThan(0);
    } finally {
      await wall.close();
    }
  }, 180_000);

  test("without Media Source Extensions the X1C card shows the MJPEG image", async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, httpCredentials: credentials });
    await context.addInitScript("delete window.MediaSource; delete window.ManagedMediaSource;");
    const page = await context.newPage();
    try {
      await page.goto(`${base}/`);
      const img = 'section[data-printer="x1c"] img.camera';
      await page.waitForFunction(`(document.querySelector(${JSON.stringify(img)})?.naturalWidth ?? 0) > 0`, undefined, { timeout: 30_000 });
      expect(await page.locator(img).getAttribute("src")).toContain("printers/x1c/camera.mjpeg");
      expect(await page.locator('section[data-printer="x1c"] video').count()).toBe(0);
    } finally {
      await context.close();
    }
  }, 60_000);
});
