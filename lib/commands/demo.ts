// `pandaproxy demo`: simulated printers on loopback with pandaproxy in front of them on high ports, plus the
// web page. Needs no root and no printer; prints what to open or connect to; Ctrl-C stops everything.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { defaultStateDir, parseConfig, type Config } from "../config.ts";
import { EXIT_FAILURE, EXIT_OK, type Command } from "./command.ts";
import { forgetPrinter } from "../core/printer-identity.ts";
import { processLogger, setupLogging } from "../log.ts";
import { installProcessPolicy } from "../process-policy.ts";
import type { SimEntry } from "../sim/config.ts";
import { startSimulated, type RunningSim } from "../sim/start.ts";
import { startSupervisor } from "../supervisor.ts";
import { waitForStopSignal } from "./run.ts";
import { formatUrls } from "./urls.ts";

export const DEMO_ACCESS_CODE = "12345678";
/** The demo's web admin login; its password is new on every run (the demo may be started on a LAN address). */
export const DEMO_WEB_USER = "demo";
const DEMO_WEB_PASSWORD_BYTES = 9;
/** High ports so no root is needed; simulators and proxy use the same numbers on different addresses. */
export const DEMO_BAMBU_PORTS = { chamber: 16000, rtsp: 10322, mqtt: 18883, ftp: 10990, bind: 13000, bind_tls: 13002, ssdp: 12021 };
export const DEMO_FLASHFORGE_PORTS = { tcp: 18899, http: 18898, discovery: 48899, camera: 18080 };

interface DemoPrinter {
  sim: SimEntry;
  proxyBind: string;
  /** Why it is left out, when it cannot run here. */
  skip?: string;
}

function hasFfmpeg(path: string): boolean {
  return spawnSync(path, ["-version"], { stdio: "ignore" }).status === 0;
}

/** The demo P1S runs out of filament this far into each print, so the page shows an HMS error in words. */
export const DEMO_RUNOUT_AFTER_MS = 30_000;

export function demoPrinters(ffmpeg: string): DemoPrinter[] {
  return [
    { sim: { type: "bambu", name: "p1s", model: "P1S", host: "127.0.0.11", accessCode: DEMO_ACCESS_CODE, ports: DEMO_BAMBU_PORTS, ssdpTargets: ["127.0.0.21"], hmsAfterMs: DEMO_RUNOUT_AFTER_MS }, proxyBind: "127.0.0.21" },
    {
      sim: { type: "bambu", name: "x1c", model: "X1C", host: "127.0.0.12", accessCode: DEMO_ACCESS_CODE, ports: DEMO_BAMBU_PORTS, ssdpTargets: ["127.0.0.22"] },
      proxyBind: "127.0.0.22",
      skip: hasFfmpeg(ffmpeg) ? undefined : `FFmpeg ("${ffmpeg}") is not installed: the X1C's RTSPS camera needs it (apt-get install ffmpeg)`,
    },
    { sim: { type: "flashforge", name: "ad5m", host: "127.0.0.13", accessCode: DEMO_ACCESS_CODE, ports: DEMO_FLASHFORGE_PORTS }, proxyBind: "127.0.0.23" },
  ];
}

function inlinePorts(ports: Record<string, number>): string {
  return `{ ${Object.entries(ports).map(([k, v]) => `${k} = ${v}`).join(", ")} }`;
}

export function demoConfigText(printers: { sim: SimEntry; serial: string; proxyBind: string }[], stateDir: string, web: string, webPassword: string): string {
  const lines = [
    `[proxy]`, `state_dir = ${JSON.stringify(stateDir)}`, ``,
    `[web]`, `listen = ${JSON.stringify(web)}`, `username = "${DEMO_WEB_USER}"`, `password = ${JSON.stringify(webPassword)}`,
  ];
  for (const { sim, serial, proxyBind } of printers) {
    const ports = sim.type === "flashforge" ? DEMO_FLASHFORGE_PORTS : DEMO_BAMBU_PORTS;
    lines.push(
      ``, `[[printer]]`, `name = ${JSON.stringify(sim.name)}`, `type = "${sim.type}"`, `host = "${sim.host}"`,
      `serial = "${serial}"`, `${sim.type === "flashforge" ? "check_code" : "access_code"} = "${DEMO_ACCESS_CODE}"`,
      `bind = "${proxyBind}"`, `ports = ${inlinePorts(ports)}`, `printer_ports = ${inlinePorts(ports)}`,
    );
    if (sim.type === "bambu") lines.push(`model = "${sim.model}"`, `ssdp_targets = ["127.0.0.1"]`);
  }
  return lines.join("\n") + "\n";
}

export const command: Command = {
  summary: "run pandaproxy in front of simulated printers (no printer, no root needed)",
  usage: [
    "Usage: pandaproxy demo [--web HOST:PORT] [--state-dir DIR] [--verbose]",
    "",
    "Starts a simulated P1S, X1C (when FFmpeg is installed) and FlashForge Adventurer 5M on 127.0.0.11-13,",
    "pandaproxy in front of them on 127.0.0.21-23 (high ports), and the web page (default 127.0.0.1:8080).",
  ].join("\n"),
  options: { web: { type: "string" }, "state-dir": { type: "string" } },
  async run(values) {
    setupLogging(values.verbose ? "debug" : "info");
    installProcessPolicy();
    const log = processLogger("demo");
    const web = (values.web as string | undefined) ?? "127.0.0.1:8080";
    const stateDir = (values["state-dir"] as string | undefined) ?? join(defaultStateDir(), "demo");
    const printers = demoPrinters("ffmpeg");
    const sims: RunningSim[] = [];
    const served: { sim: SimEntry; serial: string; proxyBind: string }[] = [];
    const stopSims = () => Promise.allSettled(sims.map((s) => s.stop()));
    try {
      for (const p of printers) {
        if (p.skip) {
          log.warn(`leaving out the simulated ${p.sim.model ?? p.sim.name}: ${p.skip}`);
          continue;
        }
        const sim = await startSimulated(p.sim);
        sims.push(sim);
        served.push({ sim: p.sim, serial: sim.serial, proxyBind: p.proxyBind });
      }
    } catch (error) {
      log.error(`cannot start the simulated printers: ${(error as Error).message}`);
      await stopSims();
      return EXIT_FAILURE;
    }
    const webPassword = randomBytes(DEMO_WEB_PASSWORD_BYTES).toString("base64url");
    const config = parseConfig(demoConfigText(served, stateDir, web, webPassword), "demo configuration");
    // The simulated printers make new keys each run: forget the last run's pins (core/printer-identity.ts).
    for (const p of config.printers) forgetPrinter(p.knownPrintersFile, p.name);
    let supervisor;
    try {
      supervisor = await startSupervisor(config);
    } catch (error) {
      log.error(`cannot start pandaproxy: ${(error as Error).message}`);
      await stopSims();
      return EXIT_FAILURE;
    }
    let instructions: string;
    try {
      instructions = demoInstructions(served, config);
    } catch (error) {
      log.error(`cannot read the web page's tokens: ${(error as Error).message}`);
      await supervisor.stop();
      await stopSims();
      return EXIT_FAILURE;
    }
    console.log(instructions);
    await waitForStopSignal();
    log.info("stopping the demo");
    await supervisor.stop();
    await stopSims();
    return EXIT_OK;
  },
};

function demoInstructions(served: { sim: SimEntry; serial: string; proxyBind: string }[], config: Config): string {
  const ca = join(config.proxy.stateDir, "ca.crt");
  const out = [``, `pandaproxy demo is running. Access code (Bambu) / check code (FlashForge): ${DEMO_ACCESS_CODE}`];
  for (const { sim, serial, proxyBind: ip } of served) {
    if (sim.type === "flashforge") {
      const p = DEMO_FLASHFORGE_PORTS;
      out.push(``, `  ${sim.name} (FlashForge Adventurer 5M, serial ${serial}) via ${ip}:`);
      out.push(`    G-code:      printf '~M115\\n' | nc -q1 ${ip} ${p.tcp}`);
      out.push(`    camera:      http://${ip}:${p.camera}/?action=stream`);
      continue;
    }
    const p = DEMO_BAMBU_PORTS;
    out.push(``, `  ${sim.name} (simulated ${sim.model}, serial ${serial}) via ${ip}:`);
    out.push(`    MQTT:        mosquitto_sub -h ${ip} -p ${p.mqtt} --cafile ${ca} -u bblp -P ${DEMO_ACCESS_CODE} -t 'device/${serial}/report'`);
    out.push(`    FTPS:        curl --ssl-reqd --cacert ${ca} -u bblp:${DEMO_ACCESS_CODE} ftps://${ip}:${p.ftp}/`);
    if (sim.model === "X1C") out.push(`    RTSPS:       ffprobe -tls_verify 0 rtsps://bblp:${DEMO_ACCESS_CODE}@${ip}:${p.rtsp}/streaming/live/1`);
    else out.push(`    camera:      TLS ${ip}:${p.chamber} (chamber protocol); in a browser: the web page`);
  }
  out.push(``, `Client URLs, with their credentials (as \`pandaproxy urls\` prints them):`, ``, formatUrls(config));
  out.push(``, `  The CA the proxy's certificates chain to: ${ca}`, `  Ctrl-C stops everything.`, ``);
  return out.join("\n");
}
