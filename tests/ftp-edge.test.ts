// The FTPS proxy's edge policy (issue 12) and its log lines (issue 20): QUIT and every close we decide end with
// a destroy deadline, pipelined commands go one at a time through a bounded lane, a UTF-8 character split
// across TLS records survives, a client that leaves after the handshake is logged, and a transfer the printer
// (a real vsftpd) refuses is logged with the path and the reply, never the access code.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
import { createFtpService } from "../lib/bambu/ftp.ts";
import { END_DESTROY_MS, MAX_PENDING_COMMANDS } from "../lib/core/edge.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimFtpService } from "../lib/sim/ftp.ts";
import { ACCESS_CODE, proxyContext } from "./chamber-fixtures.ts";
import { rawControl, run, type RawControl } from "./ftp-helpers.ts";
import { startPrinterLikeVsftpd, type PrinterLikeVsftpd } from "./ftp-vsftpd.ts";

const SIM = "127.0.24.10";
const PROXY = "127.0.24.11";
const VSFTPD = "127.0.24.20";
const VSFTPD_PROXY = "127.0.24.21";

let capture: ReturnType<typeof captureLogs>;
beforeAll(() => {
  setupLogging("info", { quiet: true });
  capture = captureLogs();
});
afterAll(() => capture.stop());

const linesWith = (text: string) => capture.lines.filter((l) => l.includes(text));
async function waitForLine(re: RegExp, timeoutMs = 5_000): Promise<string | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const found = capture.lines.find((l) => re.test(l));
    if (found || Date.now() > until) return found;
    await Bun.sleep(25);
  }
}
const closedWithin = (socket: TLSSocket, ms: number) =>
  new Promise<boolean>((resolve) => {
    if (socket.destroyed) return resolve(true);
    const timer = setTimeout(() => resolve(false), ms);
    socket.once("close", () => (clearTimeout(timer), resolve(true)));
  });
async function loggedIn(host: string): Promise<RawControl> {
  const c = rawControl(host);
  c.send("USER bblp", `PASS ${ACCESS_CODE}`);
  expect(await c.waitFor(/^230 /m)).toBeDefined();
  return c;
}

describe("FTPS proxy edge policy (simulated printer)", () => {
  let sim: SimPrinter;
  let ftp: SimFtpService;
  let proxy: Service;
  beforeAll(async () => {
    sim = await startSimulatedBambu({ host: SIM, serial: "01P00A000000001", services: ["ftp"], accessCode: ACCESS_CODE });
    ftp = sim.service<SimFtpService>("ftp")!;
    proxy = createFtpService(proxyContext({ name: "ftp-edge", proxy: PROXY, printer: SIM, extra: "ftp_sessions = 1\n" }));
    await proxy.start();
  });
  afterAll(async () => {
    await proxy?.stop();
    await sim?.stop();
  });

  test("a client that keeps its side open after 221 is destroyed within the deadline and leaves the client count", async () => {
    // allowHalfOpen: the client does not answer our FIN with its own, as a hostile one would not.
    const socket = tlsConnect({ host: PROXY, port: 990, rejectUnauthorized: false, allowHalfOpen: true } as ConnectionOptions);
    socket.on("error", () => {});
    let text = "";
    socket.on("data", (b: Buffer) => (text += b.toString()));
    socket.on("end", () => {}); // read our FIN, keep writing side open
    for (let i = 0; i < 200 && !/^220 /m.test(text); i++) await Bun.sleep(25);
    expect(proxy.status().clients).toBe(1);
    socket.write("QUIT\r\n");
    const quitAt = Date.now();
    while (proxy.status().clients > 0 && Date.now() - quitAt < END_DESTROY_MS + 1_500) await Bun.sleep(25);
    expect(text).toMatch(/^221 /m);
    expect(proxy.status().clients).toBe(0);
    // The connection is gone on our side: the client finds out when it writes (a reset).
    socket.write("NOOP\r\n");
    expect(await closedWithin(socket, 2_000)).toBe(true);
  });

  test("pipelined commands are answered one at a time, in order", async () => {
    const c = rawControl(PROXY);
    await c.waitFor(/^220 /m);
    c.send("USER bblp", `PASS ${ACCESS_CODE}`, "TYPE I", "PWD", "NOOP", "SYST", "QUIT");
    await c.waitFor(/^221 /m);
    const codes = [...c.text.matchAll(/^(\d{3}) /gm)].map((m) => m[1]);
    expect(codes).toEqual(["220", "331", "230", "200", "257", "200", "215", "221"]);
    c.close();
  });

  test("a flood of pipelined commands is told so and closed; another client keeps working", async () => {
    const flood = rawControl(PROXY);
    await flood.waitFor(/^220 /m);
    flood.send(...Array.from({ length: 3_000 }, () => "NOOP"));
    expect(await closedWithin(flood.socket, 5_000)).toBe(true);
    expect(flood.text).toMatch(/^421 Too many commands/m);
    // Far fewer answers than commands: the rest were never read into memory.
    expect([...flood.text.matchAll(/^200 /gm)].length).toBeLessThanOrEqual(MAX_PENDING_COMMANDS + 2);
    const line = await waitForLine(/more than \d+ commands without waiting/);
    expect(line).toMatch(/\[ftp-edge\/ftp\] 127\.0\.0\.1:\d+ /);
    const list = await run(["curl", "-sS", "-k", "--max-time", "10", "-u", `bblp:${ACCESS_CODE}`, `ftps://${PROXY}/`]);
    expect(list.code).toBe(0);
  });

  test("a path whose UTF-8 character is split across two TLS records reaches the printer intact", async () => {
    const c = await loggedIn(PROXY);
    const name = "café-split";
    const bytes = Buffer.from(`MKD ${name}\r\n`);
    const cut = bytes.indexOf(0xc3) + 1; // between the two bytes of "é"
    c.socket.write(bytes.subarray(0, cut));
    await Bun.sleep(100);
    c.socket.write(bytes.subarray(cut));
    expect(await c.waitFor(/^(257|550) .*$/m)).toBeDefined();
    expect(c.text).toMatch(/^257 /m);
    expect(existsSync(join(ftp.root, name))).toBe(true);
    c.close();
  });

  test("a client that leaves while its command waits for the busy printer session is taken out of the queue", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pp-ftp-edge-"));
    writeFileSync(join(dir, "slow.bin"), randomBytes(3_000_000));
    // A slow upload holds the only printer session.
    const upload = Bun.spawn(["curl", "-sS", "-k", "--limit-rate", "200K", "-u", `bblp:${ACCESS_CODE}`, "-T", join(dir, "slow.bin"), `ftps://${PROXY}/slow.3mf`], { stdout: "ignore", stderr: "ignore" });
    try {
      for (let i = 0; i < 200 && proxy.status().details?.waiting === 0 && !/1 busy/.test(proxy.status().upstream ?? ""); i++) await Bun.sleep(25);
      expect(proxy.status().upstream).toContain("1 busy");
      const c = await loggedIn(PROXY);
      c.send("MKD queued");
      for (let i = 0; i < 200 && proxy.status().details?.waiting !== 1; i++) await Bun.sleep(25);
      expect(proxy.status().details?.waiting).toBe(1);
      c.close();
      for (let i = 0; i < 40 && proxy.status().details?.waiting !== 0; i++) await Bun.sleep(25);
      expect(proxy.status().details?.waiting).toBe(0);
      expect(proxy.status().upstream).toContain("1 busy");
    } finally {
      upload.kill();
      await upload.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);

  test("ABOR during an upload is read and answered while the transfer is running", async () => {
    const c = await loggedIn(PROXY);
    c.send("PBSZ 0", "PROT P", "TYPE I", "EPSV");
    const epsv = await c.waitFor(/^229 .*\(\|\|\|(\d+)\|\)/m);
    expect(epsv).toBeDefined();
    const data = tlsConnect({ host: PROXY, port: Number(epsv![1]), rejectUnauthorized: false });
    data.on("error", () => {});
    c.send("STOR aborted.3mf");
    expect(await c.waitFor(/^150 /m)).toBeDefined();
    data.write(randomBytes(100_000));
    await Bun.sleep(200);
    // The data connection stays open: only ABOR on the control connection can end this transfer.
    c.send("ABOR");
    expect(await c.waitFor(/^226 ABOR/m)).toBeDefined();
    expect(c.text).toMatch(/^426 /m);
    data.destroy();
    c.close();
  });

  test("a client that leaves after the TLS handshake, before USER, is logged with its address", async () => {
    const c = rawControl(PROXY);
    await c.waitFor(/^220 /m);
    const port = c.socket.localPort;
    c.close();
    const line = await waitForLine(new RegExp(`127\\.0\\.0\\.1:${port} .*after the TLS handshake, before logging in`));
    expect(line).toBeDefined();
    expect(line).toContain("[ftp-edge/ftp]");
  });
});

describe("FTPS refusals logged (vsftpd as the printer)", () => {
  let vsftpd: PrinterLikeVsftpd;
  let proxy: Service;
  beforeAll(async () => {
    vsftpd = await startPrinterLikeVsftpd({ host: VSFTPD, accessCode: ACCESS_CODE, pasvPorts: { first: 40240, last: 40259 } });
    proxy = createFtpService(proxyContext({
      name: "ftp-refusal", proxy: VSFTPD_PROXY, printer: VSFTPD,
      extra: `printer_ca = "${vsftpd.caFile}"\nftp_data_ports = "41240-41259"\nftp_sessions = 1\n`,
    }));
    await proxy.start();
  });
  afterAll(async () => {
    await proxy?.stop();
    await vsftpd?.stop();
  });

  test("an upload the printer refuses (553) is logged with the path and the printer's reply", async () => {
    const c = await loggedIn(VSFTPD_PROXY);
    c.send("PBSZ 0", "PROT P", "TYPE I", "EPSV");
    const epsv = await c.waitFor(/^229 .*\(\|\|\|(\d+)\|\)/m);
    expect(epsv).toBeDefined();
    // Only the TCP connection: vsftpd answers 553 before any data flows.
    const data = await import("node:net").then((net) => net.connect({ host: VSFTPD_PROXY, port: Number(epsv![1]) }));
    data.on("error", () => {});
    c.send("STOR /no/such/folder/model.3mf");
    expect(await c.waitFor(/^553 /m)).toBeDefined();
    const line = await waitForLine(/STOR \/no\/such\/folder\/model\.3mf: the printer refused: Could not create file/);
    expect(line).toBeDefined();
    expect(line).toContain("[ftp-refusal/ftp]");
    data.destroy();
    c.close();
  });

  test("a download and a delete the printer refuses are logged too; the access code never is", async () => {
    const c = await loggedIn(VSFTPD_PROXY);
    c.send("PBSZ 0", "PROT P", "EPSV");
    const epsv = await c.waitFor(/^229 .*\(\|\|\|(\d+)\|\)/m);
    const data = await import("node:net").then((net) => net.connect({ host: VSFTPD_PROXY, port: Number(epsv![1]) }));
    data.on("error", () => {});
    c.send("RETR missing.gcode.3mf");
    expect(await c.waitFor(/^550 /m)).toBeDefined();
    c.send("DELE missing-too.3mf");
    expect(await c.waitForCount(/^550 /gm, 2)).toHaveLength(2);
    expect(await waitForLine(/RETR missing\.gcode\.3mf: the printer refused: Failed to open file/)).toBeDefined();
    expect(await waitForLine(/DELE missing-too\.3mf: the printer refused: Delete operation failed/)).toBeDefined();
    expect(linesWith(ACCESS_CODE)).toEqual([]);
    data.destroy();
    c.close();
  });
});
