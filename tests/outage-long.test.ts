// The table's 10 min column (docs/outages.md), for real: a simulated P1S (MQTT, chamber camera, FTPS), X1C (RTSPS
// camera) and Adventurer 5M (TCP console) are switched off together for 10 minutes, once, while pandaproxy holds
// every kind of client at once, each reconnecting as its real counterpart does:
//   - an npm `mqtt` client, keepalive 60 s (ha-bambulab's), its own reconnect every second, reconnectOnConnackError;
//   - a chamber viewer that logs in again when closed (ha-bambulab's camera thread);
//   - a web MJPEG stream opened before the outage, and one opened in the middle of it;
//   - FFmpeg reading the RTSPS camera, started again 2 s after it exits (as camera recorders restart theirs);
//   - an FTPS control connection asking SIZE now and then (451 while away);
//   - a FlashForge console client whose ~M27, sent while the printer is away, waits for it.
// Each must stream or answer again within 15 s of the return, and no frame older than 3 s reaches any viewer.
// It takes 10 minutes, so scripts/test.sh runs it beside the other files (its own `bun test`); everything else
// in it is short and bounded. Loopback 127.0.48.0/24 (no other test may use it).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { createChamberService } from "../lib/bambu/chamber.ts";
import { createMqttService } from "../lib/bambu/mqtt.ts";
import { createFtpService } from "../lib/bambu/ftp.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { createFlashforgeTcp } from "../lib/flashforge/tcp.ts";
import type { Service } from "../lib/core/service.ts";
import { LIVE_FRAME_MAX_AGE_MS } from "../lib/core/stream.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import type { WebServer } from "../lib/web/server.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import { ACCESS_CODE, proxyContext as bambuContext } from "./chamber-fixtures.ts";
import { ACCESS_CODE as RTSP_CODE, proxyContext as rtspContext } from "./rtsp-fixtures.ts";
import { flashforgeContext } from "./flashforge-helpers.ts";
import { startTestWeb, watchMjpeg } from "./web-fixtures.ts";
import { ffmpegReader, flashforgeConsole, frameAge, ftpsControl, haViewer, mqttClient } from "./outage-clients.ts";

const P1S = "127.0.48.10";
const P1S_PROXY = "127.0.48.11";
const WEB = "127.0.48.12";
const X1C = "127.0.48.20";
const X1C_PROXY = "127.0.48.21";
const FF = "127.0.48.30";
const FF_PROXY = "127.0.48.31";
const SERIAL = "01P00A000000001";
const OUTAGE_MS = 10 * 60_000;
const BACK_WITHIN_MS = 15_000;
/** ha-bambulab's MQTT keepalive. */
const KEEPALIVE_S = 60;
const FILE = "outage.3mf";
const FTP_ASK_EVERY_MS = 60_000;

/** FFmpeg on the proxy's RTSPS camera, started again 2 s after each exit, for as long as the test runs. */
function restartingReader(url: string) {
  let current = ffmpegReader(url, { maxMs: OUTAGE_MS + 120_000 });
  let stopped = false;
  let starts = 1;
  let framesBefore = 0;
  const loop = (async () => {
    while (!stopped) {
      while (!stopped && current.seen.exited === undefined) await Bun.sleep(200);
      if (stopped) return;
      framesBefore += current.seen.frames;
      await Bun.sleep(2_000);
      if (stopped) return;
      current = ffmpegReader(url, { maxMs: OUTAGE_MS + 120_000 });
      starts++;
    }
  })();
  return {
    get frames() {
      return framesBefore + current.seen.frames;
    },
    get grewAt() {
      return current.seen.grewAt;
    },
    get starts() {
      return starts;
    },
    async stop() {
      stopped = true;
      await current.stop();
      await loop;
    },
  };
}

/**
 * Bun's fetch ends a response that has been idle for 5 minutes (BUN_CONFIG_HTTP_IDLE_TIMEOUT), which a 10 min
 * outage is: this viewer, like a browser's <img>, has no such limit.
 */
const NO_IDLE_LIMIT = { timeout: false } as RequestInit;

/** Ages on arrival of the parts a web MJPEG viewer collects (checked every 20 ms), by the simulator's stamps. */
function partAges(viewer: Awaited<ReturnType<typeof watchMjpeg>>) {
  const ages: number[] = [];
  let counted = 0;
  const timer = setInterval(() => {
    for (; counted < viewer.parts.length; counted++) ages.push(frameAge(viewer.parts[counted]!.jpeg, Date.now()));
  }, 20);
  return { ages, stop: () => clearInterval(timer) };
}

describe("a 10 min outage of every printer at once, with every kind of client", () => {
  let p1s: SimPrinter | undefined;
  let x1c: SimPrinter | undefined;
  let ff: SimFlashforge | undefined;
  let card: string;
  const services: Service[] = [];
  let web: WebServer;
  let url: string;

  const startP1s = () =>
    startSimulatedBambu({
      host: P1S, model: "P1S", serial: SERIAL, accessCode: ACCESS_CODE, services: ["mqtt", "chamber", "ftp"], cameraFps: 2,
      cameraWidth: 320, cameraHeight: 180, mqttReportIntervalMs: 1_000, ftpRoot: card,
    });
  const startX1c = () =>
    startSimulatedBambu({ host: X1C, model: "X1C", serial: "00M09A350100123", accessCode: RTSP_CODE, services: ["rtsp"], cameraWidth: 320, cameraHeight: 180, cameraFps: 5 });
  const startFf = () => startSimulatedFlashforge({ host: FF });

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    card = mkdtempSync(join(tmpdir(), "pp-outage-long-card-"));
    writeFileSync(join(card, FILE), Buffer.alloc(4096, 1));
    [p1s, x1c, ff] = await Promise.all([startP1s(), startX1c(), startFf()]);
    const ctx = bambuContext({ name: "p1s", proxy: P1S_PROXY, printer: P1S });
    const p1sServices = [createMqttService({ ...ctx, log: serviceLogger("p1s", "mqtt") }), createChamberService(ctx), createFtpService(ctx)];
    services.push(...p1sServices, createRtspService(rtspContext({ bind: X1C_PROXY, printerHost: X1C, printerRtsp: 322 })), createFlashforgeTcp(flashforgeContext(ff, FF_PROXY)));
    for (const s of services) await s.start();
    const runtime: PrinterRuntime = { config: ctx.printer, hub: ctx.hub, services: p1sServices, start: async () => {}, stop: async () => {} };
    ({ web, url } = await startTestWeb([runtime], { host: WEB, metrics: ctx.metrics }));
  });
  afterAll(async () => {
    await web?.stop();
    for (const s of services) await s.stop();
    await Promise.all([p1s?.stop(), x1c?.stop(), ff?.stop()]);
    rmSync(card, { recursive: true, force: true });
  });

  test("every client streams or answers again within 15 s of the return; no frame older than 3 s reached a viewer", async () => {
    const mq = mqttClient(P1S_PROXY, SERIAL, ACCESS_CODE, KEEPALIVE_S);
    const ha = haViewer(P1S_PROXY, ACCESS_CODE);
    const browser = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`, NO_IDLE_LIMIT);
    const browserAges = partAges(browser);
    let lateAges: ReturnType<typeof partAges> | undefined;
    const reader = restartingReader(`rtsps://bblp:${RTSP_CODE}@${X1C_PROXY}:322/streaming/live/1`);
    const ftp = ftpsControl(P1S_PROXY);
    const console_ = await flashforgeConsole(FF_PROXY);
    let late: Awaited<ReturnType<typeof watchMjpeg>> | undefined;
    const logs = captureLogs();
    try {
      expect(await ftp.greeting()).toMatch(/^220 /);
      expect(await ftp.ask("USER bblp")).toMatch(/^331 /);
      expect(await ftp.ask(`PASS ${ACCESS_CODE}`)).toMatch(/^230 /);
      expect(await ftp.ask(`SIZE ${FILE}`)).toBe("213 4096");
      expect(await console_.ask("~M27", 10_000)).toContain("CMD M27 Received.");
      const ready = Date.now() + 40_000;
      while (Date.now() < ready && !(mq.seen.lastReportAt > 0 && ha.lastFrameAt > 0 && browser.parts.length > 0 && reader.frames > 10)) await Bun.sleep(200);
      expect([mq.seen.lastReportAt > 0, ha.lastFrameAt > 0, browser.parts.length > 0, reader.frames > 10]).toEqual([true, true, true, true]);

      await Promise.all([p1s!.stop(), x1c!.stop(), ff!.stop()]);
      p1s = x1c = ff = undefined;
      const away = Date.now();
      const back = away + OUTAGE_MS;
      const before = { mqttCloses: mq.seen.closes, haCloses: ha.closes, parts: browser.parts.length };
      await Bun.sleep(2_000);
      const queued = console_.ask("~M27", OUTAGE_MS + BACK_WITHIN_MS + 10_000);
      const ftpDuring: string[] = [];
      let lateHeadMs = -1;
      while (Date.now() < back - FTP_ASK_EVERY_MS / 2) {
        ftpDuring.push(await ftp.ask(`SIZE ${FILE}`));
        if (!late && Date.now() > away + OUTAGE_MS / 2) {
          const t = Date.now();
          late = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`, NO_IDLE_LIMIT);
          lateAges = partAges(late);
          lateHeadMs = Date.now() - t;
        }
        await Bun.sleep(Math.min(FTP_ASK_EVERY_MS, Math.max(0, back - Date.now())));
      }
      await Bun.sleep(Math.max(0, back - Date.now()));
      const partsAway = browser.parts.length - before.parts + (late?.parts.length ?? 0);
      const framesAway = reader.frames;
      [p1s, x1c, ff] = await Promise.all([startP1s(), startX1c(), startFf()]);
      const returned = Date.now();

      // Each client's first sign of life after the return, looked for in parallel for twice the limit.
      const backAt: Record<string, number> = {};
      const watchBack = async () => {
        const checks: Record<string, () => boolean> = {
          mqtt: () => mq.seen.lastReportAt > returned,
          chamber: () => ha.lastFrameAt > returned,
          web: () => browser.parts.length > before.parts,
          lateWeb: () => (late?.parts.length ?? 0) > 0,
          rtsp: () => reader.grewAt > returned && reader.frames > framesAway,
        };
        const names = Object.keys(checks);
        while (Date.now() < returned + 2 * BACK_WITHIN_MS && names.some((name) => backAt[name] === undefined)) {
          for (const [name, check] of Object.entries(checks)) if (backAt[name] === undefined && check()) backAt[name] = Date.now() - returned;
          await Bun.sleep(50);
        }
      };
      const ftpBack = async () => {
        let reply = "";
        while (Date.now() < returned + 2 * BACK_WITHIN_MS && !reply.startsWith("213")) {
          reply = await ftp.ask(`SIZE ${FILE}`);
          if (!reply.startsWith("213")) await Bun.sleep(500);
        }
        backAt.ftp = Date.now() - returned;
        return reply;
      };
      const consoleBack = async () => {
        const answer = await queued;
        backAt.console = Date.now() - returned;
        return answer;
      };
      const [, ftpAfter, answer] = await Promise.all([watchBack(), ftpBack(), consoleBack()]);
      console.log(`10 min outage: FTPS during ${JSON.stringify([...new Set(ftpDuring)])} (${ftpDuring.length} asked), after: ${ftpAfter}; ` +
        `late MJPEG head in ${lateHeadMs} ms; MQTT closes ${mq.seen.closes - before.mqttCloses}, CONNACK 3 refusals ${mq.seen.refusedUnavailable}; ` +
        `chamber viewer closes ${ha.closes - before.haCloses}; FFmpeg reader starts ${reader.starts}; web errors ${String(browser.error)} / ${String(late?.error)}; ms to each client's first sign of life after the return ${JSON.stringify(backAt)}`);

      for (const name of ["mqtt", "chamber", "web", "lateWeb", "rtsp", "ftp", "console"]) {
        expect({ [name]: (backAt[name] ?? Infinity) < BACK_WITHIN_MS }).toEqual({ [name]: true });
      }
      expect(answer).toContain("CMD M27 Received.");
      expect(ftpAfter).toBe("213 4096");
      expect(ftpDuring.length).toBeGreaterThanOrEqual(5);
      for (const reply of ftpDuring) expect(reply).toMatch(/^451 Cannot reach the printer: /);
      expect(ftp.seen.closedAt).toBe(0);
      expect(console_.seen.closedAt).toBe(0);
      expect(partsAway).toBe(0);
      expect(lateHeadMs).toBeGreaterThanOrEqual(0);
      expect(lateHeadMs).toBeLessThan(3_000);
      expect(browser.error).toBeUndefined();
      expect(late!.error).toBeUndefined();
      // MQTT: sent away once the outage outlasted its keepalive, refused with CONNACK 3 until the return.
      expect(mq.seen.closes).toBeGreaterThan(before.mqttCloses);
      expect(mq.seen.refusedUnavailable).toBeGreaterThan(0);
      // The chamber viewer was kept (camera_wait is 15 min): no close, no login again.
      expect(ha.closes).toBe(before.haCloses);
      // No frame older than the limit reached any viewer.
      expect(Math.max(...ha.ages)).toBeLessThanOrEqual(LIVE_FRAME_MAX_AGE_MS);
      await Bun.sleep(100);
      expect(browserAges.ages.length).toBe(browser.parts.length);
      expect(lateAges!.ages.length).toBe(late!.parts.length);
      expect(Math.max(...browserAges.ages, ...lateAges!.ages)).toBeLessThanOrEqual(LIVE_FRAME_MAX_AGE_MS);
      expect(logs.lines.filter((l) => /access.code/.test(l))).toEqual([]);
    } finally {
      logs.stop();
      browserAges.stop();
      lateAges?.stop();
      ha.stop();
      await browser.close();
      await late?.close();
      await reader.stop();
      ftp.close();
      console_.close();
      await mq.client.endAsync(true);
    }
  }, OUTAGE_MS + 3 * 60_000);
});
