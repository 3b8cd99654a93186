// `pandaproxy urls --config FILE`, run as a user runs it (a child process on a config in a temporary folder):
// every client URL with its credentials, and the web URLs it prints open a web page started on that config.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../lib/config.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import { startWeb, type WebServer } from "../lib/web/server.ts";
import { createTestFeed, testPrinter, type TestFeed } from "./web-fixtures.ts";

const BUN = join(import.meta.dir, "../node_modules/.bin/bun");
const MAIN = join(import.meta.dir, "../main.ts");
const WEB = "127.0.27.20:18271";
const dir = mkdtempSync(join(tmpdir(), "pp-urls-"));
const file = join(dir, "printers.toml");
const CONFIG = [
  `[proxy]`, `state_dir = "${dir}/state"`,
  `[web]`, `listen = "${WEB}"`, `username = "admin"`, `password = "p@ss word"`,
  `[[printer]]`, `name = "p1s"`, `host = "192.168.1.5"`, `serial = "01P00A000000001"`, `access_code = "P1Scode1"`, `bind = "127.0.27.21"`, `model = "P1S"`,
  `[[printer]]`, `name = "x1c"`, `host = "192.168.1.6"`, `serial = "00M09A000000002"`, `access_code = "X1Ccode2"`, `viewer_access_code = "view3333"`,
  `bind = "127.0.27.23"`, `model = "X1C"`, `ports = { rtsp = 10322, rtsp_plain = 8554 }`,
  `[[printer]]`, `name = "ad5m"`, `type = "flashforge"`, `host = "192.168.1.7"`, `serial = "SNMOMC9900123"`, `check_code = "ffcheck4"`, `bind = "127.0.27.22"`,
].join("\n");

async function urls(configFile: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = Bun.spawn([BUN, MAIN, "urls", "--config", configFile], { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  const code = await child.exited;
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** The URL printed after `label:` in the block of printer `name` (or at the top, for name undefined). */
function printed(stdout: string, name: string | undefined, label: string): string {
  const block = name === undefined ? stdout.split("\n\n  ")[1]! : stdout.split("\n\n").find((b) => b.trimStart().startsWith(`${name} (`))!;
  const match = new RegExp(`${label}:\\s+(\\S+)`).exec(block ?? "");
  if (!match) throw new Error(`no "${label}" URL for ${name ?? "the web page"} in:\n${stdout}`);
  return match[1]!;
}

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("pandaproxy urls", () => {
  let out: { code: number; stdout: string; stderr: string };
  beforeAll(async () => {
    writeFileSync(file, CONFIG);
    out = await urls(file);
  }, 30_000);

  test("prints MQTT, FTPS, RTSPS and RTSP with the codes (the viewer code for cameras), and nothing on stderr", () => {
    expect(out.code).toBe(0);
    expect(out.stderr).toBe("");
    expect(printed(out.stdout, "p1s", "MQTT")).toBe("mqtts://bblp:P1Scode1@127.0.27.21:8883");
    expect(printed(out.stdout, "p1s", "FTPS")).toBe("ftps://bblp:P1Scode1@127.0.27.21:990/");
    expect(out.stdout.split("\n\n").find((b) => b.includes("p1s ("))).not.toContain("rtsp"); // a P1S has the chamber camera
    expect(printed(out.stdout, "x1c", "RTSPS")).toBe("rtsps://bblp:view3333@127.0.27.23:10322/streaming/live/1");
    expect(printed(out.stdout, "x1c", "RTSP")).toBe("rtsp://bblp:view3333@127.0.27.23:8554/streaming/live/1");
    expect(printed(out.stdout, "x1c", "MQTT")).toBe("mqtts://bblp:X1Ccode2@127.0.27.23:8883");
    expect(printed(out.stdout, "ad5m", "camera")).toBe("http://127.0.27.22:8080/?action=stream");
    expect(out.stdout).toContain("serialNumber SNMOMC9900123, checkCode ffcheck4");
    expect(printed(out.stdout, undefined, "Web page, every printer")).toBe(`http://admin:p%40ss%20word@${WEB}/`);
  });

  test("the camera URLs carry each printer's token from state_dir (0600), the same on every run", async () => {
    for (const name of ["p1s", "x1c", "ad5m"]) {
      const tokenFile = join(dir, "state", "tokens", "cameras", `${name}.token`);
      const token = readFileSync(tokenFile, "utf8").trim();
      expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
      expect(printed(out.stdout, name, "MJPEG")).toBe(`http://${WEB}/printers/${name}/camera.mjpeg?token=${token}`);
      expect(printed(out.stdout, name, "snapshot")).toBe(`http://${WEB}/printers/${name}/snapshot.jpg?token=${token}`);
    }
    expect(statSync(join(dir, "state")).mode & 0o777).toBe(0o700);
    const again = await urls(file);
    expect(again.stdout).toBe(out.stdout);
  }, 30_000);

  test("the printed web URLs open a web page started on the same configuration, each exactly as far as it should", async () => {
    const config = parseConfig(CONFIG);
    const feeds: TestFeed[] = config.printers.map(() => createTestFeed());
    for (const f of feeds) f.publish();
    const runtimes: PrinterRuntime[] = config.printers.map((p, i) => ({ ...testPrinter(p.name, feeds[i]!.feed), config: p }));
    let web: WebServer | undefined;
    try {
      web = await startWeb({ web: config.web, printers: () => runtimes, metrics: createMetrics() });
      // Credentials in a URL go in the Authorization header, as browsers and Home Assistant send them.
      const get = (printedUrl: string, headers: Record<string, string> = {}) => {
        const url = new URL(printedUrl);
        if (url.username) headers.Authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString("base64")}`;
        url.username = url.password = "";
        return fetch(url, { headers });
      };
      for (const name of ["p1s", "x1c", "ad5m"]) {
        expect(`${name} ${(await get(printed(out.stdout, name, "snapshot"))).status}`).toBe(`${name} 200`);
        const stream = await get(printed(out.stdout, name, "MJPEG"));
        expect(stream.status).toBe(200);
        await stream.body?.cancel();
        const page = printed(out.stdout, name, "web page");
        expect((await get(page)).status).toBe(200);
        expect(((await (await get(page.replace(/\/$/, "/api/printers"))).json()) as { name: string }[]).map((p) => p.name)).toEqual([name]);
      }
      const admin = printed(out.stdout, undefined, "Web page, every printer");
      expect(((await (await get(admin.replace(/\/$/, "/api/printers"))).json()) as { name: string }[]).map((p) => p.name)).toEqual(["p1s", "x1c", "ad5m"]);
      const bearer = /Authorization: Bearer (\S+);/.exec(out.stdout)![1]!;
      expect((await get(printed(out.stdout, undefined, "metrics"), { Authorization: `Bearer ${bearer}` })).status).toBe(200);
      expect((await get(printed(out.stdout, undefined, "metrics"))).status).toBe(401);
    } finally {
      await web?.stop();
      for (const f of feeds) f.stop();
    }
  }, 30_000);

  test("a configuration with a mistake is refused, naming the key", async () => {
    const bad = join(dir, "bad.toml");
    writeFileSync(bad, CONFIG.replace(`username = "admin"`, `usrname = "admin"`));
    const result = await urls(bad);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('[web] key "usrname" is unknown (did you mean "username"?)');
    expect(result.stdout).toBe("");
  }, 30_000);
});
