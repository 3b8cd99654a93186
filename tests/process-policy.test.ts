// The process policy, proven in child processes: an error nobody caught is one log line and the process goes
// on; an error thrown in one client's callback closes that client alone while another client and another
// printer keep being served.
import { afterAll, describe, expect, test } from "bun:test";
import { spawn, type ChildProcess } from "node:child_process";
import { connect, type Socket } from "node:net";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const CLIENT_ADDRESS = "127.0.25.10";
const WAIT_MS = 5_000;
const children: ChildProcess[] = [];

afterAll(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
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
