// A minimal simulated "BambuTunnelLocal" peer: port 6000 of P2S/H2/X2D printers carries Bambu Studio's file
// browser and uploads instead of a camera. Enough of it to prove the proxy relays it: the login, a directory
// listing, the media-ability probe and a small upload, each a 16-byte header and a JSON payload in two TLS writes.
// Source: ../shared/PROTOCOLS.md (Doridian/OpenBambuAPI lan-file-tunnel.md; the OpenBambuNetwork captures).
// The two sources disagree on the login; both forms are accepted. The printer side is the simulator's own (this
// file reads and judges the login; the proxy's reader in lib/bambu/tunnel.ts is not used), and both are checked
// against the same golden bytes (tests/golden/).
import { createServer, type Server, type TLSSocket } from "node:tls";
import { readExactly } from "../core/server.ts";
import { printerTlsOptions } from "./printer-tls.ts";
import type { SimIdentity, SimOptions, SimService } from "./types.ts";

export const TUNNEL_HEADER_SIZE = 16;
/** Low half of the magic word (bytes 4..5: 3F 01); byte 6 is the subchannel, byte 7 the direction. */
const MAGIC_LOW = 0x013f;
export const SUBCHANNEL_LOGIN = 0x01;
export const SUBCHANNEL_CONTROL = 0x02;
export const TO_PRINTER = 0x01;
export const TO_CLIENT = 0x00;
/** The framed login's payload: `bblp` and the access code, 8 bytes each, NUL-padded. */
const FRAMED_LOGIN_PAYLOAD = 16;
/** The bare login of the other source: `bblp` in 8 bytes, the code in 32, 24 reserved. */
const BARE_LOGIN_SIZE = 64;
const CAMERA_LOGIN_SIZE = 80;
const CAMERA_LOGIN_ACK_SIZE = 24;
const MAX_PAYLOAD = 16 * 1024 * 1024;
const SIM_TUNNEL_TIMEOUT_MS = 10_000;

export const CMD_LIST_INFO = 1;
export const CMD_FILE_UPLOAD = 5;
export const CMD_MEDIA_ABILITY = 7;

export interface TunnelHeader {
  length: number;
  subchannel: number;
  direction: number;
  sequence: number;
}

export function encodeTunnelHeader(header: TunnelHeader): Buffer {
  const out = Buffer.alloc(TUNNEL_HEADER_SIZE);
  out.writeUInt32LE(header.length, 0);
  out.writeUInt16LE(MAGIC_LOW, 4);
  out[6] = header.subchannel;
  out[7] = header.direction;
  out.writeUInt32LE(header.sequence, 8);
  return out;
}

export function decodeTunnelHeader(bytes: Buffer): TunnelHeader | undefined {
  if (bytes.length < TUNNEL_HEADER_SIZE || bytes.readUInt16LE(4) !== MAGIC_LOW) return undefined;
  return { length: bytes.readUInt32LE(0), subchannel: bytes[6]!, direction: bytes[7]!, sequence: bytes.readUInt32LE(8) };
}

/** The framed login (header + 16 bytes: user and code, 8 bytes each). */
export function encodeTunnelLogin(accessCode: string, sequence = 0): Buffer[] {
  const payload = Buffer.alloc(16);
  payload.write("bblp", 0, "latin1");
  payload.write(accessCode.slice(0, 8), 8, "latin1");
  return [encodeTunnelHeader({ length: payload.length, subchannel: SUBCHANNEL_LOGIN, direction: TO_PRINTER, sequence }), payload];
}

function padded(text: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  out.write(text.slice(0, size), "latin1");
  return out;
}

export type SimTunnelLogin = { kind: "login"; username: Buffer; accessCode: Buffer } | { kind: "camera" } | { kind: "unknown" };

/** Reads the login in either form the sources describe, or tells a chamber camera login (u32 0x40, u32 0x3000). */
export async function readSimTunnelLogin(socket: TLSSocket, timeoutMs: number): Promise<SimTunnelLogin> {
  const first = await readExactly(socket, TUNNEL_HEADER_SIZE, timeoutMs);
  const header = decodeTunnelHeader(first);
  if (header && header.subchannel === SUBCHANNEL_LOGIN && header.length === FRAMED_LOGIN_PAYLOAD) {
    const payload = await readExactly(socket, FRAMED_LOGIN_PAYLOAD, timeoutMs);
    return { kind: "login", username: payload.subarray(0, 8), accessCode: payload.subarray(8, 16) };
  }
  if (first.subarray(0, 8).equals(padded("bblp", 8))) {
    const rest = await readExactly(socket, BARE_LOGIN_SIZE - TUNNEL_HEADER_SIZE, timeoutMs);
    return { kind: "login", username: first.subarray(0, 8), accessCode: Buffer.concat([first, rest]).subarray(8, 40) };
  }
  if (first.readUInt32LE(0) === 0x40 && first.readUInt32LE(4) === 0x3000) return { kind: "camera" };
  return { kind: "unknown" };
}

/** The printer's check: `bblp` and its access code, each NUL-padded to its field. */
export function simTunnelLoginAccepted(login: { username: Buffer; accessCode: Buffer }, accessCode: string): boolean {
  return login.username.equals(padded("bblp", login.username.length)) && login.accessCode.equals(padded(accessCode, login.accessCode.length));
}

export function encodeTunnelMessage(message: unknown, sequence: number, direction = TO_PRINTER): Buffer[] {
  const payload = Buffer.from(JSON.stringify(message));
  return [encodeTunnelHeader({ length: payload.length, subchannel: SUBCHANNEL_CONTROL, direction, sequence }), payload];
}

export interface SimTunnel extends SimService {
  readonly sessions: number;
  readonly connections: number;
  readonly address: { host: string; port: number };
}

export async function startSimulatedTunnel(identity: SimIdentity, _options: SimOptions): Promise<SimTunnel> {
  const sockets = new Set<TLSSocket>();
  let connections = 0;
  const files = [
    { name: "benchy.gcode.3mf", size: 1_843_200, time: 1_700_000_000 },
    { name: "cache", size: 0, type: "dir" },
    { name: "timelapse", size: 0, type: "dir" },
  ];

  const answer = (socket: TLSSocket, sequence: number, request: { cmdtype?: number; req?: Record<string, unknown> }) => {
    const cmdtype = request.cmdtype ?? -1;
    let reply: unknown;
    let result = 0;
    if (cmdtype === CMD_LIST_INFO) reply = { path: request.req?.path ?? "/", file_lists: files };
    else if (cmdtype === CMD_MEDIA_ABILITY) reply = { storage: ["sdcard"], file_upload: true };
    else if (cmdtype === CMD_FILE_UPLOAD) reply = { path: request.req?.path, received: Buffer.from(String(request.req?.data ?? ""), "base64").length };
    else result = 2;
    for (const part of encodeTunnelMessage({ cmdtype, sequence, result, reply }, sequence, TO_CLIENT)) socket.write(part);
  };

  const session = async (socket: TLSSocket) => {
    const login = await readSimTunnelLogin(socket, SIM_TUNNEL_TIMEOUT_MS);
    if (login.kind === "camera") {
      // A camera client on a tunnel printer: the firmware acknowledges and hangs up.
      await readExactly(socket, CAMERA_LOGIN_SIZE - TUNNEL_HEADER_SIZE, SIM_TUNNEL_TIMEOUT_MS);
      socket.end(Buffer.alloc(CAMERA_LOGIN_ACK_SIZE));
      return;
    }
    if (login.kind !== "login" || !simTunnelLoginAccepted(login, identity.accessCode)) return void socket.destroy();

    for (;;) {
      const next = decodeTunnelHeader(await readExactly(socket, TUNNEL_HEADER_SIZE, 24 * 3600_000));
      if (!next || next.length > MAX_PAYLOAD) return void socket.destroy();
      const payload = await readExactly(socket, next.length, SIM_TUNNEL_TIMEOUT_MS);
      let request: { cmdtype?: number; req?: Record<string, unknown> };
      try {
        request = JSON.parse(payload.toString("utf8"));
      } catch {
        return void socket.destroy();
      }
      answer(socket, next.sequence, request);
    }
  };

  const server: Server = createServer(printerTlsOptions(identity.tls, "tunnel"), (socket) => {
    sockets.add(socket);
    connections++;
    socket.on("error", () => socket.destroy());
    socket.once("close", () => sockets.delete(socket));
    session(socket).catch(() => socket.destroy());
  });
  const port = identity.ports.chamber;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(new Error(`simulator: cannot listen for the file tunnel on ${identity.host}:${port}: ${error.message}`)));
    server.listen({ host: identity.host, port, exclusive: true }, () => resolve());
  });

  return {
    name: "tunnel",
    get sessions() {
      return sockets.size;
    },
    get connections() {
      return connections;
    },
    address: { host: identity.host, port },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
