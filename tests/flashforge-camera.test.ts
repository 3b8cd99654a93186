// The FlashForge MJPEG camera: one upstream stream from the simulated printer, many viewers and the web feed.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { mjpegPart } from "../lib/core/mjpeg.ts";
import { createFlashforgeCamera, createMjpegParser } from "../lib/flashforge/camera.ts";
import type { CameraFrame } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { readJpegStamp } from "../lib/sim/jpeg-picture.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { flashforgeContext } from "./flashforge-helpers.ts";

const SIM_HOST = "127.0.7.8";
const PROXY_HOST = "127.0.7.7";
const PORT = 8080;

const fakeJpeg = (n: number, size = 3000) => {
  const b = Buffer.alloc(size, n & 0xff);
  b[0] = 0xff;
  b[1] = 0xd8;
  b[size - 2] = 0xff;
  b[size - 1] = 0xd9;
  return b;
};

/** Reads `count` frames from an MJPEG stream over a raw socket; returns them with the response head. */
async function watch(host: string, count: number, timeoutMs = 10_000): Promise<{ head: string; frames: Buffer[] }> {
  const socket = connect({ host, port: PORT });
  socket.write("GET /?action=stream HTTP/1.1\r\nHost: camera\r\n\r\n");
  return new Promise((resolve, reject) => {
    let head = "";
    let pending: Buffer = Buffer.alloc(0);
    const frames: Buffer[] = [];
    let parser: ReturnType<typeof createMjpegParser> | undefined;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`got ${frames.length} of ${count} frames; head ${JSON.stringify(head)}`));
    }, timeoutMs);
    socket.on("data", (chunk: Buffer) => {
      if (!parser) {
        pending = Buffer.concat([pending, chunk]);
        const end = pending.indexOf("\r\n\r\n");
        if (end === -1) return;
        head = pending.subarray(0, end).toString("latin1");
        const boundary = /boundary=(\S+)/.exec(head)?.[1];
        if (!boundary) {
          clearTimeout(timer);
          socket.destroy();
          return resolve({ head, frames });
        }
        parser = createMjpegParser(boundary);
        chunk = pending.subarray(end + 4);
      }
      frames.push(...parser.push(chunk));
      if (frames.length >= count) {
        clearTimeout(timer);
        socket.destroy();
        resolve({ head, frames: frames.slice(0, count) });
      }
    });
    socket.on("error", reject);
  });
}

describe("MJPEG parser", () => {
  test("splits parts with and without Content-Length, whatever the chunking", () => {
    const frames = [1, 2, 3].map((n) => fakeJpeg(n));
    const withLength = Buffer.concat(frames.map((jpeg, i) => mjpegPart({ jpeg, receivedAt: i } as CameraFrame)));
    const withoutLength = Buffer.concat(frames.map((jpeg) => Buffer.concat([Buffer.from("--xyz\r\nContent-Type: image/jpeg\r\n\r\n"), jpeg, Buffer.from("\r\n")])));
    for (const [stream, boundary] of [[withLength, "boundarydonotcross"], [withoutLength, "xyz"]] as const) {
      for (const step of [1, 7, 1000, stream.length]) {
        const parser = createMjpegParser(boundary);
        const out: Buffer[] = [];
        for (let at = 0; at < stream.length; at += step) out.push(...parser.push(stream.subarray(at, at + step)));
        // Without Content-Length the last part ends only when the next boundary arrives.
        const expected = boundary === "xyz" ? frames.slice(0, 2) : frames;
        expect(out.map((f) => f.toString("hex"))).toEqual(expected.map((f) => f.toString("hex")));
      }
    }
  });

  test("refuses a part over the size limit", () => {
    const parser = createMjpegParser("b");
    expect(() => parser.push(Buffer.from("--b\r\nContent-Length: 999999999\r\n\r\n"))).toThrow(/limit/);
  });
});

describe("FlashForge camera proxy", () => {
  let sim: SimFlashforge;
  let camera: ReturnType<typeof createFlashforgeCamera>;
  let ctx: ReturnType<typeof flashforgeContext>;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSimulatedFlashforge({ host: SIM_HOST, camera: { fps: 15, width: 320, height: 180 } });
    ctx = flashforgeContext(sim, PROXY_HOST);
    camera = createFlashforgeCamera(ctx, { lingerMs: 500 });
    await camera.start();
  });

  afterAll(async () => {
    await camera?.stop();
    await sim?.stop();
  });

  test("the simulated camera serves one stream viewer at a time", async () => {
    const first = watch(SIM_HOST, 3);
    await Bun.sleep(100);
    const second = await watch(SIM_HOST, 1, 3_000);
    expect(second.head).toStartWith("HTTP/1.0 503");
    expect((await first).frames.length).toBe(3);
    await Bun.sleep(100);
  });

  test("five viewers at once all receive frames, from one upstream stream", async () => {
    const streamsBefore = sim.camera.streams;
    const results = await Promise.all(Array.from({ length: 5 }, () => watch(PROXY_HOST, 10)));
    for (const { head, frames } of results) {
      expect(head).toStartWith("HTTP/1.0 200 OK");
      expect(head).toContain("multipart/x-mixed-replace;boundary=boundarydonotcross");
      expect(frames.length).toBe(10);
      const numbers = frames.map((f) => Number(readJpegStamp(f)?.replace("ff-frame ", "")));
      for (let i = 1; i < numbers.length; i++) expect(numbers[i]!).toBeGreaterThan(numbers[i - 1]!);
      for (const f of frames) expect(f.subarray(-2).toString("hex")).toBe("ffd9");
    }
    expect(sim.camera.streams).toBe(streamsBefore + 1);
  });

  test("a viewer that never reads does not hold the others back", async () => {
    const stuck = connect({ host: PROXY_HOST, port: PORT });
    stuck.write("GET /?action=stream HTTP/1.1\r\n\r\n");
    stuck.pause();
    try {
      const { frames } = await watch(PROXY_HOST, 15);
      expect(frames.length).toBe(15);
    } finally {
      stuck.destroy();
    }
  });

  test("a snapshot is one JPEG cut from the stream", async () => {
    const res = await fetch(`http://${PROXY_HOST}:${PORT}/?action=snapshot`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/jpeg");
    const jpeg = Buffer.from(await res.arrayBuffer());
    expect(jpeg.subarray(0, 2).toString("hex")).toBe("ffd8");
    expect(readJpegStamp(jpeg)).toStartWith("ff-frame ");
  });

  test("the web page gets the same frames through the hub's CameraFeed", async () => {
    const feed = ctx.hub.camera;
    expect(feed?.source).toBe("mjpeg");
    const release = feed!.claim();
    try {
      const frame = await new Promise<CameraFrame>((resolve) => {
        const sub = feed!.frames.subscribe((f, done) => {
          done();
          queueMicrotask(() => sub.unsubscribe());
          resolve(f);
        }, { label: "test" });
      });
      expect(readJpegStamp(frame.jpeg)).toStartWith("ff-frame ");
      expect(feed!.state()).toBe("connected");
    } finally {
      release();
    }
  });

  test("the upstream stream closes after the linger with no viewers", async () => {
    await Bun.sleep(1_200);
    expect(camera.status().upstream).toBe("idle");
  });
});

describe("FlashForge camera proxy: a stuck viewer", () => {
  const STUCK_SIM = "127.0.7.14";
  const STUCK_PROXY = "127.0.7.15";
  const STALL_MS = 500;
  let sim: SimFlashforge;
  let camera: ReturnType<typeof createFlashforgeCamera>;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    // Big frames, fast: an unread socket's buffers fill within a few seconds.
    sim = await startSimulatedFlashforge({ host: STUCK_SIM, camera: { fps: 30, width: 1920, height: 1080 } });
    camera = createFlashforgeCamera(flashforgeContext(sim, STUCK_PROXY), { lingerMs: 500, viewerStallMs: STALL_MS });
    await camera.start();
  });

  afterAll(async () => {
    await camera?.stop();
    await sim?.stop();
  });

  test("a viewer that accepts nothing for the stall time is closed with a log line; another keeps watching", async () => {
    const logs = captureLogs();
    const stuck = connect({ host: STUCK_PROXY, port: PORT });
    stuck.on("error", () => {});
    let stuckClosed = false;
    stuck.once("close", () => (stuckClosed = true));
    try {
      stuck.write("GET /?action=stream HTTP/1.1\r\n\r\n");
      stuck.pause(); // and never read, until the end
      const closedLine = () => logs.lines.some((l) => l.includes("[ff5m/camera]") && l.includes("closing: accepted nothing for"));
      for (let i = 0; i < 300 && !closedLine(); i++) await Bun.sleep(50);
      expect(closedLine()).toBe(true);
      expect(camera.status().details?.viewers).toBe(0);
      const { frames } = await watch(STUCK_PROXY, 5);
      expect(frames.length).toBe(5);
      // Seen from the viewer: reading again, it gets what was on the wire, then the end.
      stuck.on("data", () => {});
      stuck.resume();
      for (let i = 0; i < 200 && !stuckClosed; i++) await Bun.sleep(50);
      expect(stuckClosed).toBe(true);
    } finally {
      logs.stop();
      stuck.destroy();
    }
  }, 30_000);
});
