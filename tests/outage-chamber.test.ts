// Chamber viewers kept past `camera_wait` (docs/outages.md): while the printer is away a viewer is kept without
// frames for camera_wait seconds (3 here; the default is 15 min), then closed with an info line that names the
// printer, the service, the viewer and why; it logs in again at once as ha-bambulab's camera thread does, is kept
// again, and gets fresh frames once the printer is back. Loopback range 127.0.47.0/24 (.30-.39).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { createChamberService } from "../lib/bambu/chamber.ts";
import type { Service } from "../lib/core/service.ts";
import { LIVE_FRAME_MAX_AGE_MS } from "../lib/core/stream.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { readJpegStamp } from "../lib/sim/jpeg-picture.ts";
import { ACCESS_CODE, proxyContext, watch, type SeenFrame } from "./chamber-fixtures.ts";

const SIM = "127.0.47.30";
const PROXY = "127.0.47.31";
const CAMERA_WAIT_S = 3;
const BACK_WITHIN_MS = 15_000;

const startSim = () =>
  startSimulatedBambu({ host: SIM, model: "P1S", serial: "01P00A000000001", accessCode: ACCESS_CODE, services: ["chamber"], cameraFps: 5 });

describe(`chamber viewers of a printer away longer than camera_wait (${CAMERA_WAIT_S} s)`, () => {
  let sim: SimPrinter | undefined;
  let chamber: Service;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSim();
    chamber = createChamberService(proxyContext({ name: "p1s", proxy: PROXY, printer: SIM, extra: `camera_wait = ${CAMERA_WAIT_S}\n` }));
    await chamber.start();
  });
  afterAll(async () => {
    await chamber?.stop();
    await sim?.stop();
  });

  test("are closed with an info line after camera_wait, may log in again, and stream once the printer is back", async () => {
    const first = watch(PROXY, 6000, { accessCode: ACCESS_CODE });
    await first.moreFrames(2, 5_000);
    const logs = captureLogs();
    await sim!.stop();
    sim = undefined;
    const away = Date.now();
    await first.closed;
    const keptMs = Date.now() - away;
    // The last frame came just before the stop; the wait runs from it, checked every second.
    expect(keptMs).toBeGreaterThanOrEqual(CAMERA_WAIT_S * 1000 - 1_000);
    expect(keptMs).toBeLessThan(CAMERA_WAIT_S * 1000 + 3_000);
    const closing = logs.lines.filter((l) => l.includes("closing: no frames from the printer"));
    expect(closing).toHaveLength(1);
    expect(closing[0]).toMatch(/ INFO /);
    expect(closing[0]).toContain("[p1s/chamber]");
    expect(closing[0]).toContain(`for ${CAMERA_WAIT_S} s; upstream`);
    expect(closing[0]).toMatch(/ECONNREFUSED/);

    // Logging in again is accepted: each login is kept another camera_wait (not refused), and the viewer that
    // keeps logging in when closed gets frames once the printer is back.
    const seen: SeenFrame[] = [];
    let viewer = watch(PROXY, 6000, { accessCode: ACCESS_CODE });
    let logins = 1;
    let stopped = false;
    const keepWatching = (): void => {
      void viewer.closed.then(() => {
        seen.push(...viewer.frames);
        if (stopped || logins >= 12) return;
        logins++;
        viewer = watch(PROXY, 6000, { accessCode: ACCESS_CODE });
        keepWatching();
      });
    };
    keepWatching();
    await Bun.sleep(CAMERA_WAIT_S * 1000 - 1_000);
    expect(viewer.isClosed).toBe(false);
    sim = await startSim();
    const returned = Date.now();
    const deadline = returned + BACK_WITHIN_MS;
    while (viewer.frames.length < 2 && Date.now() < deadline) await Bun.sleep(50);
    expect(viewer.frames.length).toBeGreaterThanOrEqual(2);
    stopped = true;
    seen.push(...viewer.frames);
    for (const f of seen) expect(performance.timeOrigin + f.at - Number(readJpegStamp(f.jpeg)!.split(" ")[2])).toBeLessThanOrEqual(LIVE_FRAME_MAX_AGE_MS);
    logs.stop();
    expect(logs.lines.filter((l) => /access.code|WARN .*closing/.test(l))).toEqual([]);
    viewer.close();
  }, 40_000);
});
