// The release archives as a user downloads them: `npm run release` (scripts/release.sh) builds both binaries
// and packs them; this checks each archive's files, owners, modes and mtimes, SHA256SUMS, that packing again
// gives the same bytes, runs the x64 binary natively and the arm64 one under qemu (Raspberry Pi 3 / Zero 2 W
// core, cortex-a53), and install.sh's checks on the real archive.
// PANDAPROXY_RELEASE_DIR=DIR checks a release already built in DIR (.ci/run builds dist/ before `npm test`);
// otherwise the release is built into a temporary directory (~30 s: two `bun build --compile` and gzip).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const commit = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).stdout.trim();
const dir = mkdtempSync(join(tmpdir(), "pp-release-"));
const out = process.env.PANDAPROXY_RELEASE_DIR ? join(ROOT, process.env.PANDAPROXY_RELEASE_DIR) : join(dir, "dist");
const ARCHES = ["x64", "arm64"] as const;
const folder = (arch: string) => `pandaproxy-${version}-linux-${arch}`;
const archive = (arch: string) => join(out, `${folder(arch)}.tar.gz`);
/** What each archive holds besides its folder, and where it comes from in the checkout. */
const SHIPPED: Record<string, string> = {
  "LICENSE": "LICENSE",
  "README.md": "README.md",
  "config.example.toml": "config.example.toml",
  "install.sh": "scripts/install.sh",
  "pandaproxy.service": "scripts/pandaproxy.service",
};
const QEMU = "/usr/bin/qemu-aarch64-static";
const ARM64_LIBC = "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1";

function run(command: string, args: string[], env: Record<string, string> = {}, timeout = 60_000) {
  const r = spawnSync(command, args, { cwd: dir, encoding: "utf8", env: { ...process.env, ...env }, timeout, maxBuffer: 1 << 24 });
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "", out: (r.stdout ?? "") + (r.stderr ?? "") };
}
const unpacked = (arch: string) => join(dir, "unpacked", arch, folder(arch));

beforeAll(() => {
  if (!process.env.PANDAPROXY_RELEASE_DIR) {
    const r = run("bash", [join(ROOT, "scripts/release.sh"), "--out", out], {}, 240_000);
    if (r.code !== 0) throw new Error(`scripts/release.sh failed (exit ${r.code}):\n${r.out}`);
  }
  for (const arch of ARCHES) {
    mkdirSync(join(dir, "unpacked", arch), { recursive: true });
    const r = run("tar", ["-xzf", archive(arch), "-C", join(dir, "unpacked", arch)]);
    if (r.code !== 0) throw new Error(`cannot unpack ${archive(arch)}: ${r.stderr}`);
  }
}, 300_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("npm run release", () => {
  test("SHA256SUMS lists both archives and matches them", () => {
    const sums = readFileSync(join(out, "SHA256SUMS"), "utf8");
    expect(sums.trim().split("\n").map((line) => line.replace(/^[0-9a-f]{64} {2}/, ""))).toEqual(ARCHES.map((a) => `${folder(a)}.tar.gz`));
    const check = spawnSync("sha256sum", ["--check", "--strict", "SHA256SUMS"], { cwd: out, encoding: "utf8", timeout: 60_000 });
    expect(check.stdout).toBe(ARCHES.map((a) => `${folder(a)}.tar.gz: OK\n`).join(""));
    expect(check.status).toBe(0);
  });

  test("each archive is one folder with the binary, README, LICENSE, example config, unit and install.sh; owner 0/0, one mtime", () => {
    for (const arch of ARCHES) {
      const listing = run("tar", ["--list", "--verbose", "--numeric-owner", "--full-time", "-zf", archive(arch)]);
      expect(listing.code).toBe(0);
      const rows = listing.stdout.trim().split("\n").map((line) => line.split(/\s+/));
      // mode owner size date time name
      expect(rows.map((r) => r[5])).toEqual([`${folder(arch)}/`, ...["LICENSE", "README.md", "config.example.toml", "install.sh", "pandaproxy", "pandaproxy.service"].map((f) => `${folder(arch)}/${f}`)]);
      expect(new Set(rows.map((r) => r[1]))).toEqual(new Set(["0/0"]));
      expect(new Set(rows.map((r) => `${r[3]} ${r[4]}`)).size).toBe(1);
      const modes = Object.fromEntries(rows.map((r) => [r[5]!.slice(folder(arch).length + 1), r[0]]));
      expect(modes).toEqual({ "": "drwxr-xr-x", "LICENSE": "-rw-r--r--", "README.md": "-rw-r--r--", "config.example.toml": "-rw-r--r--", "install.sh": "-rwxr-xr-x", "pandaproxy": "-rwxr-xr-x", "pandaproxy.service": "-rw-r--r--" });
      for (const [name, source] of Object.entries(SHIPPED)) expect(readFileSync(join(unpacked(arch), name), "utf8")).toBe(readFileSync(join(ROOT, source), "utf8"));
      expect(readFileSync(join(unpacked(arch), "LICENSE"), "utf8")).toContain("MIT License");
    }
  });

  test("the binaries are the ones built for each architecture", () => {
    const kinds = ARCHES.map((arch) => readFileSync(join(unpacked(arch), "pandaproxy")).subarray(0, 20));
    // ELF e_machine at offset 18: 0x3e x86-64, 0xb7 AArch64.
    expect(kinds.map((header) => [header.subarray(1, 4).toString(), header[18]])).toEqual([["ELF", 0x3e], ["ELF", 0xb7]]);
  });

  test("packing the same binaries again gives the same bytes", () => {
    const again = join(dir, "again");
    mkdirSync(again);
    for (const arch of ARCHES) copyFileSync(join(unpacked(arch), "pandaproxy"), join(again, `pandaproxy-linux-${arch}`));
    const r = run("bash", [join(ROOT, "scripts/release.sh"), "--no-build", "--out", again], {}, 120_000);
    expect(r.code).toBe(0);
    expect(readFileSync(join(again, "SHA256SUMS"), "utf8")).toBe(readFileSync(join(out, "SHA256SUMS"), "utf8"));
  }, 120_000);

  test("the x64 binary runs here and names the version and the commit", () => {
    const r = run(join(unpacked("x64"), "pandaproxy"), ["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(new RegExp(`^pandaproxy ${version.replaceAll(".", "\\.")} \\(commit ${commit}(\\+dirty)?\\)$`));
  });

  // Skipped, not passed, without qemu-user-static and libc6-arm64-cross (scripts/test-peers.txt installs both).
  test.skipIf(!existsSync(QEMU) || !existsSync(ARM64_LIBC))("the arm64 binary runs under qemu on a cortex-a53 (Pi 3 / Zero 2 W): --version and check", () => {
    const binary = join(unpacked("arm64"), "pandaproxy");
    const qemu = (args: string[]) => run(QEMU, ["-L", "/usr/aarch64-linux-gnu", binary, ...args], { QEMU_CPU: "cortex-a53" });
    const v = qemu(["--version"]);
    expect(v.stderr).toBe("");
    expect(v.stdout.trim()).toMatch(new RegExp(`^pandaproxy ${version.replaceAll(".", "\\.")} \\(commit ${commit}(\\+dirty)?\\)$`));
    const check = qemu(["check", "--config", join(unpacked("arm64"), "config.example.toml")]);
    expect(check.code).toBe(0);
    expect(check.stdout).toContain("OK, 2 printers");
  });

  test("install.sh in the archive checks the archive against SHA256SUMS and runs the real binary before installing", () => {
    const script = join(unpacked("x64"), "install.sh");
    const env = { PANDAPROXY_MACHINE: "x86_64", PANDAPROXY_LONG_BIT: "64" };
    const root = join(dir, "root"); // an empty root: a pandaproxy installed on this host changes nothing here
    const ok = run("bash", [script, archive("x64"), "--dry-run", "--root", root], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(`install.sh: checksum OK: ${folder("x64")}.tar.gz (SHA256SUMS)`);
    expect(ok.stdout).toMatch(new RegExp(`install\\.sh: pandaproxy ${version.replaceAll(".", "\\.")} \\(commit ${commit}(\\+dirty)?\\) \\(x64\\)`));
    expect(ok.stdout).toContain("would copy");
    // From inside the unpacked folder, it finds the binary beside it.
    const beside = run("bash", [script, "--dry-run", "--root", root], env);
    expect(beside.code).toBe(0);
    expect(beside.stdout).toContain(`would copy ${join(unpacked("x64"), "pandaproxy")} to ${root}/usr/local/bin/pandaproxy`);
    expect(statSync(join(unpacked("x64"), "pandaproxy")).mode & 0o111).toBe(0o111);
  });
});
