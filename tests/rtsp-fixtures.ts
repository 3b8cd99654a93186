// Shared pieces of the RTSP tests: a proxy service context for a printer at a given address, child-process
// helpers for ffprobe/ffmpeg/GStreamer, and a tiny raw RTSP client.
import { serviceContext } from "./support.ts";
import { connect as tlsConnect } from "node:tls";
import { connect as tcpConnect, type Socket } from "node:net";
import { type ServiceContext } from "../lib/core/service.ts";
import { setupLogging } from "../lib/log.ts";
import { authorizationFor } from "../lib/rtsp/auth.ts";
import { createRtspParser, encodeRequest, header, headerAll, type InterleavedFrame, type RtspResponse } from "../lib/rtsp/message.ts";

export const ACCESS_CODE = "31415926";
export const VIEWER_CODE = "27182818";

export function proxyContext(options: { bind: string; printerHost: string; printerRtsp: number; model?: string; plain?: number; serial?: string }): ServiceContext {
  if (!process.env.RTSP_TEST_LOGS) setupLogging("warn", { quiet: true });
  else setupLogging("debug");
  return serviceContext(
    `name = "x1c"\nhost = "${options.printerHost}"\nserial = "${options.serial ?? "00M09A350100123"}"\n` +
      `access_code = "${ACCESS_CODE}"\nviewer_access_code = "${VIEWER_CODE}"\nbind = "${options.bind}"\n` +
      `model = "${options.model ?? "X1C"}"\nservices = ["camera"]\n` +
      `ports = { rtsp = 322, rtsp_plain = ${options.plain ?? 0} }\nprinter_ports = { rtsp = ${options.printerRtsp} }`,
    `[web]\nlisten = ""`,
  );
}

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (killed after `timeoutMs`). */
export async function run(argv: string[], timeoutMs = 30_000): Promise<Ran> {
  const child = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Decodes `frames` video frames from `url` with ffmpeg; resolves to the number of frames decoded. */
export async function ffmpegDecode(url: string, frames: number, timeoutMs = 40_000, transport: "tcp" | "udp" = "tcp"): Promise<{ frames: number; ran: Ran }> {
  const ran = await run(["ffmpeg", "-hide_banner", "-nostdin", "-rtsp_transport", transport, "-i", url, "-frames:v", String(frames), "-f", "null", "-"], timeoutMs);
  const all = [...ran.stderr.matchAll(/frame=\s*(\d+)/g)];
  return { frames: all.length ? Number(all[all.length - 1]![1]) : 0, ran };
}

export interface RawClient {
  socket: Socket;
  request(method: string, uri: string, headers?: [string, string][]): Promise<RtspResponse>;
  frames: InterleavedFrame[];
  onFrame?: (frame: InterleavedFrame) => void;
  close(): void;
}

/** A minimal RTSPS (or, with `plain`, RTSP) client for protocol-level tests (answers challenges when given a
 * password). */
export function rawClient(host: string, port: number, credentials?: { user: string; password: string }, plain = false): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = plain ? tcpConnect({ host, port }, () => resolve(client)) : tlsConnect({ host, port, rejectUnauthorized: false }, () => resolve(client));
    socket.once("error", reject);
    const parser = createRtspParser();
    let cseq = 0;
    let challenges: string[] = [];
    const waiting = new Map<string, (r: RtspResponse) => void>();
    const client: RawClient = {
      socket,
      frames: [],
      async request(method, uri, headers = []) {
        const send = (extra: [string, string][]) =>
          new Promise<RtspResponse>((done) => {
            const id = String(++cseq);
            waiting.set(id, done);
            socket.write(encodeRequest(method, uri, [["CSeq", id], ...headers, ...extra]));
          });
        const auth = () => (credentials && challenges.length ? authorizationFor(challenges, credentials.user, credentials.password, method, uri) : undefined);
        const first = auth();
        let response = await send(first ? [["Authorization", first]] : []);
        if (response.status === 401 && credentials && !first) {
          challenges = headerAll(response.headers, "www-authenticate");
          const second = auth();
          if (second) response = await send([["Authorization", second]]);
        }
        return response;
      },
      close: () => socket.destroy(),
    };
    socket.on("data", (chunk: Buffer) => {
      for (const m of parser.push(chunk)) {
        if (m.kind === "response") {
          const id = header(m.headers, "cseq") ?? "";
          waiting.get(id)?.(m);
          waiting.delete(id);
        } else if (m.kind === "frame") {
          if (client.onFrame) client.onFrame(m);
          else client.frames.push(m);
        }
      }
    });
  });
}

export async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}
