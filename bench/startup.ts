// Startup benchmark (issue 18): time from `pandaproxy run --config` to every listener accepting, with 10 Bambu
// printers (binds 127.0.46.100-109, high ports; the printers point at addresses where nothing listens) and the
// web page; idle RSS after that; the binary's size. Runs the compiled binary when dist/ has one for this machine,
// and `bun main.ts` too. Then lists what `run` loads (static imports from main.ts through lib/commands/run.ts):
// the simulator (lib/sim/) and jpeg-js should not be among them.
//   node_modules/.bin/bun bench/startup.ts [--rounds 3]
import { memoryMiB } from "./support.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";

const PRINTERS = 10;
const BIND_BASE = 100;
const PRINTER_BASE = 200;
const NET = "127.0.46";
const WEB = { host: `${NET}.99`, port: 18080 };
const PORTS = { chamber: 16000, rtsp: 10322, mqtt: 18883, ftp: 10990, bind: 13000, bind_tls: 13002, ssdp: 12021 };
/** The TCP listeners a P1S entry opens (SSDP is UDP, RTSP is not a P1S service). */
const TCP_PORTS = [PORTS.chamber, PORTS.mqtt, PORTS.ftp, PORTS.bind, PORTS.bind_tls];
const READY_TIMEOUT_MS = 30_000;
const POLL_MS = 10;
const CONNECT_TIMEOUT_MS = 200;
const IDLE_SETTLE_MS = 5_000;
const STOP_TIMEOUT_MS = 5_000;
/** The unreachable printers make warnings: kept quiet, the last of them shown when a start fails. */
const LOG_TAIL_CHARS = 4_000;
const ROOT = resolve(import.meta.dir, "..");

const { values } = parseArgs({ options: { rounds: { type: "string", default: "3" } } });
const rounds = Math.min(10, Math.max(1, Number(values.rounds)));

function configText(stateDir: string): string {
  const lines = [`[proxy]`, `state_dir = ${JSON.stringify(stateDir)}`, `log_level = "warn"`, ``, `[web]`, `listen = "${WEB.host}:${WEB.port}"`, `username = "bench"`, `password = "startup-bench"`];
  const ports = `{ ${Object.entries(PORTS).map(([k, v]) => `${k} = ${v}`).join(", ")} }`;
  for (let i = 0; i < PRINTERS; i++) {
    lines.push(``, `[[printer]]`, `name = "p${i}"`, `host = "${NET}.${PRINTER_BASE + i}"`, `serial = "01P00A0000000${String(i).padStart(2, "0")}"`,
      `access_code = "12345678"`, `model = "P1S"`, `bind = "${NET}.${BIND_BASE + i}"`, `ports = ${ports}`, `printer_ports = ${ports}`,
      `ssdp_targets = ["${NET}.${PRINTER_BASE + i}"]`);
  }
  return lines.join("\n") + "\n";
}

const listeners = (): { host: string; port: number }[] => [
  WEB,
  ...Array.from({ length: PRINTERS }, (_, i) => TCP_PORTS.map((port) => ({ host: `${NET}.${BIND_BASE + i}`, port }))).flat(),
];

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host, port });
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => finish(false));
    socket.once("connect", () => finish(true));
    socket.once("error", () => finish(false));
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  await Promise.race([new Promise((r) => child.once("exit", r)), Bun.sleep(STOP_TIMEOUT_MS)]);
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

/** One start: ms until every listener accepts, then the RSS once idle. */
async function startOnce(command: string[], configFile: string): Promise<{ readyMs: number; idleRss: number }> {
  const started = performance.now();
  const child = spawn(command[0]!, [...command.slice(1), "run", "--config", configFile], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (chunk: Buffer) => void (log = (log + chunk.toString()).slice(-LOG_TAIL_CHARS)));
  try {
    let pending = listeners();
    while (pending.length) {
      if (child.exitCode !== null) throw new Error(`${command.join(" ")} exited with ${child.exitCode}:\n${log}`);
      if (performance.now() - started > READY_TIMEOUT_MS) throw new Error(`${pending.length} listener(s) not up within ${READY_TIMEOUT_MS} ms, e.g. ${pending[0]!.host}:${pending[0]!.port}`);
      const up = await Promise.all(pending.map((l) => accepts(l.host, l.port)));
      pending = pending.filter((_, i) => !up[i]);
      if (pending.length) await Bun.sleep(POLL_MS);
    }
    const readyMs = performance.now() - started;
    await Bun.sleep(IDLE_SETTLE_MS);
    return { readyMs, idleRss: memoryMiB(child.pid!).rss };
  } finally {
    await stop(child);
  }
}

/** Static imports reachable from `entry` (dynamic import() left out: those load only when called). */
function staticImports(entry: string): Set<string> {
  const seen = new Set<string>();
  const transpiler = new Bun.Transpiler({ loader: "ts" });
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    if (!file.endsWith(".ts")) return;
    for (const imported of transpiler.scanImports(readFileSync(file, "utf8").replace(/^#!.*/, ""))) {
      if (imported.kind !== "import-statement") continue;
      if (imported.path.startsWith(".")) visit(resolve(dirname(file), imported.path));
      else if (!imported.path.startsWith("node:") && !imported.path.startsWith("bun")) seen.add(`package ${imported.path}`);
    }
  };
  visit(entry);
  return seen;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "pp-bench-startup-"));
  try {
    const arch = process.arch === "arm64" ? "arm64" : "x64";
    const binary = join(ROOT, "dist", `pandaproxy-linux-${arch}`);
    const targets: [string, string[]][] = [];
    if (existsSync(binary)) targets.push([`dist/pandaproxy-linux-${arch} (${(statSync(binary).size / 2 ** 20).toFixed(1)} MiB, built ${statSync(binary).mtime.toISOString()})`, [binary]]);
    targets.push(["bun main.ts", [process.execPath, join(ROOT, "main.ts")]]);
    console.log(`startup: ${PRINTERS} P1S printers (${TCP_PORTS.length} TCP listeners each + SSDP) and the web page = ${listeners().length} TCP listeners; printers unreachable; ${rounds} round(s)`);
    for (const [index, [label, command]] of targets.entries()) {
      // A fresh state directory each: the first start makes the local CA and the printers' certificates.
      const configFile = join(dir, `printers-${index}.toml`);
      writeFileSync(configFile, configText(join(dir, `state-${index}`)));
      const runs: { readyMs: number; idleRss: number }[] = [];
      for (let i = 0; i < rounds; i++) runs.push(await startOnce(command, configFile));
      console.log(`${label}: all listeners up in (first start, making the CA and ${PRINTERS} certificates, then with them) ${runs.map((r) => r.readyMs.toFixed(0)).join(", ")} ms; idle RSS ${runs.map((r) => r.idleRss.toFixed(1)).join(", ")} MiB (after ${IDLE_SETTLE_MS / 1000} s)`);
    }
    const loaded = [...staticImports(join(ROOT, "main.ts")), ...staticImports(join(ROOT, "lib/commands/run.ts"))];
    const simulator = [...new Set(loaded.filter((f) => f.includes("/lib/sim/") || f.includes("jpeg-js")))].map((f) => (f.startsWith("/") ? relative(ROOT, f) : f));
    console.log(`\`run\` loads ${new Set(loaded).size} modules statically; of the simulator and jpeg-js: ${simulator.length ? simulator.join(", ") : "none"}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0);
}

await main();
