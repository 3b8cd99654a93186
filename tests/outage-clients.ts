// Clients that ride out a printer's outage the way real ones do, shared by tests/outage-*.test.ts: FFmpeg reading
// the RTSP camera, an FTPS control connection driven line by line, a FlashForge console client, an npm `mqtt`
// client and a chamber viewer that logs in again when closed. Each notes
// when it last got something, so a test can say "streaming/answering again within 15 s of the return".
import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import mqtt, { type MqttClient } from "mqtt";
import { readJpegStamp } from "../lib/sim/jpeg-picture.ts";
import { watch, type TestViewer } from "./chamber-fixtures.ts";

/** FFmpeg decoding an RTSP(S) stream to nothing; `frames` is its own count (its -stats lines), with when it grew. */
export function ffmpegReader(url: string, options: { maxMs: number }) {
  const child = Bun.spawn(
    ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-stats", "-stats_period", "0.5", "-rtsp_transport", "tcp", "-i", url, "-f", "null", "-"],
    { stdout: "ignore", stderr: "pipe", stdin: "ignore" },
  );
  const deadline = setTimeout(() => child.kill("SIGKILL"), options.maxMs);
  const seen = { frames: 0, grewAt: 0, stderr: "", exited: undefined as number | undefined };
  void child.exited.then((code) => {
    clearTimeout(deadline);
    seen.exited = code;
  });
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      const text = decoder.decode(chunk);
      seen.stderr = (seen.stderr + text).slice(-4_000);
      for (const m of text.matchAll(/frame=\s*(\d+)/g)) {
        const n = Number(m[1]);
        if (n > seen.frames) {
          seen.frames = n;
          seen.grewAt = Date.now();
        }
      }
    }
  })();
  return {
    seen,
    stop() {
      clearTimeout(deadline);
      child.kill("SIGKILL");
      return child.exited;
    },
  };
}

/** An implicit-TLS FTP control connection: `ask` sends one line and resolves to the next final reply line. */
export function ftpsControl(host: string, port = 990) {
  const socket: TLSSocket = tlsConnect({ host, port, rejectUnauthorized: false });
  socket.setTimeout(15 * 60_000, () => socket.destroy());
  const seen = { replies: [] as string[], closedAt: 0 };
  let buffered = "";
  let waiter: ((line: string) => void) | undefined;
  socket.on("error", () => {});
  socket.on("close", () => {
    seen.closedAt = Date.now();
    waiter?.("closed");
  });
  socket.on("data", (b: Buffer) => {
    buffered += b.toString("latin1");
    for (let end = buffered.indexOf("\r\n"); end >= 0; end = buffered.indexOf("\r\n")) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      // Final reply lines: three digits and a space (multi-line replies end with one).
      if (!/^\d{3} /.test(line)) continue;
      seen.replies.push(line);
      const w = waiter;
      waiter = undefined;
      w?.(line);
    }
  });
  const next = (timeoutMs: number) =>
    new Promise<string>((resolve) => {
      const timer = setTimeout(() => {
        waiter = undefined;
        resolve("timeout");
      }, timeoutMs);
      waiter = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
  return {
    socket,
    seen,
    /** The greeting (or the next reply if it already came). */
    greeting: (timeoutMs = 10_000) => (seen.replies.length ? Promise.resolve(seen.replies[0]!) : next(timeoutMs)),
    ask(line: string, timeoutMs = 20_000): Promise<string> {
      if (socket.destroyed) return Promise.resolve("closed");
      const reply = next(timeoutMs);
      socket.write(`${line}\r\n`);
      return reply;
    },
    close: () => socket.destroy(),
  };
}

/** A FlashForge console client that asks `~M27` and waits for the whole reply (up to "ok"). */
export async function flashforgeConsole(host: string, port = 8899) {
  const socket: Socket = netConnect({ host, port });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  socket.setTimeout(15 * 60_000, () => socket.destroy());
  const seen = { text: "", closedAt: 0 };
  let wake: (() => void) | undefined;
  socket.on("error", () => {});
  socket.on("close", () => {
    seen.closedAt = Date.now();
    wake?.();
  });
  socket.on("data", (b: Buffer) => {
    seen.text += b.toString("latin1");
    wake?.();
  });
  return {
    socket,
    seen,
    /** Sends `line` and resolves to the reply text (through "ok"), "closed", or "timeout". */
    async ask(line: string, timeoutMs: number): Promise<string> {
      const from = seen.text.length;
      socket.write(`${line}\r\n`);
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const text = seen.text.slice(from);
        if (/\bok\r\n/.test(text)) return text;
        if (seen.closedAt) return "closed";
        const left = deadline - Date.now();
        if (left <= 0) return "timeout";
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(left, 200));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    },
    close: () => socket.destroy(),
  };
}

/** The age of a frame when it reached us: our clock then minus the simulator's stamp (same process, same clock). */
export function frameAge(jpeg: Buffer, receivedAt: number): number {
  const stamp = readJpegStamp(jpeg);
  return stamp ? receivedAt - Number(stamp.split(" ")[2]) : Infinity;
}

/**
 * A chamber viewer that logs in again whenever the proxy closes it, a dozen times at most, a second apart, as
 * ha-bambulab's camera thread does. `ages` holds every frame's age on arrival.
 */
export function haViewer(host: string, accessCode: string) {
  const ages: number[] = [];
  let viewer: TestViewer;
  let closes = 0;
  let stopped = false;
  let lastFrameAt = 0;
  const open = () => {
    viewer = watch(host, 6000, { accessCode });
    const seen = viewer.frames;
    const poll = setInterval(() => {
      while (seen.length > 0) {
        const frame = seen.shift()!;
        ages.push(frameAge(frame.jpeg, performance.timeOrigin + frame.at));
        lastFrameAt = Date.now();
      }
    }, 20);
    void viewer.closed.then(async () => {
      clearInterval(poll);
      if (stopped || ++closes > HA_ATTEMPTS) return;
      await Bun.sleep(HA_RETRY_MS);
      if (!stopped) open();
    });
  };
  open();
  return {
    ages,
    get closes() {
      return closes;
    },
    get lastFrameAt() {
      return lastFrameAt;
    },
    stop() {
      stopped = true;
      viewer.close();
    },
  };
}

/** ha-bambulab gives its camera reader about a dozen attempts. */
const HA_ATTEMPTS = 12;
const HA_RETRY_MS = 1_000;

/** An npm `mqtt` client of the proxy, reconnecting on its own every second (mqtt.js's default period). */
export function mqttClient(host: string, serial: string, accessCode: string, keepalive: number) {
  const client: MqttClient = mqtt.connect(`mqtts://${host}:8883`, {
    username: "bblp", password: accessCode, rejectUnauthorized: false, protocolVersion: 4, keepalive,
    // mqtt.js 5 stops reconnecting after a refused CONNACK unless told otherwise (docs/outages.md).
    reconnectPeriod: 1_000, connectTimeout: 5_000, reconnectOnConnackError: true,
  });
  const seen = { closes: 0, refusedUnavailable: 0, lastReportAt: 0 };
  client.on("connect", () => client.subscribe(`device/${serial}/report`));
  client.on("close", () => seen.closes++);
  client.on("error", (error) => {
    if ((error as { code?: number }).code === 3) seen.refusedUnavailable++;
  });
  client.on("message", () => (seen.lastReportAt = Date.now()));
  return { client, seen };
}
