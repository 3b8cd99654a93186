// The web server over real HTTP on 127.0.8.x: MJPEG streams, snapshots, /api/printers, /metrics, basic auth.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import jpeg from "jpeg-js";
import { FEED_CHECK_MS, MJPEG_BOUNDARY } from "../lib/web/mjpeg.ts";
import { SNAPSHOT_WAIT_MS } from "../lib/web/snapshot.ts";
import {
  ADMIN_AUTH, createTestFeed, frameNumber, padJpeg, rawMjpegViewer, startTestWeb, testJpeg, testPrinter, testService, waitFor,
  watchMjpeg, type TestFeed,
} from "./web-fixtures.ts";
import { startWeb, type WebServer } from "../lib/web/server.ts";
import { createMetrics, type Metrics } from "../lib/core/metrics.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";

const isJpeg = (bytes: Uint8Array) =>
  bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[bytes.length - 2] === 0xff && bytes[bytes.length - 1] === 0xd9;

describe("web camera and API", () => {
  let camera: TestFeed;
  let dark: TestFeed;
  let web: WebServer;
  let url: string;
  let metrics: Metrics;
  const mqtt = testService("mqtt", { state: "listening", clients: 3, upstream: "connected", details: { messages: 12 } });

  beforeAll(async () => {
    camera = createTestFeed({ intervalMs: 40 });
    dark = createTestFeed({ reachable: false });
    const printers = [
      testPrinter("p1s", camera.feed, [testService("chamber", { state: "listening", clients: 2, upstream: "connected" }), mqtt]),
      testPrinter("offline", dark.feed),
      testPrinter("nocam"),
    ];
    ({ web, url, metrics } = await startTestWeb(printers));
  });
  afterAll(async () => {
    await web.stop();
    camera.stop();
    dark.stop();
  });

  test("MJPEG parts are well-formed JPEGs that keep coming, and the camera runs only while watched", async () => {
    expect(camera.claims).toBe(0);
    const viewer = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
    try {
      expect(viewer.response.status).toBe(200);
      expect(viewer.response.headers.get("content-type")).toBe(`multipart/x-mixed-replace;boundary=${MJPEG_BOUNDARY}`);
      await viewer.until(15);
      expect(camera.claims).toBe(1);
      for (const part of viewer.parts) {
        expect(part.headers["content-type"]).toBe("image/jpeg");
        expect(Number(part.headers["content-length"])).toBe(part.jpeg.length);
        expect(isJpeg(part.jpeg)).toBe(true);
      }
      const decoded = jpeg.decode(viewer.parts.at(-1)!.jpeg);
      expect([decoded.width, decoded.height]).toEqual([320, 180]);
      const numbers = viewer.parts.map((p) => frameNumber(p.jpeg)!);
      for (let i = 1; i < numbers.length; i++) expect(numbers[i]!).toBeGreaterThan(numbers[i - 1]!);
    } finally {
      await viewer.close();
    }
    // A closed tab unsubscribes and gives its claim back.
    await waitFor("the viewer to be released", () => camera.claims === 0 && camera.feed.frames.consumers === 0);
    expect(metrics.value("pandaproxy_web_viewers", { printer: "p1s" })).toBe(0);
  });

  test("a new viewer gets the newest frame at once, even when no new one comes", async () => {
    camera.reachable = false; // claims produce nothing now; only the cached frame exists
    const newest = camera.publish();
    const viewer = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
    try {
      await viewer.until(1);
      expect(Buffer.compare(viewer.parts[0]!.jpeg, newest.jpeg)).toBe(0);
    } finally {
      await viewer.close();
      camera.reachable = true;
    }
  });

  test("two MJPEG viewers at once both receive frames and are counted", async () => {
    const a = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
    const b = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
    try {
      await Promise.all([a.until(10), b.until(10)]);
      expect(camera.claims).toBe(2);
      const api = (await (await fetch(`${url}/api/printers`, { headers: ADMIN_AUTH })).json()) as { name: string; camera: { webViewers: number } }[];
      expect(api.find((p) => p.name === "p1s")!.camera.webViewers).toBe(2);
      expect(metrics.value("pandaproxy_web_viewers", { printer: "p1s" })).toBe(2);
      // Both see the same frames from the one broadcast.
      const seenByA = new Set(a.parts.map((p) => frameNumber(p.jpeg)));
      expect(b.parts.some((p) => seenByA.has(frameNumber(p.jpeg)))).toBe(true);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
    await waitFor("both viewers to be released", () => camera.claims === 0);
  });

  test("snapshot returns the newest frame as a JPEG", async () => {
    const newest = camera.publish();
    const response = await fetch(`${url}/printers/p1s/snapshot.jpg`, { headers: ADMIN_AUTH });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("image/jpeg");
    const bytes = Buffer.from(await response.arrayBuffer());
    expect(isJpeg(bytes)).toBe(true);
    expect(frameNumber(bytes)).toBe(frameNumber(newest.jpeg)!);
    expect(jpeg.decode(bytes).width).toBe(320);
  });

  test("snapshot with nothing cached starts the camera, waits for a frame, then lets it go", async () => {
    camera.feed.frames.clear();
    const claimedBefore = camera.claimed;
    const response = await fetch(`${url}/printers/p1s/snapshot.jpg`, { headers: ADMIN_AUTH });
    expect(response.status).toBe(200);
    expect(isJpeg(Buffer.from(await response.arrayBuffer()))).toBe(true);
    expect(camera.claimed).toBe(claimedBefore + 1);
    expect(camera.claims).toBe(0);
  });

  test(
    "snapshot answers 503 with a clear text when the printer cannot be reached",
    async () => {
      const started = Date.now();
      const response = await fetch(`${url}/printers/offline/snapshot.jpg`, { headers: ADMIN_AUTH });
      expect(response.status).toBe(503);
      const body = await response.text();
      expect(body).toContain('printer "offline"');
      expect(body).toContain("no picture within 10 s");
      expect(body).toContain("connection refused");
      expect(Date.now() - started).toBeGreaterThanOrEqual(SNAPSHOT_WAIT_MS - 100);
      expect(dark.claims).toBe(0);
      expect(metrics.value("pandaproxy_web_snapshot_failures_total", { printer: "offline" })).toBe(1);
    },
    SNAPSHOT_WAIT_MS + 5_000,
  );

  test("unknown printers and printers without a camera answer 404", async () => {
    for (const path of ["/printers/nope/camera.mjpeg", "/printers/nope/snapshot.jpg"]) {
      const response = await fetch(url + path, { headers: ADMIN_AUTH });
      expect(response.status).toBe(404);
      expect(await response.text()).toContain('no printer named "nope"');
    }
    const nocam = await fetch(`${url}/printers/nocam/snapshot.jpg`, { headers: ADMIN_AUTH });
    expect(nocam.status).toBe(404);
    expect(await nocam.text()).toContain("has no camera");
    expect((await fetch(`${url}/no/such/page`, { headers: ADMIN_AUTH })).status).toBe(404);
  });

  test("/api/printers describes every printer, its camera and its services", async () => {
    mqtt.current = { ...mqtt.current, clients: 5 };
    const response = await fetch(`${url}/api/printers`, { headers: ADMIN_AUTH });
    expect(response.headers.get("content-type")).toContain("application/json");
    const printers = (await response.json()) as Record<string, any>[];
    expect(printers.map((p) => p.name)).toEqual(["p1s", "offline", "nocam"]);
    const p1s = printers[0]!;
    expect(p1s).toMatchObject({ type: "bambu", host: "192.168.1.50", bind: "127.0.8.2", model: "P1S", firmware: "01.08.00.00" });
    expect(p1s.camera).toMatchObject({ kind: "chamber", mjpeg: "printers/p1s/camera.mjpeg", snapshot: "printers/p1s/snapshot.jpg", webViewers: 0 });
    expect(typeof p1s.camera.fps).toBe("number");
    expect(p1s.camera.lastFrameAgeMs).toBeGreaterThanOrEqual(0);
    expect(p1s.services).toEqual([
      { name: "chamber", state: "listening", clients: 2, upstream: "connected" },
      { name: "mqtt", state: "listening", clients: 5, upstream: "connected", details: { messages: 12 } },
    ]);
    expect(printers[2]!.camera).toBeNull();
    expect(JSON.stringify(printers)).not.toContain("12345678"); // never the access code
  });

  test("/metrics has the web counters in Prometheus text", async () => {
    const response = await fetch(`${url}/metrics`, { headers: ADMIN_AUTH });
    expect(response.headers.get("content-type")).toContain("text/plain");
    const body = await response.text();
    expect(body).toContain("# TYPE pandaproxy_web_frames_sent_total counter");
    expect(body).toContain("# TYPE pandaproxy_web_viewers gauge");
    const value = (name: string) => Number(new RegExp(`^${name}\\{printer="p1s"\\} (\\S+)$`, "m").exec(body)?.[1]);
    expect(value("pandaproxy_web_frames_sent_total")).toBeGreaterThan(20);
    expect(value("pandaproxy_web_bytes_sent_total")).toBeGreaterThan(value("pandaproxy_web_frames_sent_total") * 1000);
    expect(value("pandaproxy_web_snapshots_total")).toBe(2);
    expect(value("pandaproxy_web_viewers")).toBe(0);
    expect(value("pandaproxy_web_camera_frame_age_seconds")).toBeGreaterThanOrEqual(0);
    expect(body).not.toContain('printer="nocam"'); // no camera, no camera metrics
  });
});

describe("a slow browser", () => {
  test("a viewer that stops reading skips frames instead of queueing them, and never delays another", async () => {
    // Big frames fill the socket buffers after a few parts, so the server has to hold back.
    const camera = createTestFeed({ intervalMs: 10, jpeg: padJpeg(testJpeg(), 400_000) });
    const { web, url } = await startTestWeb([testPrinter("p1s", camera.feed)], { host: "127.0.8.3" });
    const slow = rawMjpegViewer("127.0.8.3", web.port, "/printers/p1s/camera.mjpeg");
    const fast = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
    try {
      await waitFor("the slow viewer's first part", () => slow.parts.length > 0);
      slow.socket.pause();
      const firstFast = fast.parts.length;
      await fast.until(firstFast + 150, 30_000);
      const publishedWhilePaused = camera.published;
      slow.socket.resume();
      await waitFor("the slow viewer to catch up", () => frameNumber(slow.parts.at(-1)!.jpeg)! >= publishedWhilePaused - 1, 10_000);
      // It got far fewer parts than were published: skipped, not queued. And it is back on the newest frames.
      expect(slow.parts.length).toBeLessThan(publishedWhilePaused / 2);
      const numbers = slow.parts.map((p) => frameNumber(p.jpeg)!);
      for (let i = 1; i < numbers.length; i++) expect(numbers[i]!).toBeGreaterThan(numbers[i - 1]!);
    } finally {
      slow.close();
      await fast.close();
      await web.stop();
      camera.stop();
    }
  }, 45_000);

  test("a viewer that takes no frame for the stall time is closed with a log line; another keeps watching", async () => {
    const STALL_MS = 500;
    setupLogging("info", { quiet: true });
    const camera = createTestFeed({ intervalMs: 10, jpeg: padJpeg(testJpeg(), 400_000) });
    const { web, url, metrics } = await startTestWeb([testPrinter("p1s", camera.feed)], { host: "127.0.8.10", mjpegStallMs: STALL_MS });
    const logs = captureLogs();
    const slow = rawMjpegViewer("127.0.8.10", web.port, "/printers/p1s/camera.mjpeg");
    const fast = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
    const viewers = () => metrics.value("pandaproxy_web_viewers", { printer: "p1s" });
    try {
      await waitFor("the slow viewer's first part", () => slow.parts.length > 0);
      expect(viewers()).toBe(2);
      slow.socket.pause(); // and never read again
      await waitFor("the slow viewer to be let go", () => viewers() === 1 && camera.claims === 1, 10_000);
      expect(logs.lines.some((l) => l.includes("[p1s/web]") && l.includes(`took no frame for ${STALL_MS / 1000} s; closing it`))).toBe(true);
      const seen = fast.parts.length;
      await fast.until(seen + 10);
    } finally {
      logs.stop();
      slow.close();
      await fast.close();
      await web.stop();
      camera.stop();
    }
  }, 20_000);
});

test("stopping the web server ends every stream and gives the camera back; HEAD never starts it", async () => {
  const camera = createTestFeed({ intervalMs: 20 });
  const { web, url, metrics } = await startTestWeb([testPrinter("p1s", camera.feed)], { host: "127.0.8.8" });
  const head = await fetch(`${url}/printers/p1s/camera.mjpeg`, { method: "HEAD", headers: ADMIN_AUTH });
  expect(head.status).toBe(200);
  expect(head.headers.get("content-type")).toContain("multipart/x-mixed-replace");
  expect(camera.claimed).toBe(0);
  const a = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
  const b = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
  try {
    await Promise.all([a.until(3), b.until(3)]);
    expect(camera.claims).toBe(2);
    await web.stop();
    await waitFor("the streams to be released", () => camera.claims === 0 && camera.feed.frames.consumers === 0);
    expect(metrics.value("pandaproxy_web_viewers", { printer: "p1s" })).toBeUndefined(); // gauges unregistered
    expect(metrics.value("pandaproxy_web_frames_sent_total", { printer: "p1s" })).toBeGreaterThanOrEqual(6);
  } finally {
    await Promise.all([a.close(), b.close()]);
    await web.stop();
    camera.stop();
  }
});

test("a stream ends when its printer's camera is replaced, and the API shows the new camera's id", async () => {
  const old = createTestFeed({ intervalMs: 20 });
  const printer = testPrinter("p1s", old.feed);
  const { web, url } = await startTestWeb([printer], { host: "127.0.8.9" });
  const viewer = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
  const replacement = createTestFeed({ intervalMs: 20 });
  try {
    await viewer.until(3);
    const idOf = async () => ((await (await fetch(`${url}/api/printers`, { headers: ADMIN_AUTH })).json()) as any[])[0].camera.id as number;
    const before = await idOf();
    printer.hub.setCamera(replacement.feed); // what a reload or a service restart does
    await waitFor("the old stream to end", () => old.claims === 0, FEED_CHECK_MS * 3);
    expect(old.feed.frames.consumers).toBe(0);
    expect(await idOf()).not.toBe(before);
    const again = await watchMjpeg(`${url}/printers/p1s/camera.mjpeg`);
    await again.until(2);
    expect(replacement.claims).toBe(1);
    await again.close();
  } finally {
    await viewer.close();
    await web.stop();
    old.stop();
    replacement.stop();
  }
});

describe("basic auth", () => {
  let web: WebServer;
  let url: string;
  const camera = createTestFeed();
  beforeAll(async () => {
    ({ web, url } = await startTestWeb([testPrinter("p1s", camera.feed)], { host: "127.0.8.4", username: "admin", password: "s3cret-pw", loginLimit: { failuresAllowed: 100 } }));
  });
  afterAll(async () => {
    await web.stop();
    camera.stop();
  });
  const basic = (user: string, password: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` });

  test("without or with wrong credentials every path answers 401 and asks for basic auth", async () => {
    for (const path of ["/", "/api/printers", "/metrics", "/printers/p1s/snapshot.jpg", "/printers/p1s/camera.mjpeg"]) {
      const none = await fetch(url + path);
      expect(none.status).toBe(401);
      expect(none.headers.get("www-authenticate")).toBe('Basic realm="pandaproxy"');
      expect((await fetch(url + path, { headers: basic("admin", "wrong-pw!") })).status).toBe(401);
      expect((await fetch(url + path, { headers: basic("admin", "s3cret-pwX") })).status).toBe(401);
    }
    expect(camera.claimed).toBe(0);
  });

  test("the right credentials get the page, the API and the camera", async () => {
    const page = await fetch(`${url}/`, { headers: basic("admin", "s3cret-pw") });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<title>pandaproxy</title>");
    expect((await fetch(`${url}/api/printers`, { headers: basic("admin", "s3cret-pw") })).status).toBe(200);
    const snapshot = await fetch(`${url}/printers/p1s/snapshot.jpg`, { headers: basic("admin", "s3cret-pw") });
    expect(snapshot.status).toBe(200);
    expect(isJpeg(Buffer.from(await snapshot.arrayBuffer()))).toBe(true);
  });
});

test("the web server refuses to start on an address in use, saying where", async () => {
  const { web } = await startTestWeb([], { host: "127.0.8.5" });
  try {
    await expect(startWeb({ web: { listen: { host: "127.0.8.5", port: web.port } }, printers: () => [], metrics: createMetrics() })).rejects.toThrow(
      `cannot start the web page on 127.0.8.5:${web.port}`,
    );
  } finally {
    await web.stop();
  }
});
