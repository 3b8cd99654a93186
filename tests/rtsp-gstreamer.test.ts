// Interop: GStreamer's RTSP server (python3-gi + GstRtspServer, TLS, Basic auth, TCP only) stands in for the
// printer. Four readers at once decode frames through pandaproxy while the "printer" sees one session.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRtspService } from "../lib/bambu/rtsp.ts";
import type { Service } from "../lib/core/service.ts";
import { makeCa, makeLeaf } from "../lib/tls.ts";
import { captureLogs } from "../lib/log.ts";
import { DESCRIBE_WAIT_MS } from "../lib/rtsp/server.ts";
import { ACCESS_CODE, ffmpegDecode, proxyContext, rawClient } from "./rtsp-fixtures.ts";

const PRINTER = "127.0.5.11";
const PROXY = "127.0.5.12";
const PRINTER_PORT = 8322;
const PATH = "/streaming/live/1";
const PYTHON = "/usr/bin/python3";

let gst: ReturnType<typeof Bun.spawn<"ignore", "pipe", "pipe">> | undefined;
let service: Service;
let printerSessions = 0;
const ctx = proxyContext({ bind: PROXY, printerHost: PRINTER, printerRtsp: PRINTER_PORT });

beforeAll(async () => {
  const ca = makeCa("test printer CA", "test");
  const leaf = makeLeaf(ca, "00M09A350100123", { dns: [], ips: [PRINTER] }); // issued to the serial, as printers' are
  const pem = join(ctx.proxy.stateDir, "gst-printer.pem");
  writeFileSync(pem, leaf.cert + leaf.key, { mode: 0o600 });
  gst = Bun.spawn([PYTHON, join(import.meta.dir, "rtsp-gst-server.py"), PRINTER, String(PRINTER_PORT), "bblp", ACCESS_CODE, pem], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let markReady = () => {};
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  void (async () => {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of gst!.stdout) {
      const parts = (partial + decoder.decode(chunk)).split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts) {
        if (line === "READY") markReady();
        if (line === "CLIENT") printerSessions++;
      }
    }
  })();
  await Promise.race([ready, Bun.sleep(15_000).then(() => Promise.reject(new Error("GStreamer RTSP server did not start")))]);
  service = createRtspService(ctx, { lingerMs: 3_000, backoffMinMs: 300 });
  await service.start();
}, 30_000);

afterAll(async () => {
  await service?.stop();
  gst?.kill("SIGKILL");
  await gst?.exited;
});

describe("RTSPS camera through pandaproxy (GStreamer RTSP server as the printer)", () => {
  test("four readers at once decode frames while the printer sees one session", async () => {
    const url = `rtsps://bblp:${ACCESS_CODE}@${PROXY}:322${PATH}`;
    const results = await Promise.all([0, 1, 2, 3].map(() => ffmpegDecode(url, 30, 45_000)));
    for (const r of results) {
      expect(r.ran.code).toBe(0);
      expect(r.frames).toBeGreaterThanOrEqual(30);
    }
    expect(printerSessions).toBe(1);
    expect(service.status().details?.printerSessions).toBe(1);
  }, 60_000);

  test("wrong credentials get 401 from the proxy, without a second printer session", async () => {
    const client = await rawClient(PROXY, 322, { user: "bblp", password: "wrong-code" });
    expect((await client.request("DESCRIBE", `rtsps://${PROXY}:322${PATH}`)).status).toBe(401);
    client.close();
    expect(printerSessions).toBe(1);
  });

  test("a printer refusing the access code: clients get 503 at once, the log says why, never the code", async () => {
    const wrongCtx = proxyContext({ bind: "127.0.5.13", printerHost: PRINTER, printerRtsp: PRINTER_PORT });
    wrongCtx.printer.accessCode = "99998888";
    const logs = captureLogs();
    const wrong = createRtspService(wrongCtx, { lingerMs: 1_000 });
    await wrong.start();
    try {
      const client = await rawClient("127.0.5.13", 322, { user: "bblp", password: "99998888" });
      const started = performance.now();
      const response = await client.request("DESCRIBE", `rtsps://127.0.5.13:322${PATH}`);
      expect(response.status).toBe(503);
      expect(performance.now() - started).toBeLessThan(DESCRIBE_WAIT_MS);
      client.close();
      expect(logs.lines.some((l) => l.includes("refused") && l.includes("access_code"))).toBe(true);
      expect(logs.lines.some((l) => l.includes("99998888"))).toBe(false);
    } finally {
      logs.stop();
      await wrong.stop();
    }
  }, 30_000);
});
