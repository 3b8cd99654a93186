import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type TLSSocket } from "node:tls";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimChamber } from "../lib/sim/chamber.ts";
import { simulatedPrinterTls } from "../lib/sim/tls.ts";
import { serverTlsOptions } from "../lib/tls.ts";
import { createChamberService, type ChamberOptions } from "../lib/bambu/chamber.ts";
import { decodeLogin, encodeFrameHeader } from "../lib/bambu/chamber-codec.ts";
import type { Service, ServiceContext } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { ACCESS_CODE, proxyContext, slowClient, watch, waitFor, type TestViewer } from "./chamber-fixtures.ts";

const SIM = "127.0.4.40";
const FAKE = "127.0.4.45";
const FAKE_PORT = 6000;

const jpegOf = (text: string) => Buffer.concat([Buffer.from([0xff, 0xd8]), Buffer.from(text), Buffer.from([0xff, 0xd9])]);

/** A printer under the test's control: it records logins and sends exactly what the test says. */
function fakePrinter() {
  const sockets: TLSSocket[] = [];
  const logins: string[] = [];
  let onLogin: (socket: TLSSocket) => void = () => {};
  const server = createServer(serverTlsOptions(simulatedPrinterTls("01P00A000000001")), (socket) => {
    sockets.push(socket);
    socket.on("error", () => {});
    socket.once("data", (bytes: Buffer) => {
      const login = decodeLogin(bytes.subarray(0, 80));
      logins.push("error" in login ? "?" : login.accessCode);
      onLogin(socket);
    });
  });
  return {
    sockets,
    logins,
    setOnLogin: (f: (socket: TLSSocket) => void) => void (onLogin = f),
    send(socket: TLSSocket, jpeg: Buffer, header = encodeFrameHeader(jpeg.length)) {
      socket.write(header);
      socket.write(jpeg);
    },
    listen: () => new Promise<void>((resolve) => server.listen(FAKE_PORT, FAKE, () => resolve())),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("chamber upstream against a printer the test controls", () => {
  const printer = fakePrinter();
  const services: Service[] = [];
  const viewers: TestViewer[] = [];
  const port = 6000;
  const proxyFor = async (name: string, options: ChamberOptions, accessCode?: string) => {
    const ctx = proxyContext({ name, proxy: `127.0.4.${41 + services.length}`, printer: FAKE, printerPort: FAKE_PORT, accessCode });
    const service = createChamberService(ctx, options);
    await service.start();
    services.push(service);
    return { ctx, service, host: ctx.printer.bind, port };
  };

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    await printer.listen();
  });
  afterAll(async () => {
    for (const v of viewers) v.close();
    for (const s of services) await s.stop();
    await printer.close();
  });

  test("a new viewer gets the last frame at once, even when the printer sends nothing more", async () => {
    printer.setOnLogin((socket) => printer.send(socket, jpegOf("only frame")));
    const { host } = await proxyFor("replay", {});
    const first = watch(host, port, { accessCode: ACCESS_CODE });
    viewers.push(first);
    await first.moreFrames(1);
    const second = watch(host, port, { accessCode: ACCESS_CODE });
    viewers.push(second);
    await second.moreFrames(1);
    expect(second.frames[0]!.jpeg.toString()).toContain("only frame");
    expect(printer.logins).toEqual([ACCESS_CODE]);
    first.close();
    second.close();
  });

  test("frames failing sanity are dropped with a log line; an out-of-sync stream is reconnected", async () => {
    const logs = captureLogs();
    try {
      printer.setOnLogin((socket) => {
        printer.send(socket, jpegOf("frame A"));
        printer.send(socket, Buffer.from("this is not a JPEG"));
        printer.send(socket, jpegOf("frame B"));
        socket.write(encodeFrameHeader(0));
      });
      const connectionsBefore = printer.sockets.length;
      const { host } = await proxyFor("sanity", { backoffMinMs: 100, backoffMaxMs: 1_000 });
      const viewer = watch(host, port, { accessCode: ACCESS_CODE });
      viewers.push(viewer);
      await viewer.moreFrames(2);
      expect(viewer.frames.slice(0, 2).map((f) => f.jpeg.toString("latin1").slice(2, -2))).toEqual(["frame A", "frame B"]);
      await waitFor("a reconnect", () => printer.sockets.length >= connectionsBefore + 2);
      expect(logs.lines.some((l) => l.includes("[sanity/chamber]") && l.includes("dropped a frame") && l.includes("FF D8"))).toBe(true);
      expect(logs.lines.some((l) => l.includes("[sanity/chamber]") && l.includes("out of sync") && l.includes("announces 0 bytes"))).toBe(true);
      expect(viewer.isClosed).toBe(false);
      viewer.close();
    } finally {
      logs.stop();
    }
  });

  test("a refused login is reported clearly, not retried in a tight loop, and viewers are told by a close", async () => {
    const logs = captureLogs();
    try {
      printer.setOnLogin((socket) => socket.destroy());
      const { service, host } = await proxyFor("refused", { backoffMinMs: 50, backoffMaxMs: 5_000, noFramesCloseMs: 1_000 }, "99999999");
      const viewer = watch(host, port, { accessCode: "99999999" });
      viewers.push(viewer);
      await viewer.closed;
      expect(printer.logins.filter((code) => code === "99999999").length).toBe(1);
      expect(service.status().upstream).toContain("backoff");
      expect(logs.lines.some((l) => l.includes("[refused/chamber]") && l.includes("refused the login") && l.includes("access_code"))).toBe(true);
      expect(logs.lines.some((l) => l.includes("[refused/chamber]") && l.includes("closing: no frames from the printer"))).toBe(true);
      expect(logs.lines.join("\n")).not.toContain("99999999");
    } finally {
      logs.stop();
    }
  });
});

describe("chamber upstream lifetime against the simulator", () => {
  let sim: SimPrinter;
  let ctx: ServiceContext;
  let proxy: Service;
  const PROXY = "127.0.4.48";
  const LINGER_MS = 1_500;
  const camera = () => sim.service<SimChamber>("chamber")!;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSimulatedBambu({ host: SIM, model: "P1S", serial: "01P00A000000001", accessCode: ACCESS_CODE, services: ["chamber"], cameraFps: 20 });
    ctx = proxyContext({ name: "linger", proxy: PROXY, printer: SIM });
    proxy = createChamberService(ctx, { lingerMs: LINGER_MS, viewerStallTimeoutMs: 1_000 });
    await proxy.start();
  });
  afterAll(async () => {
    await proxy?.stop();
    await sim?.stop();
  });

  test("nothing connects to the printer until a viewer comes; the upstream closes a linger after the last leaves", async () => {
    await Bun.sleep(300);
    expect(camera().connections).toBe(0);
    const viewer = watch(PROXY, 6000, { accessCode: ACCESS_CODE });
    await viewer.moreFrames(2);
    viewer.close();
    await Bun.sleep(LINGER_MS / 3);
    expect(proxy.status().upstream).toBe("connected");
    expect(camera().viewers).toBe(1);
    await waitFor("the upstream to close", () => camera().viewers === 0, LINGER_MS * 3);
    expect(proxy.status().upstream).toBe("idle");
  });

  test("the web page's claim on the camera feed opens the same upstream", async () => {
    const feed = ctx.hub.camera!;
    expect(feed.source).toBe("chamber");
    const published = feed.frames.published;
    const release = feed.claim();
    await waitFor("frames for the web page", () => feed.frames.published >= published + 3);
    expect(feed.state()).toBe("connected");
    expect(feed.frameRate()).toBeGreaterThan(0);
    release();
    await waitFor("the upstream to close", () => camera().viewers === 0, LINGER_MS * 3);
  });

  test("a viewer that accepts nothing is closed after the stall timeout", async () => {
    const logs = captureLogs();
    try {
      const seen = await slowClient(PROXY, 6000, ACCESS_CODE, 4, 1_000);
      expect(seen.at(-1)).toBe("CLOSED");
      // Once: the viewer leaves when the proxy decides, not when its socket's close event comes.
      expect(logs.lines.filter((l) => l.includes("[linger/chamber]") && l.includes("accepted nothing for 1 s"))).toHaveLength(1);
    } finally {
      logs.stop();
    }
  }, 15_000);
});
