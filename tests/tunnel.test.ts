import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import {
  CMD_FILE_UPLOAD, CMD_LIST_INFO, CMD_MEDIA_ABILITY, decodeTunnelHeader, encodeTunnelLogin, encodeTunnelMessage, TO_CLIENT,
  TUNNEL_HEADER_SIZE, type SimTunnel,
} from "../lib/sim/tunnel.ts";
import { createTunnelService } from "../lib/bambu/tunnel.ts";
import { encodeLogin } from "../lib/bambu/chamber-codec.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { ACCESS_CODE, proxyContext, waitFor } from "./chamber-fixtures.ts";

const SIM = "127.0.4.60";
const PROXY = "127.0.4.61";

interface Reply {
  sequence: number;
  direction: number;
  body: { cmdtype: number; sequence: number; result: number; reply: Record<string, unknown> };
}

/** A Bambu Studio-like tunnel session: TLS, the login, then JSON requests answered in order. */
function session(host: string, login: Buffer[]) {
  const replies: Reply[] = [];
  let buffer = Buffer.alloc(0);
  let received = 0;
  const waiters = new Set<() => void>();
  const socket: TLSSocket = tlsConnect({ host, port: 6000, rejectUnauthorized: false });
  // Written now so they go out before any request (writes are queued until the handshake is done).
  for (const part of login) socket.write(part);
  socket.on("error", () => {});
  socket.on("data", (chunk: Buffer) => {
    received += chunk.length;
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      const header = decodeTunnelHeader(buffer);
      if (!header || buffer.length < TUNNEL_HEADER_SIZE + header.length) break;
      const body = JSON.parse(buffer.subarray(TUNNEL_HEADER_SIZE, TUNNEL_HEADER_SIZE + header.length).toString());
      buffer = buffer.subarray(TUNNEL_HEADER_SIZE + header.length);
      replies.push({ sequence: header.sequence, direction: header.direction, body });
    }
    for (const w of waiters) w();
  });
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  return {
    socket,
    closed,
    get received() {
      return received;
    },
    async request(cmdtype: number, sequence: number, req: Record<string, unknown> = {}): Promise<Reply> {
      for (const part of encodeTunnelMessage({ cmdtype, sequence, req }, sequence)) socket.write(part);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply to sequence ${sequence}`)), 5_000);
        const check = () => {
          const reply = replies.find((r) => r.sequence === sequence);
          if (!reply) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(reply);
        };
        waiters.add(check);
        check();
      });
    },
  };
}

describe("file tunnel relay (P2S port 6000) against the simulated tunnel peer", () => {
  let sim: SimPrinter;
  let proxy: Service;
  const tunnel = () => sim.service<SimTunnel>("tunnel")!;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSimulatedBambu({ host: SIM, model: "P2S", serial: "01P00A000000001", accessCode: ACCESS_CODE, services: ["tunnel"] });
    proxy = createTunnelService(proxyContext({ name: "p2s", proxy: PROXY, printer: SIM }));
    await proxy.start();
  });
  afterAll(async () => {
    await proxy?.stop();
    await sim?.stop();
  });

  test("the simulated peer answers a listing directly", async () => {
    const direct = session(SIM, encodeTunnelLogin(ACCESS_CODE));
    const reply = await direct.request(CMD_LIST_INFO, 1, { path: "/" });
    expect(reply.direction).toBe(TO_CLIENT);
    expect(reply.body.result).toBe(0);
    direct.socket.destroy();
  });

  test("several sessions at once each get their own answers through the proxy, one printer session each", async () => {
    const before = tunnel().connections;
    // The third logs in with the bare 64-byte form the other source describes.
    const bare = Buffer.alloc(64);
    bare.write("bblp", 0);
    bare.write(ACCESS_CODE, 8);
    const sessions = [encodeTunnelLogin(ACCESS_CODE), encodeTunnelLogin(ACCESS_CODE), [bare]].map((login) => session(PROXY, login));
    const replies = await Promise.all(sessions.map((s, i) => s.request(CMD_LIST_INFO, 100 + i, { path: "/" })));
    replies.forEach((r, i) => {
      expect(r.body).toMatchObject({ cmdtype: CMD_LIST_INFO, sequence: 100 + i, result: 0 });
      expect((r.body.reply.file_lists as { name: string }[]).map((f) => f.name)).toContain("benchy.gcode.3mf");
    });
    const ability = await sessions[1]!.request(CMD_MEDIA_ABILITY, 7);
    expect(ability.body.reply.file_upload).toBe(true);
    expect(tunnel().connections - before).toBe(3);
    expect(proxy.status().clients).toBe(3);
    for (const s of sessions) s.socket.destroy();
    await waitFor("the printer sessions to end", () => tunnel().sessions === 0);
  });

  test("a large upload is relayed intact", async () => {
    const studio = session(PROXY, encodeTunnelLogin(ACCESS_CODE));
    const data = Buffer.alloc(3 * 1024 * 1024, 7);
    const reply = await studio.request(CMD_FILE_UPLOAD, 9, { path: "/model.gcode.3mf", data: data.toString("base64") });
    expect(reply.body.reply.received).toBe(data.length);
    studio.socket.destroy();
  });

  test("a wrong access code is refused by the proxy before the printer is touched", async () => {
    const logs = captureLogs();
    try {
      const before = tunnel().connections;
      const intruder = session(PROXY, encodeTunnelLogin("00000000"));
      await intruder.closed;
      expect(intruder.received).toBe(0);
      expect(tunnel().connections).toBe(before);
      expect(logs.lines.some((l) => l.includes("[p2s/tunnel]") && l.includes("wrong user or access code"))).toBe(true);
    } finally {
      logs.stop();
    }
  });

  test("a camera login on a tunnel printer is relayed and gets the printer's short acknowledgement", async () => {
    const camera = session(PROXY, [encodeLogin({ username: "bblp", accessCode: ACCESS_CODE })]);
    await camera.closed;
    expect(camera.received).toBe(24);
  });
});

describe("file tunnel deadlines (127.0.22.40-42)", () => {
  const EDGE_SIM = "127.0.22.40";
  const EDGE_PROXY = "127.0.22.41";
  const IDLE_MS = 600;
  let sim: SimPrinter;
  let proxy: Service;
  const tunnel = () => sim.service<SimTunnel>("tunnel")!;

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSimulatedBambu({ host: EDGE_SIM, model: "P2S", serial: "01P00A000000001", accessCode: ACCESS_CODE, services: ["tunnel"] });
    proxy = createTunnelService(proxyContext({ name: "p2s", proxy: EDGE_PROXY, printer: EDGE_SIM }), { idleTimeoutMs: IDLE_MS, loginTimeoutMs: 500, endDestroyMs: 300 });
    await proxy.start();
  });
  afterAll(async () => {
    await proxy?.stop();
    await sim?.stop();
  });

  test("a session with no bytes either way is closed after the idle time with a log line; a busy one stays", async () => {
    const logs = captureLogs();
    const idle = session(EDGE_PROXY, encodeTunnelLogin(ACCESS_CODE));
    const busy = session(EDGE_PROXY, encodeTunnelLogin(ACCESS_CODE));
    let busyClosed = false;
    void busy.closed.then(() => (busyClosed = true));
    try {
      await idle.request(CMD_LIST_INFO, 1, { path: "/" });
      const started = Date.now();
      let sequence = 10;
      // Busy: a request every 200 ms, for twice the idle time.
      const working = (async () => {
        while (Date.now() - started < 2 * IDLE_MS) {
          await busy.request(CMD_MEDIA_ABILITY, sequence++);
          await Bun.sleep(200);
        }
      })();
      await idle.closed;
      expect(Date.now() - started).toBeGreaterThanOrEqual(IDLE_MS - 50);
      expect(Date.now() - started).toBeLessThan(IDLE_MS + 700);
      await working;
      expect(busyClosed).toBe(false);
      await waitFor("the idle session's printer side to close", () => tunnel().sessions === 1);
    } finally {
      logs.stop();
      busy.socket.destroy();
      idle.socket.destroy();
    }
    expect(logs.lines.filter((l) => l.includes("[p2s/tunnel]") && l.includes(`no bytes either way for ${IDLE_MS / 1000} s`))).toHaveLength(1);
  });
});
