import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import jpeg from "jpeg-js";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimChamber } from "../lib/sim/chamber.ts";
import { FRAME_HEADER_SIZE, frameLength } from "../lib/bambu/chamber-codec.ts";
import { ACCESS_CODE, haClient, watch, waitFor, type TestViewer } from "./chamber-fixtures.ts";

const SIM = "127.0.4.20";

describe("simulated chamber camera", () => {
  let sim: SimPrinter;
  let camera: SimChamber;
  const viewers: TestViewer[] = [];

  beforeAll(async () => {
    sim = await startSimulatedBambu({ host: SIM, model: "P1S", name: "sim-p1s", accessCode: ACCESS_CODE, services: ["chamber"], cameraFps: 10 });
    camera = sim.service<SimChamber>("chamber")!;
  });
  afterAll(async () => {
    for (const v of viewers) v.close();
    await sim?.stop();
  });

  test("a viewer with the access code gets 16-byte headers and real 1280x720 JPEGs that change", async () => {
    const viewer = watch(SIM, 6000, { accessCode: ACCESS_CODE });
    viewers.push(viewer);
    await viewer.moreFrames(3);
    const [first, , third] = viewer.frames;
    expect(first!.header.length).toBe(FRAME_HEADER_SIZE);
    expect(frameLength(first!.header)).toBe(first!.jpeg.length);
    expect([...first!.header.subarray(4)]).toEqual([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    const picture = jpeg.decode(first!.jpeg);
    expect([picture.width, picture.height]).toEqual([1280, 720]);
    expect(first!.jpeg.length).toBeGreaterThan(50_000);
    expect(third!.sequence).toBe(first!.sequence + 2);
    expect(third!.jpeg.equals(first!.jpeg)).toBe(false);
    viewer.close();
    await waitFor("the slot to free", () => camera.viewers === 0);
  });

  test("every JPEG starts with SOI and the JFIF APP0 segment, as real chamber frames do", async () => {
    // ha-bambulab's chamber reader drops any image not starting FF D8 FF E0; APP0 bytes per JFIF 1.02 § "JFIF APP0".
    const viewer = watch(SIM, 6000, { accessCode: ACCESS_CODE });
    viewers.push(viewer);
    await viewer.moreFrames(2);
    for (const frame of viewer.frames) expect(frame.jpeg.subarray(0, 11).toString("hex")).toBe("ffd8ffe000104a46494600");
    expect(viewer.frames[1]!.sequence).toBe(viewer.frames[0]!.sequence + 1);
    viewer.close();
    await waitFor("the slot to free", () => camera.viewers === 0);
  });

  test("a wrong access code, a wrong user or garbage gets nothing and is closed", async () => {
    const wrongCode = watch(SIM, 6000, { accessCode: "00000000" });
    const wrongUser = watch(SIM, 6000, { username: "root", accessCode: ACCESS_CODE });
    const garbage = watch(SIM, 6000, Buffer.alloc(80, 0x41));
    for (const v of [wrongCode, wrongUser, garbage]) {
      await v.closed;
      expect(v.bytes).toBe(0);
    }
  });

  test("a client that reads 4096-byte chunks like Home Assistant's integration gets every header alone", async () => {
    const result = await haClient(SIM, 6000, ACCESS_CODE, 15);
    expect(result.output).toBe("OK 15");
    expect(result.code).toBe(0);
  });

  test("a third viewer gets TCP accept but no TLS handshake until a slot frees", async () => {
    await waitFor("free slots", () => camera.viewers === 0);
    const first = watch(SIM, 6000, { accessCode: ACCESS_CODE });
    const second = watch(SIM, 6000, { accessCode: ACCESS_CODE });
    viewers.push(first, second);
    await Promise.all([first.moreFrames(1), second.moreFrames(1)]);

    let tcpConnected = false;
    const raw = tcpConnect({ host: SIM, port: 6000 }, () => (tcpConnected = true));
    raw.on("error", () => {});
    await waitFor("TCP accept", () => tcpConnected);
    raw.destroy();

    const third = watch(SIM, 6000, { accessCode: ACCESS_CODE });
    viewers.push(third);
    let secured = false;
    third.socket.once("secureConnect", () => (secured = true));
    await waitFor("the simulator to hold the third viewer", () => camera.waiting === 1);
    await Bun.sleep(700);
    expect(secured).toBe(false);
    expect(third.bytes).toBe(0);

    first.close();
    await third.moreFrames(2);
    expect(secured).toBe(true);
    expect(camera.viewers).toBe(2);
  });

  test("the simulator serves TLS 1.2 to a printer-style client", async () => {
    for (const v of viewers) v.close();
    await waitFor("free slots", () => camera.viewers === 0);
    const socket = tlsConnect({ host: SIM, port: 6000, maxVersion: "TLSv1.2", rejectUnauthorized: false });
    const version = await new Promise<string | null>((resolve) => socket.once("secureConnect", () => resolve(socket.getProtocol())));
    socket.destroy();
    expect(version).toBe("TLSv1.2");
  });
});
