// What a printer is doing, on the status page and the camera wall in Chromium: two simulated printers behind
// pandaproxy's MQTT and chamber services; the simulator's print advances and the page follows it; a simulated H2D
// shows both its nozzles and the AMS runout its simulator raises by itself, in the printer's words. (The README's
// screenshot is made from the demo by tests/live-video-demo.test.ts.)
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { createChamberService } from "../lib/bambu/chamber.ts";
import { createMqttService } from "../lib/bambu/mqtt.ts";
import type { Service } from "../lib/core/service.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { createFlashforgeTcp } from "../lib/flashforge/tcp.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { consoleClient } from "./flashforge-helpers.ts";
import { npmClient } from "./mqtt-helpers.ts";
import { STATUS_POLL_MS } from "../lib/web/page.ts";
import type { WebServer } from "../lib/web/server.ts";
import { serviceContext } from "./support.ts";
import { ADMIN_AUTH, startTestWeb, TEST_ADMIN, waitFor } from "./web-fixtures.ts";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const WEB_HOST = "127.0.43.20";
/** The simulator's PETG tray (lib/sim/print-state.ts), as the page should paint its swatch. */
const PETG_COLOUR = "#f95d73";
const text = (page: Page, selector: string) => page.locator(selector).first().textContent();

describe.skipIf(!existsSync(CHROMIUM))("printer telemetry and the camera wall in Chromium", () => {
  const sims: SimPrinter[] = [];
  const services: Service[] = [];
  const printers: PrinterRuntime[] = [];
  let web: WebServer;
  let url: string;
  let browser: Browser;
  let flashforge: SimFlashforge;

  async function printer(name: string, model: "P1S" | "A1", host: string, bind: string, withMqtt: boolean) {
    const sim = await startSimulatedBambu({
      host, model, services: withMqtt ? ["mqtt", "chamber"] : ["chamber"], mqttReportIntervalMs: 150, cameraFps: 5, cameraWidth: 640, cameraHeight: 360,
    });
    sims.push(sim);
    const ctx = serviceContext(
      `name = "${name}"\nhost = "${host}"\nserial = "${sim.identity.serial}"\naccess_code = "${sim.identity.accessCode}"\n` +
        `bind = "${bind}"\nmodel = "${model}"\nservices = [${withMqtt ? '"mqtt", ' : ""}"camera"]\n`,
    );
    const own = [...(withMqtt ? [createMqttService(ctx)] : []), createChamberService(ctx)];
    for (const s of own) await s.start();
    services.push(...own);
    printers.push({ config: ctx.printer, hub: ctx.hub, services: own, start: async () => {}, stop: async () => {} });
    return ctx;
  }

  beforeAll(async () => {
    const p1s = await printer("p1s", "P1S", "127.0.43.1", "127.0.43.11", true);
    await printer("a1", "A1", "127.0.43.2", "127.0.43.12", false);
    flashforge = await startSimulatedFlashforge({ host: "127.0.43.3" });
    const { identity } = flashforge;
    const ff = serviceContext(
      `name = "ff5m"\ntype = "flashforge"\nhost = "${identity.host}"\nserial = "${identity.serial}"\ncheck_code = "${identity.checkCode}"\n` +
        `bind = "127.0.43.13"\nservices = ["tcp"]\n`,
    );
    const tcp = createFlashforgeTcp(ff, { lingerMs: 60_000 });
    await tcp.start();
    services.push(tcp);
    printers.push({ config: ff.printer, hub: ff.hub, services: [tcp], start: async () => {}, stop: async () => {} });
    ({ web, url } = await startTestWeb(printers, { host: WEB_HOST, metrics: p1s.metrics }));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    await waitFor("the simulated print to start", () => p1s.hub.telemetry()?.state === "printing", 20_000);
  }, 40_000);
  afterAll(async () => {
    await browser?.close();
    await web?.stop();
    for (const s of services) await s.stop();
    for (const sim of sims) await sim.stop();
    await flashforge?.stop();
  });

  test("the status page shows the print advancing, temperatures and the AMS trays' colours", async () => {
    const page = await browser.newPage({ viewport: { width: 880, height: 640 }, httpCredentials: TEST_ADMIN });
    try {
      await page.goto(`${url}/`);
      const card = 'section[data-printer="p1s"]';
      await page.waitForFunction(`document.querySelector('${card} .printer-state')?.textContent === "printing"`, undefined, { timeout: STATUS_POLL_MS * 3 });
      expect(await text(page, `${card} .job`)).toMatch(/^sim_benchy_\d+$/);
      const first = (await text(page, `${card} .progress-line`))!;
      expect(first).toMatch(/^\d+% · layer \d+ of 120 · .+ left · done at /);
      const layerOf = (line: string) => Number(/layer (\d+) of/.exec(line)![1]);
      await page.waitForFunction(
        `(() => { const m = /layer (\\d+) of/.exec(document.querySelector('${card} .progress-line')?.textContent ?? ""); return m && Number(m[1]) > ${layerOf(first)}; })()`,
        undefined,
        { timeout: STATUS_POLL_MS * 4 },
      );
      expect(Number(await page.locator(`${card} progress`).evaluate((bar: any) => bar.value))).toBeGreaterThan(0);
      expect(await text(page, `${card} .temperatures`)).toMatch(/^nozzle \d+ \/ 220 °C · bed \d+ \/ 55 °C · chamber 28 °C$/);
      expect(await text(page, `${card} .fans`)).toContain("standard speed");
      const swatches = await page.locator(`${card} .swatch`).evaluateAll((s: any[]) => s.map((e) => [e.dataset.colour, (globalThis as any).getComputedStyle(e).backgroundColor]));
      expect(swatches).toContainEqual([PETG_COLOUR, "rgb(249, 93, 115)"]);
      expect(await page.locator(`${card} .tray`).allTextContents()).toEqual(["PLA 82%", "PLA 47%", "PETG 100%", "PLA 12%"]);
      expect(await page.locator(`${card} .printer-error`).count()).toBe(0);
      // A printer without MQTT here has no telemetry: no empty box, no alarm.
      expect(await page.locator('section[data-printer="a1"] .telemetry').isHidden()).toBe(true);
      // A printer link that is idle because nobody asks for it is no alarm.
      const idle = page.locator('section[data-printer="ff5m"] tr[data-service="tcp"] .upstream');
      expect(await idle.textContent()).toBe("idle");
      expect(await idle.locator(".dot").getAttribute("class")).toBe("dot ");
      // Service details are words, not the API's keys.
      expect(await text(page, `${card} tr[data-service="mqtt"] .details`)).toContain("printer connects");
      await page.waitForFunction(`[...document.querySelectorAll("img.camera")].every((img) => img.naturalWidth > 0)`, undefined, { timeout: 10_000 });
      const shot = await page.screenshot({ type: "png", scale: "css", });
      expect(shot.subarray(1, 4).toString("latin1")).toBe("PNG");
    } finally {
      await page.close();
    }
  }, 30_000);

  test("/api/printers and /metrics carry the same telemetry", async () => {
    const [p1s] = (await (await fetch(`${url}/api/printers`, { headers: ADMIN_AUTH })).json()) as any[];
    expect(p1s.telemetry).toMatchObject({ state: "printing", totalLayers: 120, speedProfile: "standard" });
    expect(p1s.telemetry.trays[2]).toEqual({ slot: "AMS 1 slot 3", material: "PETG", colour: PETG_COLOUR, remainPercent: 100, active: false });
    const metrics = await (await fetch(`${url}/metrics`, { headers: ADMIN_AUTH })).text();
    expect(metrics).toContain('pandaproxy_printer_state{printer="p1s",state="printing"} 1');
    expect(metrics).toContain('pandaproxy_printer_state{printer="p1s",state="idle"} 0');
    expect(metrics).toMatch(/\npandaproxy_printer_nozzle_temperature_celsius\{printer="p1s",nozzle="main"\} \d/);
    expect(metrics).toContain('pandaproxy_printer_bed_target_temperature_celsius{printer="p1s"} 55');
    expect(metrics).toMatch(/\npandaproxy_printer_progress_ratio\{printer="p1s"\} 0\.\d+/);
    expect(metrics).toMatch(/\npandaproxy_printer_layer\{printer="p1s"\} \d+/);
    expect(metrics).toMatch(/\npandaproxy_printer_remaining_seconds\{printer="p1s"\} \d+/);
    expect(metrics).toContain('pandaproxy_printer_filament_remain_ratio{printer="p1s",slot="AMS 1 slot 1",material="PLA"} 0.82');
    expect(metrics).not.toContain('printer="a1",state');
    // Every printer gauge docs/api.md and the example Grafana dashboard name is one /metrics serves.
    const named = (file: string) => new Set(readFileSync(join(import.meta.dir, "../docs", file), "utf8").match(/pandaproxy_printer_[a-z_]+/g));
    const served = new Set(metrics.match(/^pandaproxy_printer_[a-z_]+/gm));
    for (const file of ["api.md", "grafana-dashboard.json"]) expect([...named(file)].filter((name) => !served.has(name))).toEqual([]);
  });

  test("the camera wall: every camera, the focused one live, the others snapshots; a click focuses one full-screen", async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 760 }, httpCredentials: TEST_ADMIN });
    try {
      await page.goto(`${url}/wall`);
      const shown = `(() => { const imgs = [...document.querySelectorAll(".tile img.camera")]; return imgs.length === 2 && imgs.every((img) => img.naturalWidth === 640); })()`;
      await page.waitForFunction(shown, undefined, { timeout: 10_000 });
      const source = (name: string) => page.locator(`.tile[data-printer="${name}"] img`).getAttribute("src");
      expect(await source("p1s")).toContain("printers/p1s/camera.mjpeg");
      expect(await source("a1")).toContain("printers/a1/snapshot.jpg");
      const before = await source("a1");
      await page.waitForFunction(`document.querySelector('.tile[data-printer="a1"] img').getAttribute("src") !== ${JSON.stringify(before)}`, undefined, { timeout: 10_000 });
      await page.locator('.tile[data-printer="a1"]').click();
      await page.waitForFunction(`document.fullscreenElement?.dataset.printer === "a1"`, undefined, { timeout: 5_000 });
      expect(await source("a1")).toContain("printers/a1/camera.mjpeg");
      expect(await source("p1s")).toContain("printers/p1s/snapshot.jpg");
      await page.waitForFunction(shown, undefined, { timeout: 10_000 });
    } finally {
      await page.close();
    }
    const anonymous = await fetch(`${url}/wall`);
    expect(anonymous.status).toBe(401);
    // A printer's own code shows that printer only: the FlashForge has no camera here, so the wall has none.
    const { serial, checkCode } = flashforge.identity;
    const own = await browser.newPage({ httpCredentials: { username: serial, password: checkCode } });
    try {
      await own.goto(`${url}/wall`);
      await own.waitForSelector("#empty:not([hidden])", { timeout: STATUS_POLL_MS * 3 });
      expect(await own.locator(".tile").count()).toBe(0);
    } finally {
      await own.close();
    }
  }, 30_000);

  test("a FlashForge printer's status replies, as a client polls them, are its telemetry", async () => {
    flashforge.state.status = "printing";
    flashforge.state.printFile = "cube.gx";
    const client = await consoleClient("127.0.43.13", 8899);
    const page = await browser.newPage({ viewport: { width: 900, height: 760 }, httpCredentials: TEST_ADMIN });
    try {
      for (const command of ["~M119", "~M105", "~M27"]) {
        client.send(command);
        expect(await client.readText()).toContain(`CMD ${command.slice(1)} Received.`);
      }
      await page.goto(`${url}/`);
      const card = 'section[data-printer="ff5m"]';
      await page.waitForFunction(`document.querySelector('${card} .printer-state')?.textContent === "printing"`, undefined, { timeout: STATUS_POLL_MS * 3 });
      expect(await text(page, `${card} .job`)).toBe("cube.gx");
      expect(await text(page, `${card} .progress-line`)).toBe("11%");
      expect(await text(page, `${card} .temperatures`)).toMatch(/^nozzle \d+ \/ \d+ °C · bed \d+ \/ \d+ °C$/);
      const metrics = await (await fetch(`${url}/metrics`, { headers: ADMIN_AUTH })).text();
      expect(metrics).toContain('pandaproxy_printer_state{printer="ff5m",state="printing"} 1');
    } finally {
      await page.close();
      client.close();
    }
  }, 30_000);

  test("dark mode and a phone's width", async () => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, colorScheme: "dark", httpCredentials: TEST_ADMIN });
    try {
      for (const path of ["/", "/wall"]) {
        await page.goto(`${url}${path}`);
        await page.waitForFunction(`document.querySelectorAll("img.camera").length === 2`, undefined, { timeout: 10_000 });
        if (path === "/") await page.waitForSelector(".printer-state", { timeout: STATUS_POLL_MS * 3 });
        expect(await page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(390);
        const background = (await page.evaluate("getComputedStyle(document.body).backgroundColor")) as string;
        const [r, g, b] = background.match(/\d+/g)!.map(Number);
        expect(r! + g! + b!).toBeLessThan(150);
      }
    } finally {
      await page.close();
    }
  }, 30_000);
  describe("a simulated H2D whose filament runs out by itself", () => {
    // Its own printer, proxy and web server (127.0.55.x), so the pause it makes leaves the P1S above printing.
    const H2D_HOST = "127.0.55.4";
    const H2D_BIND = "127.0.55.14";
    let h2d: SimPrinter;
    let h2dMqtt: Service;
    let h2dWeb: WebServer;
    let h2dUrl: string;

    beforeAll(async () => {
      // The runout comes half a second into the print and stays until someone resumes.
      h2d = await startSimulatedBambu({ host: H2D_HOST, model: "H2D", services: ["mqtt"], mqttReportIntervalMs: 150, hmsAfterMs: 500, hmsForMs: 600_000 });
      const ctx = serviceContext(
        `name = "h2d"\nhost = "${H2D_HOST}"\nserial = "${h2d.identity.serial}"\naccess_code = "${h2d.identity.accessCode}"\n` +
          `bind = "${H2D_BIND}"\nmodel = "H2D"\nservices = ["mqtt"]\n`,
      );
      h2dMqtt = createMqttService(ctx);
      await h2dMqtt.start();
      const runtime: PrinterRuntime = { config: ctx.printer, hub: ctx.hub, services: [h2dMqtt], start: async () => {}, stop: async () => {} };
      ({ web: h2dWeb, url: h2dUrl } = await startTestWeb([runtime], { host: "127.0.55.20", metrics: ctx.metrics }));
    }, 20_000);
    afterAll(async () => {
      await h2dWeb?.stop();
      await h2dMqtt?.stop();
      await h2d?.stop();
    });

    test("the HMS error the simulator raises is shown in words with its code, the print paused; a resume through the proxy clears it", async () => {
      const page = await browser.newPage({ viewport: { width: 900, height: 760 }, httpCredentials: TEST_ADMIN });
      try {
        await page.goto(`${h2dUrl}/`);
        const card = 'section[data-printer="h2d"]';
        const errors = `${card} .printer-error`;
        await page.waitForFunction(`document.querySelectorAll('${errors}').length === 2`, undefined, { timeout: 20_000 });
        expect(await page.locator(errors).allTextContents()).toEqual([
          "AMS A Slot 1 filament has run out. Please insert a new filament. (HMS_0700_2000_0002_0001)",
          "AMS filament ran out. Please insert a new filament into the same AMS slot. (0700_8011)",
        ]);
        expect(await text(page, `${card} .printer-state`)).toBe("paused");
        const metrics = await (await fetch(`${h2dUrl}/metrics`, { headers: ADMIN_AUTH })).text();
        expect(metrics).toContain('pandaproxy_printer_errors{printer="h2d"} 2');
        expect(metrics).toContain('pandaproxy_printer_state{printer="h2d",state="paused"} 1');
        // The user loads filament and resumes, as a slicer or Home Assistant would: through the proxy's MQTT.
        const client = await npmClient(H2D_BIND, { password: h2d.identity.accessCode });
        try {
          await client.client.publishAsync(`device/${h2d.identity.serial}/request`, JSON.stringify({ print: { sequence_id: "80", command: "resume" } }), { qos: 1 });
        } finally {
          await client.end();
        }
        await page.waitForFunction(
          `document.querySelectorAll('${errors}').length === 0 && document.querySelector('${card} .printer-state')?.textContent === "printing"`,
          undefined,
          { timeout: STATUS_POLL_MS * 4 },
        );
      } finally {
        await page.close();
      }
    }, 40_000);

    test("both nozzles on the page and in /metrics: left and right, each with its target", async () => {
      const page = await browser.newPage({ viewport: { width: 900, height: 760 }, httpCredentials: TEST_ADMIN });
      try {
        await page.goto(`${h2dUrl}/`);
        const temperatures = 'section[data-printer="h2d"] .temperatures';
        await page.waitForSelector(temperatures, { timeout: STATUS_POLL_MS * 3 });
        expect(await text(page, temperatures)).toMatch(/^left nozzle \d+ \/ 160 °C · right nozzle \d+ \/ 220 °C · bed \d+ \/ 55 °C · chamber 28 °C$/);
      } finally {
        await page.close();
      }
      const metrics = await (await fetch(`${h2dUrl}/metrics`, { headers: ADMIN_AUTH })).text();
      expect(metrics).toMatch(/\npandaproxy_printer_nozzle_temperature_celsius\{printer="h2d",nozzle="left"\} \d+/);
      expect(metrics).toMatch(/\npandaproxy_printer_nozzle_temperature_celsius\{printer="h2d",nozzle="right"\} \d+/);
      expect(metrics).toContain('pandaproxy_printer_nozzle_target_temperature_celsius{printer="h2d",nozzle="left"} 160');
      expect(metrics).toContain('pandaproxy_printer_nozzle_target_temperature_celsius{printer="h2d",nozzle="right"} 220');
      expect(metrics).not.toContain('printer="h2d",nozzle="main"');
    });
  });
});
