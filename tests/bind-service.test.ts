import { serviceContext } from "./support.ts";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tcpConnect, createServer, type Server, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { type Service, type ServiceContext } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { BIND_MAX_FRAME_BYTES, decodeBindFrame, detectRequest, encodeBindFrame } from "../lib/bambu/bind-codec.ts";
import { createBindService, FIRMWARE_PLACEHOLDER } from "../lib/bambu/bind.ts";

const PROXY = "127.0.6.1";
const SERIAL = "01P00A000000001";
const SILENCE_MS = 300;

function context(extra = ""): ServiceContext {
  return serviceContext(`name = "p1s-left"\nhost = "127.0.6.10"\nserial = "${SERIAL}"\naccess_code = "12345678"\nbind = "${PROXY}"\n${extra}`);
}

/** What a slicer does: connect, send one frame, read until the printer closes. */
function exchange(port: number, tls: boolean, payload: Buffer | undefined, host = PROXY): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket: Socket = tls
      ? tlsConnect({ host, port, ciphers: "AES256-GCM-SHA384", maxVersion: "TLSv1.2", rejectUnauthorized: false }, () => {
          if (payload) socket.write(payload);
        })
      : tcpConnect({ host, port }, () => {
          if (payload) socket.write(payload);
        });
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks)));
  });
}

describe("slicer bind/detect responder", () => {
  let ctx: ServiceContext;
  let bind: Service;

  beforeAll(async () => {
    setupLogging("debug", { quiet: true });
    ctx = context('model = "P1S"\nports = { bind = 3000, bind_tls = 3002 }');
    bind = createBindService(ctx, { silenceMs: SILENCE_MS });
    await bind.start();
  });
  afterAll(async () => {
    await bind?.stop();
  });

  for (const [port, tls] of [[3000, false], [3002, true]] as const) {
    test(`a detect request on ${port}${tls ? " (TLS, AES256-GCM-SHA384 only)" : ""} is answered with the printer's identity, then closed`, async () => {
      ctx.hub.update({ firmware: "01.08.02.00" });
      const reply = await exchange(port, tls, encodeBindFrame(detectRequest("20000")));
      const decoded = decodeBindFrame(reply);
      expect(decoded.kind).toBe("frame");
      if (decoded.kind !== "frame") return;
      expect(decoded.bytes).toBe(reply.length); // one frame, then the close
      const login = (decoded.message as { login: Record<string, unknown> }).login;
      expect(login).toMatchObject({
        bind: "free", command: "detect", connect: "lan", dev_cap: 1, id: SERIAL, model: "C12", name: "p1s-left", version: "01.08.02.00",
      });
      expect(typeof login.sequence_id).toBe("number");
      expect(login.sequence_id).not.toBe(20000);
    });
  }

  test("each exchange gets a new sequence_id of our own", async () => {
    const ids = [];
    for (let i = 0; i < 2; i++) {
      const d = decodeBindFrame(await exchange(3000, false, encodeBindFrame(detectRequest("20000"))));
      ids.push(d.kind === "frame" ? (d.message as { login: { sequence_id: number } }).login.sequence_id : undefined);
    }
    expect(ids[0]).toBeNumber();
    expect(ids[1]).toBe(ids[0]! + 1);
  });

  test("a request split into single bytes is still answered", async () => {
    const frame = encodeBindFrame(detectRequest());
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const socket = tcpConnect({ host: PROXY, port: 3000 }, async () => {
        for (const byte of frame) {
          socket.write(Buffer.from([byte]));
          await Bun.sleep(1);
        }
      });
      socket.on("data", (c: Buffer) => chunks.push(c));
      socket.on("error", reject);
      socket.on("close", () => resolve(Buffer.concat(chunks)));
    });
    expect(decodeBindFrame(reply).kind).toBe("frame");
  });

  const refusals: [string, Buffer | undefined, string][] = [
    ["garbage", Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "not a bind frame"],
    ["an oversize length", Buffer.from([0xa5, 0xa5, (BIND_MAX_FRAME_BYTES + 100) & 0xff, (BIND_MAX_FRAME_BYTES + 100) >> 8]), "limit"],
    ["a frame that is not a detect request", encodeBindFrame({ login: { command: "bind", sequence_id: "1" } }), "not a detect request"],
    ["silence", undefined, "no complete detect request"],
  ];
  for (const [what, payload, logged] of refusals) {
    for (const [port, tls] of [[3000, false], [3002, true]] as const) {
      test(`${what} on ${port} gets a clean close with a log line and no reply`, async () => {
        const logs = captureLogs();
        try {
          const reply = await exchange(port, tls, payload);
          expect(reply.length).toBe(0);
          expect(logs.lines.some((l) => l.includes("[p1s-left/bind]") && l.includes(logged))).toBe(true);
        } finally {
          logs.stop();
        }
      });
    }
  }

  test("the service still answers after all that", async () => {
    expect(decodeBindFrame(await exchange(3002, true, encodeBindFrame(detectRequest()))).kind).toBe("frame");
    expect(bind.status().state).toBe("listening");
  });
});

describe("bind responder identity and ports", () => {
  test("the model code comes from MQTT (hub) before the serial prefix; the version is never empty", async () => {
    setupLogging("debug", { quiet: true });
    const ctx = context(`ports = { bind = 43000, bind_tls = 43002 }`);
    const bind = createBindService(ctx);
    await bind.start();
    try {
      let d = decodeBindFrame(await exchange(43000, false, encodeBindFrame(detectRequest())));
      expect(d.kind === "frame" && (d.message as { login: object }).login).toMatchObject({ model: "C12", version: FIRMWARE_PLACEHOLDER });
      ctx.hub.update({ modelCode: "C11", firmware: "01.07.00.00" });
      d = decodeBindFrame(await exchange(43000, false, encodeBindFrame(detectRequest())));
      expect(d.kind === "frame" && (d.message as { login: object }).login).toMatchObject({ model: "C11", version: "01.07.00.00" });
    } finally {
      await bind.stop();
    }
  });

  test("an unknown model is refused with a log line that says what to set", async () => {
    setupLogging("debug", { quiet: true });
    const ctx = context(`ports = { bind = 43000, bind_tls = 43002 }`);
    ctx.printer.serial = "ZZZ00A000000001";
    const bind = createBindService(ctx);
    await bind.start();
    const logs = captureLogs();
    try {
      expect((await exchange(43000, false, encodeBindFrame(detectRequest()))).length).toBe(0);
      expect(logs.lines.some((l) => l.includes("model") && l.includes("printers.toml"))).toBe(true);
    } finally {
      logs.stop();
      await bind.stop();
    }
  });

  test("a port that cannot be bound is reported and the other one still served", async () => {
    setupLogging("debug", { quiet: true });
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(43002, PROXY, () => r()));
    const ctx = context(`model = "P1S"\nports = { bind = 43000, bind_tls = 43002 }`);
    const bind = createBindService(ctx);
    const logs = captureLogs();
    try {
      await bind.start();
      expect(logs.lines.some((l) => l.includes("43002") && l.includes("other bind port is still served"))).toBe(true);
      expect(bind.status().state).toContain("error");
      expect(decodeBindFrame(await exchange(43000, false, encodeBindFrame(detectRequest()))).kind).toBe("frame");
    } finally {
      logs.stop();
      await bind.stop();
      await new Promise<void>((r) => blocker.close(() => r()));
    }
  });
});

describe("bind responder edge policy (127.0.22.30)", () => {
  const HOST = "127.0.22.30";
  const END_DESTROY_MS = 300;

  /** A slicer that reads our reply and then never closes its side. */
  function halfOpen(port: number, tls: boolean): Promise<{ socket: Socket; reply: () => Buffer }> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const onConnect = () => socket.write(encodeBindFrame(detectRequest()));
      // allowHalfOpen: the client does not answer our FIN with its own.
      const socket: Socket = tls
        ? tlsConnect({ host: HOST, port, rejectUnauthorized: false, ...{ allowHalfOpen: true } }, onConnect)
        : tcpConnect({ host: HOST, port, allowHalfOpen: true }, onConnect);
      socket.on("end", () => {});
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        if (decodeBindFrame(Buffer.concat(chunks)).kind === "frame") resolve({ socket, reply: () => Buffer.concat(chunks) });
      });
      socket.once("close", () => reject(new Error("closed before the reply")));
    });
  }

  test("slicers that keep their side open after the reply are destroyed within the deadline and free their slots", async () => {
    setupLogging("info", { quiet: true });
    const ctx = serviceContext(`name = "p1s-edge"\nhost = "127.0.22.31"\nserial = "${SERIAL}"\naccess_code = "12345678"\nbind = "${HOST}"\nmodel = "P1S"\nports = { bind = 3000, bind_tls = 3002 }`);
    const bind = createBindService(ctx, { silenceMs: SILENCE_MS, endDestroyMs: END_DESTROY_MS, maxClients: 2 });
    await bind.start();
    const held: Socket[] = [];
    try {
      for (const [port, tls] of [[3000, false], [3002, true]] as const) {
        for (let i = 0; i < 2; i++) held.push((await halfOpen(port, tls)).socket);
      }
      // Two per listener: every slot is taken now.
      expect(bind.status().clients).toBe(4);
      const started = Date.now();
      while (bind.status().clients > 0 && Date.now() - started < 3_000) await Bun.sleep(20);
      expect(bind.status().clients).toBe(0);
      expect(Date.now() - started).toBeLessThan(END_DESTROY_MS + 500);
      // The freed slots answer the next slicers.
      expect(decodeBindFrame(await exchange(3000, false, encodeBindFrame(detectRequest()), HOST)).kind).toBe("frame");
      expect(decodeBindFrame(await exchange(3002, true, encodeBindFrame(detectRequest()), HOST)).kind).toBe("frame");
    } finally {
      for (const socket of held) socket.destroy();
      await bind.stop();
    }
  });
});
