// What relaying TLS costs on this machine, whoever relays: a TLS source (a Bun process sending N MB as fast as it
// can) read by a TLS sink (another Bun process), straight, through pandaproxy's FTPS data pump (lib/bambu/ftp-data.ts
// `pump`, node:tls on both legs, as a download runs) and through socat (C, OpenSSL on both legs) when it is
// installed. Prints MB/s at the sink and the relay's CPU per MB (its user + system time from its exit), median of
// the rounds. bench/ftp.ts shows the FTPS download through the proxy going at the ratio of the chain's CPU per MB,
// since every core is busy while the bytes move; this is the relay's share of that CPU, beside an independent one.
// Run: node_modules/.bin/bun bench/tls-relay.ts [--mb 200] [--rounds 3]
import { exitedCpuSeconds, median, microsecondsPer } from "./support.ts";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createServer as tlsServer, type TLSSocket } from "node:tls";
import { parseArgs } from "node:util";

const SOURCE = { host: "127.0.13.30", port: 47101 };
const RELAY = { host: "127.0.13.31", port: 47102 };
const BLOCK = 1024 * 1024;
/** Every step of one round (start, handshake, the bytes) ends within this. */
const ROUND_TIMEOUT_MS = 60_000;

const { values } = parseArgs({
  options: {
    role: { type: "string", default: "main" },
    mb: { type: "string", default: "200" },
    rounds: { type: "string", default: "3" },
    dir: { type: "string", default: "" },
    to: { type: "string", default: "relay" },
  },
});
const megabytes = Number(values.mb);
const material = (dir: string) => ({ key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) });

/** Sends `megabytes` to the first connection, then ends it and exits. */
function runSource(): void {
  const block = Buffer.alloc(BLOCK, 0x5a);
  const server = tlsServer(material(values.dir), (socket) => {
    let sent = 0;
    const send = () => {
      while (sent < megabytes) {
        sent++;
        if (!socket.write(block)) return void socket.once("drain", send);
      }
      socket.end(() => process.exit(0));
    };
    socket.on("error", () => process.exit(1));
    send();
  });
  server.listen(SOURCE.port, SOURCE.host, () => console.log("ready"));
}

/** Reads everything from `--to` (the source or the relay) and prints the bytes and the seconds. */
function runSink(): void {
  const target = values.to === "source" ? SOURCE : RELAY;
  const started = performance.now();
  let bytes = 0;
  const socket = tlsConnect({ ...target, rejectUnauthorized: false });
  socket.on("data", (chunk: Buffer) => (bytes += chunk.length));
  socket.on("end", () => {
    console.log(`${bytes} ${(performance.now() - started) / 1000}`);
    process.exit(0);
  });
  socket.on("error", (error) => {
    console.error(`sink: ${error.message}`);
    process.exit(1);
  });
}

/** One connection through pandaproxy's pump: accepted as TCP and secured as the FTPS service does, the source
 * connected as a TLS client; prints the CPU seconds from the connection to its end (not Bun's own start), exits. */
async function runPandaproxyRelay(): Promise<void> {
  const { pump } = await import("../lib/bambu/ftp-data.ts");
  const { downloadMemoryReturn } = await import("../lib/core/memory-return.ts");
  let cpuAtConnection: NodeJS.CpuUsage | undefined;
  const tls = tlsServer(material(values.dir), (client: TLSSocket) => {
    const printer = tlsConnect({ ...SOURCE, rejectUnauthorized: false });
    printer.once("secureConnect", () => {
      printer.pause();
      const flow = pump(printer, client, downloadMemoryReturn);
      void flow.done.then(() =>
        client.end(() => {
          const used = process.cpuUsage(cpuAtConnection);
          console.log(`cpu ${(used.user + used.system) / 1e6}`);
          process.exit(0);
        }),
      );
    });
    printer.on("error", () => process.exit(1));
  });
  netServer({ pauseOnConnect: true }, (raw) => {
    cpuAtConnection = process.cpuUsage();
    tls.emit("connection", raw);
  }).listen(RELAY.port, RELAY.host, () => console.log("ready"));
}

/** Waits until something listens on `host:port`, read from /proc/net/tcp: a probing connection would use up
 * socat's only accept. */
async function listening(host: string, port: number): Promise<void> {
  const local = `${host.split(".").reverse().map((n) => Number(n).toString(16).padStart(2, "0")).join("")}:${port.toString(16).padStart(4, "0")}`.toUpperCase();
  const until = Date.now() + ROUND_TIMEOUT_MS;
  while (Date.now() < until) {
    const rows = readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1).map((l) => l.trim().split(/\s+/));
    if (rows.some((r) => r[1] === local && r[3] === "0A")) return;
    await Bun.sleep(20);
  }
  throw new Error(`nothing listens on ${host}:${port}`);
}

async function withDeadline<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no end within ${ROUND_TIMEOUT_MS / 1000} s`)), ROUND_TIMEOUT_MS)));
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

type Relay = "direct" | "pandaproxy" | "socat";

async function round(relay: Relay, dir: string): Promise<{ rate: number; cpuPerMb: number }> {
  const self = (role: string, extra: string[] = []) => [process.execPath, import.meta.path, "--role", role, "--dir", dir, "--mb", String(megabytes), ...extra];
  const children: Bun.Subprocess[] = [];
  try {
    const source = Bun.spawn(self("source"), { stdout: "ignore", stderr: "inherit" });
    children.push(source);
    await listening(SOURCE.host, SOURCE.port);
    let relayProc: Bun.Subprocess | undefined;
    if (relay === "pandaproxy") relayProc = Bun.spawn(self("relay"), { stdout: "pipe", stderr: "inherit" });
    if (relay === "socat") {
      relayProc = Bun.spawn(["socat", "-b", String(512 * 1024),
        `OPENSSL-LISTEN:${RELAY.port},bind=${RELAY.host},reuseaddr,cert=${join(dir, "cert.pem")},key=${join(dir, "key.pem")},verify=0`,
        `OPENSSL:${SOURCE.host}:${SOURCE.port},verify=0`], { stdout: "ignore", stderr: "inherit" });
    }
    if (relayProc) {
      children.push(relayProc);
      await listening(RELAY.host, RELAY.port);
    }
    const sink = Bun.spawn(self("sink", ["--to", relay === "direct" ? "source" : "relay"]), { stdout: "pipe", stderr: "inherit" });
    children.push(sink);
    const [bytes, seconds] = (await withDeadline(new Response(sink.stdout).text(), `${relay} sink`)).trim().split(" ").map(Number);
    if (bytes !== megabytes * BLOCK) throw new Error(`${relay}: the sink got ${bytes} bytes of ${megabytes * BLOCK}`);
    // Ours reports its CPU from the connection on (Bun's own start costs ~0.1 s); socat's whole life is a few ms
    // more than its connection's.
    let cpu = NaN;
    if (relay === "pandaproxy") cpu = Number(/cpu ([\d.]+)/.exec(await withDeadline(new Response(relayProc!.stdout as ReadableStream).text(), "relay"))?.[1]);
    if (relay === "socat") cpu = exitedCpuSeconds(await withDeadline(relayProc!.exited.then(() => relayProc!), "socat exit"));
    return { rate: megabytes / seconds!, cpuPerMb: microsecondsPer(cpu, megabytes) };
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill();
    await Promise.all(children.map((c) => c.exited));
  }
}

async function runBenchmark(): Promise<void> {
  const { makeCa, makeLeaf } = await import("../lib/tls.ts");
  const dir = mkdtempSync(join(tmpdir(), "pp-bench-tls-relay-"));
  try {
    const ca = makeCa("bench CA", "pandaproxy bench");
    const leaf = makeLeaf(ca, "relay", { dns: ["localhost"], ips: [SOURCE.host, RELAY.host] });
    writeFileSync(join(dir, "key.pem"), leaf.key, { mode: 0o600 });
    writeFileSync(join(dir, "cert.pem"), leaf.cert);
    const hasSocat = Bun.which("socat") !== null;
    const relays: Relay[] = hasSocat ? ["direct", "pandaproxy", "socat"] : ["direct", "pandaproxy"];
    const rounds = Number(values.rounds);
    console.log(`TLS relay: ${megabytes} MB from a Bun TLS source to a Bun TLS sink, ${rounds} round(s), median of each${hasSocat ? "" : " (socat is not installed: apt-get install socat)"}`);
    const results = new Map<Relay, { rate: number[]; cpu: number[] }>(relays.map((r) => [r, { rate: [], cpu: [] }]));
    for (let i = 1; i <= rounds; i++) {
      for (const relay of relays) {
        const r = await round(relay, dir);
        results.get(relay)!.rate.push(r.rate);
        results.get(relay)!.cpu.push(r.cpuPerMb);
        console.log(`round ${i} ${relay.padEnd(10)} | ${r.rate.toFixed(0).padStart(5)} MB/s${Number.isNaN(r.cpuPerMb) ? "" : ` | relay CPU ${r.cpuPerMb.toFixed(0)} us/MB`}`);
      }
    }
    console.log("");
    for (const relay of relays) {
      const r = results.get(relay)!;
      const cpu = median(r.cpu);
      console.log(`${relay.padEnd(10)} (median): ${median(r.rate).toFixed(0).padStart(5)} MB/s${Number.isNaN(cpu) ? "" : `, relay CPU ${cpu.toFixed(0)} us per MB relayed`}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0);
}

if (values.role === "source") runSource();
else if (values.role === "sink") runSink();
else if (values.role === "relay") await runPandaproxyRelay();
else await runBenchmark();
