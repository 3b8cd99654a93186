// Helpers for the chamber camera tests: a viewer that logs in and records frames, a proxy context, a python
// client that reads like Home Assistant's integration.
import { serviceContext } from "./support.ts";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { spawn } from "node:child_process";
import { type ServiceContext } from "../lib/core/service.ts";
import { createFrameParser, encodeLogin, type ParsedFrame } from "../lib/bambu/chamber-codec.ts";
import { readJpegStamp } from "../lib/sim/jpeg-picture.ts";

export const ACCESS_CODE = "12345678";
export const VIEWER_CODE = "87654321";

export function proxyContext(options: { name: string; proxy: string; printer: string; printerPort?: number; accessCode?: string; extra?: string }): ServiceContext {
  return serviceContext(
    `name = "${options.name}"\nhost = "${options.printer}"\nserial = "01P00A000000001"\n` +
      `access_code = "${options.accessCode ?? ACCESS_CODE}"\nviewer_access_code = "${VIEWER_CODE}"\nbind = "${options.proxy}"\nmodel = "P1S"\n` +
      (options.printerPort ? `printer_ports = { chamber = ${options.printerPort} }\n` : "") +
      (options.extra ?? ""),
  );
}

export interface SeenFrame extends ParsedFrame {
  /** The simulator's frame number (from the JPEG comment), or -1. */
  sequence: number;
  at: number;
}

export interface TestViewer {
  socket: TLSSocket;
  frames: SeenFrame[];
  /** Bytes received in total (for "got nothing" checks). */
  readonly bytes: number;
  closed: Promise<void>;
  readonly isClosed: boolean;
  /** Resolves when `count` more frames have arrived (rejects after timeoutMs). */
  moreFrames(count: number, timeoutMs?: number): Promise<void>;
  close(): void;
}

export function sequenceOf(jpeg: Buffer): number {
  const stamp = readJpegStamp(jpeg);
  return stamp ? Number(stamp.split(" ")[1]) : -1;
}

export function watch(host: string, port: number, login: { username?: string; accessCode: string } | Buffer): TestViewer {
  const frames: SeenFrame[] = [];
  let bytes = 0;
  let isClosed = false;
  const waiters = new Set<() => void>();
  const socket = tlsConnect({ host, port, rejectUnauthorized: false }, () => {
    socket.write(Buffer.isBuffer(login) ? login : encodeLogin({ username: login.username ?? "bblp", accessCode: login.accessCode }));
  });
  const parser = createFrameParser((event) => {
    if (event.kind !== "frame") return;
    frames.push({ ...event.frame, sequence: sequenceOf(event.frame.jpeg), at: performance.now() });
    for (const w of waiters) w();
  });
  socket.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
    parser.push(chunk);
  });
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => {
    isClosed = true;
    for (const w of waiters) w();
    resolve();
  }));
  return {
    socket,
    frames,
    get bytes() {
      return bytes;
    },
    closed,
    get isClosed() {
      return isClosed;
    },
    moreFrames(count, timeoutMs = 5_000) {
      const target = frames.length + count;
      return new Promise((resolve, reject) => {
        const check = () => {
          if (frames.length >= target) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve();
          } else if (isClosed) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`viewer closed after ${frames.length} frames, wanted ${target}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`only ${frames.length} frames after ${timeoutMs} ms, wanted ${target}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    close: () => socket.destroy(),
  };
}

export async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/** Reads frames the way ha-bambulab's chamber thread does: 4096-byte reads, a 16-byte read is a header. */
const HA_CLIENT = `
import socket, ssl, struct, sys
host, port, code, want = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection((host, port), timeout=10))
s.send(struct.pack("<IIQ", 0x40, 0x3000, 0) + b"bblp".ljust(32, b"\\0") + code.encode().ljust(32, b"\\0"))
img = None; size = 0; frames = 0
while frames < want:
    d = s.recv(4096)
    if img is not None and len(d) > 0:
        img += d
        if len(img) > size: print("OVERRUN"); sys.exit(2)
        if len(img) == size:
            if img[:2] != b"\\xff\\xd8" or img[-2:] != b"\\xff\\xd9": print("NOT JPEG"); sys.exit(3)
            frames += 1; img = None
    elif len(d) == 16:
        img = bytearray(); size = struct.unpack("<I", d[:4])[0]
    elif len(d) == 0:
        print("CLOSED after", frames); sys.exit(4)
    else:
        print("UNEXPECTED read of", len(d), "bytes where a 16-byte header should be"); sys.exit(5)
print("OK", frames)
`;

export function haClient(host: string, port: number, accessCode: string, frames: number): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn("python3", ["-c", HA_CLIENT, host, String(port), accessCode, String(frames)]);
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const timer = setTimeout(() => child.kill(), 20_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, output: output.trim() });
    });
  });
}

/** A viewer with a tiny receive buffer that reads one frame, stops reading for a while, then reads on:
 * prints the simulator's frame numbers it saw, one per line, and "CLOSED" when the proxy hung up. */
const SLOW_CLIENT = `
import socket, ssl, struct, sys, time
host, port, code, pause, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
raw = socket.socket(); raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); raw.settimeout(10)
raw.connect((host, port))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(raw)
s.send(struct.pack("<IIQ", 0x40, 0x3000, 0) + b"bblp".ljust(32, b"\\0") + code.encode().ljust(32, b"\\0"))
buf = b""
def need(n):
    global buf
    while len(buf) < n:
        d = s.recv(65536)
        if not d: print("CLOSED", flush=True); sys.exit(0)
        buf += d
    out, buf = buf[:n], buf[n:]
    return out
def frame():
    size = struct.unpack("<I", need(16)[:4])[0]
    jpeg = need(size)
    at = 2  # the stamp (a COM segment) follows SOI, and APP0 when there is one, as real frames start
    if jpeg[2:4] == b"\\xff\\xe0": at = 4 + struct.unpack(">H", jpeg[4:6])[0]
    if jpeg[at:at + 2] == b"\\xff\\xfe":
        n = struct.unpack(">H", jpeg[at + 2:at + 4])[0]
        print(jpeg[at + 4:at + 2 + n].decode().split(" ")[1], flush=True)
frame()
time.sleep(pause)
try:
    for i in range(after): frame()
except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
    print("CLOSED", flush=True)
`;

export function slowClient(host: string, port: number, accessCode: string, pauseSeconds: number, framesAfter: number): Promise<string[]> {
  return new Promise((resolve) => {
    const child = spawn("python3", ["-c", SLOW_CLIENT, host, String(port), accessCode, String(pauseSeconds), String(framesAfter)]);
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const timer = setTimeout(() => child.kill(), 30_000);
    child.on("close", () => {
      clearTimeout(timer);
      resolve(output.trim().split("\n"));
    });
  });
}
