// The Containerfile, built for real and run without a container runtime: no registry is reachable and containers
// cannot start on these machines (crun: "cgroups in hybrid mode not supported"). So a Debian bookworm base is made
// with `debootstrap --variant=minbase` from the mirror apt uses here and `podman import`ed, the Containerfile is
// built on it (`podman build --from`, RUN steps with --isolation chroot; its apt-get installs FFmpeg from the same
// mirror), and the built image's filesystem (`podman create` + `podman mount`) is entered with chroot, as the
// image's user with the image's environment: --version, check on the example config, FFmpeg, and the image's
// command serving a simulated P1S on 127.0.26.190-191 (MQTT through it, FTPS bound on 990 by the file capability).
//
// Cached between runs, outside the checkout: the debootstrap tree as /var/cache/pandaproxy-tests/
// debian-bookworm-minbase.tar, the imported base image localhost/pandaproxy-test-base:bookworm and podman's layer
// cache of the Containerfile's apt-get step (in podman's storage). Delete them to start from scratch.
// PANDAPROXY_RELEASE_DIR=DIR takes the x64 binary from DIR (.ci/run builds dist/ first); otherwise it is built.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, linkSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const CACHE = "/var/cache/pandaproxy-tests";
const BASE_TAR = join(CACHE, "debian-bookworm-minbase.tar");
const BASE_IMAGE = "localhost/pandaproxy-test-base:bookworm";
const IMAGE = "localhost/pandaproxy-test:latest";
const PROXY = "127.0.26.190";
const PRINTER = "127.0.26.191";
const SERIAL = "01P00A000000026";
const ACCESS_CODE = "12345678";
const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;

const onPath = (name: string) => spawnSync("sh", ["-c", `command -v ${name}`]).status === 0;
const missing = ["podman", "debootstrap", "unshare", "chroot", "setpriv", "mosquitto_sub"].filter((tool) => !onPath(tool));
const skipReason = missing.length
  ? `needs ${missing.join(", ")} (scripts/test-peers.txt installs them)`
  : process.getuid?.() !== 0 ? "needs root (podman storage, debootstrap, chroot)" : "";
if (skipReason) console.warn(`SKIP tests/container.test.ts: ${skipReason}`);

function sh(command: string, args: string[], timeout = 120_000, env?: Record<string, string>) {
  const r = spawnSync(command, args, { encoding: "utf8", timeout, maxBuffer: 1 << 26, env: env ?? process.env });
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "", out: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? ` (${r.error.message})` : ""}` };
}
function must(command: string, args: string[], timeout = 120_000): string {
  const r = sh(command, args, timeout);
  if (r.code !== 0) throw new Error(`${command} ${args.join(" ")} failed (exit ${r.code}):\n${r.out.slice(-3000)}`);
  return r.stdout;
}
const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`;

/** The Debian mirror apt uses on this machine for bookworm (sources.list or deb822 .sources). */
export function debianMirror(): string | undefined {
  const files = ["/etc/apt/sources.list", ...(existsSync("/etc/apt/sources.list.d") ? readdirSync("/etc/apt/sources.list.d").map((f) => `/etc/apt/sources.list.d/${f}`) : [])];
  for (const file of files.filter((f) => f.endsWith(".list") || f.endsWith(".sources"))) {
    const text = existsSync(file) ? readFileSync(file, "utf8") : "";
    if (file.endsWith(".list")) {
      const line = text.split("\n").find((l) => /^deb\s+(\[[^\]]*\]\s+)?\S+\s+bookworm\s/.test(l));
      if (line) return line.replace(/^deb\s+(\[[^\]]*\]\s+)?/, "").split(/\s+/)[0];
    } else {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, "mi").exec(stanza)?.[1]?.trim().split(/\s+/) ?? [];
        if (field("Types").includes("deb") && field("Suites").includes("bookworm") && !/^Enabled:\s*no/im.test(stanza)) return field("URIs")[0];
      }
    }
  }
  return undefined;
}

/** The base image: podman's copy when it has one, else imported from the cached tree, else debootstrapped. */
function ensureBaseImage(): string {
  if (sh("podman", ["image", "exists", BASE_IMAGE]).code === 0) return "cached image";
  const started = performance.now();
  let how = "cached debootstrap tree";
  if (!existsSync(BASE_TAR)) {
    const mirror = debianMirror();
    if (!mirror) throw new Error("no bookworm mirror in /etc/apt/sources.list*: cannot debootstrap the base");
    mkdirSync(CACHE, { recursive: true });
    const tree = mkdtempSync(join(tmpdir(), "pp-debootstrap-"));
    try {
      must("debootstrap", ["--variant=minbase", "bookworm", tree, mirror], 600_000);
      must("tar", ["--create", "--file", `${BASE_TAR}.part`, "--directory", tree, "--numeric-owner", "--xattrs", "."], 120_000);
      renameSync(`${BASE_TAR}.part`, BASE_TAR);
    } finally {
      rmSync(tree, { recursive: true, force: true });
    }
    how = `debootstrap from ${mirror}`;
  }
  must("podman", ["import", BASE_TAR, BASE_IMAGE], 120_000);
  return `${how}, imported in ${seconds(started)}`;
}

const dir = mkdtempSync(join(tmpdir(), "pp-container-"));
const ADDON_IMAGE = "localhost/pandaproxy-test-addon:latest";
const children: ChildProcess[] = [];

interface ImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  Volumes?: Record<string, unknown>;
}
/** A built image's filesystem, mounted read-write through a container that is never started. */
interface Mounted {
  container: string;
  rootfs: string;
  config: ImageConfig;
  user: { uid: number; gid: number };
  env: Record<string, string>;
  command: string[];
}
const mounted: Mounted[] = [];
let image: Mounted;
let addon: Mounted;
let builtVersion = "";

/** Images a build replaced or left; removed once nothing is built on them (the add-on is built on the image). */
const stale = new Set<string>();
const removeStale = () => { for (const id of stale) if (sh("podman", ["rmi", id]).code === 0) stale.delete(id); };

/** podman build, then remove what this build left that nothing uses (a new binary's stage, the previous image). */
function build(tag: string, args: string[]): void {
  const previous = sh("podman", ["image", "inspect", "--format", "{{.Id}}", tag]).stdout.trim();
  const dangling = () => sh("podman", ["images", "--all", "--quiet", "--no-trunc", "--filter", "dangling=true"]).stdout.split("\n").filter(Boolean);
  const danglingBefore = new Set(dangling());
  must("podman", ["build", "--isolation", "chroot", "--pull=never", "--tag", tag, ...args], 900_000);
  const id = must("podman", ["image", "inspect", "--format", "{{.Id}}", tag]).trim();
  // The previous run's image: only its binary layer is its own (the apt-get layer stays cached for the next build).
  if (previous && previous !== id) stale.add(previous);
  // The binary stage's images; the apt-get step's have children and stay as the cache.
  for (const leftover of dangling().filter((i) => !danglingBefore.has(i))) stale.add(leftover);
  removeStale();
}

function mount(tag: string): Mounted {
  const config = JSON.parse(must("podman", ["image", "inspect", "--format", "{{json .Config}}", tag])) as ImageConfig;
  const container = `pandaproxy-container-test-${process.pid}-${mounted.length}`;
  must("podman", ["create", "--name", container, tag]);
  const entry: Mounted = { container, rootfs: "", config, user: { uid: 0, gid: 0 }, env: {}, command: [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])] };
  mounted.push(entry);
  entry.rootfs = must("podman", ["mount", container]).trim();
  entry.env = Object.fromEntries((config.Env ?? []).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
  const name = config.User || "root";
  const passwd = readFileSync(join(entry.rootfs, "etc/passwd"), "utf8").split("\n").find((l) => l.startsWith(`${name}:`));
  if (!passwd) throw new Error(`${tag}: its user "${name}" is not in its /etc/passwd`);
  const [, , uid, gid] = passwd.split(":");
  entry.user = { uid: Number(uid), gid: Number(gid) };
  return entry;
}

/** argv run inside an image's filesystem as its user: a private mount namespace gives it /proc (Bun needs it). */
function inImage(on: Mounted, argv: string[], options: { noNewPrivs?: boolean } = {}): string[] {
  const script = 'root="$0"; spec="$1"; shift; mount -t proc proc "$root/proc" && exec chroot --userspec="$spec" "$root" "$@"';
  const run = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, on.rootfs, `${on.user.uid}:${on.user.gid}`, ...argv];
  return options.noNewPrivs ? ["setpriv", "--no-new-privs", ...run] : run;
}
function runInImage(on: Mounted, argv: string[], timeout = 30_000) {
  const [command, ...args] = inImage(on, argv);
  return sh(command!, args, timeout, on.env);
}

/** Starts argv in an image; `ready` resolves with its output so far once `line` appears (rejects after `ms`). */
function startInImage(on: Mounted, argv: string[], line: string | RegExp, options: { noNewPrivs?: boolean } = {}, ms = 20_000) {
  const [command, ...args] = inImage(on, argv, options);
  const child = spawn(command!, args, { env: on.env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let output = "";
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${line}" within ${ms} ms from ${argv.join(" ")}:\n${output}`)), ms);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (typeof line === "string" ? output.includes(line) : line.test(output)) (clearTimeout(timer), resolve(output));
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => (clearTimeout(timer), reject(new Error(`${argv.join(" ")} exited (${code}) before "${line}":\n${output}`))));
  });
  return { child, ready, output: () => output };
}
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await Promise.race([exited, Bun.sleep(5_000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

beforeAll(async () => {
  if (skipReason) return;
  const figures: string[] = [];
  let started = performance.now();
  figures.push(`base: ${ensureBaseImage()}`);

  // The build context is what the Containerfile uses: the x64 binary and the example configuration.
  const context = join(dir, "context");
  mkdirSync(join(context, "dist"), { recursive: true });
  const binary = join(context, "dist/pandaproxy-linux-x64");
  const released = process.env.PANDAPROXY_RELEASE_DIR && join(ROOT, process.env.PANDAPROXY_RELEASE_DIR, "pandaproxy-linux-x64");
  if (released && existsSync(released)) {
    try { linkSync(released, binary); } catch { copyFileSync(released, binary); }
  } else {
    started = performance.now();
    must("bash", [join(ROOT, "scripts/build.sh"), "--out", join(context, "dist")], 300_000);
    rmSync(join(context, "dist/pandaproxy-linux-arm64"));
    figures.push(`binaries built in ${seconds(started)}`);
  }
  builtVersion = must(binary, ["--version"]).trim();
  copyFileSync(join(ROOT, "config.example.toml"), join(context, "config.example.toml"));

  started = performance.now();
  build(IMAGE, ["--from", BASE_IMAGE, "--file", join(ROOT, "Containerfile"), context]);
  figures.push(`podman build ${seconds(started)}`);
  started = performance.now();
  build(ADDON_IMAGE, ["--build-arg", `BUILD_FROM=${IMAGE}`, "--file", join(ROOT, "ha-addon/Dockerfile"), join(ROOT, "ha-addon")]);
  figures.push(`add-on build ${seconds(started)}`);
  removeStale();
  image = mount(IMAGE);
  addon = mount(ADDON_IMAGE);
  const size = sh("podman", ["image", "inspect", "--format", "{{.Size}}", IMAGE]).stdout.trim();
  console.log(`container test: ${figures.join("; ")}; image ${(Number(size) / 1e6).toFixed(0)} MB`);
}, 1_200_000);

afterAll(async () => {
  await Promise.all(children.map(stop));
  for (const m of mounted) {
    sh("podman", ["umount", m.container]);
    sh("podman", ["rm", "--force", m.container]);
  }
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(Boolean(skipReason))("Containerfile", () => {
  test("the image runs pandaproxy --config /config/printers.toml as a non-root user, with /config and /data as volumes", () => {
    expect(image.command.slice(-3)).toEqual(["/usr/local/bin/pandaproxy", "--config", "/config/printers.toml"]);
    expect(image.config.User).toBe("pandaproxy");
    expect(image.user.uid).not.toBe(0);
    expect(Object.keys(image.config.Volumes ?? {}).sort()).toEqual(["/config", "/data"]);
    expect(image.env.STATE_DIRECTORY).toBe("/data");
    const data = statSync(join(image.rootfs, "data"));
    expect([data.uid, data.gid, data.mode & 0o777]).toEqual([image.user.uid, image.user.gid, 0o700]);
    expect(must("getcap", [join(image.rootfs, "usr/local/bin/pandaproxy")])).toContain("cap_net_bind_service=ep");
  });

  test("--version names the version and the commit of the binary it was built from", () => {
    const r = runInImage(image, ["/usr/local/bin/pandaproxy", "--version"]);
    expect(r.out.trim()).toBe(builtVersion);
    expect(builtVersion).toStartWith(`pandaproxy ${version}`);
    expect(r.code).toBe(0);
  });

  test("check accepts the example configuration shipped in the image; FFmpeg runs", () => {
    const r = runInImage(image, ["/usr/local/bin/pandaproxy", "check", "--config", "/usr/share/doc/pandaproxy/config.example.toml"]);
    expect(r.stdout).toContain("OK, 2 printers");
    expect(r.code).toBe(0);
    const ffmpeg = runInImage(image, ["ffmpeg", "-hide_banner", "-version"]);
    expect(ffmpeg.stdout).toStartWith("ffmpeg version ");
    expect(ffmpeg.code).toBe(0);
  });

  test("the image's command serves a simulated P1S on loopback: FTPS on 990 through the file capability, MQTT relayed, the CA in /data", async () => {
    mkdirSync(join(image.rootfs, "config"), { recursive: true });
    writeFileSync(
      join(image.rootfs, "config/printers.toml"),
      `[web]\nlisten = "${PROXY}:8080"\n\n[[printer]]\nname = "p1s"\nhost = "${PRINTER}"\nserial = "${SERIAL}"\naccess_code = "${ACCESS_CODE}"\n` +
        `bind = "${PROXY}"\nservices = ["mqtt", "ftp"]\nprinter_ports = { mqtt = 18883, ftp = 10990 }\n`,
    );
    writeFileSync(
      join(image.rootfs, "tmp/sim.toml"),
      `[[printer]]\nmodel = "P1S"\nname = "p1s"\nserial = "${SERIAL}"\nhost = "${PRINTER}"\naccess_code = "${ACCESS_CODE}"\nservices = ["mqtt", "ftp"]\nports = { mqtt = 18883, ftp = 10990 }\n`,
    );
    const printer = startInImage(image, ["/usr/local/bin/pandaproxy", "simulate", "--config", "/tmp/sim.toml"], `on ${PRINTER}`);
    const proxy = startInImage(image, image.command, `web page on http://${PROXY}:8080/`);
    try {
    await printer.ready;
    const output = await proxy.ready;
    expect(output).toContain("2 of 2 services running");
    const api = await fetch(`http://${PROXY}:8080/api/printers`, {
      headers: { Authorization: `Basic ${btoa(`bblp:${ACCESS_CODE}`)}` },
      signal: AbortSignal.timeout(5_000),
    });
    expect(api.status).toBe(200);
    expect(await api.text()).toContain('"p1s"');
    const report = sh("mosquitto_sub", ["-h", PROXY, "-p", "8883", "--cafile", join(image.rootfs, "data/ca.crt"), "--insecure", "-u", "bblp", "-P", ACCESS_CODE, "-t", `device/${SERIAL}/report`, "-C", "1", "-W", "10"], 15_000);
    expect(report.code).toBe(0);
    expect(JSON.parse(report.stdout).print).toBeDefined();
    expect(statSync(join(image.rootfs, "data/ca.crt")).uid).toBe(image.user.uid);
    expect(proxy.output()).not.toContain("ERROR");
    } finally {
      await stop(proxy.child);
      await stop(printer.child);
    }
  }, 60_000);

  test("without the file capability (no_new_privs ignores it) port 990 is refused and the log says why", async () => {
    const proxy = startInImage(image, image.command, "1 of 2 services running", { noNewPrivs: true });
    try {
      const output = await proxy.ready;
      expect(output).toContain(`cannot listen for FTPS on ${PROXY}:990: ports below 1024 need root or CAP_NET_BIND_SERVICE`);
    } finally {
      await stop(proxy.child);
    }
  }, 60_000);
});

describe.skipIf(Boolean(skipReason))("ha-addon/Dockerfile on the image", () => {
  const ADDON_WEB = "127.0.26.192";
  const ADDON_BIND = "127.0.26.193";
  // A FlashForge printer: its proxy only listens and answers (no SSDP broadcast leaves loopback).
  const options = (bind: string) => ({
    web_listen: `${ADDON_WEB}:18081`,
    log_level: "info",
    printers: [{ name: "ad5m", type: "flashforge", host: "127.0.26.194", serial: "SNMOMC9900026", access_code: "a1b2c3d4", bind }],
  });

  test("the add-on's command writes printers.toml from /data/options.json, checks it and serves it", async () => {
    expect(addon.user.uid).toBe(0); // the Supervisor's /data belongs to root
    writeFileSync(join(addon.rootfs, "data/options.json"), JSON.stringify(options(ADDON_BIND)));
    const run = startInImage(addon, addon.command, "web page on http://");
    try {
      const output = await run.ready;
      expect(output).toContain("pandaproxy add-on: /data/printers.toml written from the add-on options");
      expect(output).toContain("/data/printers.toml: OK, 1 printer");
      expect(output).toMatch(/\[ad5m\/printer\] serving 127\.0\.26\.194 on 127\.0\.26\.193: (\d) of \1 services running/);
      const web = await fetch(`http://${ADDON_WEB}:18081/`, { signal: AbortSignal.timeout(5_000) });
      expect(web.status).toBe(401); // it answers, and asks for the printer's code
    } finally {
      await stop(run.child);
    }
    expect(readFileSync(join(addon.rootfs, "data/printers.toml"), "utf8")).toContain('check_code = "a1b2c3d4"');
  }, 60_000);

  test("a wrong option stops the add-on with pandaproxy check's line and what to fix", () => {
    writeFileSync(join(addon.rootfs, "data/options.json"), JSON.stringify(options("127.0.26.300")));
    const r = runInImage(addon, addon.command, 20_000);
    expect(r.code).toBe(1);
    expect(r.out).toContain('printer "ad5m": key "bind" is "127.0.26.300"; expected an IPv4 address');
    expect(r.out).toContain("pandaproxy add-on: fix the problems above in the add-on options");
  }, 30_000);
});
