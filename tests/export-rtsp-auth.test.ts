// [export.rtsp] with a media server that demands a login, and the shape of the H.264 pushed for a chamber camera.
// GStreamer's RTSP server in RECORD mode (tests/export-rtsp-record-server.py: Digest or Basic, its own H.264
// decoder) is the media server; pandaproxy (the supervisor, as `pandaproxy run` builds it) pushes a simulated
// P1S's chamber camera. FFmpeg pushes to our loopback relay, which answers the media server's challenge: the
// password must be in no log line and no process's command line. For fps and width, FFmpeg in RTSP listen mode
// records the push and ffprobe reads its size and timestamps.
// A simulated X1C's RTSPS camera is pushed the same way, copied from our own loopback server.
// Loopback 127.0.51.1 (GStreamer), .2 (FFmpeg listening), .3 (the P1S), .4 (its proxy), .5 (the X1C), .6 (its proxy).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfig } from "../lib/config.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { ACCESS_CODE, tempDir, until } from "./mqtt-helpers.ts";

const GST_MEDIA = "127.0.51.1";
const FFMPEG_MEDIA = "127.0.51.2";
const P1S = "127.0.51.3";
const P1S_PROXY = "127.0.51.4";
const X1C = "127.0.51.5";
const X1C_PROXY = "127.0.51.6";
/** The status page, where each push has its row. */
const WEB = "127.0.51.7:18190";
const X1C_SERIAL = "00M09A350100051";
const GST_PORT = 18554;
const FFMPEG_PORT = 18555;
const SERIAL = "01P00A000000051";
const PYTHON = "/usr/bin/python3";
const USER = "pandaproxy";
const PASSWORD = "media-secret-5151";
const WRONG_PASSWORD = "not-the-secret-5151";
/** The simulated chamber camera's own rate and width. */
const NATIVE_FPS = 2;
const NATIVE_WIDTH = 640;
const WAIT_MS = 45_000;

let dir: string;
let p1s: SimPrinter;
let x1c: SimPrinter;
let supervisor: Supervisor | undefined;

interface GstMediaServer {
  frames: string[];
  output: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** GStreamer's RECORD server at /<printer>, demanding USER and PASSWORD by `method`. */
async function gstMediaServer(method: "digest" | "basic", printer = "p1s"): Promise<GstMediaServer> {
  const child = spawn(PYTHON, [join(import.meta.dir, "export-rtsp-record-server.py"), GST_MEDIA, String(GST_PORT), `/${printer}`, method], {
    stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RTSP_USER: USER, RTSP_PASSWORD: PASSWORD },
  });
  const server: GstMediaServer = {
    frames: [], output: "", child,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    },
  };
  let partial = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) if (line.startsWith("FRAME ")) server.frames.push(line.slice(6));
    server.output += chunk;
  });
  child.stderr!.on("data", (chunk: Buffer) => void (server.output += chunk));
  await until("GStreamer's RTSP server", () => server.output.includes("READY") || child.exitCode !== null, 15_000);
  if (!server.output.includes("READY")) throw new Error(`GStreamer's RTSP server did not start: ${server.output}`);
  return server;
}

/** Every process's command line on this machine that contains `text` (with `ours`: only this process's children). */
function commandLinesWith(text: string, ours = false): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const line = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces, so read after its closing parenthesis.
      const parent = Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(")").at(-1)!.trim().split(" ")[1]);
      if (line.includes(text) && (!ours || parent === process.pid)) found.push(`${pid}: ${line}`);
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

const configText = (exportKeys: string) => `
[proxy]
state_dir = "${join(dir, "state")}"
[web]
listen = "${WEB}"
[[printer]]
name = "p1s"
host = "${P1S}"
serial = "${SERIAL}"
model = "P1S"
access_code = "${ACCESS_CODE}"
bind = "${P1S_PROXY}"
services = ["camera"]
[[printer]]
name = "x1c"
host = "${X1C}"
serial = "${X1C_SERIAL}"
model = "X1C"
access_code = "${ACCESS_CODE}"
bind = "${X1C_PROXY}"
services = ["camera"]
ports = { rtsp = 10322 }
[export.rtsp]
${exportKeys}
`;

/** Pushes `printer` alone: each media server here takes one path. */
async function runWith(exportKeys: string, printer: "p1s" | "x1c" = "p1s"): Promise<void> {
  const file = join(dir, "printers.toml");
  const text = configText(`${exportKeys}\nskip = ["${printer === "p1s" ? "x1c" : "p1s"}"]`);
  writeFileSync(file, text);
  if (!supervisor) supervisor = await startSupervisor(parseConfig(text, file), { configFile: file });
  else expect(await supervisor.reload()).toBe(true);
}

const gstUrl = `url = "rtsp://${GST_MEDIA}:${GST_PORT}/{printer}"`;

/** The "export rtsp" row of the printer's services in /api/printers, as its own access code sees it. */
async function pushRow(printer = "p1s"): Promise<{ state: string; details: Record<string, unknown> } | undefined> {
  const response = await fetch(`http://${WEB}/api/printers`, { headers: { Authorization: `Basic ${Buffer.from(`bblp:${ACCESS_CODE}`).toString("base64")}` } });
  const printers = (await response.json()) as { name: string; services: { name: string; state: string; details: Record<string, unknown> }[] }[];
  return printers.find((p) => p.name === printer)?.services.find((s) => s.name === "export rtsp");
}

beforeAll(async () => {
  setupLogging("info");
  dir = tempDir("pp-export-rtsp-auth-");
  writeFileSync(join(dir, "media-password"), `${PASSWORD}\n`);
  p1s = await startSimulatedBambu({ host: P1S, model: "P1S", serial: SERIAL, accessCode: ACCESS_CODE, services: ["chamber"], cameraFps: NATIVE_FPS, cameraWidth: NATIVE_WIDTH, cameraHeight: 360 });
  x1c = await startSimulatedBambu({ host: X1C, model: "X1C", serial: X1C_SERIAL, accessCode: ACCESS_CODE, services: ["rtsp"], cameraWidth: 640, cameraHeight: 360 });
});
afterAll(async () => {
  await supervisor?.stop();
  await p1s?.stop();
  await x1c?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("[export.rtsp] to a media server that demands a login", () => {
  test("Digest: the push with the right login is received and decodes; the password is in no log line and no command line", async () => {
    const server = await gstMediaServer("digest");
    const logs = captureLogs();
    try {
      await runWith(`${gstUrl}\nusername = "${USER}"\npassword_file = "${join(dir, "media-password")}"`);
      await until("10 pictures decoded by GStreamer", () => server.frames.length >= 10, WAIT_MS);
      expect(server.frames[0]).toBe(`${NATIVE_WIDTH}x360`);
      // The status page says so, and where to.
      const row = await pushRow();
      expect(row?.state).toBe("pushing");
      expect(row?.details.to).toBe(`rtsp://${GST_MEDIA}:${GST_PORT}/p1s`);
      // While the push runs: its FFmpeg points at our relay, and nothing on this machine has the password in its arguments.
      expect(commandLinesWith("ffmpeg").some((l) => l.includes("rtsp://127.0.0.1:") && l.includes("/p1s"))).toBe(true);
      expect(commandLinesWith(PASSWORD)).toEqual([]);
    } catch (error) {
      throw new Error(`${(error as Error).message}\nGStreamer said: ${server.output.slice(-600)}`);
    } finally {
      logs.stop();
      await server.stop();
    }
    expect(logs.lines.join("\n")).not.toContain(PASSWORD);
  }, 90_000);

  test("Basic: the push with the right login is received and decodes", async () => {
    const server = await gstMediaServer("basic");
    const logs = captureLogs();
    try {
      await runWith(`${gstUrl}\nusername = "${USER}"\npassword = "${PASSWORD}"`);
      await until("5 pictures decoded by GStreamer", () => server.frames.length >= 5, WAIT_MS);
      expect(commandLinesWith(PASSWORD)).toEqual([]);
    } finally {
      logs.stop();
      await server.stop();
    }
    expect(logs.lines.join("\n")).not.toContain(PASSWORD);
  }, 90_000);

  test("Digest: an X1C's RTSPS camera, copied from our own loopback server, is received and decodes", async () => {
    const server = await gstMediaServer("digest", "x1c");
    const logs = captureLogs();
    try {
      await runWith(`${gstUrl}\nusername = "${USER}"\npassword = "${PASSWORD}"`, "x1c");
      await until("10 pictures decoded by GStreamer", () => server.frames.length >= 10, WAIT_MS);
      expect(server.frames[0]).toBe("640x360");
      expect(commandLinesWith(PASSWORD)).toEqual([]);
      // Nor the printer's access code: our FFmpeg reads the X1C through pandaproxy's own loopback server.
      expect(commandLinesWith("ffmpeg", true).length).toBeGreaterThan(0);
      expect(commandLinesWith(ACCESS_CODE, true)).toEqual([]);
    } catch (error) {
      throw new Error(`${(error as Error).message}\nGStreamer said: ${server.output.slice(-600)}`);
    } finally {
      logs.stop();
      await server.stop();
    }
    expect(logs.lines.join("\n")).not.toContain(PASSWORD);
  }, 90_000);

  test("a wrong password: the log says the media server refused the login (no password), and the push waits the long backoff", async () => {
    const server = await gstMediaServer("digest");
    const logs = captureLogs();
    const refusals = () => logs.lines.filter((l) => l.includes("[p1s/export rtsp]") && /refused the login.*Retrying in \d+ s/.test(l));
    try {
      await runWith(`${gstUrl}\nusername = "${USER}"\npassword = "${WRONG_PASSWORD}"`);
      await until("a refused push", () => refusals().length >= 1, WAIT_MS);
      // As a printer that refuses the access code: retrying soon cannot help, so nothing more for a while.
      await Bun.sleep(6_000);
      // The status page shows it as an error, in the media server's words, with what to check.
      const row = await pushRow();
      expect(row?.state).toBe("error: the media server refused the login (ANNOUNCE answered 401); check [export.rtsp] username and password");
      expect(JSON.stringify(row)).not.toContain(WRONG_PASSWORD);
    } finally {
      logs.stop();
      await server.stop();
    }
    const text = logs.lines.join("\n");
    expect(text).toContain(`media server ${GST_MEDIA}:${GST_PORT} refused the login of user "${USER}": check [export.rtsp] username and password`);
    expect(refusals()).toHaveLength(1);
    expect(refusals()[0]).toContain("check [export.rtsp] username and password. Retrying in 60 s");
    expect(refusals()[0]).not.toContain("access_code");
    expect(server.frames).toEqual([]);
    expect(text).not.toContain(WRONG_PASSWORD);
    expect(text).not.toContain(PASSWORD);
  }, 90_000);
});

/** FFmpeg as the media server: one publisher on /p1s, `frames` frames copied to a file. */
function ffmpegMediaServer(frames: number): { file: string; done: Promise<string>; child: ChildProcess } {
  const file = join(dir, `p1s-${Date.now()}.mkv`);
  const child = spawn("ffmpeg", ["-hide_banner", "-nostdin", "-loglevel", "warning", "-rtsp_flags", "listen", "-listen_timeout", "40",
    "-i", `rtsp://${FFMPEG_MEDIA}:${FFMPEG_PORT}/p1s`, "-map", "0:v", "-c", "copy", "-frames:v", String(frames), "-y", file], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk) => (stderr += chunk));
  const done = new Promise<string>((resolve) => child.once("exit", (code) => resolve(`exit ${code}: ${stderr.slice(-400)}`)));
  return { file, done, child };
}

/** What ffprobe reads in the recording: the picture width, the median time between frames, the key frames. */
function probeShape(file: string): { codec: string; width: number; frameSeconds: number; keyFrames: number } {
  const stream = spawnSync("ffprobe", ["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width", "-of", "csv=p=0", file], { encoding: "utf8" });
  const [codec = "", width = "0"] = stream.stdout.trim().split(",");
  const packets = spawnSync("ffprobe", ["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0", file], { encoding: "utf8" });
  const rows = packets.stdout.trim().split("\n").map((l) => l.split(","));
  const times = rows.map(([t]) => Number(t)).filter(Number.isFinite).sort((a, b) => a - b);
  const gaps = times.slice(1).map((t, i) => t - times[i]!).sort((a, b) => a - b);
  const keyFrames = rows.filter(([, flags]) => flags?.startsWith("K")).length;
  return { codec, width: Number(width), frameSeconds: gaps[Math.floor(gaps.length / 2)] ?? 0, keyFrames };
}

async function recordShape(exportKeys: string, frames: number) {
  const server = ffmpegMediaServer(frames);
  try {
    await runWith(`url = "rtsp://${FFMPEG_MEDIA}:${FFMPEG_PORT}/{printer}"\n${exportKeys}`);
    const how = await Promise.race([server.done, Bun.sleep(WAIT_MS).then(() => "no recording in time")]);
    const shape = probeShape(server.file);
    if (!shape.codec) throw new Error(`nothing recorded: ${how}`);
    return shape;
  } finally {
    server.child.kill("SIGKILL");
  }
}

describe("[export.rtsp] fps and width for a chamber camera's H.264", () => {
  test("by default: the camera's own rate (each picture one frame) and size", async () => {
    const shape = await recordShape("", 9);
    expect(shape.codec).toBe("h264");
    // A key frame every KEY_FRAME_SECONDS of pictures, not every 30 pictures (nor every one): 9 pictures at 2 a second hold 3.
    expect(shape.keyFrames).toBeGreaterThanOrEqual(2);
    expect(shape.keyFrames).toBeLessThanOrEqual(5);
    expect(shape.width).toBe(NATIVE_WIDTH);
    // Pictures stamped as they arrive, NATIVE_FPS a second: the wall clock's jitter allowed for.
    expect(shape.frameSeconds).toBeGreaterThan(1 / NATIVE_FPS - 0.15);
    expect(shape.frameSeconds).toBeLessThan(1 / NATIVE_FPS + 0.15);
  }, 90_000);

  test("fps = 6 and width = 320: a constant 6 frames a second, 320 pixels wide", async () => {
    const shape = await recordShape("fps = 6\nwidth = 320", 18);
    expect(shape).toEqual({ codec: "h264", width: 320, frameSeconds: expect.closeTo(1 / 6, 2), keyFrames: expect.any(Number) });
    expect(shape.keyFrames).toBeGreaterThanOrEqual(2);
  }, 90_000);
});
