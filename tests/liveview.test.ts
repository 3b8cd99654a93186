// A printer whose RTSPS camera is off ("LAN Mode Liveview" off: `ipcam.rtsp_url: "disable"`) gets a status that
// says so, one log line, and no FFmpeg until its reports say the camera is on again; then ffmpeg decodes frames.
import { afterAll, describe, expect, test } from "bun:test";
import { captureLogs } from "../lib/log.ts";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import { LIVEVIEW_OFF, learnLiveview, liveviewOf } from "../lib/bambu/liveview.ts";
import type { Service } from "../lib/core/service.ts";
import { simIdentity, startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { startSimRtsp, type SimRtsp } from "../lib/sim/rtsp.ts";
import { npmClient } from "./mqtt-helpers.ts";
import { ACCESS_CODE, ffmpegDecode, proxyContext, waitFor } from "./rtsp-fixtures.ts";

const SIM = "127.0.41.40";
const PROXY = "127.0.41.41";
const SERIAL = "00M09A350100123";
const url = `rtsps://bblp:${ACCESS_CODE}@${PROXY}:322/streaming/live/1`;

/** The full report the simulated printer sends on pushall, read by the mqtt npm client. */
async function fullReport(host: string, serial: string): Promise<any> {
  const c = await npmClient(host, { password: ACCESS_CODE });
  try {
    await c.client.subscribeAsync(`device/${serial}/report`);
    await c.client.publishAsync(`device/${serial}/request`, JSON.stringify({ pushing: { sequence_id: "1", command: "pushall" } }));
    return await c.next((j) => j.print?.msg === 0);
  } finally {
    await c.end();
  }
}

describe("liveview off", () => {
  let printer: SimPrinter | undefined;
  let camera: SimRtsp | undefined;
  let service: Service | undefined;
  afterAll(async () => {
    await service?.stop();
    await camera?.stop();
    await printer?.stop();
  });

  test("the camera-off report keeps FFmpeg down and says so once; the camera-on report brings frames", async () => {
    printer = await startSimulatedBambu({ host: SIM, model: "X1C", serial: SERIAL, accessCode: ACCESS_CODE, services: ["mqtt", "rtsp"], liveviewOff: true });
    const off = await fullReport(SIM, SERIAL);
    expect(off.print.ipcam.rtsp_url).toBe("disable");
    expect(liveviewOf(off)).toBe("off");

    const ctx = proxyContext({ bind: PROXY, printerHost: SIM, printerRtsp: 322 });
    const logs = captureLogs();
    service = createRtspService(ctx, { backoffMinMs: 300 });
    await service.start();
    learnLiveview(ctx.hub, off);
    await waitFor("the status to say the camera is off", () => service!.status().state === LIVEVIEW_OFF);
    const tries = await Promise.all([ffmpegDecode(url, 5, 15_000), ffmpegDecode(url, 5, 15_000)]);
    for (const t of tries) expect(t.frames).toBe(0);
    learnLiveview(ctx.hub, off); // the next report says the same: no second line
    expect(service.status().details?.ffmpegStarts ?? 0).toBe(0);
    // One line for the printer's state; each refused viewer gets its own 503 line naming it (the edge policy).
    expect(logs.lines.filter((l) => l.includes(LIVEVIEW_OFF) && !l.includes("DESCRIBE"))).toHaveLength(1);
    expect(logs.lines.filter((l) => l.includes(LIVEVIEW_OFF) && l.includes("answering 503"))).toHaveLength(2);
    logs.stop();

    await printer.stop();
    printer = await startSimulatedBambu({ host: SIM, model: "X1C", serial: SERIAL, accessCode: ACCESS_CODE, services: ["mqtt"] });
    camera = await startSimRtsp(simIdentity({ host: SIM, model: "X1C", serial: SERIAL, accessCode: ACCESS_CODE, ports: { rtsp: 322 } }), { cameraWidth: 640, cameraHeight: 360, cameraFps: 15 });
    const on = await fullReport(SIM, SERIAL);
    expect(liveviewOf(on)).toBe("on");
    learnLiveview(ctx.hub, on);
    expect(service.status().state).toBe("listening");
    const { frames } = await ffmpegDecode(url, 10);
    expect(frames).toBeGreaterThanOrEqual(10);
  }, 90_000);
});

describe("liveview off, learned from the printer's own reports", () => {
  test("the proxy's MQTT service tells its RTSP camera, which says so and starts no FFmpeg", async () => {
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { parseConfig } = await import("../lib/config.ts");
    const { startSupervisor } = await import("../lib/supervisor.ts");
    const host = "127.0.41.50";
    const bind = "127.0.41.51";
    const stateDir = mkdtempSync(join(tmpdir(), "pp-liveview-"));
    const sim = await startSimulatedBambu({ host, model: "X1C", serial: SERIAL, accessCode: ACCESS_CODE, services: ["mqtt"], liveviewOff: true, ports: { mqtt: 18884 } });
    const ports = "{ mqtt = 18884, rtsp = 10323 }";
    const supervisor = await startSupervisor(parseConfig([
      `[proxy]`, `state_dir = ${JSON.stringify(stateDir)}`, `[web]`, `listen = ""`, `[[printer]]`, `name = "x1c"`, `model = "X1C"`,
      `host = "${host}"`, `serial = "${SERIAL}"`, `access_code = "${ACCESS_CODE}"`, `bind = "${bind}"`, `services = ["mqtt", "camera"]`,
      `camera = "rtsp"`, `ports = ${ports}`, `printer_ports = ${ports}`,
    ].join("\n") + "\n", "liveview printers.toml"));
    try {
      const camera = () => supervisor.printers[0]!.services.find((s) => s.name === "rtsp");
      await waitFor("the camera to say it is off on the printer", () => camera()?.status().state === LIVEVIEW_OFF, 15_000).catch((e) => {
        throw new Error(`${e.message}: ${supervisor.printers[0]!.services.map((s) => `${s.name} ${JSON.stringify(s.status())}`).join("; ")}`);
      });
      expect(camera()!.status().details?.ffmpegStarts ?? 0).toBe(0);
    } finally {
      await supervisor.stop();
      await sim.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
  }, 30_000);
});
