// When the printer refuses the proxy's access code, the web page says so: the snapshot answers 503 with the
// reason instead of waiting out its 10 s, and /api/printers carries the camera's problem for the status page.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../lib/config.ts";
import { setupLogging } from "../lib/log.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";
import { createStream } from "../lib/core/stream.ts";
import type { CameraFeed, CameraFrame } from "../lib/core/service.ts";
import { takeSnapshot } from "../lib/web/snapshot.ts";

const WEB = "127.0.9.160:18560";
/** The code the proxy is configured with (the printer wants another): it still opens the web page. */
const LOGIN = { Authorization: `Basic ${Buffer.from("bblp:WRONG123").toString("base64")}` };
const state = mkdtempSync(join(tmpdir(), "pp-web-problem-"));
let sim: SimPrinter;
let proxy: Supervisor;

beforeAll(async () => {
  setupLogging("warn", { quiet: true });
  sim = await startSimulatedBambu({ model: "P1S", host: "127.0.9.161", accessCode: "RIGHT123", services: ["chamber"] });
  proxy = await startSupervisor(parseConfig([
    `[proxy]`, `state_dir = "${state}"`, `[web]`, `listen = "${WEB}"`,
    `[[printer]]`, `name = "p1s"`, `host = "127.0.9.161"`, `serial = "${sim.identity.serial}"`, `access_code = "WRONG123"`,
    `bind = "127.0.9.162"`, `services = ["camera"]`,
  ].join("\n")));
});

afterAll(async () => {
  await proxy?.stop();
  await sim?.stop();
  rmSync(state, { recursive: true, force: true });
});

describe("a printer that refuses the access code", () => {
  test("the snapshot answers 503 naming the refusal, and the API shows the camera's problem", async () => {
    const response = await fetch(`http://${WEB}/printers/p1s/snapshot.jpg`, { headers: LOGIN });
    expect(response.status).toBe(503);
    const text = await response.text();
    expect(text).toContain('printer "p1s" (127.0.9.161): no picture: the printer refused the access code');
    expect(text).toContain("check access_code");
    expect(text).not.toContain("WRONG123");

    const [printer] = (await (await fetch(`http://${WEB}/api/printers`, { headers: LOGIN })).json()) as { camera: { state: string; problem: string | null } }[];
    expect(printer!.camera.state).toBe("backoff");
    expect(printer!.camera.problem).toContain("the printer refused the access code");
  }, 20_000);
});

describe("takeSnapshot", () => {
  test("stops waiting when the camera says waiting is pointless, and gives the claim back", async () => {
    let claims = 0;
    let refused = false;
    const feed: CameraFeed = {
      source: "chamber",
      frames: createStream<CameraFrame>(),
      claim: () => {
        claims++;
        setTimeout(() => (refused = true), 50); // the printer answers the login with a close
        return () => claims--;
      },
      state: () => (refused ? "backoff" : "connecting"),
      frameRate: () => 0,
      problem: () => (refused ? { reason: "the printer refused the access code", lasting: true } : undefined),
    };
    // A ten-minute wait: only the camera's problem can end it within this test's 5 s.
    const snapshot = await takeSnapshot(feed, 600_000);
    expect(snapshot.frame).toBeUndefined();
    expect(snapshot.problem?.reason).toBe("the printer refused the access code");
    expect(claims).toBe(0);
  }, 5_000);
});
