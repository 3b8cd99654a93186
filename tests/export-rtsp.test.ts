// [export.rtsp]: FFmpeg in RTSP listen mode plays the media server (it accepts one ANNOUNCE/RECORD and records it);
// pandaproxy (the supervisor, as `pandaproxy run` builds it) pushes a simulated P1S's chamber JPEGs (encoded to
// H.264) and a simulated X1C's RTSPS stream (copied from our own loopback server); ffprobe counts the frames
// that arrived. Loopback 127.0.44.30 (media server), .31/.32 (P1S, its proxy), .33/.34 (X1C, its proxy).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfig, ConfigErrors } from "../lib/config.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { RTSP_EXPORT_KEYS } from "../lib/export/config.ts";
import { ACCESS_CODE, tempDir } from "./mqtt-helpers.ts";

const MEDIA = "127.0.44.30";
const P1S = "127.0.44.31";
const P1S_PROXY = "127.0.44.32";
const X1C = "127.0.44.33";
const X1C_PROXY = "127.0.44.34";
const MEDIA_PORT = 18554;
const P1S_SERIAL = "01P00A000000044";
const X1C_SERIAL = "00M09A350100044";
/** Frames the media server records before it stops; a push that decodes gives them all. */
const RECORDED_FRAMES = 10;
const LISTEN_SECONDS = 45;
/** The media server starts this long after the push, which meanwhile fails and waits its backoff. */
const MEDIA_SERVER_LATE_MS = 3_000;

let dir: string;
let p1s: SimPrinter;
let x1c: SimPrinter;
let supervisor: Supervisor | undefined;

/** FFmpeg as the media server: waits for one publisher on `path`, records RECORDED_FRAMES frames to a file. */
function mediaServer(path: string): { file: string; done: Promise<string>; child: ChildProcess } {
  const file = join(dir, `${path}.mkv`);
  const child = spawn("ffmpeg", ["-hide_banner", "-nostdin", "-loglevel", "warning", "-rtsp_flags", "listen", "-listen_timeout", String(LISTEN_SECONDS),
    "-i", `rtsp://${MEDIA}:${MEDIA_PORT}/${path}`, "-map", "0:v", "-c", "copy", "-frames:v", String(RECORDED_FRAMES), "-y", file], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk) => (stderr += chunk));
  const done = new Promise<string>((resolve) => child.once("exit", (code) => resolve(`exit ${code}: ${stderr.slice(-400)}`)));
  return { file, done, child };
}

/** ffprobe decodes the recording: codec and frames read. */
function probe(file: string): { codec: string; frames: number } {
  const out = spawnSync("ffprobe", ["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=codec_name,nb_read_frames", "-of", "csv=p=0", file], { encoding: "utf8" });
  const [codec = "", frames = "0"] = out.stdout.trim().split(",");
  return { codec, frames: Number(frames) };
}

const printers = (exportKeys: string) => `
[proxy]
state_dir = "${join(dir, "state")}"
[web]
listen = ""
[[printer]]
name = "p1s"
host = "${P1S}"
serial = "${P1S_SERIAL}"
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

beforeAll(async () => {
  setupLogging("info");
  dir = tempDir("pp-export-rtsp-");
  p1s = await startSimulatedBambu({ host: P1S, model: "P1S", serial: P1S_SERIAL, accessCode: ACCESS_CODE, services: ["chamber"] });
  x1c = await startSimulatedBambu({ host: X1C, model: "X1C", serial: X1C_SERIAL, accessCode: ACCESS_CODE, services: ["rtsp"] });
});
afterAll(async () => {
  await supervisor?.stop();
  await p1s?.stop();
  await x1c?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Pushes `name` alone (the other skipped: the media server is one listener) and returns what it recorded. */
async function recordPushOf(name: "p1s" | "x1c", serverLateMs = 0): Promise<{ name: string; codec: string; frames: number; how: string }> {
  let server = serverLateMs ? undefined : mediaServer(name);
  const file = join(dir, "printers.toml");
  const text = printers(`url = "rtsp://${MEDIA}:${MEDIA_PORT}/{printer}"\nskip = ["${name === "p1s" ? "x1c" : "p1s"}"]`);
  writeFileSync(file, text);
  try {
    if (!supervisor) supervisor = await startSupervisor(parseConfig(text, file), { configFile: file });
    else expect(await supervisor.reload()).toBe(true);
    if (!server) {
      await Bun.sleep(serverLateMs);
      server = mediaServer(name);
    }
    const how = await Promise.race([server.done, Bun.sleep((LISTEN_SECONDS + 15) * 1000).then(() => "no recording in time")]);
    const { codec, frames } = probe(server.file);
    return { name, codec, frames, how: frames >= RECORDED_FRAMES ? "" : how };
  } finally {
    server?.child.kill("SIGKILL");
  }
}

describe("[export.rtsp] to an RTSP server in RECORD mode", () => {
  test("the P1S's chamber JPEGs arrive encoded as H.264 that decodes", async () => {
    const logs = captureLogs();
    expect(await recordPushOf("p1s")).toEqual({ name: "p1s", codec: "h264", frames: RECORDED_FRAMES, how: "" });
    logs.stop();
    expect(logs.lines.join("\n")).not.toContain(ACCESS_CODE);
  }, 90_000);

  test("the X1C's RTSPS stream arrives copied from our own loopback server, and decodes", async () => {
    const logs = captureLogs();
    expect(await recordPushOf("x1c")).toEqual({ name: "x1c", codec: "h264", frames: RECORDED_FRAMES, how: "" });
    logs.stop();
    expect(logs.lines.join("\n")).not.toContain(ACCESS_CODE);
  }, 90_000);

  test("a media server that is not up yet: the push is retried with backoff and records once it is", async () => {
    const logs = captureLogs();
    expect(await recordPushOf("p1s", MEDIA_SERVER_LATE_MS)).toEqual({ name: "p1s", codec: "h264", frames: RECORDED_FRAMES, how: "" });
    logs.stop();
    expect(logs.lines.some((l) => l.includes("[p1s/export rtsp]") && /retry|backoff|FFmpeg exited/i.test(l))).toBe(true);
  }, 90_000);

  test("config problems name the key", () => {
    const problems = (keys: string) => {
      try {
        parseConfig(printers(keys), "printers.toml");
        return [];
      } catch (error) {
        return (error as ConfigErrors).problems;
      }
    };
    expect(RTSP_EXPORT_KEYS).toEqual(["url", "username", "password", "password_file", "fps", "width", "skip"]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nskip = ["x1c"]`)).toEqual([]);
    expect(problems(`url = "rtsp://mediamtx:8554/cam"`)).toEqual([expect.stringContaining(`key "url" is "rtsp://mediamtx:8554/cam" without {printer}`)]);
    expect(problems(`url = "http://mediamtx/{printer}"`)).toEqual([expect.stringContaining(`key "url" is "http://mediamtx/{printer}"`)]);
    expect(problems(`url = "rtsp://u:pw@mediamtx:8554/{printer}"`).join("\n")).not.toContain("pw");
    expect(problems(`url = "rtsp://u:pw@mediamtx:8554/{printer}"`)).toEqual([expect.stringContaining("put them in username and password")]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nusername = "pp"\npassword = "secret-pw"\nfps = 5\nwidth = 640`)).toEqual([]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\npassword = "secret-pw"`)).toEqual([expect.stringContaining(`key "username" is missing`)]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nusername = "pp"\npassword = "secret-pw"\npassword_file = "/x"`).join("\n")).toContain(`key "password_file" and password are both set`);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nusername = "pp"\npassword_file = "/nonexistent/pw"`)).toEqual([expect.stringContaining(`key "password_file" "/nonexistent/pw" cannot be read`)]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nfps = 0`)).toEqual([expect.stringContaining(`key "fps" is 0`)]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nwidth = 641`)).toEqual([expect.stringContaining(`key "width" is 641`)]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nwidth = "640"`)).toEqual([expect.stringContaining(`key "width" must be a whole number`)]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nskip = ["ad5m"]`)).toEqual([expect.stringContaining(`key "skip" names "ad5m"`)]);
    expect(problems(`url = "rtsp://mediamtx:8554/{printer}"\nuser = "x"`)).toEqual([expect.stringContaining(`key "user" is unknown`)]);
  });
});
