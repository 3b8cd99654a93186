// Slicers connect by IP and check the certificate's name against the printer's serial. Every TLS listener of a
// Bambu printer, served the product's way (supervisor, state_dir, the local CA), must pass three independent
// verifiers that check the chain against the proxy's CA and the name against the serial: OpenSSL's s_client
// (-verify_hostname), Python's ssl (check_hostname, server_hostname=<serial>) and Node's tls.connect (servername,
// the default checkServerIdentity; run by node, not by bun). The same three must refuse the name of another serial.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../lib/config.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";

const CODE = "12345678";
const OTHER_SERIAL = "01P00A999999999";
const PORTS = { chamber: 16100, rtsp: 10422, mqtt: 18983, ftp: 11090, bind: 13100, bind_tls: 13102 };
const HAS_FFMPEG = spawnSync("ffmpeg", ["-version"], { stdio: "ignore" }).status === 0;
const NODE = spawnSync("node", ["--version"], { stdio: "ignore" }).status === 0 ? "node" : undefined;
const PY_VERIFY = join(import.meta.dir, "tls-verify.py");
const NODE_VERIFY = join(import.meta.dir, "tls-verify-node.mjs");

interface Printer { name: string; model: string; sim: string; proxy: string; tlsPorts: Record<string, number> }
const PRINTERS: Printer[] = [
  { name: "p1s", model: "P1S", sim: "127.0.19.11", proxy: "127.0.19.21", tlsPorts: { mqtt: PORTS.mqtt, ftps: PORTS.ftp, chamber: PORTS.chamber, bind_tls: PORTS.bind_tls } },
  { name: "p2s", model: "P2S", sim: "127.0.19.13", proxy: "127.0.19.23", tlsPorts: { tunnel: PORTS.chamber, ...(HAS_FFMPEG ? { rtsps: PORTS.rtsp } : {}) } },
  ...(HAS_FFMPEG ? [{ name: "x1c", model: "X1C", sim: "127.0.19.12", proxy: "127.0.19.22", tlsPorts: { rtsps: PORTS.rtsp } }] : []),
];

const stateDir = mkdtempSync(join(tmpdir(), "pp-tls-names-"));
const caFile = join(stateDir, "ca.crt");
const sims = new Map<string, SimPrinter>();
let supervisor: Supervisor;

function run(command: string, args: string[], input = ""): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.on("close", (status) => (clearTimeout(timer), resolve({ status, out })));
    child.stdin.end(input);
  });
}

type Verifier = (host: string, port: number, name: string) => Promise<{ ok: boolean; out: string }>;
const verifiers: Record<string, Verifier> = {
  "openssl s_client -verify_hostname": async (host, port, name) => {
    const r = await run("openssl", ["s_client", "-connect", `${host}:${port}`, "-CAfile", caFile, "-verify_hostname", name, "-verify_return_error", "-tls1_2"], "");
    return { ok: r.status === 0 && /Verify return code: 0 \(ok\)/.test(r.out), out: r.out.split("\n").filter((l) => /verify|error/i.test(l)).join("\n") };
  },
  "python ssl check_hostname": async (host, port, name) => {
    const r = await run("python3", [PY_VERIFY, "handshake", host, String(port), name, caFile]);
    return { ok: r.status === 0 && r.out.includes("verified"), out: r.out };
  },
  ...(NODE && {
    "node tls.connect servername": async (host: string, port: number, name: string) => {
      const r = await run(NODE, [NODE_VERIFY, "handshake", host, String(port), name, caFile]);
      return { ok: r.status === 0 && r.out.includes("verified"), out: r.out };
    },
  }),
};

beforeAll(async () => {
  setupLogging("info", { quiet: true });
  const entries: string[] = [`[proxy]`, `state_dir = ${JSON.stringify(stateDir)}`, `[web]`, `listen = ""`];
  for (const p of PRINTERS) {
    const sim = await startSimulatedBambu({ host: p.sim, model: p.model, name: p.name, ports: PORTS, services: undefined });
    sims.set(p.name, sim);
    const ports = `{ ${Object.entries(PORTS).map(([k, v]) => `${k} = ${v}`).join(", ")} }`;
    entries.push(
      `[[printer]]`, `name = "${p.name}"`, `model = "${p.model}"`, `host = "${p.sim}"`, `serial = "${sim.identity.serial}"`,
      `access_code = "${CODE}"`, `bind = "${p.proxy}"`, `services = ["camera", "mqtt", "ftp", "bind"]`,
      `ports = ${ports}`, `printer_ports = ${ports}`,
    );
  }
  supervisor = await startSupervisor(parseConfig(entries.join("\n") + "\n", "tls-names printers.toml"));
}, 60_000);

afterAll(async () => {
  await supervisor?.stop();
  for (const sim of sims.values()) await sim.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

describe("every TLS port of a Bambu printer names the printer", () => {
  for (const p of PRINTERS) {
    for (const [service, port] of Object.entries(p.tlsPorts)) {
      test(`${p.model} ${service} (${port}): the serial verifies with all three; another serial is refused by all three`, async () => {
        const serial = sims.get(p.name)!.identity.serial;
        for (const [verifier, verify] of Object.entries(verifiers)) {
          const good = await verify(p.proxy, port, serial);
          expect(`${verifier} as ${serial}: ${good.ok ? "verified" : good.out}`).toBe(`${verifier} as ${serial}: verified`);
          const other = await verify(p.proxy, port, OTHER_SERIAL);
          expect(`${verifier} as ${OTHER_SERIAL}: ${other.ok ? "verified" : "refused"}`).toBe(`${verifier} as ${OTHER_SERIAL}: refused`);
        }
      }, 30_000);
    }
  }

  test("FTPS data connections verify the serial too (Python ftplib, curl, basic-ftp under node)", async () => {
    const p = PRINTERS[0]!;
    const serial = sims.get(p.name)!.identity.serial;
    const python = await run("python3", [PY_VERIFY, "ftps", p.proxy, String(PORTS.ftp), serial, caFile, "bblp", CODE]);
    expect(python.out.trim()).toBe("verified");
    // curl checks every connection (control and data) against the URL's host name.
    const curl = await run("curl", ["-sS", "--max-time", "10", "--ssl-reqd", "--cacert", caFile, "--tls-max", "1.2",
      "--connect-to", `${serial}:${PORTS.ftp}:${p.proxy}:${PORTS.ftp}`, "-u", `bblp:${CODE}`, `ftps://${serial}:${PORTS.ftp}/`]);
    expect(`${curl.status} ${curl.out.slice(0, 300)}`).toMatch(/^0 /);
    const wrong = await run("curl", ["-sS", "--max-time", "10", "--ssl-reqd", "--cacert", caFile, "--tls-max", "1.2",
      "--connect-to", `${OTHER_SERIAL}:${PORTS.ftp}:${p.proxy}:${PORTS.ftp}`, "-u", `bblp:${CODE}`, `ftps://${OTHER_SERIAL}:${PORTS.ftp}/`]);
    expect(wrong.status).not.toBe(0);
    if (NODE) {
      const node = await run(NODE, [NODE_VERIFY, "ftps", p.proxy, String(PORTS.ftp), serial, caFile, "bblp", CODE]);
      expect(node.out.trim()).toBe("verified");
    }
  }, 30_000);
});

describe("what the log says when a client refuses our certificate", () => {
  for (const version of ["-tls1_2", "-tls1_3"]) {
    test(`${version}: one line naming the peer's address, the refusal and where to get the CA`, async () => {
      const p = PRINTERS[0]!;
      const logs = captureLogs();
      try {
        // OpenSSL aborts the handshake with an alert when the name does not match.
        await run("openssl", ["s_client", "-connect", `${p.proxy}:${PORTS.mqtt}`, "-CAfile", caFile, "-verify_hostname", OTHER_SERIAL, "-verify_return_error", version]);
        for (let waited = 0; !logs.lines.some((l) => l.includes("did not accept our certificate")); waited += 20) {
          if (waited > 3_000) throw new Error(`no line; saw:\n${logs.lines.join("\n")}`);
          await Bun.sleep(20);
        }
        const line = logs.lines.find((l) => l.includes("did not accept our certificate"))!;
        expect(line).toContain("[p1s/mqtt]");
        expect(line).toMatch(/ 127\.0\.0\.1:\d+ /);
        expect(line).not.toContain("?:?");
        expect(line).toContain("pandaproxy ca");
      } finally {
        logs.stop();
      }
    });
  }

  test("a client that closes mid-handshake is logged in words with its address", async () => {
    const p = PRINTERS[0]!;
    const logs = captureLogs();
    try {
      const socket = tcpConnect({ host: p.proxy, port: PORTS.mqtt });
      await new Promise((r) => socket.once("connect", r));
      socket.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40, 0x01])); // the start of a ClientHello
      await Bun.sleep(50);
      socket.destroy();
      for (let waited = 0; !logs.lines.some((l) => l.includes("closed the connection during the TLS handshake")); waited += 20) {
        if (waited > 3_000) throw new Error(`no line; saw:\n${logs.lines.join("\n")}`);
        await Bun.sleep(20);
      }
      expect(logs.lines.find((l) => l.includes("during the TLS handshake"))).toMatch(/ 127\.0\.0\.1:\d+ /);
    } finally {
      logs.stop();
    }
  });
});
