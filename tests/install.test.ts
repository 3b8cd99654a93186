// scripts/install.sh on a release archive, into a temporary root (--root), with systemctl replaced by a small
// stand-in on PATH that really runs the unit's ExecStart in the background and answers is-active from whether
// that process is still alive: install, upgrade in place, a failing upgrade rolled back, refused checksums,
// uninstall. The archives are packed by scripts/release.sh --no-build from stand-in binaries (shell scripts).
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const INSTALL = join(ROOT, "scripts/install.sh");
const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const dir = mkdtempSync(join(tmpdir(), "pp-install-"));
const root = join(dir, "root");
const bin = join(dir, "bin");
const systemdState = join(dir, "systemd");
const systemctlLog = join(dir, "systemctl.log");
mkdirSync(bin);
mkdirSync(systemdState);

// The stand-in systemctl: start runs ExecStart (paths below the test root) detached, stop kills it.
writeFileSync(
  join(bin, "systemctl"),
  `#!/bin/bash
echo "$*" >> "${systemctlLog}"
pidfile="${systemdState}/pid"
alive() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [[ "$(ps -o stat= -p "$(cat "$pidfile")")" != Z* ]]; }
stop() { if [[ -f "$pidfile" ]]; then kill "$(cat "$pidfile")" 2>/dev/null; rm -f "$pidfile"; fi; }
[[ "$1" == --quiet ]] && shift
case "$1" in
  daemon-reload|enable) exit 0 ;;
  start)
    alive && exit 0
    exec_start=$(sed -n 's/^ExecStart=//p' "${root}/etc/systemd/system/$2") || exit 5
    read -r program args <<< "$exec_start"
    setsid "${root}$program" $args >"${systemdState}/service.log" 2>&1 < /dev/null &
    echo $! > "$pidfile" ;;
  stop) stop ;;
  disable) [[ "$2" == --now ]] && stop; exit 0 ;;
  is-active) alive ;;
  *) echo "stand-in systemctl: unexpected: $*" >&2; exit 1 ;;
esac
`,
);
chmodSync(join(bin, "systemctl"), 0o755);

afterAll(() => {
  spawnSync(join(bin, "systemctl"), ["stop", "pandaproxy.service"], { timeout: 10_000 });
  rmSync(dir, { recursive: true, force: true });
});

/** A stand-in binary: answers --version with `commit`, and `run` either stays up (30 s at most) or fails at once. */
function standIn(commit: string, runs: boolean): string {
  const run = runs ? "exec sleep 30" : 'echo "pandaproxy: cannot listen on 127.0.26.1:8883" >&2; exit 1';
  return `#!/bin/sh\ncase "$1" in\n  --version) echo "pandaproxy ${version} (commit ${commit})" ;;\n  run) ${run} ;;\n  *) exit 2 ;;\nesac\n`;
}

/** A release directory packed by scripts/release.sh --no-build from stand-in binaries. */
function release(commit: string, runs = true): string {
  const out = join(dir, `release-${commit}`);
  mkdirSync(out, { recursive: true });
  for (const arch of ["x64", "arm64"]) writeFileSync(join(out, `pandaproxy-linux-${arch}`), standIn(commit, runs), { mode: 0o755 });
  const r = spawnSync("bash", [join(ROOT, "scripts/release.sh"), "--no-build", "--out", out], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`release.sh failed: ${r.stderr}`);
  return out;
}
const archive = (out: string, arch = "x64") => join(out, `pandaproxy-${version}-linux-${arch}.tar.gz`);

interface Run {
  code: number | null;
  out: string;
}
function install(args: string[]): Run {
  const r = spawnSync("bash", [INSTALL, "--root", root, ...args], {
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, PANDAPROXY_MACHINE: "x86_64", PANDAPROXY_LONG_BIT: "64", PANDAPROXY_SETTLE_SECONDS: "1" },
  });
  return { code: r.status, out: r.stdout + r.stderr };
}
const systemctlCalls = () => (existsSync(systemctlLog) ? readFileSync(systemctlLog, "utf8").trim().split("\n") : []);
const clearCalls = () => rmSync(systemctlLog, { force: true });
const isActive = () => spawnSync(join(bin, "systemctl"), ["is-active", "pandaproxy.service"]).status === 0;
const installed = join(root, "usr/local/bin/pandaproxy");
const installedVersion = () => spawnSync(installed, ["--version"], { encoding: "utf8" }).stdout.trim();
const configFile = join(root, "etc/pandaproxy/printers.toml");
const stateFile = join(root, "var/lib/pandaproxy/ca.crt");

describe("scripts/install.sh: install, upgrade, roll back, uninstall", () => {
  const v1 = release("aaaaaaa");
  const v2 = release("bbbbbbb");
  const broken = release("ccccccc", false);
  const config = join(dir, "printers.toml");
  writeFileSync(config, '[[printer]]\nname = "p1s"\n');

  test("installs from the release archive: checksum checked, unit and config in place, the service started", () => {
    const r = install([archive(v1), "--config", config]);
    expect(r.out).toContain(`checksum OK: pandaproxy-${version}-linux-x64.tar.gz (SHA256SUMS)`);
    expect(r.code).toBe(0);
    expect(installedVersion()).toBe(`pandaproxy ${version} (commit aaaaaaa)`);
    expect(readFileSync(join(root, "etc/systemd/system/pandaproxy.service"), "utf8")).toBe(readFileSync(join(ROOT, "scripts/pandaproxy.service"), "utf8"));
    expect(readFileSync(configFile, "utf8")).toBe(readFileSync(config, "utf8"));
    expect(systemctlCalls()).toEqual(["daemon-reload", "enable pandaproxy.service", "start pandaproxy.service", "is-active --quiet pandaproxy.service", "is-active --quiet pandaproxy.service"]);
    expect(isActive()).toBe(true);
    expect(r.out).toContain("is active");
  });

  test("upgrades in place: stop, replace, start; configuration and state kept, the old binary kept as .previous", () => {
    writeFileSync(configFile, "# edited by the user\n");
    mkdirSync(join(root, "var/lib/pandaproxy"), { recursive: true });
    writeFileSync(stateFile, "the CA slicers trust\n");
    clearCalls();
    const r = install([archive(v2), "--config", config]);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`upgraded pandaproxy ${version} (commit aaaaaaa) to pandaproxy ${version} (commit bbbbbbb)`);
    expect(installedVersion()).toBe(`pandaproxy ${version} (commit bbbbbbb)`);
    expect(spawnSync(`${installed}.previous`, ["--version"], { encoding: "utf8" }).stdout).toContain("commit aaaaaaa");
    expect(readFileSync(configFile, "utf8")).toBe("# edited by the user\n");
    expect(readFileSync(stateFile, "utf8")).toBe("the CA slicers trust\n");
    expect(systemctlCalls().filter((c) => !c.startsWith("is-active"))).toEqual(["stop pandaproxy.service", "start pandaproxy.service"]);
    expect(isActive()).toBe(true);
    // The same archive again changes nothing.
    clearCalls();
    const again = install([archive(v2)]);
    expect(again.code).toBe(0);
    expect(again.out).toContain("is already installed; nothing to do");
    expect(systemctlCalls().filter((c) => !c.startsWith("is-active"))).toEqual([]);
  });

  test("an upgrade that does not stay active is rolled back to the previous binary, which runs again", () => {
    clearCalls();
    const r = install([archive(broken)]);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`upgrade to pandaproxy ${version} (commit ccccccc) failed: it did not stay active, so pandaproxy ${version} (commit bbbbbbb) was put back and is running again`);
    expect(installedVersion()).toBe(`pandaproxy ${version} (commit bbbbbbb)`);
    expect(systemctlCalls().filter((c) => !c.startsWith("is-active"))).toEqual(["stop pandaproxy.service", "start pandaproxy.service", "stop pandaproxy.service", "start pandaproxy.service"]);
    expect(isActive()).toBe(true);
    expect(readFileSync(join(systemdState, "service.log"), "utf8")).toBe(""); // the running one is the old binary
  });

  test("a damaged archive, an unlisted one and the other architecture's are refused before anything changes", () => {
    const damaged = join(dir, "damaged");
    mkdirSync(damaged);
    const bytes = readFileSync(archive(v1));
    bytes[bytes.length >> 1]! ^= 0xff;
    writeFileSync(archive(damaged), bytes);
    copyFileSync(join(v1, "SHA256SUMS"), join(damaged, "SHA256SUMS"));
    clearCalls();
    const bad = install([archive(damaged)]);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/checksum mismatch: pandaproxy-[^ ]+-linux-x64\.tar\.gz has sha256 [0-9a-f]{64} but .*SHA256SUMS says [0-9a-f]{64}: the download is damaged/);
    expect(bad.out).toContain("Nothing installed");

    writeFileSync(join(damaged, "SHA256SUMS"), readFileSync(join(v1, "SHA256SUMS"), "utf8").replace(/linux-x64/, "linux-x32"));
    const unlisted = install([archive(damaged)]);
    expect(unlisted.code).toBe(1);
    expect(unlisted.out).toContain(`SHA256SUMS has no line for pandaproxy-${version}-linux-x64.tar.gz`);

    const arm = install([archive(v1, "arm64")]);
    expect(arm.code).toBe(1);
    expect(arm.out).toContain("is the arm64 build; this x86_64 machine needs the linux-x64 archive");

    expect(systemctlCalls().filter((c) => !c.startsWith("is-active"))).toEqual([]);
    expect(installedVersion()).toBe(`pandaproxy ${version} (commit bbbbbbb)`);
  });

  test("an upgrade while the service is stopped replaces the binary and leaves it stopped", () => {
    spawnSync(join(bin, "systemctl"), ["stop", "pandaproxy.service"]);
    clearCalls();
    const r = install([archive(v1)]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("was not running before the upgrade, so it is not started");
    expect(installedVersion()).toBe(`pandaproxy ${version} (commit aaaaaaa)`);
    expect(systemctlCalls()).toEqual(["is-active --quiet pandaproxy.service"]);
    expect(isActive()).toBe(false);
  });

  test("--uninstall stops and removes the service and the binary, keeps configuration and state", () => {
    install([archive(v2)]);
    expect(install([archive(v2)]).out).toContain("nothing to do");
    spawnSync(join(bin, "systemctl"), ["start", "pandaproxy.service"]);
    expect(isActive()).toBe(true);
    clearCalls();
    const r = install(["--uninstall"]);
    expect(r.code).toBe(0);
    expect(systemctlCalls()).toEqual(["disable --now pandaproxy.service", "daemon-reload"]);
    expect(isActive()).toBe(false);
    for (const gone of [installed, `${installed}.previous`, join(root, "etc/systemd/system/pandaproxy.service")]) expect(existsSync(gone)).toBe(false);
    expect(readFileSync(configFile, "utf8")).toBe("# edited by the user\n");
    expect(readFileSync(stateFile, "utf8")).toBe("the CA slicers trust\n");
    expect(r.out).toContain("Kept");
    const again = install(["--uninstall"]);
    expect(again.code).toBe(1);
    expect(again.out).toContain("pandaproxy is not installed here");
  });
});
