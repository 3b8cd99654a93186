import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimChamber } from "../lib/sim/chamber.ts";
import type { Service, ServiceContext } from "../lib/core/service.ts";
import { createChamberService } from "../lib/bambu/chamber.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { encodeTunnelLogin } from "../lib/sim/tunnel.ts";
import { ACCESS_CODE, haClient, proxyContext, sequenceOf, slowClient, VIEWER_CODE, watch, waitFor, type TestViewer } from "./chamber-fixtures.ts";

const SIM = "127.0.4.30";
const PROXY = "127.0.4.31";
const VIEWERS = 20;
/** Fast enough that a paused viewer overflows its kernel socket buffers (~3 MB) within a few seconds. */
const FPS = 20;

function startSim(): Promise<SimPrinter> {
  return startSimulatedBambu({ host: SIM, model: "P1S", name: "sim-p1s", serial: "01P00A000000001", accessCode: ACCESS_CODE, services: ["chamber"], cameraFps: FPS });
}

describe("chamber camera proxy in front of a simulated P1S (2 viewer slots)", () => {
  let sim: SimPrinter;
  let ctx: ServiceContext;
  let proxy: Service;
  const viewers: TestViewer[] = [];
  const camera = () => sim.service<SimChamber>("chamber")!;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSim();
    ctx = proxyContext({ name: "p1s", proxy: PROXY, printer: SIM });
    proxy = createChamberService(ctx, { lingerMs: 60_000, backoffMinMs: 200, backoffMaxMs: 2_000 });
    await proxy.start();
  });
  afterAll(async () => {
    for (const v of viewers) v.close();
    await proxy?.stop();
    await sim?.stop();
  });

  test(`${VIEWERS} viewers at once all receive frames over one printer connection, byte-exact`, async () => {
    const group = Array.from({ length: VIEWERS }, () => watch(PROXY, 6000, { accessCode: ACCESS_CODE }));
    viewers.push(...group);
    await Promise.all(group.map((v) => v.moreFrames(5)));
    expect(camera().viewers).toBe(1);
    expect(proxy.status().clients).toBe(VIEWERS);

    // A viewer connected straight to the printer (the second slot) sees the very same bytes.
    const direct = watch(SIM, 6000, { accessCode: ACCESS_CODE });
    await direct.moreFrames(3);
    direct.close();
    const sample = direct.frames[1]!;
    // The proxied viewer may be a moment behind the direct one.
    await waitFor("the same frame through the proxy", () => group[0]!.frames.some((f) => f.sequence === sample.sequence));
    const relayed = group[0]!.frames.find((f) => f.sequence === sample.sequence);
    expect(relayed).toBeDefined();
    expect(relayed!.header.equals(sample.header)).toBe(true);
    expect(relayed!.jpeg.equals(sample.jpeg)).toBe(true);
    expect(ctx.hub.camera?.source).toBe("chamber");
    expect(ctx.hub.camera?.frames.latest()?.jpeg.length).toBeGreaterThan(0);
  });

  test("a late viewer starts at the newest frame, never an old one", async () => {
    const newest = sequenceOf(ctx.hub.camera!.frames.latest()!.jpeg);
    const late = watch(PROXY, 6000, { accessCode: ACCESS_CODE });
    viewers.push(late);
    await late.moreFrames(3);
    expect(late.frames[0]!.sequence).toBeGreaterThanOrEqual(newest);
    expect(late.frames[2]!.sequence - late.frames[0]!.sequence).toBe(2);
  });

  test("the viewer access code is accepted too", async () => {
    const viewer = watch(PROXY, 6000, { accessCode: VIEWER_CODE });
    viewers.push(viewer);
    await viewer.moreFrames(2);
  });

  test("every header reaches a 4096-byte reader (like Home Assistant) as its own record", async () => {
    const result = await haClient(PROXY, 6000, ACCESS_CODE, 20);
    expect(result.output).toBe("OK 20");
  });

  test("wrong codes, wrong users and garbage get nothing, are closed and logged", async () => {
    const logs = captureLogs();
    try {
      const wrongCode = watch(PROXY, 6000, { accessCode: "00000000" });
      const wrongUser = watch(PROXY, 6000, { username: "admin", accessCode: ACCESS_CODE });
      const garbage = watch(PROXY, 6000, Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n".padEnd(80, " ")));
      for (const v of [wrongCode, wrongUser, garbage]) {
        await v.closed;
        expect(v.bytes).toBe(0);
      }
      await waitFor("log lines", () => logs.lines.filter((l) => l.includes("closing:")).length >= 3);
      expect(logs.lines.join("\n")).not.toContain(ACCESS_CODE);
      const refusals = logs.lines.filter((l) => l.includes("[p1s/chamber]") && /\d+\.\d+\.\d+\.\d+:\d+ closing:/.test(l));
      expect(refusals.filter((l) => l.includes("wrong user or access code")).length).toBe(2);
      expect(refusals.filter((l) => l.includes("not a chamber camera login")).length).toBe(1);
    } finally {
      logs.stop();
    }
  });

  test("a viewer that stops reading does not delay the others and skips to the newest frame", async () => {
    const others = viewers.filter((v) => !v.isClosed).slice(0, 5);
    const before = others.map((v) => v.frames.length);
    const slow = slowClient(PROXY, 6000, ACCESS_CODE, 4, 60);
    await Bun.sleep(4_000);
    // 80 frames were made meanwhile; each of the others got most of them.
    others.forEach((v, i) => expect(v.frames.length - before[i]!).toBeGreaterThanOrEqual(60));
    const seen = (await slow).map(Number);
    expect(seen.length).toBe(61);
    // Frames are never queued for it: after what its socket buffers held, it jumps to the newest.
    const jumps = seen.slice(1).map((n, i) => n - seen[i]!);
    expect(jumps.every((j) => j >= 1)).toBe(true);
    expect(Math.max(...jumps)).toBeGreaterThan(5);
  }, 15_000);

  test("viewers stay connected through a printer restart and get the new frames", async () => {
    const watching = viewers.filter((v) => !v.isClosed);
    expect(watching.length).toBeGreaterThanOrEqual(VIEWERS);
    const connectsBefore = ctx.metrics.value("pandaproxy_upstream_reconnects_total", { printer: "p1s", service: "chamber" }) ?? 0;
    await sim.stop();
    await Bun.sleep(500);
    sim = await startSim();
    // The restarted printer numbers its frames from 1 again.
    await Promise.all(watching.map((v) => v.moreFrames(3, 8_000)));
    for (const v of watching) {
      expect(v.isClosed).toBe(false);
      expect(v.frames.at(-1)!.sequence).toBeLessThan(v.frames.at(-4)!.sequence);
    }
    expect(ctx.metrics.value("pandaproxy_upstream_reconnects_total", { printer: "p1s", service: "chamber" })).toBe(connectsBefore + 1);
    expect(camera().viewers).toBe(1);
  }, 15_000);
});


describe("Bambu Studio's file-tunnel login on a P1S camera port (127.0.22.50-51)", () => {
  const EDGE_SIM = "127.0.22.50";
  const EDGE_PROXY = "127.0.22.51";
  let sim: SimPrinter;
  let proxy: Service;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSimulatedBambu({ host: EDGE_SIM, model: "P1S", serial: "01P00A000000001", accessCode: ACCESS_CODE, services: ["chamber"], cameraFps: 10 });
    // The login deadline stays at its 10 s default: the tunnel login must be recognised, not timed out.
    proxy = createChamberService(proxyContext({ name: "p1s", proxy: EDGE_PROXY, printer: EDGE_SIM }), { lingerMs: 60_000, endDestroyMs: 300 });
    await proxy.start();
  });
  afterAll(async () => {
    await proxy?.stop();
    await sim?.stop();
  });

  test("is closed well within 1 s with a log line in words, while a viewer on the same port keeps its frames", async () => {
    const logs = captureLogs();
    const viewer = watch(EDGE_PROXY, 6000, { accessCode: ACCESS_CODE });
    try {
      await viewer.moreFrames(2);
      const started = performance.now();
      const studio = watch(EDGE_PROXY, 6000, Buffer.concat(encodeTunnelLogin(ACCESS_CODE)));
      await studio.closed;
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(studio.bytes).toBe(0);
      await viewer.moreFrames(3);
      expect(viewer.isClosed).toBe(false);
    } finally {
      logs.stop();
      viewer.close();
    }
    const line = logs.lines.find((l) => l.includes("[p1s/chamber]") && l.includes("a file-tunnel login on the camera port (Bambu Studio fetching the job's cover image); this printer has no file tunnel, closing"));
    expect(line).toMatch(/\d+\.\d+\.\d+\.\d+:\d+ a file-tunnel login/);
    expect(logs.lines.join("\n")).not.toContain(ACCESS_CODE);
  });
});
