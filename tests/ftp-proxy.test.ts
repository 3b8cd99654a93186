// The FTPS proxy in front of a simulated printer that takes ONE session: curl, lftp, Python ftplib and npm
// basic-ftp in every data mode, the queue, read-only and wrong logins, a broken upload, 0-byte and 200 MB files.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client } from "basic-ftp";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { connect as netConnect } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { createFtpService } from "../lib/bambu/ftp.ts";
import type { Service } from "../lib/core/service.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimFtpService } from "../lib/sim/ftp.ts";
import { ACCESS_CODE, proxyContext, VIEWER_CODE } from "./chamber-fixtures.ts";
import { rawControl, run } from "./ftp-helpers.ts";

const PRINTER = "127.0.3.20";
const PROXY = "127.0.3.21";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function basicFtp(password = ACCESS_CODE): Promise<Client> {
  const client = new Client(30_000);
  await client.access({ host: PROXY, port: 990, user: "bblp", password, secure: "implicit", secureOptions: { rejectUnauthorized: false } });
  return client;
}

describe("FTPS proxy against a one-session simulated printer", () => {
  let sim: SimPrinter;
  let ftp: SimFtpService;
  let proxy: Service;
  let dir: string;
  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSimulatedBambu({ host: PRINTER, serial: "01P00A000000001", services: ["ftp"], accessCode: ACCESS_CODE, ftpMaxSessions: 1 });
    ftp = sim.service<SimFtpService>("ftp")!;
    proxy = createFtpService(proxyContext({ name: "ftp-test", proxy: PROXY, printer: PRINTER }));
    await proxy.start();
    dir = mkdtempSync(join(tmpdir(), "pp-ftp-proxy-"));
  });
  afterAll(async () => {
    await proxy.stop();
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const file = (name: string, size: number) => {
    const body = randomBytes(size);
    writeFileSync(join(dir, name), body);
    return sha(body);
  };
  const onPrinter = (name: string) => sha(readFileSync(join(ftp.root, name)));

  test("curl (EPSV) uploads and downloads through pandaproxy", async () => {
    const digest = file("curl.bin", 2_000_000);
    expect((await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-T", join(dir, "curl.bin"), `ftps://${PROXY}/curl.3mf`])).err).toBe("");
    expect(onPrinter("curl.3mf")).toBe(digest);
    expect((await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-o", join(dir, "curl.out"), `ftps://${PROXY}/curl.3mf`])).code).toBe(0);
    expect(sha(readFileSync(join(dir, "curl.out")))).toBe(digest);
  });

  test("a 0-byte file goes up and comes back", async () => {
    const digest = file("empty.bin", 0);
    expect((await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-T", join(dir, "empty.bin"), `ftps://${PROXY}/empty.gcode`])).err).toBe("");
    expect(statSync(join(ftp.root, "empty.gcode")).size).toBe(0);
    expect((await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-o", join(dir, "empty.out"), `ftps://${PROXY}/empty.gcode`])).code).toBe(0);
    expect(sha(readFileSync(join(dir, "empty.out")))).toBe(digest);
  });

  test("lftp (PASV) uploads and downloads", async () => {
    const digest = file("lftp.bin", 1_000_000);
    const settings = "set ssl:verify-certificate no; set ftp:ssl-force true; set ftp:ssl-protect-data true; set ftp:prefer-epsv false; set net:max-retries 1";
    const r = await run(["lftp", "-c", `${settings}; open -u bblp,${ACCESS_CODE} ftps://${PROXY}; put ${join(dir, "lftp.bin")} -o lftp.3mf; get lftp.3mf -o ${join(dir, "lftp.out")}`]);
    expect(r.err).toBe("");
    expect(onPrinter("lftp.3mf")).toBe(digest);
    expect(sha(readFileSync(join(dir, "lftp.out")))).toBe(digest);
  });

  for (const mode of ["pasv", "port", "eprt"]) {
    test(`Python ftplib with session reuse, ${mode.toUpperCase()} mode`, async () => {
      const digest = file(`py-${mode}.bin`, 700_000);
      const base = ["python3", "tests/ftp-client.py", PROXY, "990", "bblp", ACCESS_CODE, mode, "1"];
      const up = await run([...base, "put", join(dir, `py-${mode}.bin`), `py-${mode}.3mf`]);
      expect(up.out).toContain("226");
      expect(onPrinter(`py-${mode}.3mf`)).toBe(digest);
      const down = await run([...base, "get", `py-${mode}.3mf`, join(dir, `py-${mode}.out`)]);
      expect(down.out).toContain("226");
      expect(sha(readFileSync(join(dir, `py-${mode}.out`)))).toBe(digest);
    });
  }

  test("npm basic-ftp (implicit TLS) uploads and downloads", async () => {
    const body = randomBytes(1_200_000);
    const client = await basicFtp();
    try {
      await client.uploadFrom(Readable.from([body]), "basic.3mf");
      expect(onPrinter("basic.3mf")).toBe(sha(body));
      const chunks: Buffer[] = [];
      await client.downloadTo(new Writable({ write: (c, _e, cb) => (chunks.push(c), cb()) }), "basic.3mf");
      expect(sha(Buffer.concat(chunks))).toBe(sha(body));
    } finally {
      client.close();
    }
  });

  test("four concurrent uploads share the printer's single session, all complete", async () => {
    const bodies = [0, 1, 2, 3].map(() => randomBytes(800_000));
    await Promise.all(bodies.map(async (body, i) => {
      const client = await basicFtp();
      try {
        await client.uploadFrom(Readable.from([body]), `four-${i}.3mf`);
      } finally {
        client.close();
      }
    }));
    bodies.forEach((body, i) => expect(onPrinter(`four-${i}.3mf`)).toBe(sha(body)));
    expect(ftp.peakSessions).toBe(1);
  });

  test("the viewer code logs in read-only: listing and downloads work, uploads and deletes get 550", async () => {
    const client = await basicFtp(VIEWER_CODE);
    try {
      expect((await client.list()).map((f) => f.name)).toContain("basic.3mf");
      const sink = new Writable({ write: (_c, _e, cb) => cb() });
      await client.downloadTo(sink, "basic.3mf");
      await expect(client.uploadFrom(Readable.from([Buffer.from("x")]), "viewer.3mf")).rejects.toThrow(/550/);
      await expect(client.remove("basic.3mf")).rejects.toThrow(/550/);
      expect(existsSync(join(ftp.root, "viewer.3mf"))).toBe(false);
      expect(existsSync(join(ftp.root, "basic.3mf"))).toBe(true);
    } finally {
      client.close();
    }
  });

  test("a wrong code gets 530 and never reaches the printer", async () => {
    const before = ftp.connections;
    await expect(basicFtp("00000000")).rejects.toThrow(/530/);
    expect(ftp.connections).toBe(before);
  });

  test("an upload cut off mid-way: the client gets 426 and the printer's transfer is aborted, not completed", async () => {
    const logs = captureLogs();
    const control = tlsConnect({ host: PROXY, port: 990, rejectUnauthorized: false });
    let text = "";
    control.on("data", (b) => (text += b.toString()));
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 200 && !re.test(text); i++) await Bun.sleep(25);
      expect(text).toMatch(re);
    };
    try {
      await waitFor(/^220 /m);
      control.write(`USER bblp\r\nPASS ${ACCESS_CODE}\r\nPBSZ 0\r\nPROT P\r\nTYPE I\r\nEPSV\r\n`);
      await waitFor(/\|\|\|(\d+)\|/);
      const port = Number(/\|\|\|(\d+)\|/.exec(text)![1]);
      const raw = netConnect(port, PROXY);
      await new Promise((r) => raw.once("connect", r));
      control.write("STOR cut.3mf\r\n");
      await waitFor(/^150 /m);
      const data: TLSSocket = tlsConnect({ socket: raw, rejectUnauthorized: false, session: control.getSession() });
      await new Promise((r) => data.once("secureConnect", r));
      data.write(randomBytes(500_000));
      await Bun.sleep(200);
      raw.resetAndDestroy();
      await waitFor(/^426 /m);
      expect(text).not.toMatch(/^226 /m);
      for (let i = 0; i < 100 && !logs.lines.some((l) => l.includes("cut.3mf interrupted")); i++) await Bun.sleep(20);
      expect(logs.lines.find((l) => l.includes("cut.3mf interrupted"))).toContain("Failure reading network stream");
    } finally {
      logs.stop();
      control.destroy();
    }
  });

  test("a 200 MB file streams up and down with the right SHA-256", async () => {
    const SIZE = 200 * 1024 * 1024;
    const CHUNK = 1024 * 1024;
    const block = randomBytes(CHUNK);
    const upHash = createHash("sha256");
    let sent = 0;
    const source = new Readable({
      read() {
        if (sent >= SIZE) return void this.push(null);
        const chunk = Buffer.from(block);
        chunk.writeUInt32LE(sent / CHUNK, 0);
        sent += CHUNK;
        upHash.update(chunk);
        this.push(chunk);
      },
    });
    const client = await basicFtp();
    try {
      await client.uploadFrom(source, "big.3mf");
      const digest = upHash.digest("hex");
      expect(statSync(join(ftp.root, "big.3mf")).size).toBe(SIZE);
      const downHash = createHash("sha256");
      await client.downloadTo(new Writable({ write: (c, _e, cb) => (downHash.update(c), cb()) }), "big.3mf");
      expect(downHash.digest("hex")).toBe(digest);
    } finally {
      client.close();
      rmSync(join(ftp.root, "big.3mf"), { force: true });
    }
  }, 120_000);
});

// A printer with firmware quirks: 0.0.0.0 in its PASV reply, no EPSV, and 426 after an upload that arrived whole.
const QUIRKY_PRINTER = "127.0.3.30";
const QUIRKY_PROXY = "127.0.3.31";
const PRINTER_IDLE_MS = 400;
const DATA_PORTS = { first: 41610, last: 41614 };

describe("FTPS proxy against a printer with firmware quirks", () => {
  let sim: SimPrinter;
  let ftp: SimFtpService;
  let proxy: Service;
  let dir: string;
  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    sim = await startSimulatedBambu({
      host: QUIRKY_PRINTER, serial: "01P00A000000001", services: ["ftp"], accessCode: ACCESS_CODE, ftpMaxSessions: 1,
      ftpPasvAddress: "0.0.0.0", ftpRefuseEpsv: true, ftpUpload426: true,
    });
    ftp = sim.service<SimFtpService>("ftp")!;
    proxy = createFtpService(
      proxyContext({ name: "ftp-quirks", proxy: QUIRKY_PROXY, printer: QUIRKY_PRINTER, extra: `ftp_data_ports = "${DATA_PORTS.first}-${DATA_PORTS.last}"\n` }),
      { printerIdleCloseMs: PRINTER_IDLE_MS },
    );
    await proxy.start();
    dir = mkdtempSync(join(tmpdir(), "pp-ftp-quirks-"));
  });
  afterAll(async () => {
    await proxy?.stop();
    await sim?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the simulator really has the quirks: 0.0.0.0 in PASV, EPSV refused, 426 after a whole upload", async () => {
    writeFileSync(join(dir, "direct.bin"), randomBytes(50_000));
    const up = await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "--ftp-skip-pasv-ip", "-T", join(dir, "direct.bin"), `ftps://${QUIRKY_PRINTER}/direct.3mf`]);
    expect(up.err).toContain("426");
    expect(readFileSync(join(ftp.root, "direct.3mf")).length).toBe(50_000);
    const control = rawControl(QUIRKY_PRINTER);
    try {
      await control.waitFor(/^220 /m);
      control.send("USER bblp", `PASS ${ACCESS_CODE}`, "EPSV", "PASV");
      expect(await control.waitFor(/^227 .*\(0,0,0,0,\d+,\d+\)/m)).toBeDefined();
      expect(control.text).toMatch(/^500 /m);
    } finally {
      control.close();
    }
  });

  test("a printer saying 0.0.0.0 in PASV: the proxy connects to the configured host; a 426 after every byte arrived, confirmed by SIZE, reaches the client as 226", async () => {
    const body = randomBytes(1_500_000);
    writeFileSync(join(dir, "up.bin"), body);
    const up = await run(["curl", "-sS", "-k", "-v", "-u", `bblp:${ACCESS_CODE}`, "-T", join(dir, "up.bin"), `ftps://${QUIRKY_PROXY}/quirky.3mf`]);
    expect(up.code).toBe(0);
    expect(up.err).toMatch(/^< 226 /m);
    expect(sha(readFileSync(join(ftp.root, "quirky.3mf")))).toBe(sha(body));
    const down = await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-o", join(dir, "down.bin"), `ftps://${QUIRKY_PROXY}/quirky.3mf`]);
    expect(down.err).toBe("");
    expect(sha(readFileSync(join(dir, "down.bin")))).toBe(sha(body));
  });

  test("PASV and EPSV replies carry the proxy's address and a port from ftp_data_ports", async () => {
    const control = rawControl(QUIRKY_PROXY);
    try {
      await control.waitFor(/^220 /m);
      control.send("USER bblp", `PASS ${ACCESS_CODE}`);
      await control.waitFor(/^230 /m);
      const pasv = /^227 .*\((\d+,\d+,\d+,\d+),(\d+),(\d+)\)/gm;
      const epsv = /^229 .*\(\|\|\|(\d+)\|\)/gm;
      for (let i = 1; i <= 3; i++) {
        control.send("PASV");
        await control.waitForCount(pasv, i);
        control.send("EPSV");
        await control.waitForCount(epsv, i);
      }
      const ports: number[] = [];
      for (const m of control.text.matchAll(pasv)) {
        expect(m[1]).toBe(QUIRKY_PROXY.replaceAll(".", ","));
        ports.push(Number(m[2]) * 256 + Number(m[3]));
      }
      for (const m of control.text.matchAll(epsv)) ports.push(Number(m[1]));
      expect(ports).toHaveLength(6);
      for (const port of ports) {
        expect(port).toBeGreaterThanOrEqual(DATA_PORTS.first);
        expect(port).toBeLessThanOrEqual(DATA_PORTS.last);
      }
    } finally {
      control.close();
    }
  });

  test("an idle printer session is closed after the (injected) idle time, and the next command opens a new one", async () => {
    const client = new Client(30_000);
    try {
      await client.access({ host: QUIRKY_PROXY, port: 990, user: "bblp", password: ACCESS_CODE, secure: "implicit", secureOptions: { rejectUnauthorized: false } });
      expect(await client.pwd()).toBe("/");
      expect(ftp.sessions).toBe(1);
      const before = ftp.connections;
      for (let i = 0; i < 100 && ftp.sessions > 0; i++) await Bun.sleep(25);
      expect(ftp.sessions).toBe(0);
      // The client stays connected; its next command gets a fresh printer session.
      expect(await client.pwd()).toBe("/");
      expect(ftp.connections).toBe(before + 1);
    } finally {
      client.close();
    }
  });
});
