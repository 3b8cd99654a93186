// Interop: the FTPS proxy in front of a real vsftpd configured like a printer (implicit TLS, require_ssl_reuse,
// max_clients 2, passive only), with curl (EPSV), lftp (PASV), Python ftplib (PASV/PORT/EPRT, session reuse)
// and npm basic-ftp; read-only and wrong logins; four concurrent uploads over one printer session; an upload
// cut off mid-way.
//
// curl's active mode (-P) is not tested: curl 7.88.1 (Debian 12) fails it against vsftpd itself, uploads with
// "(55) sa_addr inet_ntop() failed with errno 97" (curl/curl#10622) and downloads hang (the active-FTPS
// regression curl/curl#10666, fixed in 8.0). PORT and EPRT are proven with ftplib instead.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client } from "basic-ftp";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { createFtpService } from "../lib/bambu/ftp.ts";
import type { Service } from "../lib/core/service.ts";
import { setupLogging } from "../lib/log.ts";
import { ACCESS_CODE, proxyContext, VIEWER_CODE } from "./chamber-fixtures.ts";
import { run } from "./ftp-helpers.ts";
import { startPrinterLikeVsftpd, type PrinterLikeVsftpd } from "./ftp-vsftpd.ts";

const PRINTER = "127.0.13.10";
const PROXY = "127.0.13.11";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function basicFtp(host = PROXY, password = ACCESS_CODE): Promise<Client> {
  const client = new Client(30_000);
  await client.access({ host, port: 990, user: "bblp", password, secure: "implicit", secureOptions: { rejectUnauthorized: false } });
  return client;
}

describe("FTPS proxy against vsftpd configured like a printer", () => {
  let vsftpd: PrinterLikeVsftpd;
  let proxy: Service;
  let dir: string;
  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    vsftpd = await startPrinterLikeVsftpd({ host: PRINTER, accessCode: ACCESS_CODE, pasvPorts: { first: 40100, last: 40199 } });
    proxy = createFtpService(proxyContext({
      name: "ftp-vsftpd",
      proxy: PROXY,
      printer: PRINTER,
      // The proxy checks vsftpd's certificate against its CA, as with a real printer's BBL CA.
      extra: `printer_ca = "${vsftpd.caFile}"\nftp_data_ports = "41100-41199"\nftp_sessions = 1\n`,
    }));
    await proxy.start();
    dir = mkdtempSync(join(tmpdir(), "pp-ftp-vsftpd-"));
  });
  afterAll(async () => {
    await proxy?.stop();
    await vsftpd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const file = (name: string, size: number) => {
    const body = randomBytes(size);
    writeFileSync(join(dir, name), body);
    return sha(body);
  };
  const onPrinter = (name: string) => sha(readFileSync(join(vsftpd.root, name)));
  /** vsftpd's log lines about `name`, each with the pid of the vsftpd session process that wrote it. */
  const logged = (re: RegExp) => vsftpd.log().split("\n").filter((l) => re.test(l));

  test("the vsftpd really is printer-like: a data connection without session reuse is refused", async () => {
    file("noreuse.bin", 10_000);
    const r = await run(["python3", "tests/ftp-client.py", PRINTER, "990", "bblp", ACCESS_CODE, "pasv", "0", "put", join(dir, "noreuse.bin"), "noreuse.bin"]);
    expect(r.code).not.toBe(0);
    expect(logged(/OK UPLOAD.*noreuse\.bin/)).toHaveLength(0);
  });

  test("curl (EPSV) uploads and downloads through pandaproxy", async () => {
    const digest = file("curl.bin", 3_000_000);
    const up = await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-T", join(dir, "curl.bin"), `ftps://${PROXY}/curl.3mf`]);
    expect(up.err).toBe("");
    expect(onPrinter("curl.3mf")).toBe(digest);
    expect(logged(/OK UPLOAD.*\/curl\.3mf", 3000000 bytes/)).toHaveLength(1);
    const down = await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-o", join(dir, "curl.out"), `ftps://${PROXY}/curl.3mf`]);
    expect(down.err).toBe("");
    expect(sha(readFileSync(join(dir, "curl.out")))).toBe(digest);
  });

  test("lftp (PASV) uploads and downloads", async () => {
    const digest = file("lftp.bin", 1_500_000);
    const settings = "set ssl:verify-certificate no; set ftp:ssl-force true; set ftp:ssl-protect-data true; set ftp:prefer-epsv false; set net:max-retries 1";
    const r = await run(["lftp", "-c", `${settings}; open -u bblp,${ACCESS_CODE} ftps://${PROXY}; put ${join(dir, "lftp.bin")} -o lftp.3mf; get lftp.3mf -o ${join(dir, "lftp.out")}`]);
    expect(r.err).toBe("");
    expect(onPrinter("lftp.3mf")).toBe(digest);
    expect(sha(readFileSync(join(dir, "lftp.out")))).toBe(digest);
  });

  for (const mode of ["pasv", "port", "eprt"]) {
    test(`Python ftplib with session reuse, ${mode.toUpperCase()} mode (vsftpd itself only allows passive)`, async () => {
      const digest = file(`py-${mode}.bin`, 900_000);
      const base = ["python3", "tests/ftp-client.py", PROXY, "990", "bblp", ACCESS_CODE, mode, "1"];
      const up = await run([...base, "put", join(dir, `py-${mode}.bin`), `py-${mode}.3mf`]);
      expect(up.out).toContain("226");
      expect(onPrinter(`py-${mode}.3mf`)).toBe(digest);
      const down = await run([...base, "get", `py-${mode}.3mf`, join(dir, `py-${mode}.out`)]);
      expect(down.out).toContain("226");
      expect(sha(readFileSync(join(dir, `py-${mode}.out`)))).toBe(digest);
    });
  }

  test("npm basic-ftp (implicit TLS) uploads, lists and downloads", async () => {
    const body = randomBytes(1_200_000);
    const client = await basicFtp();
    try {
      await client.uploadFrom(Readable.from([body]), "basic.3mf");
      expect(onPrinter("basic.3mf")).toBe(sha(body));
      expect((await client.list()).find((f) => f.name === "basic.3mf")?.size).toBe(body.length);
      const chunks: Buffer[] = [];
      await client.downloadTo(new Writable({ write: (c, _e, cb) => (chunks.push(c), cb()) }), "basic.3mf");
      expect(sha(Buffer.concat(chunks))).toBe(sha(body));
    } finally {
      client.close();
    }
  });

  test("the viewer code logs in read-only: listing and downloads work, uploads and deletes get 550 and never reach vsftpd", async () => {
    const client = await basicFtp(PROXY, VIEWER_CODE);
    try {
      expect((await client.list()).map((f) => f.name)).toContain("basic.3mf");
      const chunks: Buffer[] = [];
      await client.downloadTo(new Writable({ write: (c, _e, cb) => (chunks.push(c), cb()) }), "basic.3mf");
      expect(sha(Buffer.concat(chunks))).toBe(onPrinter("basic.3mf"));
      await expect(client.uploadFrom(Readable.from([Buffer.from("x")]), "viewer.3mf")).rejects.toThrow(/550/);
      await expect(client.remove("basic.3mf")).rejects.toThrow(/550/);
      await expect(client.rename("basic.3mf", "renamed.3mf")).rejects.toThrow(/550/);
    } finally {
      client.close();
    }
    expect(logged(/viewer\.3mf|DELE|RNFR/)).toHaveLength(0);
    expect(existsSync(join(vsftpd.root, "basic.3mf"))).toBe(true);
  });

  test("a wrong code gets 530 and never reaches vsftpd (no connection, no login attempt)", async () => {
    const connects = logged(/CONNECT: Client/).length;
    const failed = logged(/FAIL LOGIN/).length;
    await expect(basicFtp(PROXY, "00000000")).rejects.toThrow(/530/);
    await Bun.sleep(200);
    expect(logged(/CONNECT: Client/)).toHaveLength(connects);
    expect(logged(/FAIL LOGIN/)).toHaveLength(failed);
  });

  test("a 0-byte file goes up and comes back", async () => {
    file("empty.bin", 0);
    expect((await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-T", join(dir, "empty.bin"), `ftps://${PROXY}/empty.gcode`])).err).toBe("");
    expect(readFileSync(join(vsftpd.root, "empty.gcode")).length).toBe(0);
    const down = await run(["curl", "-sS", "-k", "-u", `bblp:${ACCESS_CODE}`, "-o", join(dir, "empty.out"), `ftps://${PROXY}/empty.gcode`]);
    expect(down.code).toBe(0);
    expect(readFileSync(join(dir, "empty.out")).length).toBe(0);
  });

  test("four concurrent uploads with ftp_sessions = 1: all complete over one vsftpd session", async () => {
    const bodies = [0, 1, 2, 3].map(() => randomBytes(1_000_000));
    await Promise.all(bodies.map(async (body, i) => {
      const client = await basicFtp();
      try {
        await client.uploadFrom(Readable.from([body]), `four-${i}.3mf`);
      } finally {
        client.close();
      }
    }));
    bodies.forEach((body, i) => expect(onPrinter(`four-${i}.3mf`)).toBe(sha(body)));
    // Every vsftpd log line carries its session process's pid: one pid means one printer session.
    const stors = logged(/OK UPLOAD.*\/four-\d\.3mf"/);
    expect(stors).toHaveLength(4);
    expect(new Set(stors.map((l) => /\[pid (\d+)\]/.exec(l)?.[1])).size).toBe(1);
  });

  test("an upload cut off mid-way: the client gets 426 and vsftpd records a failed upload, never a complete one", async () => {
    const control = tlsConnect({ host: PROXY, port: 990, rejectUnauthorized: false });
    control.on("error", () => {});
    let text = "";
    control.on("data", (b) => (text += b.toString()));
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 400 && !re.test(text); i++) await Bun.sleep(25);
      expect(text).toMatch(re);
    };
    try {
      await waitFor(/^220 /m);
      control.write(`USER bblp\r\nPASS ${ACCESS_CODE}\r\nPBSZ 0\r\nPROT P\r\nTYPE I\r\nEPSV\r\n`);
      await waitFor(/\|\|\|(\d+)\|/);
      const port = Number(/\|\|\|(\d+)\|/.exec(text)![1]);
      const raw = netConnect(port, PROXY);
      raw.on("error", () => {});
      await new Promise((r) => raw.once("connect", r));
      control.write("STOR cut.3mf\r\n");
      await waitFor(/^150 /m);
      const data: TLSSocket = tlsConnect({ socket: raw, rejectUnauthorized: false, session: control.getSession() });
      data.on("error", () => {});
      await new Promise((r) => data.once("secureConnect", r));
      data.write(randomBytes(600_000));
      await Bun.sleep(300);
      raw.resetAndDestroy();
      await waitFor(/^426 /m);
      expect(text).not.toMatch(/^226 /m);
      for (let i = 0; i < 100 && logged(/UPLOAD.*\/cut\.3mf"/).length === 0; i++) await Bun.sleep(25);
      expect(logged(/FAIL UPLOAD.*\/cut\.3mf"/)).toHaveLength(1);
      expect(logged(/OK UPLOAD.*\/cut\.3mf"/)).toHaveLength(0);
    } finally {
      control.destroy();
    }
  });
});
