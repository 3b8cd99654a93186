// The process policy, proven in child processes: an error nobody caught is one log line and the process goes
// on; an error thrown in one client's callback closes that client alone while another client and another
// printer keep being served. Reloads run one at a time; a printer whose TLS files cannot be read fails alone;
// a stop that passes its deadline exits the process.
import { afterAll, describe, expect, test } from "bun:test";
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../lib/config.ts";
import { currentClient, outsideClient } from "../lib/core/client-context.ts";
import { listen } from "../lib/core/server.ts";
import { captureLogs, serviceLogger, setupLogging } from "../lib/log.ts";
import { startSupervisor } from "../lib/supervisor.ts";

const ROOT = join(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const CLIENT_ADDRESS = "127.0.25.10";
const WAIT_MS = 5_000;
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), "pp-process-policy-"));

afterAll(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

async function until(what: string, check: () => boolean, lines: string[], timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; log so far:\n${lines.join("\n")}`);
    await Bun.sleep(20);
  }
}

interface Child {
  child: ChildProcess;
  lines: string[];
  exit: Promise<number | null>;
}

function spawnChild(script: string, args: string[], env: Record<string, string> = {}): Child & { stdout: string[] } {
  const child = spawn(BUN, [join(import.meta.dir, script), ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const lines: string[] = [];
  const stdout: string[] = [];
  const collect = (into: string[]) => {
    let partial = "";
    return (chunk: string) => {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop()!;
      into.push(...parts);
    };
  };
  child.stderr!.setEncoding("utf8").on("data", collect(lines));
  child.stdout!.setEncoding("utf8").on("data", collect(stdout));
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, lines, stdout, exit };
}

interface EchoClient {
  socket: Socket;
  peer: string;
  closed: Promise<void>;
  ask(word: string): Promise<string>;
}

async function echoClient(host: string, port: number): Promise<EchoClient> {
  const socket = connect({ host, port, localAddress: CLIENT_ADDRESS });
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  socket.setEncoding("utf8");
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  return {
    socket,
    peer: `${CLIENT_ADDRESS}:${socket.localPort}`,
    closed,
    ask: (word) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no echo of "${word}" within ${WAIT_MS} ms`)), WAIT_MS);
        socket.once("data", (text: string) => (clearTimeout(timer), resolve(text.trim())));
        socket.write(`${word}\n`);
      }),
  };
}

const closesWithin = (client: EchoClient, ms = WAIT_MS) =>
  Promise.race([client.closed.then(() => "closed"), Bun.sleep(ms).then(() => "still open")]);

describe("an error in one client's handler", () => {
  test("ends only that client; another client and another printer keep being served; the process lives", async () => {
    const { child, lines, stdout } = spawnChild("process-policy-child.ts", ["127.0.25.1", "127.0.25.2"]);
    await until("ports", () => stdout.length > 0, lines);
    const ports = JSON.parse(stdout[0]!) as { a: number; b: number };
    const otherClient = await echoClient("127.0.25.1", ports.a);
    const otherPrinter = await echoClient("127.0.25.2", ports.b);
    const stillServed = async () => {
      expect(await otherClient.ask("hello")).toBe("echo hello");
      expect(await otherPrinter.ask("hello")).toBe("echo hello");
      expect(child.exitCode).toBeNull();
    };

    const timer = await echoClient("127.0.25.1", ports.a);
    timer.socket.write("timer\n");
    expect(await closesWithin(timer)).toBe("closed");
    await until("the timer's line", () => lines.some((l) => l.includes(`[a/echo] ${timer.peer} closing: uncaught exception: boom in a timer`)), lines);
    await stillServed();

    const sync = await echoClient("127.0.25.1", ports.a);
    sync.socket.write("sync\n");
    expect(await closesWithin(sync)).toBe("closed");
    expect(lines.some((l) => l.includes(`[a/echo] ${sync.peer} closing: error in its "data" handler: boom in a data handler`))).toBe(true);
    await stillServed();

    // Bun keeps no context for an unhandled rejection: it is logged, without a client, and nothing else happens.
    const promise = await echoClient("127.0.25.1", ports.a);
    promise.socket.write("promise\n");
    await until("the rejection's line", () => lines.some((l) => l.includes("unhandled promise rejection, the proxy goes on: boom in a promise")), lines);
    await stillServed();
    expect(await promise.ask("still here")).toBe("echo still here");

    expect(lines.filter((l) => /^\s+at /.test(l))).toEqual([]); // no stack at info
    for (const client of [otherClient, otherPrinter, promise]) client.socket.destroy();
  }, 30_000);

  test("without the policy the first such error ends the process (what the policy prevents)", async () => {
    const { lines, stdout, exit } = spawnChild("process-policy-child.ts", ["127.0.25.3", "127.0.25.4"], { WITHOUT_POLICY: "1" });
    await until("ports", () => stdout.length > 0, lines);
    const ports = JSON.parse(stdout[0]!) as { a: number; b: number };
    const client = await echoClient("127.0.25.3", ports.a);
    client.socket.write("timer\n");
    expect(await Promise.race([exit, Bun.sleep(WAIT_MS).then(() => "alive")])).not.toBe("alive");
  }, 15_000);

  test("at debug the stack follows the line", async () => {
    const { lines, stdout } = spawnChild("process-policy-child.ts", ["127.0.25.5", "127.0.25.6"], { LOG_LEVEL: "debug" });
    await until("ports", () => stdout.length > 0, lines);
    const ports = JSON.parse(stdout[0]!) as { a: number; b: number };
    const client = await echoClient("127.0.25.5", ports.a);
    client.socket.write("timer\n");
    await client.closed;
    await until("the stack", () => lines.some((l) => /^\s+at .*process-policy-child\.ts/.test(l)), lines);
  }, 15_000);
});

describe("the client context", () => {
  test("follows a client's timers and socket events; work started with outsideClient() (a shared upstream) is not charged to it", async () => {
    const seen: Record<string, string | undefined> = {};
    const peerNow = () => currentClient() && `${currentClient()!.socket.remoteAddress}:${currentClient()!.socket.remotePort}`;
    const server = await listen({
      log: serviceLogger("ctx", "echo"), what: "echo", host: "127.0.25.7", port: 0,
      onClient(socket) {
        seen.handler = peerNow();
        socket.once("data", () => {
          seen.data = peerNow();
          setTimeout(() => (seen.timer = peerNow()), 1);
          outsideClient(() => setTimeout(() => (seen.upstream = peerNow() ?? "none"), 1));
        });
      },
    });
    try {
      const client = await echoClient("127.0.25.7", server.address.port);
      client.socket.write("x");
      await until("the timers", () => "timer" in seen && "upstream" in seen, []);
      expect(seen).toEqual({ handler: client.peer, data: client.peer, timer: client.peer, upstream: "none" });
      client.socket.destroy();
    } finally {
      await server.close();
    }
  });
});

/** A Bambu printer entry running only the bind service, on high ports. */
function bindPrinter(name: string, bind: string, extra = ""): string {
  return `[[printer]]\nname = "${name}"\nhost = "192.168.1.50"\nserial = "01P00A0000000${name}"\naccess_code = "Ab12Cd34"\nmodel = "P1S"\nbind = "${bind}"\nservices = ["bind"]\nports = { bind = ${BIND_PORT}, bind_tls = ${BIND_TLS_PORT} }\n${extra}`;
}
const BIND_PORT = 13000;
const BIND_TLS_PORT = 13002;
const header = (stateDir: string) => `[proxy]\nstate_dir = "${stateDir}"\nlog_level = "info"\n[web]\nlisten = ""\n`;

function accepts(host: string, port = BIND_PORT): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, localAddress: CLIENT_ADDRESS });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

function handshakes(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectTls({ socket: connect({ host, port: BIND_TLS_PORT, localAddress: CLIENT_ADDRESS }), rejectUnauthorized: false });
    socket.once("secureConnect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

describe("reloads", () => {
  test("run one at a time: reloads asked for during one collapse into one run after it, with the newest file", async () => {
    setupLogging("info", { quiet: true });
    const capture = captureLogs();
    const file = join(dir, "serialized.toml");
    const write = (hostB: string) =>
      writeFileSync(file, header(join(dir, "state-serialized")) + bindPrinter("a", "127.0.25.31") + bindPrinter("b", "127.0.25.32").replace("192.168.1.50", hostB));
    write("192.168.1.50");
    const supervisor = await startSupervisor(loadConfig(file), { configFile: file });
    try {
      const mark = capture.lines.length;
      write("192.168.1.99");
      const first = supervisor.reload();
      write("192.168.1.100");
      const [second, third] = [supervisor.reload(), supervisor.reload()];
      expect(await Promise.all([first, second, third])).toEqual([true, true, true]);
      const since = capture.lines.slice(mark);
      const count = (text: string) => since.filter((l) => l.includes(text)).length;
      expect(count('printer "b" stopped')).toBe(2);
      expect(count("[b/printer] serving 192.168.1.99")).toBe(1);
      expect(count("[b/printer] serving 192.168.1.100")).toBe(1);
      expect(count("reloaded:")).toBe(2);
      expect(count("cannot listen")).toBe(0);
      expect(count("[a/")).toBe(0);
      expect(supervisor.printers.map((p) => [p.config.name, p.config.host])).toEqual([["a", "192.168.1.50"], ["b", "192.168.1.100"]]);
      expect(await accepts("127.0.25.32")).toBe(true);
    } finally {
      await supervisor.stop();
      capture.stop();
    }
  }, 20_000);
});

describe("a printer whose TLS files cannot be read", () => {
  test("fails alone with a line naming it, the file and the reason, at start and on reload; fixed files are picked up on the next reload", async () => {
    const stateDir = join(dir, "state-tls");
    const file = join(dir, "tls.toml");
    const missingKey = join(dir, "b.key");
    const missingCert = join(dir, "b.crt");
    const tlsFiles = (key: string, cert: string) => `tls_key = "${key}"\ntls_cert = "${cert}"\n`;
    writeFileSync(file, header(stateDir) + bindPrinter("a", "127.0.25.21") + bindPrinter("b", "127.0.25.22", tlsFiles(missingKey, missingCert)) + bindPrinter("c", "127.0.25.23"));
    const { child, lines } = spawnChild("../main.ts", ["--config", file]);
    const logged = (mark: number, text: string) => lines.slice(mark).some((l) => l.includes(text));
    await until("startup", () => logged(0, "[a/printer] serving") && logged(0, "[c/printer] serving"), lines, 15_000);
    await until("b's line", () => logged(0, `[b/printer] not served: cannot read tls_key "${missingKey}": no such file or directory (ENOENT)`), lines);
    expect([await accepts("127.0.25.21"), await accepts("127.0.25.22"), await accepts("127.0.25.23")]).toEqual([true, false, true]);

    // b's files appear (its entry unchanged); a's new entry names a directory as its key; c is untouched.
    copyFileSync(join(stateDir, "printers", "a.key"), missingKey);
    copyFileSync(join(stateDir, "printers", "a.crt"), missingCert);
    const directory = join(dir, "not-a-key");
    mkdirSync(directory, { recursive: true });
    writeFileSync(file, header(stateDir) + bindPrinter("a", "127.0.25.21", tlsFiles(directory, missingCert)) + bindPrinter("b", "127.0.25.22", tlsFiles(missingKey, missingCert)) + bindPrinter("c", "127.0.25.23"));
    const mark = lines.length;
    child.kill("SIGHUP");
    await until("reload", () => logged(mark, "reloaded: 2 printer(s) (re)started, 1 unchanged"), lines);
    expect(logged(mark, `[a/printer] not served: cannot read tls_key "${directory}": illegal operation on a directory (EISDIR)`)).toBe(true);
    expect(logged(mark, "[b/printer] serving")).toBe(true);
    expect(logged(mark, "[c/printer]") || logged(mark, 'printer "c" stopped')).toBe(false);
    expect([await accepts("127.0.25.21"), await accepts("127.0.25.22"), await accepts("127.0.25.23")]).toEqual([false, true, true]);
    expect(await handshakes("127.0.25.22")).toBe(true);
    expect(lines.filter((l) => /^\s+at /.test(l))).toEqual([]);
    expect(lines.join("\n")).not.toContain("Ab12Cd34");
    expect(child.exitCode).toBeNull();
    child.kill("SIGTERM");
  }, 30_000);
});

describe("the stop deadline", () => {
  test("a service whose stop() never resolves: the process exits at the deadline, naming it", async () => {
    const { child, lines, exit } = spawnChild("stop-deadline-child.ts", [join(dir, "state-stop"), "127.0.25.41", "127.0.25.42"]);
    await until("startup", () => lines.some((l) => l.includes("[a/printer] serving")) && lines.some((l) => l.includes("[b/printer] serving")), lines, 15_000);
    const asked = Date.now();
    child.kill("SIGTERM");
    const code = await Promise.race([exit, Bun.sleep(WAIT_MS).then(() => "still running" as const)]);
    expect(code).toBe(1);
    expect(Date.now() - asked).toBeLessThan(3_000);
    expect(lines.some((l) => l.includes("a/stuck did not stop within 0.3 s; exiting anyway"))).toBe(true);
    expect(lines.some((l) => l.includes("b/fine"))).toBe(false);
  }, 20_000);
});
