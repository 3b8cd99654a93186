// Who may connect: `allow` ranges (lib/core/allow.ts), checked on every listener before a byte is read. The
// listener tests connect from a loopback alias outside the allowed list (127.0.29.x, binding the client's
// local address) and from one inside it (127.0.28.x). Loopback 127.0.28.0/24 and 127.0.29.0/24 only.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { ConfigErrors, parseConfig } from "../lib/config.ts";
import { createAllowList, DEFAULT_ALLOW, parseAddress, parseRange } from "../lib/core/allow.ts";
import { captureLogs, processLogger, setupLogging } from "../lib/log.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";

const ALLOWED = "127.0.28.5";
const OUTSIDER = "127.0.29.5";
/** How long a refused connection may take to be closed, and an admitted one to be answered. */
const VERDICT_MS = 3_000;

describe("allow ranges", () => {
  test("the default admits loopback, private, link-local, shared and IPv6 ULA/link-local, and refuses public sources", () => {
    const list = createAllowList();
    for (const address of ["127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.20", "169.254.7.1", "100.64.0.1",
      "100.127.255.254", "::1", "fd12:3456::1", "fc00::1", "fe80::1%eth0", "::ffff:192.168.1.5", "::ffff:c0a8:105", "::ffff:127.0.0.1"]) {
      expect([address, list.allows(address)]).toEqual([address, true]);
    }
    for (const address of ["8.8.8.8", "172.32.0.1", "100.128.0.1", "192.169.0.1", "1.1.1.1", "2001:db8::1", "2a00:1450::1",
      "::ffff:8.8.8.8", "::", "0.0.0.0", "", "not an address", undefined]) {
      expect([address, list.allows(address)]).toEqual([address, false]);
    }
  });

  test("ranges and single addresses, IPv4 and IPv6; a mapped IPv6 address is its IPv4 address", () => {
    const list = createAllowList(["192.168.1.0/24", "203.0.113.7", "2001:db8:1::/48", "::ffff:10.9.0.0/112"]);
    expect(list.allows("192.168.1.255")).toBe(true);
    expect(list.allows("192.168.2.1")).toBe(false);
    expect(list.allows("203.0.113.7")).toBe(true);
    expect(list.allows("203.0.113.8")).toBe(false);
    expect(list.allows("::ffff:203.0.113.7")).toBe(true);
    expect(list.allows("2001:db8:1:ffff::9")).toBe(true);
    expect(list.allows("2001:db8:2::9")).toBe(false);
    expect(list.allows("10.9.200.1")).toBe(true);
    expect(list.allows("10.10.0.1")).toBe(false);
    expect(createAllowList(["0.0.0.0/0"]).allows("8.8.8.8")).toBe(true);
    expect(createAllowList(["0.0.0.0/0"]).allows("2001:db8::1")).toBe(false);
    expect(createAllowList(["::/0"]).allows("2001:db8::1")).toBe(true);
    expect(parseAddress("1:2:3:4:5:6:7:8")).toEqual({ family: 6, value: 0x00010002000300040005000600070008n });
  });

  test("a bad range says what is wrong", () => {
    expect(parseRange("192.168.1.0/33")).toEqual({ error: '"192.168.1.0/33": the prefix length must be 0 to 32' });
    expect(parseRange("192.168.1.1/24")).toMatchObject({ error: expect.stringContaining("write the network address") });
    expect(parseRange("192.168.1")).toMatchObject({ error: expect.stringContaining("not an IPv4 or IPv6 address") });
    expect(parseRange("fe80::1::2")).toMatchObject({ error: expect.stringContaining("not an IPv4 or IPv6 address") });
    expect(parseRange("10.0.0.0/8/8")).toMatchObject({ error: expect.stringContaining('two "/"') });
    expect(parseRange("256.0.0.0/8")).toMatchObject({ error: expect.stringContaining("not an IPv4") });
  });

  test("refusals are logged once per address per minute, however many come", () => {
    setupLogging("info", { quiet: true });
    const logs = captureLogs();
    try {
      const list = createAllowList(["192.168.1.0/24"]);
      const log = processLogger("allow-test");
      for (let i = 0; i < 500; i++) expect(list.admit("203.0.113.9", log, "MQTT", 40_000 + i)).toBe(false);
      expect(list.admit("203.0.113.10", log, "MQTT", 1)).toBe(false);
      expect(list.admit("192.168.1.9", log, "MQTT", 1)).toBe(true);
      const refusals = logs.lines.filter((l) => l.includes("refused MQTT connection"));
      expect(refusals.length).toBe(2);
      expect(refusals[0]).toContain("203.0.113.9");
      expect(refusals[0]).toContain("not in allow (192.168.1.0/24)");
    } finally {
      logs.stop();
    }
  });
});

describe("allow in printers.toml", () => {
  const printer = (extra = "") => `[[printer]]\nname = "p1s"\nhost = "192.168.1.50"\nserial = "01P00A000000001"\naccess_code = "12345678"\n${extra}`;
  const problems = (text: string) => {
    try {
      parseConfig(text, "t.toml");
    } catch (error) {
      return (error as ConfigErrors).problems;
    }
    return [];
  };

  test("default: the private ranges, for every printer and the web page; a printer's own list replaces [proxy] allow", () => {
    const plain = parseConfig(printer());
    expect(plain.proxy.allow).toEqual([...DEFAULT_ALLOW]);
    expect(plain.printers[0]!.allow).toEqual([...DEFAULT_ALLOW]);
    expect(plain.web.allow).toEqual([...DEFAULT_ALLOW]);
    const set = parseConfig(`[proxy]\nallow = ["192.168.1.0/24"]\n${printer('bind = "192.168.1.201"')}\n${printer('allow = ["10.0.0.0/8"]').replace('"p1s"', '"x1c"').replace('host = "192.168.1.50"', 'host = "192.168.1.51"')}\nbind = "192.168.1.202"`);
    expect(set.web.allow).toEqual(["192.168.1.0/24"]);
    expect(set.printers.map((p) => p.allow)).toEqual([["192.168.1.0/24"], ["10.0.0.0/8"]]);
  });

  test("a bad range names the key and the range", () => {
    expect(problems(`[proxy]\nallow = ["192.168.1.0/33"]\n${printer()}`)).toEqual([
      't.toml: [proxy] key "allow" has "192.168.1.0/33": the prefix length must be 0 to 32',
    ]);
    expect(problems(printer('allow = ["10.0.0.1/8", "fd00::/8"]'))).toEqual([
      't.toml: printer "p1s": key "allow" has "10.0.0.1/8" has bits set past its /8; write the network address (e.g. "192.168.1.0/24")',
    ]);
    expect(problems(printer('allow = "192.168.1.0/24"'))).toEqual([
      't.toml: printer "p1s": key "allow" must be a list of addresses or ranges, e.g. ["192.168.1.0/24", "fd00::/8"]',
    ]);
  });
});

/** TLS listener: "served" once the handshake completes, "refused" if closed before. */
function probeTls(host: string, port: number, localAddress: string): Promise<string> {
  return new Promise((resolve) => {
    const options = { host, port, localAddress, rejectUnauthorized: false }; // localAddress: a net option tls passes on
    const socket = tlsConnect(options);
    const done = (verdict: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(verdict);
    };
    const timer = setTimeout(() => done("no verdict"), VERDICT_MS);
    socket.once("secureConnect", () => done("served"));
    socket.once("close", () => done("refused"));
    socket.on("error", () => {});
  });
}

/** Plain TCP listener: `request` sent; "served" on any answer (or, without a request, still open after a while). */
function probeTcp(host: string, port: number, localAddress: string, request?: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = netConnect({ host, port, localAddress });
    const done = (verdict: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(verdict);
    };
    const timer = setTimeout(() => done(request ? "no verdict" : "served"), request ? VERDICT_MS : 1_000);
    socket.once("connect", () => request && socket.write(request));
    socket.once("data", () => done("served"));
    socket.once("close", () => done("refused"));
    socket.on("error", () => {});
  });
}

/** UDP: "served" when a reply comes back within the wait. */
function probeUdp(host: string, port: number, localAddress: string, datagram: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    const done = (verdict: string) => {
      clearTimeout(timer);
      socket.close();
      resolve(verdict);
    };
    const timer = setTimeout(() => done("ignored"), 1_500);
    socket.on("message", () => done("served"));
    socket.on("error", () => done("ignored"));
    socket.bind(0, localAddress, () => socket.send(datagram, port, host));
  });
}

/** curl as a child process (the web server runs in this one), from `localAddress`. */
async function curlStatus(url: string, localAddress: string): Promise<string> {
  const child = Bun.spawn(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--interface", localAddress, url], { stdout: "pipe" });
  const [out] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  return out;
}

describe("every listener refuses a source outside allow and serves one inside it", () => {
  const BAMBU = "127.0.28.50";
  const BAMBU_PROXY = "127.0.28.51";
  const X1C = "127.0.28.52";
  const X1C_PROXY = "127.0.28.53";
  const P2S = "127.0.28.54";
  const P2S_PROXY = "127.0.28.55";
  const FLASHFORGE = "127.0.28.60";
  const FLASHFORGE_PROXY = "127.0.28.61";
  const WEB = "127.0.28.40";
  const DISCOVERY_PORT = 48928;
  const withRtsp = Bun.which("ffmpeg") !== null;
  const state = mkdtempSync(join(tmpdir(), "pp-allow-"));
  const sims: SimPrinter[] = [];
  let flashforge: SimFlashforge;
  let proxy: Supervisor;
  const logs = captureLogs();

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    const p1s = await startSimulatedBambu({ host: BAMBU, model: "P1S", services: ["mqtt", "ftp", "chamber", "bind"], cameraFps: 5 });
    const p2s = await startSimulatedBambu({ host: P2S, model: "P2S", services: ["tunnel"] });
    const x1c = withRtsp ? await startSimulatedBambu({ host: X1C, model: "X1C", services: ["rtsp"] }) : undefined;
    sims.push(p1s, p2s, ...(x1c ? [x1c] : []));
    flashforge = await startSimulatedFlashforge({ host: FLASHFORGE });
    const lines = [
      `[proxy]`, `state_dir = "${state}"`, `allow = ["127.0.28.0/24"]`,
      `[web]`, `listen = "${WEB}:8080"`,
      `[[printer]]`, `name = "p1s"`, `host = "${BAMBU}"`, `serial = "${p1s.identity.serial}"`, `access_code = "${p1s.identity.accessCode}"`,
      `bind = "${BAMBU_PROXY}"`, `model = "P1S"`, `services = ["mqtt", "ftp", "camera", "bind"]`,
      `[[printer]]`, `name = "ff"`, `type = "flashforge"`, `host = "${FLASHFORGE}"`, `serial = "${flashforge.identity.serial}"`,
      `check_code = "${flashforge.identity.checkCode}"`, `bind = "${FLASHFORGE_PROXY}"`, `ports = { discovery = ${DISCOVERY_PORT} }`,
      `[[printer]]`, `name = "p2s"`, `host = "${P2S}"`, `serial = "${p2s.identity.serial}"`, `access_code = "${p2s.identity.accessCode}"`,
      `bind = "${P2S_PROXY}"`, `model = "P2S"`, `services = ["camera"]`, `camera = "rtsp"`,
    ];
    if (x1c) {
      lines.push(`[[printer]]`, `name = "x1c"`, `host = "${X1C}"`, `serial = "${x1c.identity.serial}"`, `access_code = "${x1c.identity.accessCode}"`,
        `bind = "${X1C_PROXY}"`, `model = "X1C"`, `services = ["camera"]`, `ports = { rtsp_plain = 8554 }`);
    }
    proxy = await startSupervisor(parseConfig(lines.join("\n")));
  });

  afterAll(async () => {
    logs.stop();
    await proxy?.stop();
    await Promise.allSettled([...sims.map((s) => s.stop()), flashforge?.stop()]);
    rmSync(state, { recursive: true, force: true });
  });

  const tlsListeners: [string, string, number][] = [
    ["MQTT", BAMBU_PROXY, 8883], ["FTPS", BAMBU_PROXY, 990], ["chamber camera", BAMBU_PROXY, 6000], ["bind (TLS 3002)", BAMBU_PROXY, 3002],
    ["file tunnel (P2S 6000)", P2S_PROXY, 6000],
  ];
  for (const [what, host, port] of tlsListeners) {
    test(`${what} (TLS): refused before the handshake from outside, served inside`, async () => {
      expect(await probeTls(host, port, OUTSIDER)).toBe("refused");
      expect(await probeTls(host, port, ALLOWED)).toBe("served");
    });
  }

  test("bind (TCP 3000), FlashForge TCP 8899, HTTP 8898 and camera 8080: closed unanswered from outside, answered inside", async () => {
    const cases: [number, string, string | undefined][] = [
      [3000, BAMBU_PROXY, undefined], [8899, FLASHFORGE_PROXY, "~M601 S1\r\n"],
      [8898, FLASHFORGE_PROXY, "GET /detail HTTP/1.1\r\nHost: x\r\n\r\n"], [8080, FLASHFORGE_PROXY, "GET /?action=stream HTTP/1.1\r\nHost: x\r\n\r\n"],
    ];
    for (const [port, host, request] of cases) {
      expect([port, await probeTcp(host, port, OUTSIDER, request)]).toEqual([port, "refused"]);
      expect([port, await probeTcp(host, port, ALLOWED, request)]).toEqual([port, "served"]);
    }
  });

  test("FlashForge discovery (UDP): a probe from outside is ignored, one from inside answered", async () => {
    const probe = Buffer.from("www.usr.cn");
    expect(await probeUdp(FLASHFORGE_PROXY, DISCOVERY_PORT, OUTSIDER, probe)).toBe("ignored");
    expect(await probeUdp(FLASHFORGE_PROXY, DISCOVERY_PORT, ALLOWED, probe)).toBe("served");
  });

  test("the web page answers 403 outside, and asks for credentials (or serves) inside", async () => {
    expect(await curlStatus(`http://${WEB}:8080/`, OUTSIDER)).toBe("403");
    expect(await curlStatus(`http://${WEB}:8080/`, ALLOWED)).toMatch(/^(200|401)$/);
  });

  test.skipIf(!withRtsp)("RTSPS 322 and plain RTSP refuse outside, serve inside", async () => {
    expect(await probeTls(X1C_PROXY, 322, OUTSIDER)).toBe("refused");
    expect(await probeTls(X1C_PROXY, 322, ALLOWED)).toBe("served");
    const options = "OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\n\r\n";
    expect(await probeTcp(X1C_PROXY, 8554, OUTSIDER, options)).toBe("refused");
    expect(await probeTcp(X1C_PROXY, 8554, ALLOWED, options)).toBe("served");
  });

  test("a refused address is logged with printer, service and peer, once a minute per listener however often it tries", async () => {
    const flooder = "127.0.29.6";
    const from = logs.lines.length;
    for (let i = 0; i < 20; i++) expect(await probeTls(BAMBU_PROXY, 8883, flooder)).toBe("refused");
    const lines = logs.lines.slice(from).filter((l) => l.includes(flooder));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("refused MQTT connection from 127.0.29.6");
    expect(lines[0]).toContain("p1s");
    expect(lines[0]).toContain("127.0.28.0/24");
  });
});
