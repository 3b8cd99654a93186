// The table's other rows (docs/outages.md) through pandaproxy against simulated printers that are switched off
// and on again on the same address and ports: FFmpeg reading an X1C's RTSPS camera, an FTPS control connection
// to a P1S, and a FlashForge Adventurer 5M console client. One 16 s outage for all three (the table's 1 min
// column, scaled as in tests/outage.test.ts: longer than FFmpeg's 10 s restart and than the retry cap), then a
// transfer cut by a drop, then an outage longer than the RTSP session's 60 s limit. Loopback range 127.0.47.0/24 (.40-.49).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client } from "basic-ftp";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { SESSION_TIMEOUT_MS } from "../lib/rtsp/session-state.ts";
import { createFtpService } from "../lib/bambu/ftp.ts";
import { createFlashforgeTcp } from "../lib/flashforge/tcp.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { ACCESS_CODE, proxyContext as bambuContext } from "./chamber-fixtures.ts";
import { ACCESS_CODE as RTSP_CODE, ffmpegDecode, proxyContext as rtspContext } from "./rtsp-fixtures.ts";
import { flashforgeContext } from "./flashforge-helpers.ts";
import { ffmpegReader, flashforgeConsole, ftpsControl } from "./outage-clients.ts";

const X1C = "127.0.47.40";
const RTSP_PROXY = "127.0.47.41";
const P1S = "127.0.47.42";
const FTP_PROXY = "127.0.47.43";
const FF = "127.0.47.44";
const FF_PROXY = "127.0.47.45";
const OUTAGE_MS = 16_000;
const BACK_WITHIN_MS = 15_000;
const FILE = "outage.3mf";
const FILE_BYTES = 64 * 1024 * 1024;

describe("RTSP, FTPS and FlashForge clients through a printer outage", () => {
  let x1c: SimPrinter | undefined;
  let p1s: SimPrinter | undefined;
  let ff: SimFlashforge | undefined;
  let card: string;
  const services: Service[] = [];

  const startX1c = () =>
    startSimulatedBambu({ host: X1C, model: "X1C", serial: "00M09A350100123", accessCode: RTSP_CODE, services: ["rtsp"], cameraWidth: 320, cameraHeight: 180, cameraFps: 10 });
  const startP1s = () => startSimulatedBambu({ host: P1S, model: "P1S", serial: "01P00A000000001", accessCode: ACCESS_CODE, services: ["ftp"], ftpRoot: card });
  const startFf = () => startSimulatedFlashforge({ host: FF });

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    card = mkdtempSync(join(tmpdir(), "pp-outage-card-"));
    writeFileSync(join(card, FILE), Buffer.alloc(FILE_BYTES, 7));
    [x1c, p1s, ff] = await Promise.all([startX1c(), startP1s(), startFf()]);
    services.push(
      createRtspService(rtspContext({ bind: RTSP_PROXY, printerHost: X1C, printerRtsp: 322 })),
      createFtpService(bambuContext({ name: "p1s", proxy: FTP_PROXY, printer: P1S })),
      createFlashforgeTcp(flashforgeContext(ff, FF_PROXY)),
    );
    for (const s of services) await s.start();
  });
  afterAll(async () => {
    for (const s of services) await s.stop();
    await Promise.all([x1c?.stop(), p1s?.stop(), ff?.stop()]);
    rmSync(card, { recursive: true, force: true });
  });

  test(`a ${OUTAGE_MS / 1000} s outage: FFmpeg keeps reading, FTPS answers 451 then works, a queued FlashForge command is answered after the return`, async () => {
    const reader = ffmpegReader(`rtsps://bblp:${RTSP_CODE}@${RTSP_PROXY}:322/streaming/live/1`, { maxMs: 90_000 });
    const ftp = ftpsControl(FTP_PROXY);
    const console_ = await flashforgeConsole(FF_PROXY);
    try {
      expect(await ftp.greeting()).toMatch(/^220 /);
      expect(await ftp.ask("USER bblp")).toMatch(/^331 /);
      expect(await ftp.ask(`PASS ${ACCESS_CODE}`)).toMatch(/^230 /);
      expect(await ftp.ask("TYPE I")).toMatch(/^200 /);
      expect(await ftp.ask(`SIZE ${FILE}`)).toBe(`213 ${FILE_BYTES}`);
      expect(await console_.ask("~M27", 10_000)).toContain("CMD M27 Received.");
      const deadline = Date.now() + 30_000;
      while (reader.seen.frames < 20 && Date.now() < deadline) await Bun.sleep(100);
      expect(reader.seen.frames).toBeGreaterThanOrEqual(20);

      await Promise.all([x1c!.stop(), p1s!.stop(), ff!.stop()]);
      x1c = p1s = ff = undefined;
      const away = Date.now();
      await Bun.sleep(2_000);
      // A command that needs the printer: 451, at once, on a control connection that stays.
      expect(await ftp.ask(`SIZE ${FILE}`)).toMatch(/^451 Cannot reach the printer: printer FTPS 127\.0\.47\.42:990: /);
      expect(await ftp.ask(`MDTM ${FILE}`)).toMatch(/^451 Cannot reach the printer: /);
      expect(await ftp.ask("NOOP")).toMatch(/^200 /);
      // Queued while the printer is away; answered when it is back.
      const queued = console_.ask("~M27", OUTAGE_MS + BACK_WITHIN_MS + 5_000);
      await Bun.sleep(Math.max(0, away + OUTAGE_MS - Date.now()));
      const framesAway = reader.seen.frames;
      [x1c, p1s, ff] = await Promise.all([startX1c(), startP1s(), startFf()]);
      const returned = Date.now();

      const answer = await queued;
      expect(answer).toContain("CMD M27 Received.");
      expect(Date.now() - returned).toBeLessThan(BACK_WITHIN_MS);
      expect(await ftp.ask(`SIZE ${FILE}`)).toBe(`213 ${FILE_BYTES}`);
      expect(Date.now() - returned).toBeLessThan(BACK_WITHIN_MS);
      while (reader.seen.frames <= framesAway + 10 && Date.now() < returned + BACK_WITHIN_MS) await Bun.sleep(100);
      expect(reader.seen.exited).toBeUndefined();
      expect(reader.seen.frames).toBeGreaterThan(framesAway + 10);
      expect(ftp.seen.closedAt).toBe(0);
      expect(console_.seen.closedAt).toBe(0);
    } finally {
      await reader.stop();
      ftp.close();
      console_.close();
    }
  }, 120_000);

  test("an FTPS download cut by the printer's drop ends with 451 Lost the connection to the printer (basic-ftp)", async () => {
    const client = new Client(20_000);
    await client.access({ host: FTP_PROXY, port: 990, user: "bblp", password: ACCESS_CODE, secure: "implicit", secureOptions: { rejectUnauthorized: false } });
    let received = 0;
    let cut: Promise<void> | undefined;
    // A slow reader, so the transfer is still running when the printer goes.
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        received += chunk.length;
        if (received > 1_000_000 && !cut) cut = p1s!.stop();
        setTimeout(done, 2);
      },
    });
    const logs = captureLogs();
    try {
      const error = await client.downloadTo(sink, FILE).then(() => undefined, (e: Error) => e);
      expect(received).toBeLessThan(FILE_BYTES);
      expect(String(error)).toContain("451 Lost the connection to the printer; try again.");
    } finally {
      logs.stop();
      client.close();
      await cut;
      p1s = await startP1s();
    }
    expect(logs.lines.some((l) => l.includes("[p1s/ftp]") && / WARN /.test(l))).toBe(true);
  }, 60_000);

  test("past 60 s away FFmpeg stays connected (a player is not idle while no packet reaches it) and plays again after the return", async () => {
    const reader = ffmpegReader(`rtsps://bblp:${RTSP_CODE}@${RTSP_PROXY}:322/streaming/live/1`, { maxMs: 150_000 });
    try {
      const ready = Date.now() + 30_000;
      while (reader.seen.frames < 10 && Date.now() < ready) await Bun.sleep(100);
      expect(reader.seen.frames).toBeGreaterThanOrEqual(10);
      await x1c!.stop();
      x1c = undefined;
      const away = Date.now();
      while (reader.seen.exited === undefined && Date.now() < away + SESSION_TIMEOUT_MS + 15_000) await Bun.sleep(200);
      expect(reader.seen.exited).toBeUndefined();
      const framesAway = reader.seen.frames;
      x1c = await startX1c();
      const returned = Date.now();
      while (reader.seen.frames <= framesAway + 5 && reader.seen.exited === undefined && Date.now() < returned + 30_000) await Bun.sleep(100);
      expect(reader.seen.frames).toBeGreaterThan(framesAway + 5);
      expect(reader.seen.grewAt - returned).toBeLessThan(BACK_WITHIN_MS);
    } finally {
      await reader.stop();
      x1c ??= await startX1c();
    }
  }, 150_000);

  test("FFmpeg through the proxy decodes again after the return", async () => {
    const { frames } = await ffmpegDecode(`rtsps://bblp:${RTSP_CODE}@${RTSP_PROXY}:322/streaming/live/1`, 10, 30_000);
    expect(frames).toBeGreaterThanOrEqual(10);
  }, 40_000);
});
