// `pandaproxy service install|uninstall`: run this binary as a systemd service under a dedicated unprivileged
// user that may bind the printers' low ports (CAP_NET_BIND_SERVICE), with its state in /var/lib/pandaproxy.
import { spawnSync } from "node:child_process";
import { copyFileSync, chmodSync, chownSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigErrors, loadConfig } from "../config.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type Command } from "./command.ts";

export const UNIT_NAME = "pandaproxy.service";
export const UNIT_PATH = `/etc/systemd/system/${UNIT_NAME}`;
export const CONFIG_DIR = "/etc/pandaproxy";
export const CONFIG_PATH = `${CONFIG_DIR}/printers.toml`;
export const STATE_DIR = "/var/lib/pandaproxy";
export const DEFAULT_USER = "pandaproxy";
/** How long systemd waits for SIGTERM to end us before SIGKILL; the supervisor itself stops within 5 s. */
export const STOP_TIMEOUT_S = 10;
export const RESTART_DELAY_S = 5;

/** How to start pandaproxy: the compiled binary, or bun with main.ts when running from source. */
export interface Program {
  argv: string[];
  compiled: boolean;
}

export function currentProgram(): Program {
  // A `bun build --compile` binary runs its bundled main from Bun's virtual file system.
  const compiled = Bun.main.startsWith("/$bunfs/") || /^[A-Z]:[\\/]~BUN[\\/]/.test(Bun.main);
  return compiled ? { argv: [process.execPath], compiled } : { argv: [process.execPath, resolve(Bun.main)], compiled };
}

const quoteArg = (arg: string) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `"${arg.replace(/(["\\])/g, "\\$1")}"`);

/** The unit file. No MemoryDenyWriteExecute= and no LimitAS=: Bun's JIT needs W+X pages and a large address space. */
export function renderUnit(program: Program, user = DEFAULT_USER): string {
  const exec = [...program.argv, "run", "--config", CONFIG_PATH].map(quoteArg).join(" ");
  return `# Written by \`pandaproxy service install\`; \`pandaproxy service uninstall\` removes it.
[Unit]
Description=pandaproxy: one connection to each 3D printer, shared by every client on the LAN
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=${user}
Group=${user}
ExecStart=${exec}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=${RESTART_DELAY_S}
TimeoutStopSec=${STOP_TIMEOUT_S}
# Certificates (the local CA slicers trust) live here; systemd passes it as $STATE_DIRECTORY.
StateDirectory=pandaproxy
StateDirectoryMode=0700
ConfigurationDirectory=pandaproxy
# The printers' ports (322, 990) are below 1024: allow binding them and nothing else.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
LockPersonality=true
# Deliberately absent: MemoryDenyWriteExecute= and LimitAS= stop Bun's JavaScript JIT.

[Install]
WantedBy=multi-user.target
`;
}

export interface Step {
  describe: string;
  run(): void;
}

export interface InstallFacts {
  program: Program;
  user: string;
  /** --config FILE: copied to /etc/pandaproxy/printers.toml when that does not exist yet. */
  configFile?: string;
  userExists: boolean;
  configExists: boolean;
  /** Problems with the configuration the service will read (empty when it is valid or absent). */
  configProblems: string[];
}

function sh(argv: string[], okCodes = [0]): void {
  const result = spawnSync(argv[0]!, argv.slice(1), { stdio: ["ignore", "inherit", "inherit"] });
  if (result.error) throw new Error(`${argv.join(" ")}: ${result.error.message}`);
  if (!okCodes.includes(result.status ?? -1)) throw new Error(`${argv.join(" ")} failed (exit ${result.status ?? result.signal})`);
}

function userIds(user: string): { uid: number; gid: number } | undefined {
  const uid = spawnSync("id", ["-u", user], { encoding: "utf8" });
  const gid = spawnSync("id", ["-g", user], { encoding: "utf8" });
  if (uid.status !== 0 || gid.status !== 0) return undefined;
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/** What `install` does, in order; --dry-run prints the descriptions instead of running them. */
export function installSteps(facts: InstallFacts): Step[] {
  const steps: Step[] = [];
  const { user } = facts;
  if (!facts.userExists) {
    const argv = ["useradd", "--system", "--user-group", "--home-dir", STATE_DIR, "--no-create-home", "--shell", "/usr/sbin/nologin", user];
    steps.push({ describe: `create the system user "${user}": ${argv.join(" ")}`, run: () => sh(argv) });
  }
  steps.push({ describe: `create ${CONFIG_DIR}`, run: () => mkdirSync(CONFIG_DIR, { recursive: true, mode: 0o755 }) });
  if (facts.configFile && !facts.configExists) {
    const from = facts.configFile;
    steps.push({
      describe: `copy ${from} to ${CONFIG_PATH} (mode 0640, group ${user}: it holds access codes)`,
      run: () => {
        copyFileSync(from, CONFIG_PATH);
        const ids = userIds(user);
        if (ids) chownSync(CONFIG_PATH, 0, ids.gid);
        chmodSync(CONFIG_PATH, 0o640);
      },
    });
  } else if (facts.configFile) {
    steps.push({ describe: `keep the existing ${CONFIG_PATH} (${facts.configFile} is not copied over it)`, run: () => {} });
  }
  steps.push({ describe: `write ${UNIT_PATH}`, run: () => writeFileSync(UNIT_PATH, renderUnit(facts.program, user), { mode: 0o644 }) });
  steps.push({ describe: "systemctl daemon-reload", run: () => sh(["systemctl", "daemon-reload"]) });
  const haveConfig = facts.configExists || Boolean(facts.configFile);
  if (haveConfig && facts.configProblems.length === 0) {
    steps.push({ describe: `systemctl enable ${UNIT_NAME} and (re)start it`, run: () => (sh(["systemctl", "enable", UNIT_NAME]), sh(["systemctl", "restart", UNIT_NAME])) });
  } else {
    steps.push({ describe: `systemctl enable ${UNIT_NAME} (not started: ${haveConfig ? "the configuration has errors" : `${CONFIG_PATH} does not exist yet`})`, run: () => sh(["systemctl", "enable", UNIT_NAME]) });
  }
  return steps;
}

export function uninstallSteps(): Step[] {
  return [
    { describe: `systemctl disable --now ${UNIT_NAME}`, run: () => sh(["systemctl", "disable", "--now", UNIT_NAME], [0, 1, 5]) },
    { describe: `remove ${UNIT_PATH}`, run: () => rmSync(UNIT_PATH, { force: true }) },
    { describe: "systemctl daemon-reload", run: () => sh(["systemctl", "daemon-reload"]) },
  ];
}

function configProblems(file: string): string[] {
  try {
    loadConfig(file);
    return [];
  } catch (error) {
    return error instanceof ConfigErrors ? error.problems : [(error as Error).message];
  }
}

const USAGE = [
  "Usage: pandaproxy service install [--config FILE] [--user NAME] [--dry-run]",
  "       pandaproxy service uninstall [--dry-run]",
  "",
  `install: creates the system user NAME (default "${DEFAULT_USER}") if missing, copies FILE to ${CONFIG_PATH}`,
  `(only when that does not exist yet), writes ${UNIT_PATH} for this binary and enables and starts it.`,
  `The service may bind ports below 1024 and keeps its certificates in ${STATE_DIR}.`,
  "uninstall: stops and removes the unit; the user, the configuration and the certificates stay.",
  "--dry-run prints the unit and the steps without changing anything. Both need root otherwise.",
].join("\n");

export const command: Command = {
  summary: "install or remove the systemd service for this binary",
  usage: USAGE,
  options: { user: { type: "string" }, "dry-run": { type: "boolean" } },
  async run(values, positionals) {
    const action = positionals[0];
    if ((action !== "install" && action !== "uninstall") || positionals.length > 1) {
      console.error(`pandaproxy service: ${action ? `unknown action "${positionals.join(" ")}"` : "say install or uninstall"}\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    const dryRun = Boolean(values["dry-run"]);
    const user = (values.user as string | undefined) ?? DEFAULT_USER;
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user)) {
      console.error(`pandaproxy service: --user "${user}" is not a valid system user name (lower-case letters, digits, "_", "-")`);
      return EXIT_USAGE;
    }
    const configFile = values.config as string | undefined;
    if (configFile && !existsSync(configFile)) {
      console.error(`pandaproxy service: --config ${configFile} does not exist`);
      return EXIT_USAGE;
    }
    const program = currentProgram();
    let steps: Step[];
    if (action === "install") {
      const configExists = existsSync(CONFIG_PATH);
      const checked = configExists ? CONFIG_PATH : configFile;
      const problems = checked ? configProblems(checked) : [];
      if (problems.length) {
        console.error(`pandaproxy service: ${checked} has ${problems.length} problem(s); the service will not be started until they are fixed:`);
        for (const p of problems) console.error(`  ${p}`);
      }
      steps = installSteps({ program, user, configFile: configFile && resolve(configFile), userExists: userIds(user) !== undefined, configExists, configProblems: problems });
      if (!program.compiled) {
        console.error(
          `pandaproxy service: running from source, so the unit starts ${program.argv.join(" ")}; the user "${user}" must be able ` +
            "to read that file and bun. For a Raspberry Pi, install a compiled binary (scripts/build.sh, scripts/install.sh).",
        );
      }
    } else {
      steps = uninstallSteps();
    }

    if (dryRun) {
      if (action === "install") console.log(`# ${UNIT_PATH} would be:\n${renderUnit(program, user)}`);
      console.log(`# steps (dry run, nothing changed):`);
      steps.forEach((s, i) => console.log(`${i + 1}. ${s.describe}`));
      return EXIT_OK;
    }
    if (process.getuid?.() !== 0) {
      console.error(`pandaproxy service ${action}: needs root (it writes ${UNIT_PATH} and runs systemctl): run it with sudo, or add --dry-run to see what it would do`);
      return EXIT_FAILURE;
    }
    if (!existsSync("/run/systemd/system")) {
      console.error(`pandaproxy service ${action}: systemd is not running on this host; start \`pandaproxy run --config FILE\` another way`);
      return EXIT_FAILURE;
    }
    for (const step of steps) {
      console.log(`pandaproxy service: ${step.describe}`);
      try {
        step.run();
      } catch (error) {
        console.error(`pandaproxy service ${action}: ${(error as Error).message}`);
        return EXIT_FAILURE;
      }
    }
    if (action === "install") {
      console.log(`pandaproxy service: done. Logs: journalctl -u pandaproxy -f; reload after editing ${CONFIG_PATH}: systemctl reload pandaproxy`);
    } else {
      console.log(`pandaproxy service: removed. Kept ${CONFIG_DIR}, ${STATE_DIR} (the CA slicers trust) and the user; delete them by hand if wanted.`);
    }
    return EXIT_OK;
  },
};
