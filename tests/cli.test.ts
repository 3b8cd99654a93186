// The command line as a user meets it: main.ts run as a child process, exit codes, what lands on stdout/stderr;
// `service install --dry-run` (source and compiled binary) and scripts/install.sh in its dry-run and DESTDIR modes.
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const MAIN = join(ROOT, "main.ts");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
const dir = mkdtempSync(join(tmpdir(), "pp-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs in an empty directory, so no ./printers.toml is picked up by accident. */
function pandaproxy(args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(BUN, [MAIN, ...args], { cwd: dir, encoding: "utf8", env: { ...process.env, ...env }, timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function run(command: string, args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(command, args, { cwd: dir, encoding: "utf8", env: { ...process.env, ...env }, timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const goodConfig = join(dir, "good.toml");
writeFileSync(
  goodConfig,
  `[proxy]\nstate_dir = "${dir}/state"\n[web]\nlisten = ""\n[[printer]]\nname = "p1s"\nhost = "192.168.1.50"\nserial = "01P00A000000001"\naccess_code = "12345678"\nbind = "127.0.1.70"\n`,
);
const badConfig = join(dir, "bad.toml");
writeFileSync(
  badConfig,
  `[proxy]\nlog_levle = "info"\n[[printer]]\nname = "a"\nhost = "h"\nserial = "s"\nacess = "12345678"\n[[printer]]\nname = "b"\nhost = "h"\nserial = "s"\naccess_code = "12345678"\nports = { mqtt = 0 }\n`,
);

describe("exit codes and output", () => {
  test("--version prints the version and exits 0", () => {
    const r = pandaproxy(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`pandaproxy ${pkg.version}`);
  });

  test("--help lists the commands and exits 0; every command has --help", () => {
    const r = pandaproxy(["--help"]);
    expect(r.code).toBe(0);
    for (const name of ["run", "check", "ca", "service", "version"]) expect(r.stdout).toMatch(new RegExp(`^  ${name} `, "m"));
    for (const name of ["run", "check", "ca", "service"]) {
      const help = pandaproxy([name, "--help"]);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`Usage: pandaproxy ${name === "run" ? "[run]" : name}`);
    }
    expect(pandaproxy(["help", "check"]).stdout).toContain("Usage: pandaproxy check");
  });

  test("no arguments print the help and exit 2", () => {
    const r = pandaproxy([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain("Usage: pandaproxy [COMMAND]");
  });

  test("an unknown command or option exits 2 and says what was wrong", () => {
    const unknown = pandaproxy(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('pandaproxy: unknown command "frobnicate"');
    const option = pandaproxy(["check", "--frob"]);
    expect(option.code).toBe(2);
    expect(option.stderr).toContain("pandaproxy check:");
    expect(option.stderr).toContain("--frob");
  });

  test("check on a valid file exits 0 and lists the listeners", () => {
    const r = pandaproxy(["check", "--config", goodConfig]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${goodConfig}: OK, 1 printer`);
    expect(r.stdout).toContain("mqtt tcp 127.0.1.70:8883");
    expect(r.stdout).toContain("web: disabled");
  });

  test("check on a bad file exits 2 with every problem on stderr", () => {
    const r = pandaproxy(["check", "--config", badConfig]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("pandaproxy check: 5 problems in the configuration:");
    expect(r.stderr).toContain(`${badConfig}: printer "a" and printer "b" both listen on 0.0.0.0 ports`);
    expect(r.stderr).toContain(`${badConfig}: [proxy] key "log_levle" is unknown (did you mean "log_level"?)`);
    expect(r.stderr).toContain(`${badConfig}: printer "a": key "acess" is unknown (did you mean "access_code"?)`);
    expect(r.stderr).toContain(`${badConfig}: printer "a": key "access_code" is missing`);
    expect(r.stderr).toContain(`${badConfig}: printer "b": key "ports.mqtt" is 0; expected a port number from 1 to 65535`);
  });

  test("check without a configuration exits 2 and says where it looked", () => {
    const r = pandaproxy(["check"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("no configuration: pass --config FILE");
    const missing = pandaproxy(["check", "--config", join(dir, "nope.toml")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("nope.toml: cannot read the file");
  });

  test("ca prints the local CA from state_dir, with --pem only the PEM", () => {
    const pem = pandaproxy(["ca", "--config", goodConfig, "--pem"]);
    expect(pem.code).toBe(0);
    expect(pem.stdout).toMatch(/^-----BEGIN CERTIFICATE-----\r?\n[\s\S]+\r?\n-----END CERTIFICATE-----\r?\n$/);
    expect(pem.stdout).toBe(readFileSync(join(dir, "state", "ca.crt"), "utf8"));
    const full = pandaproxy(["ca", "--config", goodConfig]);
    expect(full.code).toBe(0);
    expect(full.stdout).toContain(pem.stdout);
    expect(full.stdout).toContain("printer.cer");
    expect(pandaproxy(["ca", "--config", badConfig]).code).toBe(2);
  });
});

describe("service install", () => {
  const unitLines = (text: string) => text.split("\n").filter((l) => /^[A-Za-z]+=/.test(l));

  test("--dry-run prints the unit and the steps, changing nothing", () => {
    const r = pandaproxy(["service", "install", "--dry-run", "--config", goodConfig, "--user", "ppsvc"]);
    expect(r.code).toBe(0);
    const lines = unitLines(r.stdout);
    expect(lines).toContain(`ExecStart=${process.execPath} ${MAIN} run --config /etc/pandaproxy/printers.toml`);
    for (const line of [
      "User=ppsvc", "Group=ppsvc", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
      "Restart=on-failure", "StateDirectory=pandaproxy", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=true",
      "WantedBy=multi-user.target",
    ]) expect(lines).toContain(line);
    // A JIT runtime cannot live with these.
    expect(lines.filter((l) => l.startsWith("MemoryDenyWriteExecute=") || l.startsWith("LimitAS="))).toEqual([]);
    expect(r.stdout).toContain("useradd --system --user-group --home-dir /var/lib/pandaproxy --no-create-home --shell /usr/sbin/nologin ppsvc");
    expect(r.stdout).toContain(`copy ${goodConfig} to /etc/pandaproxy/printers.toml`);
    expect(r.stdout).toContain("systemctl enable pandaproxy.service and (re)start it");
    expect(r.stderr).toContain("running from source");
  });

  test("--dry-run with a broken --config enables without starting and lists the problems", () => {
    const r = pandaproxy(["service", "install", "--dry-run", "--config", badConfig]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("5 problem(s); the service will not be started");
    expect(r.stdout).toContain("(not started: the configuration has errors)");
  });

  test("uninstall --dry-run; bad action, bad user and missing --config exit 2", () => {
    const r = pandaproxy(["service", "uninstall", "--dry-run"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("systemctl disable --now pandaproxy.service");
    expect(r.stdout).toContain("remove /etc/systemd/system/pandaproxy.service");
    expect(pandaproxy(["service"]).code).toBe(2);
    expect(pandaproxy(["service", "reinstall"]).stderr).toContain('unknown action "reinstall"');
    expect(pandaproxy(["service", "install", "--user", "Root Me"]).code).toBe(2);
    expect(pandaproxy(["service", "install", "--config", join(dir, "nope.toml")]).code).toBe(2);
  });

  test("without root it refuses with a clear message (exit 1)", () => {
    if (!existsSync("/usr/bin/setpriv") || process.getuid?.() !== 0) return; // needs root to drop to nobody
    // nobody may not be able to enter the checkout (CI clones below a 0700 directory): run a compiled binary
    // from a directory everyone can read.
    const open = join(dir, "for-nobody");
    const binary = join(open, "pandaproxy");
    expect(run(BUN, ["build", MAIN, "--compile", "--outfile", binary]).code).toBe(0);
    chmodSync(dir, 0o755);
    chmodSync(open, 0o755);
    const ran = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", binary, "service", "install"], { cwd: "/", encoding: "utf8", timeout: 30_000 });
    const r = { code: ran.status, stdout: ran.stdout, stderr: ran.stderr };
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("needs root");
    expect(r.stderr).toContain("--dry-run");
  });

  test("scripts/pandaproxy.service is the unit install writes for /usr/local/bin/pandaproxy", async () => {
    const { renderUnit } = await import("../lib/commands/service.ts");
    expect(readFileSync(join(ROOT, "scripts/pandaproxy.service"), "utf8")).toBe(renderUnit({ argv: ["/usr/local/bin/pandaproxy"], compiled: true }));
  });

  test("a compiled binary puts itself in ExecStart", () => {
    const binary = join(dir, "bin", "pandaproxy");
    const build = run(BUN, ["build", MAIN, "--compile", "--outfile", binary]);
    expect(build.code).toBe(0);
    const r = run(binary, ["service", "install", "--dry-run"]);
    expect(r.code).toBe(0);
    expect(unitLines(r.stdout)).toContain(`ExecStart=${binary} run --config /etc/pandaproxy/printers.toml`);
    expect(r.stderr).not.toContain("running from source");
  });
});

describe("scripts/install.sh", () => {
  const script = join(ROOT, "scripts/install.sh");
  // A stand-in for the downloaded binary: runs main.ts from this tree.
  const fake = join(dir, "pandaproxy-linux-x64");
  writeFileSync(fake, `#!/bin/sh\nexec "${BUN}" "${MAIN}" "$@"\n`);
  chmodSync(fake, 0o755);

  test("refuses a 32-bit ARM system with the 64-bit OS message", () => {
    const r = run("bash", [script, fake, "--dry-run"], { PANDAPROXY_MACHINE: "armv7l" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("32-bit ARM system (armv7l)");
    expect(r.stderr).toContain("pandaproxy needs a 64-bit OS");
  });

  test("refuses a 64-bit kernel under a 32-bit userland (Pi OS 32-bit on a Pi 4)", () => {
    const r = run("bash", [script, fake, "--dry-run"], { PANDAPROXY_MACHINE: "aarch64", PANDAPROXY_LONG_BIT: "32" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("runs a 32-bit userland");
  });

  test("--dry-run checks the binary runs and shows the service steps", () => {
    const r = run("bash", [script, fake, "--dry-run", "--config", "good.toml"], { PANDAPROXY_MACHINE: "x86_64", PANDAPROXY_LONG_BIT: "64" });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`install.sh: pandaproxy ${pkg.version} (x64)`);
    expect(r.stdout).toContain("would copy");
    expect(r.stdout).toContain("AmbientCapabilities=CAP_NET_BIND_SERVICE");
    expect(r.stdout).toContain(`copy ${goodConfig} to /etc/pandaproxy/printers.toml`);
  });

  test("a binary that does not run is refused before anything is installed", () => {
    const broken = join(dir, "broken");
    writeFileSync(broken, "#!/bin/sh\necho 'Illegal instruction' >&2\nexit 132\n");
    chmodSync(broken, 0o755);
    const r = run("bash", [script, broken, "--dry-run"], { PANDAPROXY_MACHINE: "aarch64", PANDAPROXY_LONG_BIT: "64" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("does not run on this aarch64 system: Illegal instruction");
  });

  test("DESTDIR installs the binary below that root, mode 0755", () => {
    const root = join(dir, "destdir");
    const r = run("bash", [script, fake], { DESTDIR: root, PANDAPROXY_MACHINE: "x86_64", PANDAPROXY_LONG_BIT: "64" });
    expect(r.code).toBe(0);
    const installed = join(root, "usr/local/bin/pandaproxy");
    expect(readFileSync(installed, "utf8")).toBe(readFileSync(fake, "utf8"));
    expect(statSync(installed).mode & 0o777).toBe(0o755);
    expect(r.stdout).toContain("write /etc/systemd/system/pandaproxy.service");
  });
});

describe("the command table", () => {
  const good = { command: { summary: "x", usage: "x", options: {}, run: async () => 0 } };
  const modules = {
    good: async () => good,
    demo: async () => Promise.reject(new Error('Cannot find module "../sim/start.ts"')),
    empty: async () => ({}),
  };
  const quiet = async <T>(body: () => Promise<T>): Promise<{ result: T; errors: string[]; logs: string[] }> => {
    const errors: string[] = [], logs: string[] = [];
    const [error, log] = [console.error, console.log];
    console.error = (...a: unknown[]) => void errors.push(a.join(" "));
    console.log = (...a: unknown[]) => void logs.push(a.join(" "));
    try {
      return { result: await body(), errors, logs };
    } finally {
      [console.error, console.log] = [error, log];
    }
  };

  test("a command module that fails to load is reported with its own error, not as missing from the build", async () => {
    const { main } = await import("../lib/cli.ts");
    const r = await quiet(() => main(["demo"], modules));
    expect(r.result).toBe(1);
    expect(r.errors.join("\n")).toContain('the "demo" command is broken in this build: its module cannot be loaded: Cannot find module "../sim/start.ts"');
    const empty = await quiet(() => main(["empty"], modules));
    expect(empty.errors.join("\n")).toContain('its module exports no "command"');
  });

  test("the help lists a broken command with its error", async () => {
    const { main } = await import("../lib/cli.ts");
    const r = await quiet(() => main(["--help"], modules));
    expect(r.result).toBe(0);
    expect(r.logs.join("\n")).toMatch(/^  good +x$/m);
    expect(r.logs.join("\n")).toMatch(/^  demo +\(broken in this build: its module cannot be loaded: Cannot find module/m);
  });

  test("a name from Object.prototype is an unknown command", async () => {
    const { main } = await import("../lib/cli.ts");
    for (const name of ["constructor", "toString", "__proto__"]) {
      const r = await quiet(() => main([name], modules));
      expect(r.result).toBe(2);
      expect(r.errors.join("\n")).toContain(`unknown command "${name}"`);
    }
  });

  test("every command module of the build loads", async () => {
    const { loadCommands } = await import("../lib/commands/registry.ts");
    for (const c of await loadCommands()) expect("error" in c ? `${c.name}: ${c.error}` : c.name).toBe(c.name);
  });
});
