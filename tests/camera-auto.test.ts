// camera = "auto" with no model and a serial prefix nobody knows: the proxy probes the printer and serves the
// camera it has. A simulated P1S (chamber, 6000) and X1C (RTSPS, 322) side by side in one process.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../lib/config.ts";
import { setupLogging } from "../lib/log.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";
import { watch, waitFor } from "./chamber-fixtures.ts";
import { ffmpegDecode } from "./rtsp-fixtures.ts";

const CODE = "24681357";
const state = mkdtempSync(join(tmpdir(), "pp-camera-auto-"));
let p1s: SimPrinter;
let x1c: SimPrinter;
let proxy: Supervisor;

beforeAll(async () => {
  setupLogging("warn", { quiet: true });
  p1s = await startSimulatedBambu({ model: "P1S", serial: "ZZCHAMBER000001", accessCode: CODE, host: "127.0.9.31", services: ["chamber"], cameraFps: 5 });
  x1c = await startSimulatedBambu({ model: "X1C", serial: "ZZRTSPS00000001", accessCode: CODE, host: "127.0.9.32", services: ["rtsp"] });
  const printer = (name: string, host: string, serial: string, bind: string) =>
    [`[[printer]]`, `name = "${name}"`, `host = "${host}"`, `serial = "${serial}"`, `access_code = "${CODE}"`, `bind = "${bind}"`,
      `services = ["camera"]`, `camera = "auto"`].join("\n");
  const config = parseConfig([`[proxy]`, `state_dir = "${state}"`, `[web]`, `listen = ""`,
    printer("mystery-a", "127.0.9.31", "ZZCHAMBER000001", "127.0.9.41"), printer("mystery-b", "127.0.9.32", "ZZRTSPS00000001", "127.0.9.42")].join("\n"));
  proxy = await startSupervisor(config);
});

afterAll(async () => {
  await proxy?.stop();
  await Promise.allSettled([p1s?.stop(), x1c?.stop()]);
  rmSync(state, { recursive: true, force: true });
});

describe('camera = "auto" without a model', () => {
  test("each printer is probed and served with its own camera kind", async () => {
    const hubOf = (name: string) => proxy.printers.find((p) => p.config.name === name)!.hub;
    await waitFor("both cameras detected", () => hubOf("mystery-a").info.camera !== undefined && hubOf("mystery-b").info.camera !== undefined, 20_000);
    expect(hubOf("mystery-a").info.camera).toBe("chamber");
    expect(hubOf("mystery-b").info.camera).toBe("rtsp");

    const viewer = watch("127.0.9.41", 6000, { accessCode: CODE });
    try {
      await viewer.moreFrames(2, 15_000);
      expect(viewer.frames[0]!.jpeg.subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
    } finally {
      viewer.close();
    }

    const decoded = await ffmpegDecode(`rtsps://bblp:${CODE}@127.0.9.42:322/streaming/live/1`, 5);
    expect(decoded.frames).toBeGreaterThanOrEqual(5);
  }, 90_000);
});
