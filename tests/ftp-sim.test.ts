// The simulated printer's FTPS server against curl, lftp and Python ftplib: session reuse required, limits, PORT.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimFtpService } from "../lib/sim/ftp.ts";
import { run } from "./ftp-helpers.ts";

const HOST = "127.0.3.10";
const CODE = "12345678";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("simulated printer FTPS", () => {
  let sim: SimPrinter;
  let ftp: SimFtpService;
  let dir: string;
  beforeAll(async () => {
    sim = await startSimulatedBambu({ host: HOST, services: ["ftp"], accessCode: CODE });
    ftp = sim.service<SimFtpService>("ftp")!;
    dir = mkdtempSync(join(tmpdir(), "pp-ftp-sim-"));
  });
  afterAll(async () => {
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("curl with session reuse uploads and downloads (SHA-256 verified)", async () => {
    const body = randomBytes(1_500_000);
    writeFileSync(join(dir, "in.bin"), body);
    const up = await run(["curl", "-sS", "-k", "-u", `bblp:${CODE}`, "-T", join(dir, "in.bin"), `ftps://${HOST}/job.3mf`]);
    expect(up.err).toBe("");
    expect(sha(readFileSync(join(ftp.root, "job.3mf")))).toBe(sha(body));
    const down = await run(["curl", "-sS", "-k", "-u", `bblp:${CODE}`, "-o", join(dir, "out.bin"), `ftps://${HOST}/job.3mf`]);
    expect(down.code).toBe(0);
    expect(sha(readFileSync(join(dir, "out.bin")))).toBe(sha(body));
  });

  test("lftp (PASV, session reuse) uploads and downloads (SHA-256 verified)", async () => {
    const body = randomBytes(1_200_000);
    writeFileSync(join(dir, "lftp.bin"), body);
    const before = ftp.reuseRefusals;
    const settings = "set ssl:verify-certificate no; set ftp:ssl-force true; set ftp:ssl-protect-data true; set ftp:prefer-epsv false; set net:max-retries 1";
    const r = await run(["lftp", "-c", `${settings}; open -u bblp,${CODE} ftps://${HOST}; put ${join(dir, "lftp.bin")} -o lftp.3mf; get lftp.3mf -o ${join(dir, "lftp.out")}`]);
    expect(r.err).toBe("");
    expect(sha(readFileSync(join(ftp.root, "lftp.3mf")))).toBe(sha(body));
    expect(sha(readFileSync(join(dir, "lftp.out")))).toBe(sha(body));
    expect(ftp.reuseRefusals).toBe(before);
  });

  test("a client that does not reuse the session gets 522 (curl --no-sessionid, ftplib without session)", async () => {
    const before = ftp.reuseRefusals;
    const curl = await run(["curl", "-v", "-sS", "-k", "--no-sessionid", "-u", `bblp:${CODE}`, `ftps://${HOST}/`]);
    expect(curl.code).not.toBe(0);
    const py = await run(["python3", "tests/ftp-client.py", HOST, "990", "bblp", CODE, "pasv", "0", "nlst"]);
    expect(py.code).not.toBe(0);
    expect(py.err).toContain("522 SSL connection failed: session reuse required");
    expect(ftp.reuseRefusals).toBe(before + 2);
    const reused = await run(["python3", "tests/ftp-client.py", HOST, "990", "bblp", CODE, "pasv", "1", "nlst"]);
    expect(reused.out).toContain("job.3mf");
  });

  test("the card has the folders a printer's has: LIST / shows them, uploads to /cache and to the root work", async () => {
    const listing = await run(["curl", "-sS", "-k", "-u", `bblp:${CODE}`, `ftps://${HOST}/`]);
    expect(listing.err).toBe("");
    const folders = listing.out.split(/\r?\n/).filter((l) => l.startsWith("d")).map((l) => l.split(/\s+/).at(-1));
    expect(folders).toEqual(expect.arrayContaining(["cache", "image", "logger", "model", "timelapse"]));
    writeFileSync(join(dir, "cached.bin"), randomBytes(10_000));
    for (const target of ["cache/cached.3mf", "root.3mf"]) {
      const up = await run(["curl", "-sS", "-k", "-u", `bblp:${CODE}`, "-T", join(dir, "cached.bin"), `ftps://${HOST}/${target}`]);
      expect(up.err).toBe("");
      expect(readFileSync(join(ftp.root, target))).toEqual(readFileSync(join(dir, "cached.bin")));
    }
  });

  test("wrong access code: 530; PORT is not implemented (500), as on the printers", async () => {
    const wrong = await run(["curl", "-sS", "-k", "-u", "bblp:00000000", `ftps://${HOST}/`]);
    expect(wrong.err).toContain("530");
    const port = await run(["python3", "tests/ftp-client.py", HOST, "990", "bblp", CODE, "port", "1", "nlst"]);
    expect(port.err).toContain("500 Unknown command.");
  });

  test("at most two sessions: a third is refused with 421", async () => {
    const open = () =>
      new Promise<{ close(): void; greeting: Promise<string> }>((resolve) => {
        const s = tlsConnect({ host: HOST, port: 990, rejectUnauthorized: false });
        const greeting = new Promise<string>((r) => s.once("data", (b) => r(b.toString())));
        s.on("error", () => {});
        s.once("secureConnect", () => resolve({ close: () => s.destroy(), greeting }));
      });
    const a = await open();
    const b = await open();
    expect(await a.greeting).toStartWith("220");
    expect(await b.greeting).toStartWith("220");
    const c = await open();
    expect(await c.greeting).toStartWith("421");
    for (const s of [a, b, c]) s.close();
  });
});
