// The FlashForge HTTP 8898 proxy against a simulated Adventurer 5M: credentials checked here, requests and
// uploads passed through.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { request as httpRequest } from "node:http";
import { createFlashforgeHttp, VERIFY_FAILED_CODE } from "../lib/flashforge/http.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { flashforgeContext } from "./flashforge-helpers.ts";

const SIM_HOST = "127.0.7.4";
const PROXY_HOST = "127.0.7.3";
const BASE = `http://${PROXY_HOST}:8898`;

let sim: SimFlashforge;
let proxy: Service;

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  sim = await startSimulatedFlashforge({ host: SIM_HOST });
  proxy = createFlashforgeHttp(flashforgeContext(sim, PROXY_HOST));
  await proxy.start();
});

afterAll(async () => {
  await proxy?.stop();
  await sim?.stop();
});

const post = async (path: string, body: Record<string, unknown>) => {
  const res = await fetch(`${BASE}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
};
const credentials = () => ({ serialNumber: sim.identity.serial, checkCode: sim.identity.checkCode });

interface UploadResult {
  status: number;
  body: Record<string, any>;
  gotContinue: boolean;
}

/** A slicer-style upload: headers carry the credentials, Expect: 100-continue, body sent only after the 100. */
function upload(file: Buffer, name: string, checkCode: string): Promise<UploadResult> {
  const boundary = "------------------------pandaproxytest";
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="gcodeFile"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return new Promise((resolve, reject) => {
    let gotContinue = false;
    const req = httpRequest({
      host: PROXY_HOST, port: 8898, method: "POST", path: "/uploadGcode",
      headers: {
        serialNumber: sim.identity.serial, checkCode, fileSize: String(file.length), printNow: "false", levelingBeforePrint: "false",
        Expect: "100-continue", "Content-Type": `multipart/form-data; boundary=${boundary}`,
        "Content-Length": String(head.length + file.length + tail.length),
      },
    });
    req.on("continue", () => {
      gotContinue = true;
      req.write(head);
      // In pieces, as a slicer streams a file from disk.
      for (let at = 0; at < file.length; at += 64 * 1024) req.write(file.subarray(at, at + 64 * 1024));
      req.end(tail);
    });
    req.on("response", (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), gotContinue }));
    });
    req.on("error", reject);
    req.flushHeaders();
  });
}

describe("FlashForge HTTP proxy", () => {
  test("passes /detail through, with the proxy's address in ipAddr and cameraStreamUrl", async () => {
    const { body } = await post("/detail", credentials());
    expect(body.code).toBe(0);
    expect(body.detail.name).toBe(sim.identity.name);
    expect(body.detail.ipAddr).toBe(PROXY_HOST);
    expect(body.detail.cameraStreamUrl).toBe(`http://${PROXY_HOST}:8080/?action=stream`);
  });

  test("passes /product, /gcodeList, /gcodeThumb and /control through", async () => {
    expect((await post("/product", credentials())).body.product.lightCtrlState).toBe(1);
    expect((await post("/gcodeList", credentials())).body.gcodeList).toContain("Benchy.gcode");
    const thumb = await post("/gcodeThumb", { ...credentials(), fileName: "Benchy.gcode" });
    expect(Buffer.from(thumb.body.imageData, "base64").subarray(1, 4).toString()).toBe("PNG");
    const off = await post("/control", { ...credentials(), payload: { cmd: "lightControl_cmd", args: { status: "close" } } });
    expect(off.body.code).toBe(0);
    expect(sim.state.light).toBe(false);
  });

  test("a wrong check code is refused here and never reaches the printer", async () => {
    const logs = captureLogs();
    try {
      const before = sim.http.requests.length;
      const wrong = await post("/detail", { serialNumber: sim.identity.serial, checkCode: "00000000" });
      expect(wrong.body).toEqual({ code: VERIFY_FAILED_CODE, message: expect.any(String) });
      const missing = await post("/control", { payload: { cmd: "lightControl_cmd", args: { status: "open" } } });
      expect(missing.body.code).toBe(VERIFY_FAILED_CODE);
      const wrongSerial = await post("/detail", { serialNumber: "SNOTHER", checkCode: sim.identity.checkCode });
      expect(wrongSerial.body.code).toBe(VERIFY_FAILED_CODE);
      expect(sim.http.requests.length).toBe(before);
      expect(sim.state.light).toBe(false);
      expect(logs.lines.some((l) => l.includes("[ff5m/http]") && l.includes("refused POST /detail"))).toBe(true);
      expect(logs.lines.some((l) => l.includes("00000000") || l.includes(sim.identity.checkCode))).toBe(false);
    } finally {
      logs.stop();
    }
  });

  test("an upload streams through with 100-continue and arrives intact (SHA-256 checked by the printer)", async () => {
    const file = Buffer.alloc(6 * 1024 * 1024 + 3);
    for (let i = 0; i < file.length; i++) file[i] = (i * 7 + (i >> 9)) & 0xff;
    const result = await upload(file, "proxied-upload.gcode", sim.identity.checkCode);
    expect(result.gotContinue).toBe(true);
    expect(result.body.code).toBe(0);
    const stored = sim.state.files.get("/data/proxied-upload.gcode");
    expect(stored?.via).toBe("http");
    expect(stored?.size).toBe(file.length);
    expect(stored?.sha256).toBe(createHash("sha256").update(file).digest("hex"));
  });

  test("an upload with a wrong check code is refused before the client sends the file", async () => {
    const before = sim.http.requests.length;
    const result = await upload(Buffer.alloc(1024, 1), "refused.gcode", "99999999");
    expect(result.gotContinue).toBe(false);
    expect(result.body.code).toBe(VERIFY_FAILED_CODE);
    expect(sim.http.requests.length).toBe(before);
    expect(sim.state.files.has("/data/refused.gcode")).toBe(false);
  });
});

describe("a client that resets while the printer is still working on its request", () => {
  test("is logged as the client leaving, with its address, not as the printer failing", async () => {
    const { createServer, connect } = await import("node:net");
    const { serviceContext } = await import("./support.ts");
    // A printer that takes the request and never answers.
    const silentPrinter = createServer(() => {});
    await new Promise<void>((r) => silentPrinter.listen(18898, "127.0.19.61", () => r()));
    const ctx = serviceContext(
      `name = "ff-slow"\ntype = "flashforge"\nhost = "127.0.19.61"\nserial = "SNSLOW1"\ncheck_code = "abcd1234"\nbind = "127.0.19.62"\n` +
        `ports = { http = 18898 }\nprinter_ports = { http = 18898 }`,
      `[web]\nlisten = ""`,
    );
    const service = createFlashforgeHttp(ctx);
    await service.start();
    const logs = captureLogs();
    try {
      const client = connect({ host: "127.0.19.62", port: 18898 });
      await new Promise((r) => client.once("connect", r));
      const body = JSON.stringify({ serialNumber: "SNSLOW1", checkCode: "abcd1234" });
      client.write(`POST /detail HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      await Bun.sleep(200);
      client.resetAndDestroy();
      for (let waited = 0; !logs.lines.some((l) => l.includes("/detail")); waited += 20) {
        if (waited > 3_000) throw new Error(`no line; saw:\n${logs.lines.join("\n")}`);
        await Bun.sleep(20);
      }
      const line = logs.lines.find((l) => l.includes("/detail"))!;
      expect(line).toContain("the client left before the printer answered");
      expect(line).toMatch(/ 127\.0\.0\.1:\d+ /);
      expect(line).not.toContain("?:?");
    } finally {
      logs.stop();
      await service.stop();
      silentPrinter.close();
    }
  });
});
