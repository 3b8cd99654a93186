// The simulated chamber camera of an A1/P1 printer: TLS port 6000, the 80-byte login, then frames (a 16-byte
// header as its own TLS record, then a real JPEG). Like the firmware it serves only a few viewers: the next one
// is accepted by TCP but gets no TLS handshake until a slot frees.
// The printer side is the simulator's own: it shares only the pure wire codec with the proxy (decodeLogin and
// encodeFrameHeader in lib/bambu/chamber-codec.ts, checked against tests/golden/), and judges the login itself.
import { createServer, type Server, type Socket } from "node:net";
import { createSecureContext, TLSSocket } from "node:tls";
import { decodeLogin, encodeFrameHeader, LOGIN_SIZE, type ChamberLogin } from "../bambu/chamber-codec.ts";
import { readExactly } from "../core/server.ts";
import { printerTlsOptions } from "./printer-tls.ts";
import { createChamberPicture, stampJpeg } from "./jpeg-picture.ts";
import type { SimIdentity, SimOptions, SimService } from "./types.ts";

/** P1S firmware sends about one frame a second. */
export const DEFAULT_CAMERA_FPS = 1;
export const DEFAULT_CAMERA_MAX_VIEWERS = 2;
export const SIM_HANDSHAKE_TIMEOUT_MS = 10_000;
export const SIM_LOGIN_TIMEOUT_MS = 10_000;
/** Each frame carries this comment (FF FE) so tests and benchmarks can tell frames apart: "<prefix> <seq> <ms>". */
export const SIM_FRAME_STAMP = "pandaproxy-sim";

export interface SimChamber extends SimService {
  /** Viewers holding a slot (handshaking, logging in or watching). */
  readonly viewers: number;
  /** Viewers accepted by TCP, waiting for a slot. */
  readonly waiting: number;
  /** Frames made so far; also the sequence number of the newest. */
  readonly framesMade: number;
  /** TCP connections accepted so far. */
  readonly connections: number;
  readonly address: { host: string; port: number };
}

/** The firmware's check: user `bblp` and the printer's access code, nothing else. */
function loginAccepted(login: ChamberLogin | { error: string }, accessCode: string): boolean {
  return !("error" in login) && login.username === "bblp" && login.accessCode === accessCode;
}

interface Viewer {
  socket: TLSSocket;
  watching: boolean;
  busy: boolean;
}

export async function startSimulatedChamber(identity: SimIdentity, options: SimOptions): Promise<SimChamber> {
  const fps = options.cameraFps ?? DEFAULT_CAMERA_FPS;
  const maxViewers = options.cameraMaxViewers ?? DEFAULT_CAMERA_MAX_VIEWERS;
  const picture = createChamberPicture({ name: identity.name, width: options.cameraWidth, height: options.cameraHeight });
  const secureContext = createSecureContext(printerTlsOptions(identity.tls, "chamber"));
  const slots = new Set<Viewer>();
  const waiting: Socket[] = [];
  const raw = new Set<Socket>();
  let framesMade = 0;
  let connections = 0;
  let ticker: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;

  const tick = (due: number) => {
    ticker = undefined;
    if (stopped || ![...slots].some((v) => v.watching)) return;
    const sequence = ++framesMade;
    const jpeg = stampJpeg(picture.frameAt(), `${SIM_FRAME_STAMP} ${sequence} ${(performance.timeOrigin + performance.now()).toFixed(3)}`);
    const header = encodeFrameHeader(jpeg.length);
    for (const viewer of slots) {
      // A viewer still busy with the previous frame misses this one, as on the printer.
      if (!viewer.watching || viewer.busy) continue;
      viewer.socket.write(header);
      if (!viewer.socket.write(jpeg)) {
        viewer.busy = true;
        viewer.socket.once("drain", () => void (viewer.busy = false));
      }
    }
    const period = 1000 / fps;
    const next = Math.max(due + period, performance.now());
    ticker = setTimeout(() => tick(next), Math.max(0, next - performance.now()));
  };
  const startTicking = () => {
    if (!ticker) {
      const now = performance.now();
      ticker = setTimeout(() => tick(now), 0);
    }
  };

  const release = (viewer: Viewer) => {
    if (!slots.delete(viewer)) return;
    while (waiting.length && slots.size < maxViewers) {
      const next = waiting.shift()!;
      if (!next.destroyed) serve(next);
    }
  };

  const serve = (socket: Socket) => {
    const tlsSocket = new TLSSocket(socket, { isServer: true, secureContext });
    const viewer: Viewer = { socket: tlsSocket, watching: false, busy: false };
    slots.add(viewer);
    tlsSocket.on("error", () => tlsSocket.destroy());
    tlsSocket.once("close", () => release(viewer));
    socket.once("close", () => release(viewer));
    const handshakeTimer = setTimeout(() => tlsSocket.destroy(), SIM_HANDSHAKE_TIMEOUT_MS);
    tlsSocket.once("secure", async () => {
      clearTimeout(handshakeTimer);
      try {
        const login = decodeLogin(await readExactly(tlsSocket, LOGIN_SIZE, SIM_LOGIN_TIMEOUT_MS));
        // The firmware answers a wrong login with nothing at all: it just closes.
        if (!loginAccepted(login, identity.accessCode)) return void tlsSocket.destroy();
        viewer.watching = true;
        startTicking();
      } catch {
        tlsSocket.destroy();
      }
    });
  };

  const server: Server = createServer((socket) => {
    raw.add(socket);
    connections++;
    socket.once("close", () => {
      raw.delete(socket);
      const i = waiting.indexOf(socket);
      if (i >= 0) waiting.splice(i, 1);
    });
    socket.on("error", () => socket.destroy());
    if (slots.size < maxViewers) serve(socket);
    else waiting.push(socket);
  });

  const port = identity.ports.chamber;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(new Error(`simulator: cannot listen for the chamber camera on ${identity.host}:${port}: ${error.message}`)));
    server.listen({ host: identity.host, port, exclusive: true }, () => resolve());
  });
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : port;

  return {
    name: "chamber",
    get viewers() {
      return slots.size;
    },
    get waiting() {
      return waiting.length;
    },
    get framesMade() {
      return framesMade;
    },
    get connections() {
      return connections;
    },
    address: { host: identity.host, port: boundPort },
    async stop() {
      stopped = true;
      if (ticker) clearTimeout(ticker);
      for (const viewer of slots) viewer.socket.destroy();
      for (const socket of raw) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
