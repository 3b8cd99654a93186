// The running proxy as systemd drives it: `bun main.ts --config FILE` as a child process; SIGHUP restarts only
// the printers whose entry changed, a broken file is refused and the running configuration kept; SIGTERM stops
// it promptly with exit 0. Printers run no services (services = []), so only the supervisor is exercised.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const WEB = "127.0.1.80:18480";
const STOP_LIMIT_MS = 5_000;
const dir = mkdtempSync(join(tmpdir(), "pp-supervisor-"));
const configFile = join(dir, "printers.toml");

interface Entry {
  name: string;
  host: string;
  bind: string;
}

function writeConfig(printers: Entry[]): void {
  const blocks = printers.map(
    (p) => `[[printer]]\nname = "${p.name}"\nhost = "${p.host}"\nserial = "01P00A00000000${p.name}"\naccess_code = "Ab12Cd34"\nbind = "${p.bind}"\nservices = []\n`,
  );
  writeFileSync(configFile, `[proxy]\nstate_dir = "${dir}/state"\nlog_level = "info"\n[web]\nlisten = "${WEB}"\nusername = "admin"\npassword = "${WEB_PASSWORD}"\n\n${blocks.join("\n")}`);
}

let child: ChildProcess | undefined;
const lines: string[] = [];
let exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; log so far:\n${lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The web page asks for a login by default; the admin login sees every printer. */
const WEB_PASSWORD = "supervisor-test-password";

const linesSince = (mark: number) => lines.slice(mark);
const logged = (mark: number, text: string) => linesSince(mark).some((l) => l.includes(text));

async function apiPrinters(): Promise<{ name: string; host: string; bind: string }[]> {
  const response = await fetch(`http://${WEB}/api/printers`, { headers: { Authorization: `Basic ${btoa(`admin:${WEB_PASSWORD}`)}` } });
  expect(response.status).toBe(200);
  return (await response.json()) as { name: string; host: string; bind: string }[];
}

beforeAll(async () => {
  writeConfig([
    { name: "a", host: "192.168.1.50", bind: "127.0.1.81" },
    { name: "b", host: "192.168.1.51", bind: "127.0.1.82" },
  ]);
  child = spawn(BUN, [join(ROOT, "main.ts"), "--config", configFile], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  exit = new Promise((resolve) => child!.once("exit", (code, signal) => resolve({ code, signal })));
  let partial = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
  });
  await until("startup", () => logged(0, "web page on http://127.0.1.80:18480/") && logged(0, "[a/printer] serving") && logged(0, "[b/printer] serving"));
});

afterAll(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill("SIGKILL");
    await exit;
  }
  rmSync(dir, { recursive: true, force: true });
});

describe("the running proxy", () => {
  test("serves both printers on /api/printers and never logs the access code", async () => {
    const printers = await apiPrinters();
    expect(printers.map((p) => [p.name, p.host, p.bind])).toEqual([
      ["a", "192.168.1.50", "127.0.1.81"],
      ["b", "192.168.1.51", "127.0.1.82"],
    ]);
    expect(lines.join("\n")).not.toContain("Ab12Cd34");
  });

  test("SIGHUP restarts only the printer whose entry changed", async () => {
    const mark = lines.length;
    writeConfig([
      { name: "a", host: "192.168.1.50", bind: "127.0.1.81" },
      { name: "b", host: "192.168.1.99", bind: "127.0.1.82" },
    ]);
    child!.kill("SIGHUP");
    await until("reload", () => logged(mark, "reloaded:"));
    expect(logged(mark, "reloaded: 1 printer(s) (re)started, 1 unchanged")).toBe(true);
    expect(logged(mark, 'printer "b" stopped (removed or changed)')).toBe(true);
    expect(logged(mark, "[b/printer] serving 192.168.1.99 on 127.0.1.82")).toBe(true);
    expect(logged(mark, "[a/printer]")).toBe(false);
    expect(logged(mark, 'printer "a" stopped')).toBe(false);
    const printers = await apiPrinters();
    expect(printers.find((p) => p.name === "b")?.host).toBe("192.168.1.99");
    expect(printers.find((p) => p.name === "a")?.host).toBe("192.168.1.50");
  });

  test("SIGHUP adds and removes printers", async () => {
    const mark = lines.length;
    writeConfig([
      { name: "b", host: "192.168.1.99", bind: "127.0.1.82" },
      { name: "c", host: "192.168.1.52", bind: "127.0.1.83" },
    ]);
    child!.kill("SIGHUP");
    await until("reload", () => logged(mark, "reloaded:"));
    expect(logged(mark, "reloaded: 1 printer(s) (re)started, 1 unchanged")).toBe(true);
    expect(logged(mark, 'printer "a" stopped (removed or changed)')).toBe(true);
    expect(logged(mark, "[c/printer] serving 192.168.1.52")).toBe(true);
    expect(logged(mark, "[b/printer]")).toBe(false);
    expect((await apiPrinters()).map((p) => p.name).sort()).toEqual(["b", "c"]);
  });

  test("a broken new file is logged with its problems and the running configuration kept", async () => {
    const mark = lines.length;
    writeFileSync(configFile, `[proxy]\nstate_dir = "${dir}/state"\n[[printer]]\nname = "b"\nhots = "x"\n`);
    child!.kill("SIGHUP");
    await until("refusal", () => logged(mark, "reload refused, keeping the running configuration"));
    await until("problems listed", () => logged(mark, 'key "hots" is unknown (did you mean "host"?)'));
    expect(logged(mark, "reloaded:")).toBe(false);
    expect((await apiPrinters()).map((p) => p.name).sort()).toEqual(["b", "c"]);

    const mark2 = lines.length;
    writeFileSync(configFile, "this is = = not toml");
    child!.kill("SIGHUP");
    await until("refusal", () => logged(mark2, "reload refused"));
    expect(logged(mark2, "not valid TOML")).toBe(true);
    expect(child!.exitCode).toBeNull();
  });

  test("SIGTERM stops it within 5 s with exit code 0", async () => {
    const mark = lines.length;
    const started = Date.now();
    child!.kill("SIGTERM");
    const result = await Promise.race([exit, new Promise<"late">((r) => setTimeout(() => r("late"), STOP_LIMIT_MS))]);
    if (result === "late") console.log(linesSince(mark).join("\n"));
    expect(result).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(STOP_LIMIT_MS);
    await until("last lines", () => logged(mark, "stopped"), 1_000);
    await expect(fetch(`http://${WEB}/api/printers`)).rejects.toThrow();
  }, 15_000);
});

describe("--verbose", () => {
  test("outlives a reload whose file says log_level = warn", async () => {
    const file = join(dir, "verbose.toml");
    const text = (host: string) =>
      `[proxy]\nstate_dir = "${dir}/state"\nlog_level = "warn"\n[web]\nlisten = ""\n[[printer]]\nname = "v"\nhost = "${host}"\nserial = "S9"\naccess_code = "Ab12Cd34"\nbind = "127.0.1.85"\nservices = []\n`;
    writeFileSync(file, text("192.168.1.70"));
    const verbose = spawn(BUN, [join(ROOT, "main.ts"), "--config", file, "--verbose"], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
    const out: string[] = [];
    verbose.stderr!.setEncoding("utf8").on("data", (chunk: string) => out.push(chunk));
    const done = new Promise<number | null>((resolve) => verbose.once("exit", (code) => resolve(code)));
    try {
      await until("startup", () => out.join("").includes("[v/printer] serving"));
      writeFileSync(file, text("192.168.1.71"));
      verbose.kill("SIGHUP");
      // "reloaded" is an info line: shown only while --verbose still holds.
      await until("reload line", () => out.join("").includes("reloaded: 1 printer(s) (re)started"));
      verbose.kill("SIGTERM");
      expect(await done).toBe(0);
    } finally {
      if (verbose.exitCode === null) verbose.kill("SIGKILL");
    }
  }, 15_000);
});
