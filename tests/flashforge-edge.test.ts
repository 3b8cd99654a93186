// The FlashForge services at the edge of a hostile LAN, against a simulated Adventurer 5M: request lines the
// camera cannot read, uploaders that walk away, file names in UTF-8, slow commands, pipelined floods.
// Addresses: 127.0.23.0/24 only.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { connect } from "node:net";
import { createFlashforgeCamera } from "../lib/flashforge/camera.ts";
import { parseCameraRequestLine } from "../lib/flashforge/camera-request.ts";
import { createFlashforgeHttp } from "../lib/flashforge/http.ts";
import { createFlashforgeTcp } from "../lib/flashforge/tcp.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { consoleClient, flashforgeContext } from "./flashforge-helpers.ts";

const SIM_HOST = "127.0.23.2";
const PROXY_HOST = "127.0.23.1";
const TCP_PORT = 8899;
const CAMERA_PORT = 8080;
const CLIENT_IDLE_MS = 400;
const SLOW_COMMAND_MS = 1_200;

let sim: SimFlashforge;
let tcp: Service;
let camera: Service;
let http: Service;
const HEAD_DEADLINE_MS = 400;

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  sim = await startSimulatedFlashforge({ host: SIM_HOST, tcp: { slowCommandMs: SLOW_COMMAND_MS } });
  const ctx = flashforgeContext(sim, PROXY_HOST);
  tcp = createFlashforgeTcp(ctx, { lingerMs: 60_000, clientIdleTimeoutMs: CLIENT_IDLE_MS });
  camera = createFlashforgeCamera(ctx, { lingerMs: 500 });
  http = createFlashforgeHttp(ctx, { headersTimeoutMs: HEAD_DEADLINE_MS, jsonBodyTimeoutMs: 5_000 });
  await tcp.start();
  await camera.start();
  await http.start();
});

afterAll(async () => {
  await tcp?.stop();
  await camera?.stop();
  await http?.stop();
  await sim?.stop();
});

/** Sends `request` raw to the camera port and collects what comes back until the proxy closes. */
function cameraExchange(request: string, timeoutMs = 3_000): Promise<{ answer: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect({ host: PROXY_HOST, port: CAMERA_PORT });
    let answer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ answer, closed: false });
    }, timeoutMs);
    socket.on("connect", () => socket.write(request));
    socket.on("data", (c: Buffer) => void (answer += c.toString("latin1")));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ answer, closed: true });
    });
  });
}

async function waitUntil(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await Bun.sleep(10);
  }
}

describe("camera request line", () => {
  test("the line mjpg-streamer clients send is read; targets new URL() throws on are invalid, not exceptions", () => {
    expect(parseCameraRequestLine("GET /?action=stream HTTP/1.1")).toEqual({ method: "GET", path: "/", action: "stream" });
    expect(parseCameraRequestLine("GET /?foo=1&action=snap%73hot HTTP/1.0")).toEqual({ method: "GET", path: "/", action: "snapshot" });
    expect(parseCameraRequestLine("GET http://10.0.0.5:8080/?action=stream HTTP/1.1")).toEqual({ method: "GET", path: "/", action: "stream" });
    expect(parseCameraRequestLine("GET http://[::1]:8080?action=snapshot HTTP/1.1")).toEqual({ method: "GET", path: "/", action: "snapshot" });
    expect(parseCameraRequestLine("HEAD /stream HTTP/1.1")).toEqual({ method: "HEAD", path: "/stream", action: undefined });
    expect(parseCameraRequestLine("GET /?action=%E0%A4%A HTTP/1.1")).toBe("invalid");
    expect(parseCameraRequestLine("GET /?action=%C3 HTTP/1.1")).toEqual({ method: "GET", path: "/", action: "%C3" });
    for (const line of ["GET //[ HTTP/1.1", "GET http://[ HTTP/1.1", "GET http://a[b/ HTTP/1.1", "GET * HTTP/1.1", "GET / HTTP/2.0", "GET /a b HTTP/1.1", "", "\x16\x03\x01"]) {
      expect(parseCameraRequestLine(line)).toBe("invalid");
    }
  });
});

describe("FlashForge camera at the edge", () => {
  test("GET //[ is answered 400 and closed, with a log line naming the peer", async () => {
    const logs = captureLogs();
    try {
      const { answer, closed } = await cameraExchange("GET //[ HTTP/1.1\r\nHost: camera\r\n\r\n");
      expect(answer.startsWith("HTTP/1.0 400 Bad Request\r\n")).toBe(true);
      expect(closed).toBe(true);
      expect(logs.lines.some((l) => /\[ff5m\/camera\] [\d.]+:\d+ closing: not an HTTP request/.test(l))).toBe(true);
    } finally {
      logs.stop();
    }
  });

  test("a client that keeps its side open after the answer is destroyed: its slot is free again", async () => {
    const socket = connect({ host: PROXY_HOST, port: CAMERA_PORT, allowHalfOpen: true });
    socket.on("error", () => {});
    try {
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      socket.write("GET /nothing-here HTTP/1.1\r\n\r\n");
      await waitUntil(() => camera.status().clients === 1, 2_000);
      // END_DESTROY_MS (2 s) after the 404 the proxy destroys it, whatever the client does.
      await waitUntil(() => camera.status().clients === 0, 4_000);
    } finally {
      socket.destroy();
    }
  }, 8_000);
});

describe("FlashForge HTTP at the edge", () => {
  test("the head deadline stops once a request has arrived (a slow body is answered), and runs again after the answer", async () => {
    const socket = connect({ host: PROXY_HOST, port: 8898 });
    socket.on("error", () => {});
    let answer = "";
    let closedAt = 0;
    socket.on("data", (c: Buffer) => void (answer += c.toString("latin1")));
    socket.on("close", () => void (closedAt = Date.now()));
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    const body = JSON.stringify({ serialNumber: sim.identity.serial, checkCode: sim.identity.checkCode });
    socket.write(`POST /detail HTTP/1.1\r\nHost: printer\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
    // The body over three head deadlines, in pieces.
    for (let at = 0; at < body.length; at += Math.ceil(body.length / 6)) {
      await Bun.sleep(HEAD_DEADLINE_MS / 2);
      socket.write(body.slice(at, at + Math.ceil(body.length / 6)));
    }
    await waitUntil(() => answer.includes('"code":0'), 3_000);
    const answeredAt = Date.now();
    expect(answer.startsWith("HTTP/1.1 200")).toBe(true);
    // Kept alive, but no next request: closed a head deadline later.
    await waitUntil(() => closedAt > 0, HEAD_DEADLINE_MS + 1_500);
    expect(closedAt - answeredAt).toBeGreaterThanOrEqual(HEAD_DEADLINE_MS - 50);
    socket.destroy();
  });
});

describe("FlashForge TCP at the edge", () => {
  test("an uploader that sent its file but vanished before ~M29 does not lock the console", async () => {
    const logs = captureLogs();
    const uploader = await consoleClient(PROXY_HOST, TCP_PORT);
    const other = await consoleClient(PROXY_HOST, TCP_PORT);
    try {
      const file = Buffer.alloc(64 * 1024, 7);
      uploader.send(`~M28 ${file.length} 0:/user/walked-away.gcode`);
      uploader.socket.write(file);
      expect(await uploader.readText()).toContain("Writing to file");
      await waitUntil(() => sim.state.files.has("/data/walked-away.gcode"));
      uploader.close();
      other.send("~M115");
      expect((await other.readText()).startsWith("CMD M115 Received.")).toBe(true);
      // The printer was told ~M29 for the uploader, so it closed the file.
      expect(sim.tcp.commands.some((c) => c.line === "~M29")).toBe(true);
      expect(sim.state.files.get("/data/walked-away.gcode")?.sha256).toBe(createHash("sha256").update(file).digest("hex"));
      expect(logs.lines.some((l) => l.includes("[ff5m/tcp]") && l.includes("left before ~M29"))).toBe(true);
    } finally {
      logs.stop();
      uploader.close();
      other.close();
    }
  });

  test("an uploader that vanished in the middle of its file: the printer session is dropped without a command that would become file data", async () => {
    const logs = captureLogs();
    const uploader = await consoleClient(PROXY_HOST, TCP_PORT);
    const other = await consoleClient(PROXY_HOST, TCP_PORT);
    try {
      const sessions = sim.tcp.sessions;
      // 5 bytes short: a "~M602\r\n" sent now would complete the file with the command's bytes.
      uploader.send("~M28 105 0:/user/half.gcode");
      uploader.socket.write(Buffer.alloc(100, 0x41));
      expect(await uploader.readText()).toContain("Writing to file");
      await Bun.sleep(100);
      uploader.close();
      other.send("~M115");
      expect((await other.readText()).startsWith("CMD M115 Received.")).toBe(true);
      expect(sim.tcp.sessions).toBe(sessions + 1);
      expect(sim.state.files.has("/data/half.gcode")).toBe(false);
      expect(logs.lines.some((l) => l.includes("[ff5m/tcp]") && l.includes("upload abandoned (100 of 105 bytes received)"))).toBe(true);
    } finally {
      logs.stop();
      uploader.close();
      other.close();
    }
  });

  test("a UTF-8 file name reaches the printer byte for byte, and comes back in its reply", async () => {
    const client = await consoleClient(PROXY_HOST, TCP_PORT);
    try {
      const file = Buffer.from("G28\nG1 X10\n");
      const line = `~M28 ${file.length} 0:/user/Würfel.gcode`;
      client.send(line);
      client.socket.write(file);
      client.send("~M29");
      const reply = await client.readBytes(Buffer.byteLength("CMD M28 Received.\r\nWriting to file: 0:/user/Würfel.gcode\r\nok\r\n"));
      expect(reply.equals(Buffer.from("CMD M28 Received.\r\nWriting to file: 0:/user/Würfel.gcode\r\nok\r\n"))).toBe(true);
      expect(await client.readText()).toContain("Done saving file.");
      const seen = sim.tcp.commands.find((c) => c.line.startsWith("~M28") && c.line.includes("rfel"));
      expect(seen?.bytes.equals(Buffer.from(line))).toBe(true);
      expect(sim.state.files.get("/data/Würfel.gcode")?.sha256).toBe(createHash("sha256").update(file).digest("hex"));
    } finally {
      client.close();
    }
  });

  test("a client waiting for its own slow command (G28) is not cut by the idle deadline; once answered, it is", async () => {
    const client = await consoleClient(PROXY_HOST, TCP_PORT);
    try {
      const sent = Date.now();
      client.send("~G28");
      expect((await client.readText()).startsWith("CMD G28 Received.")).toBe(true);
      expect(Date.now() - sent).toBeGreaterThanOrEqual(SLOW_COMMAND_MS - 50);
      const answered = Date.now();
      await client.waitClosed(CLIENT_IDLE_MS + 1_500);
      expect(Date.now() - answered).toBeGreaterThanOrEqual(CLIENT_IDLE_MS - 50);
    } finally {
      client.close();
    }
  });

  test("bytes that never finish a line do not keep a client alive (slow-loris)", async () => {
    const logs = captureLogs();
    const client = await consoleClient(PROXY_HOST, TCP_PORT);
    try {
      const started = Date.now();
      client.socket.write("~M1");
      for (let i = 0; i < 20 && !client.closed; i++) {
        await Bun.sleep(100);
        client.socket.write("0");
      }
      expect(client.closed).toBe(true);
      expect(Date.now() - started).toBeLessThan(CLIENT_IDLE_MS + 500);
      expect(logs.lines.some((l) => l.includes("[ff5m/tcp]") && l.includes("closing: silent for"))).toBe(true);
    } finally {
      logs.stop();
      client.close();
    }
  });

  test("a client's pipelined commands go to the printer one at a time: another client waits behind one, not all", async () => {
    const flooder = await consoleClient(PROXY_HOST, TCP_PORT);
    const other = await consoleClient(PROXY_HOST, TCP_PORT);
    try {
      const from = sim.tcp.commands.length;
      // The printer takes a while over the first (homing), so the rest are all waiting when the other client asks.
      flooder.socket.write("~G28\r\n" + "~M105\r\n".repeat(29));
      await waitUntil(() => sim.tcp.commands.slice(from).some((c) => c.line === "~G28"));
      other.send("~M115");
      expect((await other.readText()).startsWith("CMD M115 Received.")).toBe(true);
      for (let i = 0; i < 30; i++) expect((await flooder.readText()).startsWith("CMD ")).toBe(true);
      const order = sim.tcp.commands.slice(from).map((c) => c.line).filter((l) => l !== "~M27");
      expect(order.slice(0, 2)).toEqual(["~G28", "~M115"]);
    } finally {
      flooder.close();
      other.close();
    }
  });

  test("a client that leaves while its slow command runs is seen at once: its other commands never reach the printer", async () => {
    await waitUntil(() => tcp.status().clients === 0);
    const client = await consoleClient(PROXY_HOST, TCP_PORT);
    const from = sim.tcp.commands.length;
    client.send("~G28");
    await waitUntil(() => sim.tcp.commands.slice(from).some((c) => c.line === "~G28"));
    expect(tcp.status().clients).toBe(1);
    // Sent while G28 is pending, then the client goes: its FIN comes after these bytes.
    client.socket.write("~M119\r\n~M119\r\n");
    await Bun.sleep(50);
    client.close();
    await waitUntil(() => tcp.status().clients === 0, SLOW_COMMAND_MS / 2);
    await Bun.sleep(SLOW_COMMAND_MS + 300);
    expect(sim.tcp.commands.slice(from).filter((c) => c.line === "~M119").length).toBe(0);
  });

  test("a flood of thousands of pipelined commands ends that client with a clear line; another is answered", async () => {
    const logs = captureLogs();
    const flooder = await consoleClient(PROXY_HOST, TCP_PORT);
    const other = await consoleClient(PROXY_HOST, TCP_PORT);
    try {
      flooder.socket.write("~M105\r\n".repeat(5_000));
      await flooder.waitClosed(3_000);
      expect(logs.lines.some((l) => l.includes("[ff5m/tcp]") && l.includes("sent more than 32 commands without waiting for the replies"))).toBe(true);
      other.send("~M115");
      expect((await other.readText()).startsWith("CMD M115 Received.")).toBe(true);
    } finally {
      logs.stop();
      flooder.close();
      other.close();
    }
  });
});
