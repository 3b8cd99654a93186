// The FlashForge TCP 8899 proxy against a simulated Adventurer 5M: many clients share the printer's one session.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { createFlashforgeTcp } from "../lib/flashforge/tcp.ts";
import { decodeFileList, encodeFileList, encodeThumbnail } from "../lib/flashforge/tcp-codec.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { pngOf } from "../lib/sim/flashforge/state.ts";
import { consoleClient, flashforgeContext, startFakeConsole } from "./flashforge-helpers.ts";

const SIM_HOST = "127.0.7.2";
const PROXY_HOST = "127.0.7.1";
const PORT = 8899;
const SIM_IDLE_MS = 1_500;
const CLIENT_IDLE_MS = 4_000;

let sim: SimFlashforge;
let proxy: Service;

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  sim = await startSimulatedFlashforge({ host: SIM_HOST, tcp: { idleTimeoutMs: SIM_IDLE_MS } });
  proxy = createFlashforgeTcp(flashforgeContext(sim, PROXY_HOST), { keepaliveMs: 400, lingerMs: 60_000, clientIdleTimeoutMs: CLIENT_IDLE_MS });
});

afterAll(async () => {
  await proxy?.stop();
  await sim?.stop();
});

describe("simulated Adventurer 5M console", () => {
  test("takes one controlling session: a second client gets Control Failed.", async () => {
    const first = await consoleClient(SIM_HOST, PORT);
    const second = await consoleClient(SIM_HOST, PORT);
    try {
      first.send("~M601 S1");
      expect(await first.readText()).toBe("CMD M601 Received.\r\nControl Success V2.1.\r\nok\r\n");
      second.send("~M601 S1");
      expect(await second.readText()).toBe("CMD M601 Received.\r\nControl Failed.\r\nok\r\n");
      first.send("~M602");
      expect(await first.readText()).toContain("Control Release.");
      second.send("~M601 S1");
      expect(await second.readText()).toContain("Control Success");
      second.send("~M602");
      await second.readText();
    } finally {
      first.close();
      second.close();
    }
  });

  test("drops a session that stays silent", async () => {
    const client = await consoleClient(SIM_HOST, PORT);
    const drops = sim.tcp.idleDrops;
    await client.waitClosed(SIM_IDLE_MS + 2_000);
    expect(sim.tcp.idleDrops).toBe(drops + 1);
  });
});

describe("FlashForge TCP proxy", () => {
  test("starts listening on the printer's port", async () => {
    await proxy.start();
    expect(proxy.status().state).toBe("listening");
  });

  test("five clients at once each get their own replies, in order", async () => {
    const sessionsBefore = sim.tcp.sessions;
    const codes = ["M115", "M105", "M119", "M27", "M114"];
    const clients = await Promise.all(Array.from({ length: 5 }, () => consoleClient(PROXY_HOST, PORT)));
    try {
      const runs = clients.map(async (client, i) => {
        client.send("~M601 S1");
        expect(await client.readText()).toBe("CMD M601 Received.\r\nControl Success V2.1.\r\nok\r\n");
        // Each client pipelines its own rotation of commands, four rounds, without waiting for replies.
        const mine: string[] = [];
        for (let round = 0; round < 4; round++) for (let k = 0; k < codes.length; k++) mine.push(codes[(k + i) % codes.length]!);
        for (const code of mine) client.send(`~${code}`);
        for (const code of mine) {
          const text = await client.readText();
          expect(text.startsWith(`CMD ${code} Received.\r\n`)).toBe(true);
          if (code === "M115") expect(text).toContain(`SN: ${sim.identity.serial}`);
        }
        client.send("~M602");
        expect(await client.readText()).toBe("CMD M602 Received.\r\nControl Release.\r\nok\r\n");
      });
      await Promise.all(runs);
      // One printer session, one login: the clients' ~M601/~M602 never reached the printer.
      expect(sim.tcp.sessions).toBe(sessionsBefore + 1);
      const upstreamSession = sim.tcp.sessions;
      const seen = sim.tcp.commands.filter((c) => c.session === upstreamSession);
      expect(seen.filter((c) => c.line.includes("M601")).length).toBe(1);
      expect(seen.filter((c) => c.line.includes("M602")).length).toBe(0);
      expect(seen.filter((c) => c.line === "~M115").length).toBeGreaterThanOrEqual(5 * 4);
    } finally {
      for (const c of clients) c.close();
    }
  });

  test("binary replies (~M662 thumbnail, ~M661 file list) pass intact, and the next reply after them too", async () => {
    const a = await consoleClient(PROXY_HOST, PORT);
    const b = await consoleClient(PROXY_HOST, PORT);
    try {
      a.send("~M662 /data/Benchy.gcode");
      b.send("~M661");
      a.send("~M115");
      const expected = encodeThumbnail(pngOf("/data/Benchy.gcode"));
      expect(await a.readText()).toBe("CMD M662 Received.\r\nok\r\n");
      const thumb = await a.readBytes(expected.length);
      expect(createHash("sha256").update(thumb).digest("hex")).toBe(createHash("sha256").update(expected).digest("hex"));
      expect((await a.readText()).startsWith("CMD M115 Received.")).toBe(true);

      expect(await b.readText()).toBe("CMD M661 Received.\r\nok\r\n");
      const expectedList = encodeFileList([...sim.state.files.keys()]);
      const list = await b.readBytes(expectedList.length);
      expect(list.equals(expectedList)).toBe(true);
      expect(decodeFileList(list)).toEqual([...sim.state.files.keys()]);
    } finally {
      a.close();
      b.close();
    }
  });

  test("keeps the printer's session alive while clients are quiet", async () => {
    const client = await consoleClient(PROXY_HOST, PORT);
    try {
      const sessions = sim.tcp.sessions;
      const drops = sim.tcp.idleDrops;
      client.send("~M105");
      await client.readText();
      await Bun.sleep(SIM_IDLE_MS * 2);
      client.send("~M105");
      expect((await client.readText()).startsWith("CMD M105 Received.")).toBe(true);
      expect(sim.tcp.sessions).toBe(sessions);
      expect(sim.tcp.idleDrops).toBe(drops);
      const keepalives = sim.tcp.commands.filter((c) => c.session === sessions && c.line === "~M27");
      expect(keepalives.length).toBeGreaterThan(0);
    } finally {
      client.close();
    }
  });

  test("an ~M28 upload reaches the printer intact while another client keeps polling", async () => {
    const uploader = await consoleClient(PROXY_HOST, PORT);
    const poller = await consoleClient(PROXY_HOST, PORT);
    try {
      const file = Buffer.alloc(3 * 1024 * 1024 + 17);
      for (let i = 0; i < file.length; i++) file[i] = (i * 31 + (i >> 11)) & 0xff;
      const polls = (async () => {
        for (let i = 0; i < 20; i++) {
          poller.send("~M105");
          expect((await poller.readText()).startsWith("CMD M105 Received.")).toBe(true);
        }
      })();
      uploader.send(`~M28 ${file.length} 0:/user/upload-test.gcode`);
      uploader.socket.write(file);
      uploader.send("~M29");
      expect(await uploader.readText()).toContain("Writing to file: 0:/user/upload-test.gcode");
      expect(await uploader.readText()).toContain("Done saving file.");
      await polls;
      const stored = sim.state.files.get("/data/upload-test.gcode");
      expect(stored?.via).toBe("tcp");
      expect(stored?.sha256).toBe(createHash("sha256").update(file).digest("hex"));
    } finally {
      uploader.close();
      poller.close();
    }
  });

  test("a client that sends garbage is closed with a log line; the others carry on", async () => {
    const logs = captureLogs();
    const bad = await consoleClient(PROXY_HOST, PORT);
    const good = await consoleClient(PROXY_HOST, PORT);
    try {
      bad.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x0a, 0x0a]));
      await bad.waitClosed();
      good.send("~M119");
      expect((await good.readText()).startsWith("CMD M119 Received.")).toBe(true);
      expect(logs.lines.some((l) => l.includes("[ff5m/tcp]") && l.includes("not a G/M command"))).toBe(true);
    } finally {
      logs.stop();
      bad.close();
      good.close();
    }
  });

  test("a silent client is closed with a log line", async () => {
    const logs = captureLogs();
    const silent = await consoleClient(PROXY_HOST, PORT);
    try {
      await silent.waitClosed(CLIENT_IDLE_MS + 2_000);
      expect(logs.lines.some((l) => l.includes("[ff5m/tcp]") && l.includes("silent for 4 s"))).toBe(true);
    } finally {
      logs.stop();
      silent.close();
    }
  }, 10_000);
});

describe("FlashForge TCP proxy: clients that do not read, and a printer that drops", () => {
  test("a client that does not read its replies is closed with a log line; another keeps its answers", async () => {
    const BACKLOG = 256 * 1024;
    // Its own printer: the one above stays held by the first proxy's session.
    const printer = await startSimulatedFlashforge({ host: "127.0.7.19" });
    const slowProxy = createFlashforgeTcp(flashforgeContext(printer, "127.0.7.16"), { lingerMs: 60_000, maxClientBacklogBytes: BACKLOG });
    await slowProxy.start();
    const logs = captureLogs();
    const reader = await consoleClient("127.0.7.16", PORT);
    const deaf = await consoleClient("127.0.7.16", PORT);
    try {
      reader.send("~M119");
      await reader.readText();
      deaf.socket.pause(); // and never read
      const closedLine = () => logs.lines.some((l) => l.includes("[ff5m/tcp]") && l.includes("does not read its replies"));
      // Each ~M662 answers a ~50 KB thumbnail: the socket buffers fill, then our backlog does. Bounded.
      for (let batch = 0; batch < 40 && !closedLine(); batch++) {
        const asked = printer.tcp.commands.length;
        for (let i = 0; i < 16; i++) deaf.send("~M662 /data/Benchy.gcode");
        for (let i = 0; i < 100 && printer.tcp.commands.length < asked + 16 && !closedLine(); i++) await Bun.sleep(20);
      }
      expect(closedLine()).toBe(true);
      await waitUntil(() => slowProxy.status().clients === 1);
      reader.send("~M115");
      expect((await reader.readText()).startsWith("CMD M115 Received.")).toBe(true);
    } finally {
      logs.stop();
      reader.close();
      deaf.close();
      await slowProxy.stop();
      await printer.stop();
    }
  }, 30_000);

  test("the printer drops the connection mid-command: that client is closed, the others are answered after the reconnect", async () => {
    const fake = await startFakeConsole("127.0.7.17", PORT, "G28");
    const fakeSim = { identity: { ...sim.identity, host: "127.0.7.17" } } as SimFlashforge;
    const dropProxy = createFlashforgeTcp(flashforgeContext(fakeSim, "127.0.7.18"), { lingerMs: 60_000 });
    await dropProxy.start();
    const logs = captureLogs();
    const homing = await consoleClient("127.0.7.18", PORT);
    const other = await consoleClient("127.0.7.18", PORT);
    try {
      other.send("~M119");
      expect((await other.readText()).startsWith("CMD M119 Received.")).toBe(true);
      homing.send("~G28");
      await waitUntil(() => fake.seen.includes("G28"));
      other.send("~M119"); // queued behind the command in flight
      await homing.waitClosed();
      expect(logs.lines.some((l) => l.includes("[ff5m/tcp]") && l.includes("the printer did not answer G28"))).toBe(true);
      expect((await other.readText()).startsWith("CMD M119 Received.")).toBe(true);
      expect(other.closed).toBe(false);
      expect(fake.sessions).toBe(2);
    } finally {
      logs.stop();
      homing.close();
      other.close();
      await dropProxy.stop();
      await fake.stop();
    }
  }, 20_000);
});

async function waitUntil(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await Bun.sleep(20);
  }
}
