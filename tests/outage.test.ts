// Outages real clients recover from (docs/outages.md): the simulated printer is stopped and started again on the
// same address and ports, in front of pandaproxy's MQTT and chamber services. An npm `mqtt` client with its own
// reconnect logic and a chamber viewer that reconnects on close (as ha-bambulab's chamber thread does) must be
// streaming again within 15 s of the printer's return, and no frame older than the freshness limit may reach any
// viewer. Loopback range 127.0.40.0/24.
//
// Scaling: the MQTT client's keepalive is 4 s here (ha-bambulab's is 60 s), so the table's 5 s outage (shorter
// than any real keepalive) is a 0.5 s outage, and its 1 min outage (longer than the keepalive) is 16 s = 4 x the
// keepalive. 16 s is also long enough that the chamber's default backoff (1 s doubling to 60 s) would put its
// next retry 15.5 s after the return without the 10 s cap; the cap and the camera's patience are the real
// defaults, not shortened.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { Service, ServiceContext } from "../lib/core/service.ts";
import { createChamberService } from "../lib/bambu/chamber.ts";
import { createMqttService } from "../lib/bambu/mqtt.ts";
import { LIVE_FRAME_MAX_AGE_MS } from "../lib/core/stream.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import type { WebServer } from "../lib/web/server.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import { readJpegStamp } from "../lib/sim/jpeg-picture.ts";
import { ACCESS_CODE, proxyContext, watch, waitFor, type TestViewer } from "./chamber-fixtures.ts";
import { frameAge, haViewer, mqttClient } from "./outage-clients.ts";
import { ADMIN_AUTH, startTestWeb, watchMjpeg } from "./web-fixtures.ts";

const SIM = "127.0.40.10";
const PROXY = "127.0.40.11";
const WEB = "127.0.40.12";
const SERIAL = "01P00A000000001";
const KEEPALIVE_S = 4;
const SHORT_OUTAGE_MS = 500;
const LONG_OUTAGE_MS = 16_000;
const BACK_WITHIN_MS = 15_000;
function startSim(): Promise<SimPrinter> {
  return startSimulatedBambu({
    host: SIM, model: "P1S", serial: SERIAL, accessCode: ACCESS_CODE, services: ["mqtt", "chamber"], cameraFps: 5,
    mqttMaxClients: 4, mqttReportIntervalMs: 200,
  });
}

describe("outages of the printer, through pandaproxy, with clients that reconnect as real ones do", () => {
  let sim: SimPrinter | undefined;
  let ctx: ServiceContext;
  const services: Service[] = [];
  let mq: ReturnType<typeof mqttClient>;
  /** Asked for no keepalive (0): sent away after the service's no-keepalive outage time, injected as KEEPALIVE_S. */
  let mq0: ReturnType<typeof mqttClient>;
  let ha: ReturnType<typeof haViewer>;
  let web: WebServer;
  let url: string;
  /** A browser watching camera.mjpeg from before the outages. */
  let browser: Awaited<ReturnType<typeof watchMjpeg>>;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSim();
    ctx = proxyContext({ name: "p1s", proxy: PROXY, printer: SIM });
    services.push(createMqttService({ ...ctx, log: serviceLogger("p1s", "mqtt") }, { noKeepaliveOutageMs: KEEPALIVE_S * 1000 }), createChamberService(ctx));
    for (const s of services) await s.start();
    const runtime: PrinterRuntime = { config: ctx.printer, hub: ctx.hub, services, start: async () => {}, stop: async () => {} };
    ({ web, url } = await startTestWeb([runtime], { host: WEB, metrics: ctx.metrics }));
    browser = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
    mq = mqttClient(PROXY, SERIAL, ACCESS_CODE, KEEPALIVE_S);
    mq0 = mqttClient(PROXY, SERIAL, ACCESS_CODE, 0);
    ha = haViewer(PROXY, ACCESS_CODE);
    await waitFor("reports and frames", () => mq.seen.lastReportAt > 0 && mq0.seen.lastReportAt > 0 && ha.ages.length > 0, 15_000);
  });
  afterAll(async () => {
    ha?.stop();
    await browser?.close();
    await web?.stop();
    await mq?.client.endAsync(true);
    await mq0?.client.endAsync(true);
    for (const s of services) await s.stop();
    await sim?.stop();
  });

  const outage = async (ms: number, during: () => Promise<void> = async () => {}) => {
    await sim!.stop();
    sim = undefined;
    const back = Date.now() + ms;
    await during();
    await Bun.sleep(Math.max(0, back - Date.now()));
    sim = await startSim();
    return Date.now();
  };

  test(`a ${SHORT_OUTAGE_MS} ms outage (the table's 5 s) stays hidden: nobody is disconnected`, async () => {
    const logs = captureLogs();
    const before = { mqtt: mq.seen.closes, mqtt0: mq0.seen.closes, ha: ha.closes };
    const returned = await outage(SHORT_OUTAGE_MS);
    await waitFor("reports and frames after the return", () => mq.seen.lastReportAt > returned && mq0.seen.lastReportAt > returned && ha.lastFrameAt > returned, BACK_WITHIN_MS);
    logs.stop();
    expect(mq.seen.closes).toBe(before.mqtt);
    expect(mq0.seen.closes).toBe(before.mqtt0);
    expect(ha.closes).toBe(before.ha);
    expect(logs.lines.filter((l) => /server unavailable/.test(l))).toEqual([]);
  });

  test(`a ${LONG_OUTAGE_MS / 1000} s outage (the table's 1 min): MQTT clients are sent away and refused, viewers wait quietly, all stream again within 15 s`, async () => {
    const logs = captureLogs();
    const before = { mqtt: mq.seen.closes, mqtt0: mq0.seen.closes, ha: ha.closes };
    const browserParts = browser.parts.length;
    const late: { viewer?: TestViewer; snapshot?: Response; partsWhileAway?: number } = {};
    const returned = await outage(LONG_OUTAGE_MS, async () => {
      await Bun.sleep(KEEPALIVE_S * 1000 + 1_000);
      // Joining mid-outage: the frame cached from before is not live. The snapshot waits its 10 s for a fresh
      // frame, ending before the printer's return (at 16 s, found at the next retry).
      late.viewer = watch(PROXY, 6000, { accessCode: ACCESS_CODE });
      late.snapshot = await fetch(`${url}/printers/p1s/snapshot.jpg`, { headers: ADMIN_AUTH });
      late.partsWhileAway = browser.parts.length - browserParts + late.viewer.frames.length;
    });
    await waitFor("MQTT reports after the return", () => mq.seen.lastReportAt > returned && mq0.seen.lastReportAt > returned, BACK_WITHIN_MS);
    await waitFor("chamber frames after the return", () => ha.lastFrameAt > returned, BACK_WITHIN_MS - (Date.now() - returned));
    await late.viewer!.moreFrames(1, BACK_WITHIN_MS);
    // The browser that watched through the outage: its first part after it is a new frame.
    await browser.until(browserParts + 1, BACK_WITHIN_MS);
    const stamp = readJpegStamp(browser.parts[browserParts]!.jpeg)!;
    expect(Date.now() - Number(stamp.split(" ")[2])).toBeLessThanOrEqual(LIVE_FRAME_MAX_AGE_MS);
    logs.stop();
    expect(mq.seen.closes).toBeGreaterThan(before.mqtt);
    expect(mq.seen.refusedUnavailable).toBeGreaterThan(0);
    expect(mq0.seen.closes).toBeGreaterThan(before.mqtt0);
    expect(mq0.seen.refusedUnavailable).toBeGreaterThan(0);
    expect(ha.closes).toBe(before.ha);
    expect(late.snapshot!.status).toBe(503);
    expect(await late.snapshot!.text()).toContain("gave no picture");
    expect(late.partsWhileAway).toBe(0);
    expect(browser.error).toBeUndefined();
    expect(late.viewer!.frames.every((f) => frameAge(f.jpeg, performance.timeOrigin + f.at) <= LIVE_FRAME_MAX_AGE_MS)).toBe(true);
    late.viewer!.close();
    expect(logs.lines.filter((l) => /server unavailable/.test(l)).length).toBe(1);
    expect(logs.lines.filter((l) => /access.code/.test(l))).toEqual([]);
  }, 60_000);

  test("no frame older than the freshness limit reached the reconnecting viewer", () => {
    expect(ha.ages.length).toBeGreaterThan(0);
    expect(Math.max(...ha.ages)).toBeLessThanOrEqual(LIVE_FRAME_MAX_AGE_MS);
  });
});
